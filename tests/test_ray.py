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
from lantern.executors.base import ExecutorConfig, make_executor, split_ranges
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


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _worker_titles() -> dict[int, str]:
    """pid -> process title of this test's Ray workers (descendants of this process; a busy worker is titled
    `ray::<task>`). Other Ray instances on the machine are never touched."""
    titles = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::"):
                titles[int(entry.name)] = title
    mine = {}
    for pid, title in titles.items():
        ancestor = pid
        while ancestor > 1 and ancestor != os.getpid():
            ancestor = _parent(ancestor)
        if ancestor == os.getpid():
            mine[pid] = title
    return mine


class Killer(threading.Thread):
    """SIGKILLs one Ray worker in the middle of a cache partition (found by its process title) and one in the
    middle of writing an explain partition (found by the pid in its staging folder's name)."""

    def __init__(self, run_dir: Path):
        super().__init__(daemon=True)
        self.staging = run_dir / "partitions" / "explain"
        self.killed: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self):
        pattern = re.compile(r"^\.part-(\d{5})\.(\d+)\.[0-9a-f]+\.partial$")
        while not self.stop.is_set() and len(self.killed) < 2:
            if "cache" not in self.killed:
                busy = [pid for pid, title in _worker_titles().items() if "cache" in title]
                if busy:
                    os.kill(busy[0], signal.SIGKILL)
                    self.killed["cache"] = busy[0]
            elif self.staging.exists():
                for entry in self.staging.glob(".part-*.partial"):
                    match = pattern.match(entry.name)
                    if match and int(match.group(2)) in _worker_titles():
                        os.kill(int(match.group(2)), signal.SIGKILL)
                        self.killed["explain"] = int(match.group(2))
                        break
            time.sleep(0.002)


@pytest.fixture(scope="module")
def ray_run(ray_local, inputs):
    cfg = _config(inputs, "ray")
    killer = Killer(cfg.path)
    killer.start()
    try:
        out = _run_all(cfg, make_executor(ExecutorConfig(kind="ray", partitions=3)))
    finally:
        killer.stop.set()
        killer.join()
    return cfg.path, out, killer.killed


def test_ray_run_equals_local_run(ray_run, local_run):
    run_dir, out, _ = ray_run
    # every stage ran as several partitions, each in a Ray worker, none in this process
    for stage in ("cache", "explain", "score"):
        parts = out[stage]["partitions"]
        assert len(parts) == 3 and all(p["pid"] != os.getpid() for p in parts), stage
        assert [p["index"] for p in parts] == [0, 1, 2]
    n_files = assert_same_results(local_run, run_dir, ignore=VOLATILE | PAID)
    assert n_files >= 10  # records, latents, explanations, scores, examples, by decile/source, usage...
    # coders x latents x scorers, less latents whose explanation failed (the tiny random model's answers are noise)
    every = pq.read_table(run_dir / "explanations.parquet").to_pylist()
    explained = [r for r in every if not r["failed"]]
    scores = pq.read_table(run_dir / "scores.parquet").to_pylist()
    # a latent whose explanation failed gets one row per scorer saying so, never silently missing
    assert explained and len(scores) == len(every) * 2
    assert sum(str(r.get("note") or "").startswith("not scored") for r in scores) == (len(every) - len(explained)) * 2
    assert not (run_dir / "partitions").exists()


def test_killed_worker_is_retried_and_no_partial_partition_is_merged(ray_run):
    """The killed workers' partitions were finished by other workers (so Ray re-ran them), and the results
    above, which read only renamed partitions, equal the local run's: the half-written ones were never merged."""
    run_dir, out, killed = ray_run
    assert set(killed) == {"cache", "explain"}, f"a worker was not caught mid-partition: {killed}"
    for stage, pid in killed.items():
        writers = [p["pid"] for p in out[stage]["partitions"]]
        assert pid not in writers, f"{stage}: the killed worker {pid} cannot have finished a partition"
    # the killed explain attempt had answers in the response cache when it died: its re-run reused them
    usage = pq.read_table(run_dir / "usage" / "explain.parquet").to_pylist()
    assert len(usage) == 2 * 3 and not any(r["failed"] for r in usage)


def test_a_task_error_reaches_the_driver_as_the_same_clear_error(ray_local, tmp_path):
    """Bad input found inside a Ray task is not retried and arrives as a LanternError with its message."""
    from lantern.errors import LanternError
    from lantern.executors import partitions

    executor = make_executor(ExecutorConfig(kind="ray"))
    with pytest.raises(LanternError, match="part-00000 of 1 did not finish"):
        executor.map(partitions.finished, [(tmp_path, "nothing", 1)], "check")
    # results come back in the order of the calls
    assert executor.map(split_ranges, [(4, 2), (3, 3)], "ok") == [[(0, 2), (2, 4)], [(0, 1), (1, 2), (2, 3)]]


def test_a_sweep_on_ray_gives_the_local_sweeps_results(ray_local, inputs, tmp_path):
    """`lantern sweep --executor ray`: the workers find the variant's shared cache, records and response cache
    through its links and build their LLM from the saved config; explanations and scores equal the local
    sweep's, row for row."""
    from lantern.sweep import execute, plan_sweep
    from lantern.sweep.grid import parse_vary

    for kind in ("local", "ray"):
        base = _config(inputs, "unused")
        base.run_dir, base.scorers = str(tmp_path / kind / "variants" / "_base"), ["detection"]
        sweep = plan_sweep(tmp_path / kind, base, parse_vary(["explainer.show_activations=false,true"]))
        execute(sweep, ExecutorConfig(kind=kind))
        assert [(v.status, v.reused) for v in sweep.variants] == [("done", []), ("done", ["cache", "records"])]
    for name in ("show_activations=false", "show_activations=true"):
        for table in ("explanations.parquet", "scores.parquet"):
            a, b = (pq.read_table(tmp_path / kind / "variants" / name / table) for kind in ("local", "ray"))
            keep = [c for c in a.column_names if c not in VOLATILE | PAID]
            assert a.num_rows > 0 and _same(a.select(keep).to_pylist(), b.select(keep).to_pylist()), (name, table)
