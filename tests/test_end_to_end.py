"""`lantern run` on the real embedded Gemma 3 270M, with the real in-process LLM, over a small corpus slice.

Slow (a minute or two on 2 cores, plus about a minute to dequantise the model on a fresh machine)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lantern.cache.reader import LatentCache
from lantern.records.windows import window_activations

pytestmark = pytest.mark.slow

CODERS = ["sae", "neurons-topk"]
CODER_NAMES = ["sae", "neurons-topk32"]  # the names the specs get in the run directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "run"
    cmd = [sys.executable, "-m", "lantern.cli", "run", "--run-dir", str(out), "--tokens", "8192", "--latents", "2",
           "--coders", ",".join(CODERS)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "run directory:" in done.stderr + done.stdout
    return out


def test_run_directory_is_complete(run_dir: Path):
    for name in ("config.json", "explanations.parquet", "scores.parquet", "examples.parquet", "summary.json",
                 "llm_cache.sqlite", "cache/tokens.npy"):
        assert (run_dir / name).exists(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["tokens"] == 8192 and config["coders"] == CODERS
    manifest = json.loads((run_dir / "cache/sae/manifest.json").read_text())
    assert manifest["n_tokens"] == 8192 and manifest["coder"]["num_latents"] == 4096
    assert manifest["model"] == "embedded"
    tokens = np.load(run_dir / "cache/tokens.npy")
    assert (tokens[:, 0] == 2).all() and (tokens[:, 1:] != 2).all()


def test_splits_disjoint_and_negatives_verified(run_dir: Path):
    for coder in CODER_NAMES:
        rows = pq.read_table(run_dir / "records" / f"{coder}.parquet").to_pylist()
        cache = LatentCache(run_dir / "cache", coder)
        latents = {r["latent"] for r in rows}
        assert len(latents) == 2
        for latent in latents:
            mine = [r for r in rows if r["latent"] == latent]
            spans = {split: set() for split in ("explain", "test")}
            for r in mine:
                spans[r["split"]].update(range(r["start"], r["start"] + len(r["tokens"])))
            assert not spans["explain"] & spans["test"], f"{coder}/{latent}: explain and test share tokens"
            token_index, values = cache.activations(latent)
            negatives = [r for r in mine if r["kind"] == "negative"]
            assert negatives
            acts = window_activations(token_index, values, np.array([r["start"] for r in negatives]), 32)
            assert not acts.any(), "a negative window activates the latent"
            for r in mine:
                if r["kind"] == "activating":
                    assert max(r["activations"]) > 0


def test_scores_in_range_and_counts_add_up(run_dir: Path):
    scores = pq.read_table(run_dir / "scores.parquet").to_pylist()
    examples = pq.read_table(run_dir / "examples.parquet").to_pylist()
    explanations = pq.read_table(run_dir / "explanations.parquet").to_pylist()
    assert len(explanations) == 2 * len(CODERS)
    assert all(r["prompt_tokens"] > 0 for r in explanations)
    explained = [r for r in explanations if not r["failed"]]
    assert len(scores) == 2 * len(explanations)  # a failed explanation's latent has a row saying so
    skipped = [r for r in scores if str(r.get("note") or "").startswith("not scored")]
    assert len(skipped) == 2 * (len(explanations) - len(explained))
    for row in (r for r in scores if r not in skipped):
        for metric in ("accuracy", "balanced_accuracy", "precision", "recall", "f1"):
            assert 0.0 <= row[metric] <= 1.0
        assert row["n"] + row["n_failed"] == sum(
            1 for e in examples if (e["coder"], e["latent"], e["scorer"]) == (row["coder"], row["latent"], row["scorer"]))
        assert row["n_pos"] > 0 and row["n_neg"] > 0
    read = [e for e in examples if e["read_as"] != "failed"]
    assert read and all(0.0 <= e["p_yes"] <= 1.0 for e in read)
    # log-probs are available in-process, so every readable verdict must come from them
    assert {e["read_as"] for e in read} == {"logprobs"}


def test_rerun_repeats_no_llm_call(run_dir: Path):
    """A second run over the same directory answers every prompt from the response cache."""
    cmd = [sys.executable, "-m", "lantern.cli", "run", "--run-dir", str(run_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    examples = pq.read_table(run_dir / "examples.parquet").to_pylist()
    explanations = pq.read_table(run_dir / "explanations.parquet").to_pylist()
    assert all(e["cached"] for e in explanations)
    assert all(e["cached"] for e in examples if e["error"] is None)
