"""Every script in benchmarks/ still runs on today's code: each one once, at its smallest size, in a subprocess.

Nothing here is timed and nothing is asserted about speed: a script must exit 0 and print (or write) what it
reports. Real components throughout: the tiny Gemma 3 of conftest (as subject and as LLM where a script takes
a model), the embedded Gemma 3 270M where a script is about it (marked slow), real run directories, real files.
Every output goes to pytest's tmp_path (`TMPDIR` too, for the scripts' own temporary folders), never to the
repository. What CI does not have (the delphi harness with its own venv) is skipped with a message saying so.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import TINY_HIDDEN, write_sparsify_folder

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
DELPHI_HARNESS = REPO.parent / "shared" / "baselines" / "delphi"
DELPHI_TOKENS = 8 * 256


def run_script(script: str, *args, tmp_path: Path, env: dict | None = None, expect_ok: bool = True,
               timeout: float = 900) -> subprocess.CompletedProcess:
    """`python benchmarks/<script> args...` from tmp_path, with its temporary folders in tmp_path. One torch thread:
    the work is tiny, and spinning threads on a busy machine cost more than they give."""
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    full_env = {**os.environ, "TMPDIR": str(scratch), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if expect_ok:
        assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def _is_script(path: Path) -> bool:
    """A file run as `python benchmarks/<name>.py`, not a helper module the scripts import."""
    text = path.read_text()
    return "__main__" in text or "parse_args(" in text or "sys.argv" in text


def test_every_script_has_a_smoke_test():
    """A new benchmark script gets a smoke test here."""
    source = Path(__file__).read_text()
    missing = [p.name for p in sorted(BENCH.glob("*.py")) if _is_script(p) and f'"{p.name}"' not in source]
    assert not missing, f"benchmarks without a smoke test in {Path(__file__).name}: {missing}"


# ------------------------------------------------------------------------------------------ no model at all

def test_bench_llm_queue(tmp_path):
    done = run_script("bench_llm_queue.py", "--latency", "0.01", "--capacities", "1,2", "--per-latent", "4",
                      tmp_path=tmp_path)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["capacity"] for r in rows] == [1, 2]
    assert all(r["queue_efficiency"] > 0 for r in rows)
    assert "| capacity C |" in done.stdout


# ------------------------------------------------------------------------------------------ a tiny run directory

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, model_dir) -> Path:
    """A run with cache, records and explanations: the tiny Gemma 3 as subject and as the in-process LLM, one
    sparsify SAE at layers.1, 4,096 tokens of the embedded corpus, 2 latents."""
    from lantern.config import LLMConfig, RunConfig
    from lantern.explain.settings import ExplainerConfig
    from lantern.llm.factory import make_client
    from lantern.models.loading import load_subject_model
    from lantern.pipeline.cache_stage import run_cache
    from lantern.pipeline.explain_stage import run_explain
    from lantern.pipeline.records_stage import run_records
    from lantern.records.build import RecordConfig

    root = tmp_path_factory.mktemp("bench-run")
    coder = root / "coder" / "layers.1"
    write_sparsify_folder(coder, TINY_HIDDEN, 48, k=6, seed=1)
    cfg = RunConfig(run_dir=str(root / "tiny-run"), model=str(model_dir), coders=[str(coder)], tokens=4096, seq_len=128,
                    latents=2, records=RecordConfig(ctx_len=12, tokens_before=6, n_explain=6, n_test_per_decile=1,
                                                    n_negatives=4, n_similar_negatives=0, n_neighbour_negatives=0,
                                                    min_windows=16),
                    explainer=ExplainerConfig(max_tokens=16), llm=LLMConfig(model=str(model_dir), batch_size=16))
    cfg.save()
    subject = load_subject_model(str(model_dir))
    run_cache(cfg, subject)
    run_records(cfg)
    client = make_client(cfg.llm, cfg.path, subject)
    try:
        run_explain(cfg, client, subject.tokenizer, subject=subject)
    finally:
        client.close()
    explained = pq.read_table(cfg.path / "explanations.parquet").to_pylist()
    assert any(not r["failed"] for r in explained), "the tiny run has no explanation to score"
    return cfg.path


def test_audit_record_effects(tmp_path, tiny_run):
    done = run_script("audit_record_effects.py", tiny_run, tmp_path=tmp_path)
    rows = [line for line in done.stdout.splitlines() if line.startswith(f"| {tiny_run.name} |")]
    assert len(rows) == 1 and "span-count cue AUROC" in done.stdout


def test_bench_prompt_tokens(tmp_path, tiny_run):
    done = run_script("bench_prompt_tokens.py", tiny_run, tmp_path=tmp_path)
    out = json.loads(done.stdout)
    assert out["latents"] >= 1
    assert set(out["stages"]) == {"explain", "detection", "fuzzing"}
    assert out["total"]["prompt_tokens_per_latent"] > 0


def test_bench_answer_formats(tmp_path, tiny_run):
    """The tiny LLM's answers are not readable as yes/no: the script must still report both modes."""
    result = tmp_path / "answers.json"
    done = run_script("bench_answer_formats.py", tiny_run, "--latents", "1", "--per-prompt", "2",
                      "--resamples", "20", "--json", result, tmp_path=tmp_path)
    assert "| scorer | texts / prompt |" in done.stdout and "Cohen's kappa" in done.stdout
    saved = json.loads(result.read_text())
    assert [arm["per_prompt"] for arm in saved["arms"]] == [1, 2]
    assert set(saved["agreement"]) == {"detection", "fuzzing"}


# ------------------------------------------------------------------------------------------ planted validation runs

def test_tune_judge_prompts(tmp_path, model_dir):
    done = run_script("tune_judge_prompts.py", "--run-dir", tmp_path / "tune", "--tokens", "2048", "--forms",
                      "words", "--scorers", "detection,fuzzing", "--model", model_dir, "--llm-model", model_dir,
                      tmp_path=tmp_path)
    assert "tuning rules:" in done.stdout
    for scorer in ("detection", "fuzzing"):
        assert f"{scorer} form=words: AUROC TRUE" in done.stdout


def test_validate_intervention(tmp_path, model_dir):
    """Two planted rules recorded (one gets scored); a target KL the random tiny model can reach."""
    done = run_script("validate_intervention.py", tmp_path / "ival", "--tokens", "2048", "--latents", "2", "--kl",
                      "0.01", "--model", model_dir, "--llm-model", model_dir, tmp_path=tmp_path)
    assert "intervention" in done.stdout and "seconds " in done.stdout
    summary = json.loads((tmp_path / "ival" / "validate" / "summary.json").read_text())
    assert summary["settings"]["seconds"]["score"] > 0
    steered = [json.loads(f.read_text()) for f in (tmp_path / "ival" / "steering").rglob("*.json")]
    assert any(c["reached"] for s in steered for c in s["calibrations"])


# ------------------------------------------------------------------------------------------ delphi comparison

@pytest.fixture(scope="module")
def delphi_like_base(tmp_path_factory, tokenizer, bos) -> Path:
    """What bench_vs_delphi's workers read from the harness's base dir, made of real files: a tiny Gemma 3 with 7
    layers (the workers hook `layers.6`) saved as `gemma3-270m/`, a sparsify SAE at `sae/layers.6/`, and 8
    sequences of 256 real tokens of the embedded corpus (BOS first, as the harness makes them) as `data/tokens.npy`."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from lantern.data.corpus import EMBEDDED_CORPUS, tokenize_corpus

    base = tmp_path_factory.mktemp("delphi-base")
    torch.manual_seed(0)
    layers = 7
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=TINY_HIDDEN, intermediate_size=2 * TINY_HIDDEN,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        max_position_embeddings=256, sliding_window=16,
        layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"],
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    Gemma3ForCausalLM(config).eval().save_pretrained(base / "gemma3-270m")
    tokenizer.save_pretrained(base / "gemma3-270m")
    write_sparsify_folder(base / "sae" / "layers.6", TINY_HIDDEN, 96, k=8, seed=0)
    (base / "data").mkdir()
    corpus = tokenize_corpus(EMBEDDED_CORPUS, tokenizer, seq_len=256, max_tokens=DELPHI_TOKENS, bos_id=bos)
    np.save(base / "data" / "tokens.npy", corpus.tokens.astype(np.int32))
    return base


def _delphi_env(tmp_path: Path, base: Path) -> dict:
    return {"DELPHI_BASE": str(base), "BENCH_DIR": str(tmp_path / "bench"), "THREADS": "1"}


def test_bench_vs_delphi_workers(tmp_path, delphi_like_base):
    """lantern's side of the comparison: every worker mode on the tiny model (the orchestrator needs delphi)."""
    env = _delphi_env(tmp_path, delphi_like_base)
    tokens = delphi_like_base / "data" / "tokens.npy"
    n_tokens = DELPHI_TOKENS
    common = ["--tokens-file", tokens, "--n-tokens", n_tokens, "--batch", "8"]
    out = {}
    for mode, extra in (("bare", []), ("cache", ["--cache-dir", tmp_path / "cache", "--profile"]),
                        ("alternate", ["--cache-dir", tmp_path / "alt", "--rounds", "1"]),
                        ("records", ["--cache-dir", tmp_path / "cache", "--profile", "--configs",
                                     "default,default_no_window_index,delphi_sized"])):
        result = tmp_path / f"{mode}.json"
        args = ["--worker", mode, "--result", result] + (common if mode != "records" else []) + extra
        run_script("bench_vs_delphi.py", *args, tmp_path=tmp_path, env=env)
        out[mode] = json.loads(result.read_text())
    assert out["bare"]["n_tokens"] == n_tokens and out["bare"]["seconds"] > 0
    assert out["cache"]["nnz"] > 0 and out["cache"]["bytes_per_nnz_with_tokens"] > 0 and out["cache"]["profile_top"]
    assert len(out["alternate"]["cache_over_neighbour_bares"]) == 1
    assert set(out["records"]["configs"]) == {"default", "default_no_window_index", "delphi_sized"}
    assert out["records"]["configs"]["default"]["records_built"] > 0


def test_bench_vs_delphi_summary_of_recorded_results(tmp_path):
    """--summary-only re-reads the recorded JSON (a copy: the script writes its summary back)."""
    copy = tmp_path / "results.json"
    copy.write_text((BENCH / "bench_vs_delphi_results.json").read_text())
    done = run_script("bench_vs_delphi.py", "--summary-only", "--out", copy, tmp_path=tmp_path)
    assert "| metric | value | goal |" in done.stdout and "delphi cache total / lantern cache" in done.stdout


def _delphi_built(base: Path) -> bool:
    return (DELPHI_HARNESS / "bench_cache.py").exists() and (base / "venv" / "bin" / "python").exists() \
        and (base / "data" / "tokens.npy").exists()


def test_bench_vs_delphi_without_the_harness_says_so(tmp_path):
    """The harness is looked for beside the repository (<repo>/../shared/baselines/delphi), not at a fixed path;
    without it (or its base dir) the orchestrator stops with a message naming what is missing."""
    env = {**_delphi_env(tmp_path, tmp_path / "no-base"), "DELPHI_HARNESS": ""}  # empty: the default
    done = run_script("bench_vs_delphi.py", "--tokens", "512", "--skip-10x", "--alt-rounds", "0", "--out",
                      tmp_path / "out.json", tmp_path=tmp_path, env=env, expect_ok=False)
    assert done.returncode != 0
    if (DELPHI_HARNESS / "bench_cache.py").exists():
        assert f"missing {tmp_path / 'no-base' / 'venv/bin/python'}" in done.stderr
    else:
        assert f"delphi harness not found at {DELPHI_HARNESS}" in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_bench_vs_delphi_orchestrator(tmp_path):
    """The whole comparison at its smallest size, where the delphi harness and its base dir (own venv) exist."""
    base = Path(os.environ.get("DELPHI_BASE") or Path.home() / ".cache/lantern-baselines/delphi-base")
    if not _delphi_built(base):
        pytest.skip(f"delphi harness not available (needs {DELPHI_HARNESS} and its built base dir {base}, with "
                    f"venv/; CI has neither): the lantern workers are smoke-tested on their own above")
    out = tmp_path / "out.json"
    env = {"DELPHI_BASE": str(base), "BENCH_DIR": str(tmp_path / "bench")}
    done = run_script("bench_vs_delphi.py", "--tokens", "512", "--skip-10x", "--alt-rounds", "1", "--alt-tokens",
                      "512", "--out", out, tmp_path=tmp_path, env=env, timeout=1800)
    assert "| metric | value | goal |" in done.stdout
    assert json.loads(out.read_text())["n_tokens"] == 512


# ------------------------------------------------------------------------------------------ the embedded 270M

@pytest.mark.slow
def test_bench_cache(tmp_path):
    done = run_script("bench_cache.py", "--tokens", "256", "--batch", "1", "--threads", "1", tmp_path=tmp_path)
    for line in ("bare forward to layers.6:", "full 18-layer trunk", "cache sae:", "cache neurons-topk:",
                 "cache neurons:", "peak RSS"):
        assert line in done.stdout, line


@pytest.mark.slow
def test_bench_repair(tmp_path):
    done = run_script("bench_repair.py", "--tokens", "256", "--shard-latents", "2048", "--batch-size", "1",
                      tmp_path=tmp_path)
    out = json.loads(done.stdout[done.stdout.index("{"):])
    assert out["shards"] == 2
    assert out["one_shard"]["byte_identical"] and out["every_shard"]["byte_identical"]


@pytest.mark.slow
def test_bench_llm_backends(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/install.sh builds it)")
    result = tmp_path / "backends.json"
    done = run_script("bench_llm_backends.py", "--explain-prompts", "1", "--score-prompts", "2", "--rounds", "1",
                      "--batch-size", "1", "--explain-tokens", "1", "--explain-new-tokens", "4", "--score-window", "16",
                      "--max-wait", "0", "--clean-cores", "99", "--threads", "1", "--json", result,
                      tmp_path=tmp_path)
    assert "speed ratio" in done.stdout
    saved = json.loads(result.read_text())
    assert {"explain/hf", "explain48/llama-completion", "score/llama-eval", "score/llama-completion-lp"} \
        <= set(saved["arms"])
    assert saved["checks"]["bos"]["n_prompts"] == 3


@pytest.mark.slow
def test_bench_scale(tmp_path, tiny_run):
    """The grid at one small token count: cache, records at two latent counts, explain + score of every recorded
    latent by the script's instant LLM; then --fit-only on what it wrote, its prefix count on the tiny run (a run
    explained by a real LLM, linked into the work dir as the grid's own LLM runs would be). The grid's `--llm` runs
    (`--llm 1536:1 --llm-model DIR` would use the tiny model) are left out: two more loads of the 270M (~25 s)."""
    work, result = tmp_path / "work", tmp_path / "scale.json"
    done = run_script("bench_scale.py", "--tokens", "1536", "--latents", "1,4096", "--llm", "", "--widths", "",
                      "--instant", "1536", "--work-dir", work, "--json", result, tmp_path=tmp_path)
    stages = [r["stage"] for r in json.loads(result.read_text())["runs"]]
    assert stages == ["cache", "records", "records", "explain-instant", "score-instant"]
    assert "| stage | coder |" in done.stdout
    (work / "T4096-L2-tiny").symlink_to(tiny_run, target_is_directory=True)
    run_script("bench_scale.py", "--fit-only", "--work-dir", work, "--json", result, tmp_path=tmp_path)
    saved = json.loads(result.read_text())
    assert "explain-instant" in saved["per_latent"]
    assert saved["prefix"]["T4096-L2-tiny"]["detection"]["calls_per_latent"] > 0


@pytest.mark.slow
def test_compare_explainers(tmp_path, model_dir):
    """Two explainers (and judges): the tiny model under two names; the subject is the embedded 270M."""
    models = []
    for name in ("tiny-a", "tiny-b"):
        (tmp_path / name).symlink_to(model_dir, target_is_directory=True)
        models.append(str(tmp_path / name))
    run_dir = tmp_path / "compare"
    done = run_script("compare_explainers.py", "--run-dir", run_dir, "--latents", "1", "--tokens", "2048",
                      "--models", ",".join(models), tmp_path=tmp_path)
    assert "| tiny-a | tiny-b | detection |" in done.stdout
    assert (run_dir / "compare" / "tiny-b.by-tiny-a.scores.parquet").exists()
