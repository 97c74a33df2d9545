"""Atomic file writes: a crash never leaves a half-written file in place of a good one."""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lantern.errors import LanternError


class DiskFullError(LanternError):
    """The disk filled up while lantern was writing: nothing finished is lost, the rerun resumes."""


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)  # pyarrow and SQLite say it in words ("No space left on device", "database or disk is full")
    return (isinstance(err, (OSError, sqlite3.OperationalError))
            and ("No space left on device" in text or "disk is full" in text or "Disk quota exceeded" in text))


def as_disk_full(err: BaseException, where: str | os.PathLike) -> DiskFullError | None:
    """A clear error for a write that found the disk full (None if `err` is something else)."""
    if isinstance(err, DiskFullError):
        return err
    if not _is_disk_full(err):
        return None
    where = Path(where)
    probe = where if where.exists() else where.parent
    try:
        free = f"{shutil.disk_usage(probe).free / 2**20:.1f} MiB free now"
    except OSError:
        free = "free space unknown"
    return DiskFullError(f"the disk holding {where} is full ({free}) while writing: {err}. Every file lantern "
                         f"writes is written whole or not at all, so nothing finished was damaged; free some space "
                         f"and rerun the same command to resume")


def _file_mode() -> int:
    """The mode a plainly created file gets (mkstemp's temp files are 0600, too private for results)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except Exception as err:
        full = as_disk_full(err, path)
        if full is None:
            raise
        raise full from err
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temp(folder: str | os.PathLike) -> int:
    """Delete the temp files `atomic_path` leaves when its process is killed mid-write (never a finished file).
    Only safe while no other process writes `folder`: call it holding the run directory's lock."""
    removed = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


class _PythonWrites:
    """A file seen only through its `write`, so numpy writes an array in Python write calls (which raise when the
    disk is full) instead of ndarray.tofile, whose last buffered block is lost without an error on a full disk
    (numpy does not check the fclose that flushes it): a short .npy that looks finished."""

    def __init__(self, f):
        self.write = f.write


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save whose every byte is checked written (into a folder that is renamed into place when complete)."""
    with open(path, "wb") as f:
        np.lib.format.write_array(_PythonWrites(f), np.asanyarray(array), allow_pickle=False)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        save_npy(tmp, array)


def write_parquet(path: str | os.PathLike, rows: list[dict] | pa.Table) -> None:
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
