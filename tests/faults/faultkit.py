"""Shared by the fault suite: a scripted, deterministic LLM served over real HTTP by the fault-injecting server
of tests/test_llm_faults.py, `lantern` run as a real subprocess, and the comparison of two run directories."""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

TESTS = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]), "COLUMNS": "1000"}
"""Subprocess environment: this checkout importable, and lines wide enough that no message is wrapped."""

WORDS = ("numbers", "names", "verbs", "the word of", "code", "punctuation", "capital letters", "plurals",
         "places", "dates", "questions", "endings in -ing")
VOLATILE = {"seconds", "cached_seconds", "cached", "attempts", "retry_reasons", "cache_hits", "paid_prompt_tokens",
            "paid_completion_tokens", "evaluated_prompt_tokens", "retries", "llm_seconds", "forward_seconds"}
"""Columns that say how an answer was obtained (time, cache hit, retries), not what it is."""


def is_score_prompt(prompt: str) -> bool:
    return "Answer yes or no" in prompt


def scripted_answer(prompt: str) -> dict:
    """A /v1/completions body that depends only on the prompt: a short explanation for explain prompts, a
    yes/no verdict with log-probs for detection and fuzzing prompts."""
    digest = hashlib.sha256(prompt.encode()).digest()
    if is_score_prompt(prompt):
        p_yes = 0.05 + 0.9 * digest[0] / 255
        text = " Yes" if p_yes >= 0.5 else " No"
        top = {" Yes": math.log(p_yes), " No": math.log(1 - p_yes)}
    else:
        text = f" {WORDS[digest[0] % len(WORDS)]} near {WORDS[digest[1] % len(WORDS)]}"
        top = {text.split()[0]: math.log(0.9)}
    return {"id": "cmpl-scripted", "object": "text_completion", "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop",
                         "logprobs": {"tokens": [text.split()[0]], "token_logprobs": [list(top.values())[0]],
                                      "top_logprobs": [top]}}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": 0}}


def lantern_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lantern.cli", *args]


def lantern(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(lantern_cmd(*args), capture_output=True, text=True, timeout=timeout, env=ENV)


def write_corpus(path: Path) -> Path:
    path.write_text(" ".join(f"word{i % 97} and the {i % 13} of Line {i % 7}: x{i % 5}" for i in range(4000)))
    return path


def stored_answers(run_dir: Path) -> int:
    """Answers committed to the run's response cache (0 before it exists)."""
    db = Path(run_dir) / "llm_cache.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        except sqlite3.OperationalError:  # killed before the table was created
            return 0


def usage_counts(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Per stage: (response-cache hits, misses) from usage/<stage>.parquet's `cached` column."""
    out = {}
    for path in sorted((Path(run_dir) / "usage").glob("*.parquet")):
        cached = pq.read_table(path).column("cached").to_pylist()
        out[path.stem] = (sum(cached), len(cached) - sum(cached))
    return out


def _table(path: Path) -> list[dict]:
    table = pq.read_table(path)
    return table.drop_columns([c for c in table.column_names if c in VOLATILE]).to_pylist()


def _same(a, b) -> bool:
    """Equal, with NaN equal to NaN (metrics of latents with nothing to score are NaN in both)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _result_files(run: Path) -> list[str]:
    return sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file() and (
        p.suffix in (".parquet", ".npy", ".npz") or p.name in ("manifest.json", "shard.json")))


def assert_same_results(run: Path, reference: Path) -> list[str]:
    """Every Parquet file of the two runs holds the same rows (columns of VOLATILE aside), and every cache file
    (tokens, shards, statistics, window index, manifests without their timings) is identical. Returns the
    files compared."""
    files, mine = _result_files(reference), _result_files(run)
    assert mine == files, f"only in the run: {set(mine) - set(files)}, only in the reference: {set(files) - set(mine)}"
    for name in files:
        a, b = run / name, reference / name
        if a.suffix == ".parquet":
            rows_a, rows_b = _table(a), _table(b)
            assert len(rows_a) == len(rows_b), f"{name}: {len(rows_a)} rows, the reference has {len(rows_b)}"
            for i, (x, y) in enumerate(zip(rows_a, rows_b)):
                assert _same(x, y), f"{name} row {i} differs: {x} != {y}"
        elif a.name == "manifest.json":
            ma, mb = (json.loads(p.read_text()) for p in (a, b))
            for m in (ma, mb):
                for key in VOLATILE:
                    m.pop(key, None)
            assert ma == mb, f"{name} differs"
        elif a.suffix == ".npz":
            with np.load(a) as za, np.load(b) as zb:
                assert sorted(za.files) == sorted(zb.files), name
                assert all(np.array_equal(za[k], zb[k]) for k in za.files), name
        else:
            assert a.read_bytes() == b.read_bytes(), f"{name} differs"
    return files
