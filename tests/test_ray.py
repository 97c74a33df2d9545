"""`--executor ray`: the whole pipeline as Ray tasks on a local Ray (`ray.init(num_cpus=2)`) gives the local
executor's results row for row, in every Parquet file of every stage and every cache shard; a Ray worker
killed with SIGKILL in the middle of a partition is retried and its half-written partition is never merged.

Real parts only: the tiny Gemma 3 saved as a Hugging Face folder (each Ray worker loads its own copy, as on a
cluster), a real sparsify SAE and top-k neurons, and the tiny model as the in-process LLM of every worker."""
from __future__ import annotations

import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import TINY_HIDDEN, write_sparsify_folder
from lantern.config import LLMConfig, RunConfig
from lantern.executors.base import ExecutorConfig, make_executor
from lantern.executors.local import LocalExecutor
from lantern.executors.ray import LOCAL_ENV
from lantern.llm.factory import make_client
from lantern.models.loading import load_subject_model
from lantern.pipeline.cache_stage import run_cache
from lantern.pipeline.explain_stage import run_explain
from lantern.pipeline.records_stage import run_records
from lantern.pipeline.score_stage import run_score
from lantern.records.build import RecordConfig

RECORDS = RecordConfig(ctx_len=16, tokens_before=8, n_explain=5, n_test_per_decile=1, n_negatives=2,
                       n_similar_negatives=1, n_neighbour_negatives=1, min_windows=16)
VOLATILE = {"seconds"}
"""Wall-clock columns: differ between any two runs."""
PAID = {"cached"}
"""Whether this run paid for an answer: a re-run partition finds the answers its killed attempt had received."""


@pytest.fixture(scope="module")
def ray_local():
    for key, value in LOCAL_ENV.items():  # stay on 127.0.0.1, no usage reports, no auth token
        os.environ.setdefault(key, value)
    import ray

    temp = tempfile.mkdtemp(prefix="lantern-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("ray")
    write_sparsify_folder(root / "coders" / "layers.1", TINY_HIDDEN, 96, 8)
    return root, model_dir


def _config(inputs, name: str) -> RunConfig:
    root, model_dir = inputs
    # batch_size=1 for the in-process LLM: a prompt's answer then never depends on which prompts share its
    # padded batch, which differs with the partitioning
    return RunConfig(run_dir=str(root / name), model=str(model_dir),
                     coders=[str(root / "coders" / "layers.1"), "neurons-topk:16"], layer=2, tokens=4096,
                     seq_len=64, batch_size=8, run_mb=0, latents=3, records=RECORDS,
                     llm=LLMConfig(model=str(model_dir), batch_size=1))


def _run_all(cfg: RunConfig, executor) -> dict:
    cfg.save()
    subject = load_subject_model(cfg.model)
    out = {"cache": run_cache(cfg, subject, executor=executor), "records": run_records(cfg, executor=executor)}
    client = make_client(cfg.llm, cfg.path, subject) if executor.name == "local" else None
    try:
        out["explain"] = run_explain(cfg, client, subject.tokenizer, subject=subject, executor=executor)
        out["score"] = run_score(cfg, client, subject.tokenizer, subject=subject, executor=executor)
    finally:
        if client is not None:
            client.close()
    return out


@pytest.fixture(scope="module")
def local_run(inputs) -> Path:
    cfg = _config(inputs, "local")
    _run_all(cfg, LocalExecutor())
    return cfg.path


def _same(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    return x == y


def assert_same_results(a: Path, b: Path, ignore: set[str] = VOLATILE) -> int:
    """Every Parquet file of every stage equal row for row (but `ignore`d columns), and every cache file
    byte for byte. Returns how many Parquet files were compared."""
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*.parquet"))
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*.parquet"))
    for name in files:
        ta, tb = pq.read_table(a / name), pq.read_table(b / name)
        assert ta.column_names == tb.column_names, name
        keep = [c for c in ta.column_names if c not in ignore]
        rows_a, rows_b = ta.select(keep).to_pylist(), tb.select(keep).to_pylist()
        assert len(rows_a) == len(rows_b), f"{name}: {len(rows_a)} rows vs {len(rows_b)}"
        for i, (ra, rb) in enumerate(zip(rows_a, rows_b)):
            assert _same(ra, rb), f"{name} row {i} differs:\n{ra}\n{rb}"
    for path in sorted((a / "cache").rglob("*.npy")):
        other = b / path.relative_to(a)
        assert np.array_equal(np.load(path), np.load(other)), str(path.relative_to(a))
    for path in sorted((a / "cache").rglob("stats.npz")):
        x, y = np.load(path), np.load(b / path.relative_to(a))
        assert all(np.array_equal(x[k], y[k], equal_nan=True) for k in x.files), str(path)
    return len(files)


def test_ray_run_equals_local_run(ray_local, inputs, local_run):
    cfg = _config(inputs, "ray")
    executor = make_executor(ExecutorConfig(kind="ray", partitions=3))
    out = _run_all(cfg, executor)
    # every stage ran as several partitions in Ray workers, none in this process
    for stage in ("explain", "score"):
        parts = out[stage]["partitions"]
        assert len(parts) == 3 and all(p["pid"] != os.getpid() for p in parts), stage
    n_files = assert_same_results(local_run, cfg.path, ignore=VOLATILE | PAID)
    assert n_files >= 10  # records, latents, explanations, scores, examples, by decile/source, usage...
    assert pq.read_table(cfg.path / "scores.parquet").num_rows == 2 * 3 * 2  # coders x latents x scorers
    assert not (cfg.path / "partitions").exists()


def test_killed_worker_is_retried_and_no_partial_partition_is_merged(ray_local, inputs, local_run):
    """SIGKILL the worker that is writing an explain partition (found by the pid in its staging folder's
    name): Ray re-runs the task in another worker, the merge reads only renamed partitions, and the results
    equal the local run's."""
    cfg = _config(inputs, "killed")
    staging = cfg.path / "partitions" / "explain"
    killed: list[tuple[int, int]] = []
    stop = threading.Event()

    def killer():
        pattern = re.compile(r"^\.part-(\d{5})\.(\d+)\.[0-9a-f]+\.partial$")
        while not stop.is_set() and not killed:
            for entry in staging.glob(".part-*.partial") if staging.exists() else []:
                match = pattern.match(entry.name)
                if match and int(match.group(2)) != os.getpid():
                    os.kill(int(match.group(2)), signal.SIGKILL)
                    killed.append((int(match.group(1)), int(match.group(2))))
                    break
            time.sleep(0.002)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        out = _run_all(cfg, make_executor(ExecutorConfig(kind="ray", partitions=3)))
    finally:
        stop.set()
        thread.join()
    assert killed, "no explain partition was caught mid-write"
    index, pid = killed[0]
    record = out["explain"]["partitions"][index]
    assert record["index"] == index and record["pid"] != pid  # re-run by another worker
    assert_same_results(local_run, cfg.path, ignore=VOLATILE | PAID)
    assert not (cfg.path / "partitions").exists()
