"""The whole pipeline (cache → records → explain → score) at growing sizes: how each stage's time and memory grow.

Defaults of `lantern run` except the coder set: the embedded Gemma 3 270M as subject model, `lantern run`'s default
in-process LLM (RESULTS.md's grid ran when that was the 270M itself; `--llm-model subject` asks for it), the embedded
corpus, the embedded SAE (`sae`, 4,096 latents, k = 32), the default explainer and the
detection + fuzzing scorers. Every stage runs in its own subprocess (`--stage`), which times its model load
apart from the stage itself and reports wall and CPU seconds, RSS after the model load and the peak RSS
(`ru_maxrss`). The parent records, around each subprocess, the load average and how many cores *other*
processes kept busy (/proc/stat minus the child's own CPU time): this machine is shared.

Grid: one cache per token count (the cache always holds all 4,096 latents: its cost does not depend on how many
are explained); records for every (tokens, latents) pair on that cache; explain + score for the `--llm` pairs only
(the LLM is the cost: ~13 s per latent on 2 idle cores, ~10 min of wall time on a saturated machine); caches of
wider random coders (`random:N:32`) at the smallest token count, for how the cache grows with the coder's width
(the all-pairs decoder-neighbour search is quadratic in it); and explain + score of every recorded latent by an
instant LLM (`--instant`), for lantern's own cost per call and per latent. Then least-squares fits per stage.

    python benchmarks/bench_scale.py                   # ~35 min of CPU on 2 idle cores; writes bench_scale_results.json
    python benchmarks/bench_scale.py --fit-only        # refit, count prefix sharing, print the tables from the JSON

`--keep` reuses the work directory and skips the cells already in the JSON, so an interrupted grid can be resumed
or extended. `--llm-model` replaces the LLM of the `--llm` runs (default: `lantern run`'s default LLM). Smallest
size (does it still run? keep its JSON out of benchmarks/):

    python benchmarks/bench_scale.py --tokens 1536 --latents 1,4096 --llm 1536:1 --widths "" --instant 1536 \
        --llm-model DIR --work-dir /tmp/s --json /tmp/s.json     # DIR: a tiny Hugging Face model; then --fit-only
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "bench_scale_results.json"
_CLK = os.sysconf("SC_CLK_TCK")


def _rss_mb() -> float:
    """Current resident set of this process (MB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _usage(run_dir: Path, stage: str) -> dict:
    """Calls and tokens of a stage, from the run's own usage file (one row per LLM call)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(run_dir / "usage" / f"{stage}.parquet").to_pylist()
    return {"calls": len(rows), "latents": len({(r["coder"], r["latent"]) for r in rows}),
            "prompt_tokens": int(sum(r["prompt_tokens"] for r in rows)),
            "completion_tokens": int(sum(r["completion_tokens"] for r in rows)),
            "cache_hits": int(sum(r["cached"] for r in rows)), "failed": int(sum(r["failed"] for r in rows)),
            "call_seconds": float(sum(r["seconds"] for r in rows))}


def instant_client(run_dir: Path, concurrency: int):
    """An LLM that answers at once (a fixed explanation; "Yes" at P = 0.6 for every scorer prompt), behind the real
    response cache and queue: what remains of a stage's time is lantern's own work per call and per latent
    (prompts, queue, SQLite cache, parsing, metrics with bootstrap intervals, files), which a GPU server cannot
    take off the client."""
    import math

    from lantern.llm.base import Capabilities, LLMClient, Response
    from lantern.llm.response_cache import CachedClient

    class InstantLLM(LLMClient):
        backend, model_id = "instant", "instant"
        capabilities = Capabilities(logprobs=True)

        async def acomplete(self, batch):
            return [Response(text="the word of between two nouns", completion_tokens=6) if r.max_tokens > 1 else
                    Response(text="Yes", completion_tokens=1,
                             first_token_logprobs={"Yes": math.log(0.6), "No": math.log(0.4)}) for r in batch]

    return CachedClient(InstantLLM(), run_dir / "llm_cache.sqlite", concurrency=concurrency)


def run_stage(stage: str, run_dir: Path) -> None:
    """Child process: one stage of one run directory, timed and measured; result in run_dir/bench-<stage>.json."""
    import torch

    from lantern.config import RunConfig
    from lantern.io import write_json

    out: dict = {"stage": stage, "rss_imports_mb": _rss_mb(), "threads": torch.get_num_threads()}
    cfg = RunConfig.load(run_dir)
    subject = None
    if stage in ("explain-instant", "score-instant"):
        from lantern.models.loading import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
        out["rss_before_mb"] = _rss_mb()
        wall, cpu = time.perf_counter(), _cpu_s()
        client = instant_client(run_dir, cfg.llm.concurrency)
        if stage == "explain-instant":
            from lantern.pipeline.explain_stage import run_explain

            out["explained"] = run_explain(cfg, client, tokenizer)["explained"]
        else:
            from lantern.pipeline.score_stage import run_score

            out["scored"] = run_score(cfg, client, tokenizer)["scored"]
        out["usage"] = _usage(run_dir, stage.split("-")[0])
        out["stage_s"] = time.perf_counter() - wall
        out["stage_cpu_s"] = _cpu_s() - cpu
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        write_json(run_dir / f"bench-{stage}.json", out)
        return
    if stage != "records":
        from lantern.models.loading import load_subject_model

        start = time.perf_counter()
        subject = load_subject_model(cfg.model)
        out["load_s"] = time.perf_counter() - start
    out["rss_before_mb"] = _rss_mb()
    wall, cpu = time.perf_counter(), _cpu_s()
    if stage == "cache":
        from lantern.pipeline.cache_stage import run_cache

        result = run_cache(cfg, subject)
        out["n_tokens"] = result["n_tokens"]
        out["nnz"] = int(sum(m["nnz"] for m in result["manifests"].values()))
    elif stage == "records":
        from lantern.pipeline.records_stage import run_records

        out["records"] = run_records(cfg)["latents"]
    else:
        from lantern.llm.factory import make_client

        client = make_client(cfg.llm, cfg.path, subject)
        try:
            if stage == "explain":
                from lantern.pipeline.explain_stage import run_explain

                result = run_explain(cfg, client, subject.tokenizer, subject=subject)
                out["explained"], out["failed"] = result["explained"], result["failed"]
            else:
                from lantern.pipeline.score_stage import run_score

                result = run_score(cfg, client, subject.tokenizer, subject=subject)
                out["scored"], out["failed_answers"] = result["scored"], result["failed_answers"]
        finally:
            client.close()
        out["usage"] = _usage(run_dir, stage)
    out["stage_s"] = time.perf_counter() - wall
    out["stage_cpu_s"] = _cpu_s() - cpu
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json(run_dir / f"bench-{stage}.json", out)


def _machine() -> tuple[float, float]:
    """(wall clock, CPU-seconds busy on the whole machine so far)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return time.perf_counter(), (sum(fields[:8]) - fields[3] - fields[4]) / _CLK


def spawn(stage: str, run_dir: Path) -> dict:
    """Run one stage in a fresh interpreter; add what the parent sees: wall, child CPU, others' cores, load."""
    load_before = os.getloadavg()
    before = _machine()
    with open(run_dir / f"bench-{stage}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--stage", stage, "--run-dir", str(run_dir)],
                                stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
    after = _machine()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{stage} failed in {run_dir}: see {run_dir / f'bench-{stage}.log'}")
    out = json.loads((run_dir / f"bench-{stage}.json").read_text())
    child_cpu = usage.ru_utime + usage.ru_stime
    wall = after[0] - before[0]
    out.update(process_wall_s=wall, process_cpu_s=child_cpu, process_peak_rss_mb=usage.ru_maxrss / 1024,
               others_cores=max(0.0, (after[1] - before[1]) - child_cpu) / wall,
               load_before=[round(x, 2) for x in load_before], load_after=[round(x, 2) for x in os.getloadavg()])
    return out


def new_run(run_dir: Path, coders: list[str], tokens: int, latents: int, cache_from: Path | None = None,
            llm_model: str | None = None) -> None:
    """A run directory with `lantern run`'s defaults; `cache_from` shares another run's cache (read only);
    `llm_model` replaces the default LLM (None keeps it)."""
    from lantern.config import LLMConfig, RunConfig

    run_dir.mkdir(parents=True, exist_ok=True)
    RunConfig(run_dir=str(run_dir), coders=coders, tokens=tokens, latents=latents,
              llm=LLMConfig(model=llm_model)).save()
    if cache_from is not None and not (run_dir / "cache").exists():
        (run_dir / "cache").symlink_to(cache_from.resolve() / "cache")


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(args) -> dict:
    base = Path(args.work_dir)
    if base.exists() and not args.keep:
        shutil.rmtree(base)
    results = json.loads(Path(args.json).read_text()) if args.keep and Path(args.json).exists() else {"runs": []}
    results["command"] = " ".join(sys.argv)
    done = {(r["stage"], r["coder"], r["tokens"], r["latents"]) for r in results["runs"]}
    tokens = [int(t) for t in args.tokens.split(",")]
    latents = [int(n) for n in args.latents.split(",")]
    llm = [tuple(int(x) for x in pair.split(":")) for pair in args.llm.split(",") if pair]
    widths = [int(w) for w in args.widths.split(",") if w]

    def record(stage: str, coder: str, t: int, n: int, run_dir: Path) -> None:
        if (stage, coder, t, n) in done:
            return
        row = {"stage": stage, "coder": coder, "tokens": t, "latents": n, **spawn(stage, run_dir)}
        if stage == "cache":
            row["cache_bytes"] = _dir_bytes(run_dir / "cache")
        results["runs"].append(row)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"{stage:8s} {coder:14s} tokens {t:>7d} latents {n:>5d}: {row['stage_s']:7.1f}s wall, "
              f"{row['stage_cpu_s']:7.1f}s CPU, peak {row['peak_rss_mb']:6.0f} MB, others {row['others_cores']:.2f} "
              f"cores, load {row['load_before'][0]}", flush=True)

    for t in tokens:
        new_run(base / f"T{t}", ["sae"], t, 8, llm_model=args.llm_model)
        record("cache", "sae", t, 0, base / f"T{t}")
    for t in tokens:
        for n in latents:
            new_run(base / f"T{t}-L{n}", ["sae"], t, n, cache_from=base / f"T{t}", llm_model=args.llm_model)
            record("records", "sae", t, n, base / f"T{t}-L{n}")
    for t, n in llm:
        run_dir = base / f"T{t}-L{n}"
        if not (run_dir / "records").exists():
            new_run(run_dir, ["sae"], t, n, cache_from=base / f"T{t}", llm_model=args.llm_model)
            record("records", "sae", t, n, run_dir)
        record("explain", "sae", t, n, run_dir)
        record("score", "sae", t, n, run_dir)
    for t in [int(x) for x in args.instant.split(",") if x]:
        run_dir = base / f"T{t}-L4096-instant"
        new_run(run_dir, ["sae"], t, 4096, cache_from=base / f"T{t}", llm_model=args.llm_model)
        if not (run_dir / "records").exists():
            (run_dir / "records").symlink_to((base / f"T{t}-L4096" / "records").resolve())
        record("explain-instant", "sae", t, 4096, run_dir)
        record("score-instant", "sae", t, 4096, run_dir)
    for w in widths:
        coder = f"random:{w}:32"
        new_run(base / f"W{w}", [coder], tokens[0], 8, llm_model=args.llm_model)
        record("cache", coder, tokens[0], 0, base / f"W{w}")
    return results


def _fit(rows: list[dict], features, target: str) -> dict:
    """Least squares of `target` on [1, *features(row)]; coefficients, R² and the largest relative residual."""
    X = np.array([[1.0, *features(r)] for r in rows])
    y = np.array([r[target] for r in rows])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    pred = X @ coef
    ss = float(((y - y.mean()) ** 2).sum())
    return {"coef": coef.tolist(), "n": len(rows), "r2": 1 - float(((y - pred) ** 2).sum()) / ss if ss else 1.0,
            "max_rel_residual": float(np.max(np.abs(y - pred) / np.maximum(np.abs(y), 1e-9)))}


def fits(results: dict) -> dict:
    runs = results["runs"]
    sae = lambda stage: [r for r in runs if r["stage"] == stage and r["coder"] == "sae"]
    out: dict = {}
    cache = sae("cache")
    if len(cache) >= 2:
        for target in ("stage_s", "stage_cpu_s", "peak_rss_mb", "cache_bytes"):
            out[f"cache {target} ~ 1 + tokens"] = _fit(cache, lambda r: [r["n_tokens"]], target)
    widths = [r for r in runs if r["stage"] == "cache" and r["tokens"] == min(c["tokens"] for c in cache)]
    if len(widths) >= 2:
        width = lambda r: [4096 if r["coder"] == "sae" else int(r["coder"].split(":")[1])]
        for target in ("stage_s", "stage_cpu_s", "peak_rss_mb"):
            out[f"cache {target} ~ 1 + width (fixed tokens)"] = _fit(widths, width, target)
    records = sae("records")
    for r in records:  # latents actually recorded (a request for 4096 gets the eligible ones)
        r["recorded"] = sum(r["records"].values())
    if len(records) >= 4:
        feats = lambda r: [r["tokens"], r["recorded"], r["tokens"] * r["recorded"]]
        for target in ("stage_s", "stage_cpu_s", "peak_rss_mb"):
            out[f"records {target} ~ 1 + tokens + recorded + tokens*recorded"] = _fit(records, feats, target)
    for stage in ("explain-instant", "score-instant"):
        rows = sae(stage)
        if len(rows) >= 2:
            for r in rows:
                r["calls"] = r["usage"]["calls"]
            out[f"{stage} stage_cpu_s ~ 1 + calls"] = _fit(rows, lambda r: [r["calls"]], "stage_cpu_s")
    for stage in ("explain", "score"):
        rows = sae(stage)
        if len(rows) >= 2:
            for r in rows:
                r["calls"], r["prompt_tokens"] = r["usage"]["calls"], r["usage"]["prompt_tokens"]
            for target in ("stage_s", "stage_cpu_s", "peak_rss_mb"):
                out[f"{stage} {target} ~ 1 + calls"] = _fit(rows, lambda r: [r["calls"]], target)
            out[f"{stage} stage_s ~ 1 + prompt_tokens"] = _fit(rows, lambda r: [r["prompt_tokens"]], "stage_s")
    return out


def per_latent_usage(results: dict) -> dict:
    """Calls, prompt and completion tokens per explained latent, per LLM stage, pooled over all runs."""
    out = {}
    for stage in ("explain", "score", "explain-instant", "score-instant"):
        rows = [r for r in results["runs"] if r["stage"] == stage]
        latents = sum(r["usage"]["latents"] for r in rows)
        if latents:
            out[stage] = {key: sum(r["usage"][key] for r in rows) / latents
                          for key in ("calls", "prompt_tokens", "completion_tokens")}
            out[stage]["latents"] = latents
            out[stage]["seconds_per_call"] = sum(r["stage_s"] for r in rows) / sum(r["usage"]["calls"] for r in rows)
            out[stage]["cpu_seconds_per_latent"] = sum(r["stage_cpu_s"] for r in rows) / latents
    return out


def prefix_sharing(run_dir: Path) -> dict:
    """What a server's prefix cache can reuse in a finished run: per LLM stage, prompt tokens per call and the
    longest prefix shared byte for byte (explain: by every latent's prompt; detection / fuzzing: by the prompts of
    one latent, which repeat the instructions and that latent's explanation). Counted with the run's tokenizer on
    the prompts the stages send (explain: as stored; scorers: rebuilt from the records and the explanations)."""
    import pyarrow.parquet as pq

    from lantern.config import RunConfig
    from lantern.models.loading import load_tokenizer
    from lantern.pipeline.common import examples_by_latent
    from lantern.pipeline.files import records_file
    from scorer_prompts import scorer_items as _items, scorer_request as _request

    cfg = RunConfig.load(run_dir)
    tokenizer = load_tokenizer(cfg.model)
    count = lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)
    explanations = [r for r in pq.read_table(run_dir / "explanations.parquet").to_pylist() if not r["failed"]]
    explain = [r["prompt"] for r in pq.read_table(run_dir / "explanations.parquet").to_pylist()]
    out = {"latents": len(explanations), "explain": {
        "calls": len(explain), "prompt_tokens_per_call": float(np.mean([1 + count(p) for p in explain])),
        "shared_prefix_tokens": count(os.path.commonprefix(explain)) if len(explain) > 1 else None}}
    for scorer in ("detection", "fuzzing"):
        calls, tokens, shared = [], [], []
        for row in explanations:
            rows = examples_by_latent(records_file(run_dir, row["coder"]))[row["latent"]]
            prompts = [_request(scorer, tokenizer, row["explanation"], item).prompt
                       for item in _items(scorer, rows, cfg)]
            if prompts:
                calls.append(len(prompts))
                tokens.append(sum(1 + count(p) for p in prompts))
                shared.append(count(os.path.commonprefix(prompts)))
        out[scorer] = {"calls_per_latent": float(np.mean(calls)), "prompt_tokens_per_latent": float(np.mean(tokens)),
                       "prompt_tokens_per_call": float(np.sum(tokens) / np.sum(calls)),
                       "shared_prefix_tokens_per_latent": float(np.mean(shared))}
    return out


def report(results: dict) -> None:
    print("\n| stage | coder | tokens | latents | wall s | CPU s | load s | RSS before MB | peak RSS MB "
          "| others' cores | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        print(f"| {r['stage']} | {r['coder']} | {r['tokens']:,} | {r['latents'] or 'all 4,096 cached'} | "
              f"{r['stage_s']:.1f} | {r['stage_cpu_s']:.1f} | {r.get('load_s', 0):.1f} | {r['rss_before_mb']:.0f} | "
              f"{r['peak_rss_mb']:.0f} | {r.get('others_cores', float('nan')):.2f} | {r['load_before'][0]}–{r['load_after'][0]} |")
    print()
    for name, fit in results.get("fits", {}).items():
        coef = ", ".join(f"{c:.4g}" for c in fit["coef"])
        print(f"{name}: coef [{coef}], R² {fit['r2']:.3f}, n {fit['n']}, max |rel. residual| "
              f"{fit['max_rel_residual']:.2f}")
    print(json.dumps(results.get("per_latent", {}), indent=1))
    print(json.dumps(results.get("prefix", {}), indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="16384,65536")
    parser.add_argument("--latents", default="8,32,128,4096", help="records for each (tokens, latents)")
    parser.add_argument("--llm", default="16384:4,16384:12",
                        help="tokens:latents pairs that also get explain + score")
    parser.add_argument("--widths", default="16384,65536",
                        help="random:N:32 coder widths cached at the first token count")
    parser.add_argument("--instant", default="16384",
                        help="token counts whose all-latent records get explain + score by an instant LLM")
    parser.add_argument("--llm-model", default=None,
                        help="the LLM of the --llm runs (default: lantern run's default LLM); e.g. `subject`")
    parser.add_argument("--work-dir", default="/tmp/bench-scale")
    parser.add_argument("--json", default=str(RESULTS))
    parser.add_argument("--keep", action="store_true", help="keep the work dir and JSON; skip measured cells")
    parser.add_argument("--fit-only", action="store_true")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage(args.stage, Path(args.run_dir))
        return
    results = json.loads(Path(args.json).read_text()) if args.fit_only else measure(args)
    results["fits"] = fits(results)
    results["per_latent"] = per_latent_usage(results)
    if args.fit_only:
        results["prefix"] = {d.name: prefix_sharing(d) for d in sorted(Path(args.work_dir).glob("T*-L*"))
                             if (d / "explanations.parquet").exists() and not d.name.endswith("-instant")}
    Path(args.json).write_text(json.dumps(results, indent=1))
    report(results)


if __name__ == "__main__":
    main()
