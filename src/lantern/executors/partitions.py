"""Partition folders: how a partition's files reach the run directory whole or not at all.

A partition writes the same files, under the same relative paths, that the stage writes into the run
directory (e.g. `explanations.parquet`, `usage/explain.parquet`), but into its own staging folder, which is
renamed to `partitions/<stage>/part-NNNNN` once every file and `partition.json` are written. The merge reads
only renamed folders, so a partition whose worker died mid-write is never merged; its re-run starts from an
empty staging folder. Parquet files merge by concatenation in partition order.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from lantern.errors import LanternError
from lantern.io import read_json, write_json, write_parquet

PARTITIONS = "partitions"
DONE = "partition.json"


def stage_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / PARTITIONS / stage


def part_dir(run_dir: Path, stage: str, index: int) -> Path:
    return stage_dir(run_dir, stage) / f"part-{index:05d}"


def begin(run_dir: Path, stage: str) -> None:
    """A fresh stage: partitions of an earlier, interrupted attempt are dropped (their LLM answers are in the
    response cache, so redoing them costs no call)."""
    shutil.rmtree(stage_dir(run_dir, stage), ignore_errors=True)
    stage_dir(run_dir, stage).mkdir(parents=True)


def write_partition(run_dir: Path, stage: str, index: int, write: Callable[[Path], dict | None]) -> dict:
    """Run `write(folder)` into a staging folder and rename it into place; returns the partition's record.
    A partition already in place (its worker died after the rename, before reporting) is not redone."""
    final = part_dir(run_dir, stage, index)
    if (final / DONE).exists():
        return read_json(final / DONE)
    staging = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir(parents=True)
    started = time.perf_counter()
    info = write(staging) or {}
    record = {"stage": stage, "index": index, "pid": os.getpid(), "host": socket.gethostname(),
              "seconds": round(time.perf_counter() - started, 3), **info}
    write_json(staging / DONE, record)
    try:
        staging.rename(final)
    except OSError:  # another attempt of the same partition finished first: keep its files
        shutil.rmtree(staging, ignore_errors=True)
        return read_json(final / DONE)
    return record


def finished(run_dir: Path, stage: str, n: int) -> list[Path]:
    """The `n` partition folders, each complete, in order; a missing one is an error, never skipped."""
    folders = [part_dir(run_dir, stage, i) for i in range(n)]
    missing = [f.name for f in folders if not (f / DONE).exists()]
    if missing:
        raise LanternError(f"{stage}: partition(s) {', '.join(missing[:5])} of {n} did not finish; rerun the stage")
    return folders


def merge(run_dir: Path, stage: str, n: int, files: list[str]) -> list[dict]:
    """Concatenate each relative path's Parquet files over the partitions into the run directory (paths no
    partition wrote are left alone). Returns the partitions' records; `end` drops the folders."""
    folders = finished(run_dir, stage, n)
    for name in files:
        tables = [pq.read_table(f / name) for f in folders if (f / name).exists()]
        if tables:
            write_parquet(Path(run_dir) / name, pa.concat_tables(tables, promote_options="default"))
    return [read_json(f / DONE) for f in folders]


def end(run_dir: Path, stage: str) -> None:
    shutil.rmtree(stage_dir(run_dir, stage), ignore_errors=True)
    parent = Path(run_dir) / PARTITIONS
    if parent.exists() and not any(parent.iterdir()):
        parent.rmdir()
