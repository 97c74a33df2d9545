"""Faults during a whole `lantern run` (tiny real Gemma 3, a sparsify SAE and top-k neurons, the scripted LLM over
real HTTP), each checked against one uninterrupted run.

kill -9 of `lantern run` at random moments in every stage.

Per seed, one run directory goes through a chain of real `lantern run` processes, each killed with SIGKILL in
the next stage: in the cache (once a random number of batch runs are on disk), in the records (once a random
number of records files landed), in explain and in score (when the scripted LLM server receives a random k-th
call of that stage). A last process runs to the end. Then:
- its results equal an uninterrupted run's: every Parquet file row for row (timing and cache-hit columns
  aside) and every cache file byte for byte;
- no completed LLM call was repeated: every answer the server gave was either committed to the response cache
  or lost with the killed process while in flight (at most the concurrency per kill), only those were asked
  again, and the last process's usage files count exactly the stored answers as response-cache hits.
(Cache resume after a kill mid-batch is also covered, per batch, by tests/test_resume.py; a kill of a bare LLM
queue by tests/test_llm_faults.py.)

An LLM server process killed with SIGKILL mid-run and started again a few seconds later: the run waits for it
(--llm-wait bounds the wait), continues, and ends with the same results.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import write_sparsify_folder
from faultkit import ENV, assert_same_results, is_score_prompt, lantern_cmd, scripted_answer, stored_answers, \
    usage_counts, write_corpus
from test_llm_faults import FaultyServer

CONCURRENCY = 4
SEEDS = [pytest.param(int(seed), marks=[pytest.mark.slow] if i else [])
         for i, seed in enumerate(os.environ.get("LANTERN_FAULT_SEEDS", "0,1").split(","))]
"""Kill moments are drawn from these seeds; the first runs in every suite, the others are marked slow."""
CODERS = ("layers_1", "neurons-topk8")


class Controller:
    """The scripted server's plan: answers everything, counts each stage's calls, and kills the current
    `lantern` process (SIGKILL) when the k-th call of the chosen stage arrives."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.kill_stage: str | None = None
        self.kill_at = 0
        self.calls: Counter = Counter()
        self.killed = threading.Event()

    def arm(self, proc, stage: str | None, k: int = 0) -> None:
        self.proc, self.kill_stage, self.kill_at = proc, stage, k
        self.calls = Counter()
        self.killed.clear()

    def __call__(self, prompt: str, attempt: int, call: int):
        stage = "score" if is_score_prompt(prompt) else "explain"
        self.calls[stage] += 1
        if stage == self.kill_stage and self.calls[stage] == self.kill_at and not self.killed.is_set():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.killed.set()
        return None


def _run_args(run: Path, model_dir: Path, corpus: Path, coder: Path, url: str) -> list[str]:
    return lantern_cmd("run", "--run-dir", str(run), "--model", str(model_dir), "--corpus", str(corpus),
                       "--coders", f"{coder},neurons-topk:8", "--layer", "1", "--tokens", "4096", "--latents", "3",
                       "--batch-size", "4", "--run-mb", "0", "--llm-url", url, "--llm-model", "m",
                       "--llm-concurrency", str(CONCURRENCY))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("kill-inputs")
    coder = root / "coders" / "layers.1"
    write_sparsify_folder(coder, d_in=64, num_latents=64, k=4)
    return model_dir, write_corpus(root / "corpus.txt"), coder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, inputs):
    """An uninterrupted run and the calls its server received per stage."""
    control = Controller()
    server = FaultyServer(control, answer=scripted_answer)
    run = tmp_path_factory.mktemp("kill-reference") / "run"
    try:
        done = subprocess.run(_run_args(run, *inputs, server.url), capture_output=True, text=True, timeout=600,
                              env=ENV)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(server.answered) == len(set(server.answered)), "a clean run asks each prompt once"
    assert control.calls["explain"] >= 4 and control.calls["score"] >= 20, control.calls
    return run, dict(control.calls)


def _stage_reached(run: Path) -> str:
    """Which stage a killed run was in, read from what it left."""
    if not all((run / "cache" / c / "manifest.json").exists() for c in CODERS) or \
            not (run / "cache" / "windows" / "meta.json").exists():
        return "cache"
    if not all((run / "records" / f"{c}{suffix}").exists()
               for c in CODERS for suffix in (".parquet", ".latents.parquet")):
        return "records"
    if not (run / "explanations.parquet").exists():
        return "explain"
    if not (run / "scores.parquet").exists():
        return "score"
    return "done"


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (polled every millisecond: on an idle machine the tiny model's
    cache and records stages last well under a second)."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.001)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("seed", SEEDS)
def test_kill9_in_every_stage_then_rerun_matches_and_repeats_no_call(seed, tmp_path, inputs, reference):
    reference_run, reference_calls = reference
    rng = random.Random(seed)
    run = tmp_path / "run"
    control = Controller()
    server = FaultyServer(control, answer=scripted_answer)
    landed, unstored, answered_per_process = [], [], []
    try:
        for stage in ("cache", "records", "explain", "score", None):
            before, answered_before = stored_answers(run), len(server.answered)
            log = open(tmp_path / f"{stage}.log", "w")
            proc = subprocess.Popen(_run_args(run, *inputs, server.url), stdout=log, stderr=log, env=ENV)
            if stage == "cache":  # after a random number of the 2 coders x 4 batches' runs are on disk
                runs_wanted = rng.randint(1, 6)
                count = lambda: sum(len(list((run / "cache" / c / "runs").glob("run-*[0-9]")))  # noqa: E731
                                    for c in CODERS)
                control.arm(proc, None)
                _kill_when(proc, lambda: count() >= runs_wanted)
            elif stage == "records":  # after a random one of the first three of the four records files lands
                files_wanted = rng.randint(1, 3)
                control.arm(proc, None)
                _kill_when(proc, lambda: len(list((run / "records").glob("*.parquet"))) >= files_wanted)
            elif stage is not None:
                control.arm(proc, stage, rng.randint(1, reference_calls[stage] - 1))
            proc.wait(timeout=600)
            log.close()
            answered = server.answered[answered_before:]
            answered_per_process.append(answered)
            if stage is None:
                assert proc.returncode == 0, (tmp_path / "None.log").read_text()[-3000:]
                break
            assert proc.returncode == -signal.SIGKILL, (tmp_path / f"{stage}.log").read_text()[-3000:]
            landed.append(_stage_reached(run))
            # answers the server gave but the killed process never committed: only calls in flight at the kill
            lost = len(answered) - (stored_answers(run) - before)
            assert 0 <= lost <= CONCURRENCY, (stage, lost)
            unstored.append(lost)
    finally:
        server.close()
    assert landed == ["cache", "records", "explain", "score"], f"kills landed in {landed}"

    assert not list(run.rglob("*.tmp")) and not list(run.rglob("*.partial")), "half-written files left behind"
    files = assert_same_results(run, reference_run)
    assert any(f.startswith("usage/") for f in files) and "scores.parquet" in files

    # no completed call asked twice: the only repeats are the answers lost in flight, each asked again once
    total = Counter(server.answered)
    assert sum(total.values()) - len(total) == sum(unstored), (sum(unstored), total.most_common(5))
    assert len(total) == sum(reference_calls.values())  # the same prompts as the uninterrupted run
    # the last process paid only for what was not stored, and counted every stored answer as a cache hit
    hits_and_misses = usage_counts(run)
    hits = sum(h for h, _ in hits_and_misses.values())
    misses = sum(m for _, m in hits_and_misses.values())
    assert misses == len(answered_per_process[-1])
    assert hits + misses == sum(reference_calls.values())
    assert hits == stored_answers(run) - misses


def _start_server(port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("scripted_server.py")), str(port), str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV)
    line = proc.stdout.readline().decode()
    assert line.strip() == "ready", line + proc.stdout.read().decode()[-2000:]
    return proc


def test_llm_server_killed_and_restarted_mid_run(tmp_path, inputs, reference):
    reference_run, reference_calls = reference
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    calls = tmp_path / "calls.log"
    server = _start_server(port, calls)
    run = tmp_path / "run"
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(_run_args(run, *inputs, f"http://127.0.0.1:{port}/v1") + ["--llm-wait", "120"],
                            stdout=log, stderr=log, env=ENV)
    restarted = None
    try:
        score_calls = lambda: calls.read_text().count("score") if calls.exists() else 0  # noqa: E731
        deadline = time.time() + 400
        while score_calls() < reference_calls["score"] // 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        os.kill(server.pid, signal.SIGKILL)  # the server dies mid-stage, with calls in flight
        server.wait()
        before_restart = score_calls()
        time.sleep(3)
        assert proc.poll() is None, "the run gave up instead of waiting for the server"
        assert score_calls() == before_restart
        restarted = _start_server(port, calls)
        proc.wait(timeout=400)
    finally:
        log.close()
        for p in (proc, server, restarted):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    text = " ".join((tmp_path / "run.log").read_text().split())
    assert proc.returncode == 0, text[-3000:]
    assert "stopped accepting connections; waiting up to 120s" in text and "is back after" in text, text[-3000:]
    assert_same_results(run, reference_run)
    usage = pq.read_table(run / "usage" / "score.parquet").to_pylist()
    assert not any(row["failed"] for row in usage)
    assert any("cannot connect" in row["retry_reasons"] for row in usage)  # the outage was met and waited out
