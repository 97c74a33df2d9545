"""lantern vs EleutherAI's delphi, side by side: activation cache, bytes on disk, peak RSS, records (issue 3).

One command (from the repository root, lantern's venv active):

    python benchmarks/bench_vs_delphi.py                 # steps 1-4 below, ~60-100 min on 2 slow cores
    python benchmarks/bench_vs_delphi.py --skip-10x      # without the 655,360-token runs
    python benchmarks/bench_vs_delphi.py --delphi-10x    # also delphi's cache at 655,360 tokens (+20-40 min)
    python benchmarks/bench_vs_delphi.py --skip-cache --skip-records --skip-10x --delphi-10x --merge
                                                         # add only delphi's 10x run to an existing result
    python benchmarks/bench_vs_delphi.py --tokens 512 --skip-10x --alt-rounds 1 --alt-tokens 512 --out /tmp/x.json
                                                         # smallest size: does it still run? (minutes)

Environment:
    DELPHI_HARNESS  delphi baseline harness (default <repository>/../shared/baselines/delphi, found from this
                    file's own path): run.sh, prep.py, bench_forward.py, bench_cache.py, bench_records.py. Its
                    scripts are called unchanged, with the python of its own venv; no delphi code is imported
                    into lantern's process. Without it the comparison stops and says so; the --worker modes
                    (lantern's side only) need just a base dir's model, SAE and tokens.
    DELPHI_BASE     the harness's scratch dir (default ~/.cache/lantern-baselines/delphi-base): venv/, fp32
                    gemma3-270m/, sae/layers.6/, data/tokens.npy. Build it first with the harness
                    (`bash $DELPHI_HARNESS/run.sh`, or only its venv + kjv.txt + `prep.py 65536` steps).
    BENCH_DIR       scratch for this benchmark (default ~/.cache/lantern-baselines/bench-vs-delphi): lantern
                    caches, the 10x token file, a second delphi base dir for the 10x run, logs.
    THREADS         torch threads everywhere (default 2).

Same model (the harness's fp32 Gemma 3 270M), same SAE folder (sparsify format, layers.6, 4096 latents, k=32),
same tokens (the harness's 256 x 256 KJV sequences, BOS first), same threads. Every measurement runs in its
own process (peak RSS = that process's ru_maxrss, model load included). This machine's speed drifts 2-3x
within minutes, so each timed step is bracketed by its reference in neighbouring processes and only ratios
of neighbouring measurements are reported; absolute seconds are printed but are not comparable across runs.

Order: (1) cache, 65,536 tokens, one process each: lantern bare forward to layers.6 (b32) A, lantern cache b32
#1, bare B, delphi trunk forward A (its bench_forward.py), delphi cache (its bench_cache.py), delphi trunk B,
lantern cache b32 #2, bare C, then bare b16 A, lantern cache b16, bare b16 B. (2) records: lantern records
(3 configs, each timed twice after an untimed warm-up), delphi records (its bench_records.py; prompt budget
skipped unless DELPHI_PROMPT_LATENTS>0), lantern records again. (3) lantern's cache at 10x tokens (655,360:
more KJV made by the harness's own prep.build_tokens) for peak RSS. (4) alternation check at --alt-tokens
(32,768): one process alternating bare forward and cache passes (B C B C B C B), then separate processes
lantern/delphi cache L D L D L D L; ratios of each pass to its two neighbours, median reported.
(5) optional --delphi-10x: delphi's cache at 655,360 tokens, in a side base dir (the harness's run/ stays).
Every lantern step records the git commit (and a hash of uncommitted src/ changes) it ran.

Output: a table on stdout and JSON (--out, default benchmarks/bench_vs_delphi_results.json).
Worker modes (--worker bare|cache|records|alternate) are what the orchestrator runs in subprocesses.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(os.environ.get("DELPHI_HARNESS") or REPO.parent / "shared/baselines/delphi")
BASE = Path(os.environ.get("DELPHI_BASE") or Path.home() / ".cache/lantern-baselines/delphi-base")
BENCH = Path(os.environ.get("BENCH_DIR") or Path.home() / ".cache/lantern-baselines/bench-vs-delphi")
THREADS = int(os.environ.get("THREADS", "2"))
DELPHI_PY = BASE / "venv/bin/python"
MODEL_DIR = BASE / "gemma3-270m"
SAE_DIR = BASE / "sae/layers.6"
SEQ = 256
N1 = 65_536
N10 = 655_360

ENV = dict(os.environ, DELPHI_BASE=str(BASE), THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS),
           MKL_NUM_THREADS=str(THREADS), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
           TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sha16(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ workers
def _load_model():
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(THREADS)
    return AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()


def _tokens(path: str, n_tokens: int) -> np.ndarray:
    tokens = np.load(path)
    n_seq = n_tokens // tokens.shape[1]
    assert tokens.shape[0] >= n_seq, f"{path} has {tokens.shape[0]} sequences, need {n_seq}"
    return np.ascontiguousarray(tokens[:n_seq].astype(np.int32))


def worker_bare(args) -> dict:
    """lantern's capture_activations to layers.6 (stops after layer 6), no coder, no writes."""
    import torch
    from lantern.models.forward import capture_activations
    from lantern.models.hookpoints import resolve_hookpoint

    model = _load_model()
    rss_load = peak_rss_mb()
    tokens = _tokens(args.tokens_file, args.n_tokens)
    hp = resolve_hookpoint(model, "layers.6")
    capture_activations(model, torch.from_numpy(tokens[:2].astype(np.int64)), [hp])  # warm-up, as delphi's
    start = time.perf_counter()
    for lo in range(0, len(tokens), args.batch):
        capture_activations(model, torch.from_numpy(tokens[lo:lo + args.batch].astype(np.int64)), [hp])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "n_tokens": int(tokens.size), "batch": args.batch,
            "peak_rss_mb_after_load": rss_load, "peak_rss_mb": peak_rss_mb()}


def worker_alternate(args) -> dict:
    """Timing only, one process: bare forward to layers.6 and lantern's cache alternated (B C B C ... B) on the
    same loaded model, so each cache pass has a bare pass right before and right after it."""
    import torch
    from lantern.cache.build import CacheOptions, build_cache
    from lantern.coders.sparsify import SparsifyCoder
    from lantern.models.forward import capture_activations
    from lantern.models.hookpoints import resolve_hookpoint

    model = _load_model()
    coder = SparsifyCoder(SAE_DIR, name="sae")
    tokens = _tokens(args.tokens_file, args.n_tokens)
    hp = resolve_hookpoint(model, "layers.6")
    capture_activations(model, torch.from_numpy(tokens[:2].astype(np.int64)), [hp])
    options = CacheOptions(batch_size=args.batch, run_bytes=64 << 20, value_dtype="float16", window_index=True)

    def bare() -> float:
        start = time.perf_counter()
        for lo in range(0, len(tokens), args.batch):
            capture_activations(model, torch.from_numpy(tokens[lo:lo + args.batch].astype(np.int64)), [hp])
        return time.perf_counter() - start

    bares, caches, forwards = [bare()], [], []
    for i in range(args.rounds):
        cache_dir = Path(args.cache_dir) / f"alt-{i}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        start = time.perf_counter()
        with torch.inference_mode():
            m = build_cache(cache_dir, model, str(MODEL_DIR), [coder], tokens, np.arange(len(tokens), dtype=np.int32),
                            "kjv-delphi-harness", tokenizer_id="gemma3-270m", options=options)["sae"]
        caches.append(time.perf_counter() - start)
        forwards.append(m["forward_seconds"])
        shutil.rmtree(cache_dir, ignore_errors=True)
        bares.append(bare())
    ratios = [c / _mean(bares[i], bares[i + 1]) for i, c in enumerate(caches)]
    return {"n_tokens": int(tokens.size), "batch": args.batch, "bare_s": bares, "cache_s": caches,
            "cache_forward_s": forwards, "cache_over_neighbour_bares": ratios,
            "cache_over_own_forward": [c / f for c, f in zip(caches, forwards)]}


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def worker_cache(args) -> dict:
    """lantern's build_cache of the sparsify SAE (forward to layer 6 + encode + runs + merge + stats +
    window index + decoder neighbours) into a fresh directory."""
    import torch
    from lantern.cache.build import CacheOptions, build_cache
    from lantern.coders.sparsify import SparsifyCoder
    from lantern.models.forward import capture_activations
    from lantern.models.hookpoints import resolve_hookpoint

    model = _load_model()
    coder = SparsifyCoder(SAE_DIR, name="sae")
    rss_load = peak_rss_mb()
    tokens = _tokens(args.tokens_file, args.n_tokens)
    cache_dir = Path(args.cache_dir)
    shutil.rmtree(cache_dir, ignore_errors=True)  # build_cache resumes finished work: always start empty
    hp = resolve_hookpoint(model, "layers.6")
    capture_activations(model, torch.from_numpy(tokens[:2].astype(np.int64)), [hp])  # warm-up
    options = CacheOptions(batch_size=args.batch, run_bytes=64 << 20, value_dtype="float16", window_index=True)
    profiler = None
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    with torch.inference_mode():
        manifests = build_cache(cache_dir, model, str(MODEL_DIR), [coder], tokens,
                                np.arange(len(tokens), dtype=np.int32), "kjv-delphi-harness",
                                tokenizer_id="gemma3-270m", options=options)
    seconds = time.perf_counter() - start
    out = {}
    if profiler is not None:
        profiler.disable()
        out["profile_top"] = _profile_top(profiler)
    m = manifests["sae"]
    tokens_file = (cache_dir / "tokens.npy").stat().st_size
    everything = _dir_bytes(cache_dir)
    out.update({
        "seconds": seconds, "manifest_seconds": m["seconds"], "forward_seconds": m["forward_seconds"],
        "n_tokens": int(tokens.size), "batch": args.batch, "nnz": m["nnz"], "alive_latents": m["alive_latents"],
        "shard_bytes": m["bytes_on_disk"], "bytes_per_nnz_manifest": m["bytes_per_nnz"],
        "tokens_file_bytes": tokens_file,
        "bytes_per_nnz_with_tokens": (m["bytes_on_disk"] + tokens_file) / m["nnz"],
        "cache_dir_bytes_all_files": everything, "bytes_per_nnz_all_files": everything / m["nnz"],
        "window_index_bytes": _dir_bytes(cache_dir / "windows"),
        "peak_rss_mb_after_load": rss_load, "peak_rss_mb": peak_rss_mb()})
    return out


def _profile_top(profiler, n: int = 25) -> list[str]:
    import io
    import pstats
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(n)
    cum = buf.getvalue().splitlines()
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(n)
    return cum + ["---- by tottime ----"] + buf.getvalue().splitlines()


def _member(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(query.shape, bool)
    found = np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)
    return sorted_keys[found] == query


def overlap(table, ctx_len: int) -> dict:
    """Token overlap between each latent's explain windows and its other windows, from the records table."""
    latent = table.column("latent").to_numpy()
    start = table.column("start").to_numpy()
    split = table.column("split").to_numpy(zero_copy_only=False)
    kind = table.column("kind").to_numpy(zero_copy_only=False)
    span = np.arange(ctx_len)
    big = np.int64(1) << 32

    def keys(mask):
        return (latent[mask].astype(np.int64) * big + start[mask])[:, None] + span  # [n, ctx_len] (latent, token)

    explain = split == "explain"
    explain_keys = keys(explain)
    out = {}
    for name, other in (("test_activating", (split == "test") & (kind == "activating")),
                        ("test_all", split == "test"), ("all_non_explain", ~explain)):
        hit = _member(np.sort(keys(other).reshape(-1)), explain_keys).any(axis=1)
        out[f"explain_windows_sharing_a_token_with_{name}"] = int(hit.sum())
        out[f"latents_with_overlap_{name}"] = int(len(np.unique(latent[explain][hit])))
    out["explain_windows"] = int(explain.sum())
    shared = out["explain_windows_sharing_a_token_with_test_all"]
    out["frac_explain_windows_overlapping_test"] = shared / max(1, out["explain_windows"])
    test = split == "test"
    out["identical_explain_test_windows"] = int(_member(np.sort(latent[test].astype(np.int64) * big + start[test]),
                                                        latent[explain].astype(np.int64) * big + start[explain]).sum())
    return out


def worker_records(args) -> dict:
    """lantern's build_records over ALL eligible latents (n_latents=None), three configs, timed separately."""
    from lantern.cache.reader import LatentCache
    from lantern.config import RunConfig
    from lantern.pipeline.records_stage import load_extras
    from lantern.records.build import Extras, RecordConfig, build_records

    configs = {
        "default": (RecordConfig(), True),
        "default_no_window_index": (RecordConfig(), False),
        # delphi's sizes: 40 explain (4 per decile), 50 test (5 per decile), 50 random negatives, >= 200 windows
        "delphi_sized": (RecordConfig(n_explain=40, explain_sampling="quantiles", n_test_per_decile=5,
                                      n_negatives=50, n_similar_negatives=0, n_neighbour_negatives=0,
                                      min_windows=200), False),
    }
    wanted = args.configs.split(",")
    results = {}
    # Untimed warm-up: imports that build_records pulls in lazily and the page cache of the shards, which
    # delphi's timed loop does not pay either (its dataset is opened before its timer starts).
    t = time.perf_counter()
    build_records(LatentCache(args.cache_dir, "sae"), RecordConfig(), n_latents=None)
    warmup_s = time.perf_counter() - t
    for name in wanted:
        cfg, with_extras = configs[name]
        profiler = None
        for repeat in range(2):  # the first repeat is reported too; the second is the headline (less noise)
            if args.profile and name == "default" and repeat == 1:
                import cProfile
                profiler = cProfile.Profile()
                profiler.enable()
            t0 = time.perf_counter()
            cache = LatentCache(args.cache_dir, "sae")
            t1 = time.perf_counter()
            extras = (load_extras(cache, RunConfig(run_dir=str(BENCH / "unused-run"), records=cfg)) if with_extras
                      else Extras())
            t2 = time.perf_counter()
            table, summary = build_records(cache, cfg, n_latents=None, extras=extras)
            t3 = time.perf_counter()
            if repeat == 0:
                first_s = t3 - t0
        if profiler is not None:
            profiler.disable()
        n_latents = cache.num_latents
        built = len(summary)
        rows = table.num_rows
        kind = table.column("kind").to_numpy(zero_copy_only=False)
        source = table.column("source").to_numpy(zero_copy_only=False)
        results[name] = {
            "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "extras": with_extras,
            "open_cache_s": t1 - t0, "load_extras_s": t2 - t1, "build_records_s": t3 - t2, "total_s": t3 - t0,
            "first_repeat_total_s": first_s, "min_total_s": min(first_s, t3 - t0),
            "first_repeat_ms_per_latent_attempted": 1000 * first_s / n_latents,
            "latents_attempted": n_latents, "records_built": built, "rows": rows,
            "activating_rows": int((kind == "activating").sum()), "negative_rows": int((kind == "negative").sum()),
            "negatives_by_source": {s: int((source == s).sum()) for s in np.unique(source[kind == "negative"])},
            "ms_per_latent_attempted": 1000 * (t3 - t0) / n_latents,
            "ms_per_record_built": 1000 * (t3 - t0) / max(1, built),
            "build_only_ms_per_latent_attempted": 1000 * (t3 - t2) / n_latents,
            "overlap": overlap(table, cfg.ctx_len),
            "peak_rss_mb_so_far": peak_rss_mb(),
        }
        if profiler is not None:
            results[name]["profile_top"] = _profile_top(profiler)
        del table, summary, extras, cache
    return {"configs": results, "warmup_s": warmup_s, "peak_rss_mb": peak_rss_mb()}


# ------------------------------------------------------------------------------------------------ orchestrator
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_worker(mode: str, tag: str, **kw) -> dict:
    out = BENCH / "out" / f"{tag}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--result", str(out)]
    for key, value in kw.items():
        if value is True:
            cmd.append(f"--{key.replace('_', '-')}")
        elif value is not False and value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    log(f"lantern {tag}")
    code = _lantern_code_state()  # src/ changes under concurrent work: record which code each step ran
    t = time.perf_counter()
    with open(BENCH / "logs" / f"{tag}.log", "w") as f:
        subprocess.run(cmd, check=True, env=ENV, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    res = json.loads(out.read_text())
    res["process_wall_s"] = time.perf_counter() - t
    res["lantern_code"] = code
    log(f"  -> {json.dumps({k: round(v, 2) for k, v in res.items() if isinstance(v, float)})}")
    return res


def _lantern_code_state() -> str:
    """HEAD commit, plus '+dirty' and a hash of the diff when src/ has uncommitted changes."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    diff = subprocess.run(["git", "diff", "HEAD", "--", "src"], cwd=REPO, capture_output=True, text=True).stdout
    return head + (f"+dirty-{hashlib.sha256(diff.encode()).hexdigest()[:8]}" if diff else "")


def run_delphi(script: str, args: list[str], tag: str, result_name: str, base: Path = BASE) -> dict:
    """One of the harness's own scripts, unchanged, with its venv's python; its JSON lands in base/out/."""
    result = base / "out" / f"{result_name}.json"
    result.unlink(missing_ok=True)
    log(f"delphi {tag}: {script} {' '.join(args)}")
    t = time.perf_counter()
    with open(BENCH / "logs" / f"{tag}.log", "w") as f:
        subprocess.run([str(DELPHI_PY), script, *args], check=True, cwd=HARNESS, stdout=f, stderr=subprocess.STDOUT,
                       env=dict(ENV, DELPHI_BASE=str(base)))
    res = json.loads(result.read_text())
    res["process_wall_s"] = time.perf_counter() - t
    (BENCH / "out" / f"{tag}.json").write_text(json.dumps(res, indent=2))
    short = {k: v for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    log(f"  -> {json.dumps(short)[:400]}")
    return res


def prepare(n10: int = N10) -> dict:
    """Check the harness state; build the 10x token file (`n10` tokens) with the harness's own prep.build_tokens."""
    if not (HARNESS / "bench_cache.py").exists():
        sys.exit(f"delphi harness not found at {HARNESS}: nothing to compare against (set DELPHI_HARNESS to the "
                 f"harness folder; the --worker modes run without it)")
    for path in (DELPHI_PY, MODEL_DIR / "model.safetensors", SAE_DIR / "sae.safetensors", BASE / "data/tokens.npy"):
        if not path.exists():
            sys.exit(f"missing {path}: build the delphi harness's base dir first (see this file's docstring)")
    (BENCH / "out").mkdir(parents=True, exist_ok=True)
    (BENCH / "logs").mkdir(parents=True, exist_ok=True)
    tokens1 = BASE / "data/tokens.npy"
    ref = np.load(HARNESS / "tokens_65536.npy")
    t1 = np.load(tokens1)
    assert t1.shape[0] >= ref.shape[0] and np.array_equal(t1[:ref.shape[0]], ref), \
        f"{tokens1} differs from the harness's tokens_65536.npy"
    tokens10 = BENCH / f"tokens_{n10}.npy"
    if not tokens10.exists():
        log(f"building {n10:,} KJV tokens with the harness's prep.build_tokens (same recipe as prep.py)")
        code = ("import sys; sys.argv = ['prep.py', '0']; import numpy as np, prep; "
                f"a = prep.build_tokens({n10 // SEQ}); np.save({str(tokens10)!r}, a)")
        subprocess.run([str(DELPHI_PY), "-c", code], check=True, cwd=HARNESS, env=ENV)
    t10 = np.load(tokens10)
    assert t10.shape == (n10 // SEQ, SEQ)
    info = {"tokens_65536_sha16": sha16(HARNESS / "tokens_65536.npy"), f"tokens_{n10}_sha16": sha16(tokens10),
            "tokens_10x_first_256_rows_equal_1x": bool(np.array_equal(t10[:ref.shape[0]], ref)),
            "tokens_10x_distinct_rows": int(len(np.unique(t10, axis=0))),
            "sae_sha16": sha16(SAE_DIR / "sae.safetensors"), "model_sha16": sha16(MODEL_DIR / "model.safetensors")}
    info["versions"] = json.loads(subprocess.run(
        [str(DELPHI_PY), "-c", "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
         "('eai-delphi', 'eai-sparsify', 'torch', 'transformers')}))"], capture_output=True, text=True,
        check=True).stdout)
    import torch
    import transformers
    info["lantern_torch"], info["lantern_transformers"] = torch.__version__, transformers.__version__
    info["lantern_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True).stdout.strip()
    return info


def side_base(name: str, tokens: Path) -> Path:
    """Another delphi base dir sharing model and SAE, whose data/tokens.npy is `tokens` (so the harness's own
    base dir, whose run/ cache feeds bench_records.py, is never overwritten)."""
    b = BENCH / name
    assert "gemma" not in str(b / "sae")
    (b / "data").mkdir(parents=True, exist_ok=True)
    (b / "out").mkdir(exist_ok=True)
    for name in ("gemma3-270m", "sae"):
        if not (b / name).exists():
            (b / name).symlink_to(BASE / name)
    target = b / "data/tokens.npy"
    if not target.exists():
        shutil.copy(tokens, target)
    return b


def orchestrate(args) -> None:
    started = time.perf_counter()
    n1, n10 = args.tokens, 10 * args.tokens
    R: dict = json.loads(Path(args.out).read_text()) if args.merge and Path(args.out).exists() else {}
    R.update({"threads": THREADS, "n_tokens": n1, "prep": prepare(n10)})
    tok1 = str(BASE / "data/tokens.npy")
    tok10 = str(BENCH / f"tokens_{n10}.npy")
    cdir = lambda tag: str(BENCH / "caches" / tag)  # noqa: E731
    prompt_latents = os.environ.get("DELPHI_PROMPT_LATENTS", "0")

    if not args.skip_cache:
        R["bare6_b32_A"] = run_worker("bare", "bare6_b32_A", tokens_file=tok1, n_tokens=n1, batch=32)
        R["lantern_cache_b32_1"] = run_worker("cache", "lantern_cache_b32_1", tokens_file=tok1, n_tokens=n1, batch=32,
                                              cache_dir=cdir("b32"))
        R["bare6_b32_B"] = run_worker("bare", "bare6_b32_B", tokens_file=tok1, n_tokens=n1, batch=32)
        R["delphi_trunk_A"] = run_delphi("bench_forward.py", [str(n1), "0", "forward_a"], "delphi_trunk_A", "forward_a")
        R["delphi_cache"] = run_delphi("bench_cache.py", [str(n1)], "delphi_cache", "cache")
        R["delphi_trunk_B"] = run_delphi("bench_forward.py", [str(n1), "0", "forward_b"], "delphi_trunk_B", "forward_b")
        R["lantern_cache_b32_2"] = run_worker("cache", "lantern_cache_b32_2", tokens_file=tok1, n_tokens=n1, batch=32,
                                              cache_dir=cdir("b32"), profile=args.profile)
        R["bare6_b32_C"] = run_worker("bare", "bare6_b32_C", tokens_file=tok1, n_tokens=n1, batch=32)
        R["bare6_b16_A"] = run_worker("bare", "bare6_b16_A", tokens_file=tok1, n_tokens=n1, batch=16)
        R["lantern_cache_b16"] = run_worker("cache", "lantern_cache_b16", tokens_file=tok1, n_tokens=n1, batch=16,
                                            cache_dir=cdir("b16"))
        R["bare6_b16_B"] = run_worker("bare", "bare6_b16_B", tokens_file=tok1, n_tokens=n1, batch=16)
        _save(R, args.out)

    if not args.skip_records:
        if not (Path(cdir("b32")) / "sae/manifest.json").exists():
            run_worker("cache", "lantern_cache_for_records", tokens_file=tok1, n_tokens=n1, batch=32,
                       cache_dir=cdir("b32"))
        if not (BASE / "run/latents/layers.6").exists():
            run_delphi("bench_cache.py", [str(n1)], "delphi_cache_for_records", "cache")
        cfgs = "default,default_no_window_index,delphi_sized"
        R["lantern_records_1"] = run_worker("records", "lantern_records_1", cache_dir=cdir("b32"), configs=cfgs,
                                            profile=args.profile)
        R["delphi_records"] = run_delphi("bench_records.py", [prompt_latents], "delphi_records", "records")
        R["lantern_records_2"] = run_worker("records", "lantern_records_2", cache_dir=cdir("b32"), configs=cfgs)
        _save(R, args.out)

    if not args.skip_10x:
        R["lantern_cache_b32_10x"] = run_worker("cache", "lantern_cache_b32_10x", tokens_file=tok10, n_tokens=n10,
                                                batch=32, cache_dir=cdir("b32-10x"))
        shutil.rmtree(cdir("b32-10x"), ignore_errors=True)
        _save(R, args.out)
    if args.delphi_10x:
        b10 = side_base("delphi-base-10x", BENCH / f"tokens_{n10}.npy")
        R["delphi_cache_10x"] = run_delphi("bench_cache.py", [str(n10)], "delphi_cache_10x", "cache", base=b10)
        shutil.rmtree(b10 / "run", ignore_errors=True)
        _save(R, args.out)

    if args.alt_rounds:
        n_alt = args.alt_tokens
        R["alt_lantern_inprocess"] = run_worker("alternate", "alt_lantern_inprocess", tokens_file=tok1, n_tokens=n_alt,
                                                batch=32, rounds=args.alt_rounds, cache_dir=cdir("alt"))
        balt = side_base("delphi-base-alt", BASE / "data/tokens.npy")
        seq = []
        for i in range(args.alt_rounds):
            seq.append(("L", run_worker("cache", f"alt_L{i}", tokens_file=tok1, n_tokens=n_alt, batch=32,
                                        cache_dir=cdir("alt-L"))["seconds"]))
            seq.append(("D", run_delphi("bench_cache.py", [str(n_alt)], f"alt_D{i}", "cache", base=balt)["total_s"]))
        seq.append(("L", run_worker("cache", f"alt_L{args.alt_rounds}", tokens_file=tok1, n_tokens=n_alt, batch=32,
                                    cache_dir=cdir("alt-L"))["seconds"]))
        shutil.rmtree(cdir("alt-L"), ignore_errors=True)
        R["alt_lantern_vs_delphi"] = {"n_tokens": n_alt, "sequence": seq,
                                      "delphi_over_neighbour_lanterns": [
                                          seq[j][1] / _mean(seq[j - 1][1], seq[j + 1][1])
                                          for j in range(1, len(seq) - 1, 2)]}
        _save(R, args.out)

    R["wall_s"] = R.get("wall_s", 0) + time.perf_counter() - started if args.merge else time.perf_counter() - started
    R["summary"] = summarise(R)
    _save(R, args.out)
    print_table(R["summary"])


def _save(R: dict, out: str) -> None:
    Path(out).write_text(json.dumps(R, indent=2, default=str))


def _mean(*xs):
    return sum(xs) / len(xs)


def summarise(R: dict) -> list[tuple[str, str, str]]:
    """(metric, value, goal/verdict) rows; every ratio is of measurements taken next to each other."""
    rows: list[tuple[str, str, str]] = []
    add = lambda m, v, g="": rows.append((m, v, g))  # noqa: E731
    if "lantern_cache_b32_1" in R:
        a, b, c = (R[f"bare6_b32_{x}"]["seconds"] for x in "ABC")
        l1, l2 = R["lantern_cache_b32_1"]["seconds"], R["lantern_cache_b32_2"]["seconds"]
        d = R["delphi_cache"]
        dta, dtb = R["delphi_trunk_A"]["trunk_forward_s"], R["delphi_trunk_B"]["trunk_forward_s"]
        b16a, b16b, l16 = R["bare6_b16_A"]["seconds"], R["bare6_b16_B"]["seconds"], R["lantern_cache_b16"]["seconds"]
        r1, r2 = l1 / _mean(a, b), l2 / _mean(b, c)  # cache #2 is bracketed by delphi trunk B and bare C
        r16 = l16 / _mean(b16a, b16b)
        add("seconds (this run; not comparable across runs)",
            f"bare6 b32 A/B/C {a:.1f}/{b:.1f}/{c:.1f}; lantern cache b32 #1/#2 {l1:.1f}/{l2:.1f}; "
            f"delphi trunk A/B {dta:.1f}/{dtb:.1f}; delphi cache {d['total_s']:.1f} (run {d['run_s']:.1f}); "
            f"bare6 b16 A/B {b16a:.1f}/{b16b:.1f}; lantern cache b16 {l16:.1f}")
        noisy = "too noisy for a verdict: the bare passes around it differ by {:.0f}%"
        add("lantern cache / bare forward to layers.6, batch 32 (separate processes)",
            f"#1 {r1:.2f} (range {l1 / max(a, b):.2f}-{l1 / min(a, b):.2f}), #2 vs bare C {l2 / c:.2f}",
            noisy.format(100 * abs(a - b) / min(a, b)))
        add("lantern cache / bare forward to layers.6, batch 16 (lantern default; separate processes)",
            f"{r16:.2f} (range {l16 / max(b16a, b16b):.2f}-{l16 / min(b16a, b16b):.2f})",
            noisy.format(100 * abs(b16a - b16b) / min(b16a, b16b)))
        for tag in ("lantern_cache_b32_1", "lantern_cache_b32_2", "lantern_cache_b16"):
            m = R[tag]
            add(f"  in-process: {tag} total / its own forward time", f"{m['seconds'] / m['forward_seconds']:.2f} "
                f"(non-forward {m['seconds'] - m['forward_seconds']:.1f} s)")
        lmean = _mean(l1, l2)
        add("delphi cache total / lantern cache (b32, mean of #1,#2 around it)",
            f"{d['total_s'] / lmean:.2f} (vs #1 {d['total_s'] / l1:.2f}, vs #2 {d['total_s'] / l2:.2f})",
            _verdict(d["total_s"] / lmean, 2.3, ">="))
        add("delphi cache total / delphi trunk (mean A,B)", f"{d['total_s'] / _mean(dta, dtb):.2f}")
        add("delphi's forward (18-layer trunk, AutoModel) / lantern bare forward to layers.6 (adjacent pairs)",
            f"trunk A / bare B {dta / b:.2f}, trunk B / bare C {dtb / c:.2f}")
        lc = R["lantern_cache_b32_1"]
        add("bytes on disk per non-zero: lantern shards (manifest bytes_per_nnz)",
            f"{lc['bytes_per_nnz_manifest']:.3f}")
        add("bytes per non-zero: lantern shards + tokens.npy once", f"{lc['bytes_per_nnz_with_tokens']:.3f}",
            _verdict(lc["bytes_per_nnz_with_tokens"], 6.0, "<="))
        add("bytes per non-zero: lantern whole cache dir (+ window index, stats, decoder neighbours, doc ids)",
            f"{lc['bytes_per_nnz_all_files']:.3f} (window index {lc['window_index_bytes']:,} B)")
        add("bytes per non-zero: delphi (5 splits incl. 5 token copies)", f"{d['disk_bytes_per_nnz']:.3f} "
            f"(excl. token copies {d['disk_bytes_per_nnz_excl_token_copies']:.3f})")
        add("non-zeros stored: lantern / delphi", f"{lc['nnz']:,} / {d['nnz']:,} (lantern skips the BOS position)")
        bare_rss = R["bare6_b32_A"]["peak_rss_mb"]
        add("peak RSS MB: lantern bare6 b32 / lantern cache b32 / lantern cache b16",
            f"{bare_rss:.0f} / {lc['peak_rss_mb']:.0f} / {R['lantern_cache_b16']['peak_rss_mb']:.0f}")
        add("peak RSS MB: delphi trunk forward / delphi cache",
            f"{R['delphi_trunk_A']['peak_rss_mb_trunk_process']:.0f} / {d['peak_rss_mb']:.0f}")
    if "lantern_cache_b32_10x" in R:
        x = R["lantern_cache_b32_10x"]
        one = R.get("lantern_cache_b32_1", {}).get("peak_rss_mb")
        bare_rss = R.get("bare6_b32_A", {}).get("peak_rss_mb")
        v = f"{x['peak_rss_mb']:.0f} MB"
        goal = ""
        if one:
            v += f" = {x['peak_rss_mb'] / one:.2f}x the 65,536-token cache ({one:.0f} MB)"
            goal = _verdict(x["peak_rss_mb"] / one, 1.2, "<=")
        if bare_rss:
            v += f", {x['peak_rss_mb'] / bare_rss:.2f}x the bare forward process"
        add("peak RSS, lantern cache at 655,360 tokens (b32)", v, goal)
        add("  10x in-process: total / own forward time", f"{x['seconds'] / x['forward_seconds']:.2f}; "
            f"{x['nnz']:,} nnz, {x['bytes_per_nnz_with_tokens']:.3f} B/nnz with tokens")
    if "delphi_cache_10x" in R:
        x = R["delphi_cache_10x"]
        one = R.get("delphi_cache", {}).get("peak_rss_mb")
        add("peak RSS, delphi cache at 655,360 tokens", f"{x['peak_rss_mb']:.0f} MB" +
            (f" = {x['peak_rss_mb'] / one:.2f}x its 65,536-token run ({one:.0f} MB)" if one else "") +
            f"; {x['total_s']:.0f} s, {x['disk_bytes_per_nnz']:.3f} B/nnz")
    if "alt_lantern_inprocess" in R:
        a = R["alt_lantern_inprocess"]
        r = sorted(a["cache_over_neighbour_bares"])
        add(f"alternation, one process (B C B C B C B), {a['n_tokens']:,} tokens b32: lantern cache / "
            "mean(bare before, after)",
            f"median {r[len(r) // 2]:.2f} (all: "
            f"{', '.join(f'{x:.2f}' for x in a['cache_over_neighbour_bares'])}); "
            f"cache / own forward {', '.join(f'{x:.2f}' for x in a['cache_over_own_forward'])}",
            _verdict(r[len(r) // 2], 1.10, "<="))
        d = R["alt_lantern_vs_delphi"]
        r = sorted(d["delphi_over_neighbour_lanterns"])
        add(f"alternation, separate processes L D L .. L, {d['n_tokens']:,} tokens b32: delphi cache / mean(lantern "
            "cache before, after)", f"median {r[len(r) // 2]:.2f} (all: "
            f"{', '.join(f'{x:.2f}' for x in d['delphi_over_neighbour_lanterns'])}); seconds "
            + " ".join(f"{k}{v:.0f}" for k, v in d["sequence"]), _verdict(r[len(r) // 2], 2.3, ">="))
    if "lantern_records_1" in R:
        l1, l2 = R["lantern_records_1"]["configs"], R["lantern_records_2"]["configs"]
        d = R["delphi_records"]
        d_ms = 1000 * d["s_per_latent_attempted"]
        for name in l1:
            a, b = l1[name], l2[name]
            ms = _mean(a["ms_per_latent_attempted"], b["ms_per_latent_attempted"])
            per_rec = _mean(a["ms_per_record_built"], b["ms_per_record_built"])
            first = [x.get("first_repeat_ms_per_latent_attempted") for x in (a, b)]
            add(f"lantern records [{name}]: ms per latent attempted (processes 1/2, incl. open + load_extras)",
                f"{ms:.2f} ({a['ms_per_latent_attempted']:.2f}/{b['ms_per_latent_attempted']:.2f})"
                + (f"; first call of the config in each process {first[0]:.2f}/{first[1]:.2f}" if first[0] else "")
                + f"; load_extras {a['load_extras_s']:.2f}s", _verdict(ms, 0.4, "<=") if name == "default" else "")
            add(f"lantern records [{name}]: built / attempted, ms per record built",
                f"{a['records_built']} / {a['latents_attempted']}, {per_rec:.2f} ms; rows {a['rows']:,} "
                f"(negatives {a['negatives_by_source']})")
            add(f"lantern records [{name}]: explain windows sharing a token with a test window",
                f"{a['overlap']['explain_windows_sharing_a_token_with_test_all']} of {a['overlap']['explain_windows']} "
                f"({100 * a['overlap']['frac_explain_windows_overlapping_test']:.1f}%); identical windows "
                f"{a['overlap']['identical_explain_test_windows']}",
                _verdict(a["overlap"]["frac_explain_windows_overlapping_test"], 0.0, "<="))
            add(f"delphi records / lantern records [{name}] (per latent attempted)", f"{d_ms / ms:.1f}x")
        add("delphi records: ms per latent attempted / per record built",
            f"{d_ms:.2f} / {1000 * d['s_per_record_built']:.2f} ({d['records_built']} of {d['latents_attempted']}); "
            f"peak RSS {d['peak_rss_mb']:.0f} MB")
        lk = d["leakage"]
        add("delphi train examples reused as test examples (mean over built records)",
            f"{100 * lk['all_built_mean_frac_of_train']:.1f}%")
        add("peak RSS MB: lantern records process (3 configs)", f"{R['lantern_records_1']['peak_rss_mb']:.0f}")
    return rows


def _verdict(value: float, goal: float, op: str) -> str:
    ok = value <= goal if op == "<=" else value >= goal
    return f"goal {op} {goal}: {'MET' if ok else 'MISSED'}"


def print_table(rows) -> None:
    print("| metric | value | goal |\n|---|---|---|")
    for m, v, g in rows:
        print(f"| {m} | {v} | {g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["bare", "cache", "records", "alternate"])
    parser.add_argument("--result")
    parser.add_argument("--tokens-file")
    parser.add_argument("--n-tokens", type=int, default=N1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cache-dir")
    parser.add_argument("--configs", default="default")
    parser.add_argument("--profile", action="store_true", help="cProfile lantern cache #2 and records run 1")
    parser.add_argument("--tokens", type=int, default=N1,
                        help="tokens of the side-by-side steps (the 10x step caches ten times as many)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/bench_vs_delphi_results.json"))
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--skip-records", action="store_true")
    parser.add_argument("--skip-10x", action="store_true")
    parser.add_argument("--delphi-10x", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="cache passes of the alternate worker")
    parser.add_argument("--alt-rounds", type=int, default=3,
                        help="alternation check: cache passes between bare passes (one process), and L D L D .. L "
                             "processes of lantern and delphi cache; 0 skips it")
    parser.add_argument("--alt-tokens", type=int, default=32_768)
    parser.add_argument("--merge", action="store_true", help="keep the measurements already in --out (add steps)")
    parser.add_argument("--summary-only", action="store_true", help="re-print the table of an existing --out JSON")
    args = parser.parse_args()
    if args.worker:
        res = {"bare": worker_bare, "cache": worker_cache, "records": worker_records,
               "alternate": worker_alternate}[args.worker](args)
        Path(args.result).write_text(json.dumps(res, indent=2, default=str))
    elif args.summary_only:
        R = json.loads(Path(args.out).read_text())
        R["summary"] = summarise(R)
        _save(R, args.out)
        print_table(R["summary"])
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
