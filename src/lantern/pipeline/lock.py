"""One writer per run directory: a second `lantern` command on the same directory refuses instead of
interleaving its writes with the first's.

The lock is `fcntl.flock` on `<run dir>/lantern.lock`, not an O_EXCL file: the kernel drops a flock when its
holder dies in any way (kill -9, OOM, power loss of a local disk), so a dead run never leaves a lock that must
be guessed stale from a pid (which the next process may have reused, and which another host cannot check),
and two newcomers can never both "take over" a stale file. The file's content (pid, host, start time, command)
only tells the refused user who holds it; a previous holder's content left behind is overwritten by the next
holder, which notes that it took the lock over from a run that is gone.
Caveat: flock guards processes that share one kernel's view of the file; on NFS, Linux maps it to an NFS
byte-range lock (NFSv4 or lockd), which the server releases when the client dies.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lantern.errors import LanternError

LOCK_FILE = "lantern.lock"


class RunLockedError(LanternError):
    """Another live process holds the run directory's lock."""


def _holder(text: str) -> dict:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another lantern process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"pid {holder.get('pid')} on host {holder.get('host')} (started {started}: "
            f"{holder.get('command', '?')})")


def _acquire(path: Path, mode: int, refusal) -> int:
    """An open descriptor of the lock file holding `mode` (shared or exclusive), or RunLockedError with
    `refusal(holder)` if another process holds a conflicting lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(refusal(_holder(Path(path).read_text(errors="replace")))) from None
    return fd


@contextmanager
def read_lock(run_dir: str | Path) -> Iterator[None]:
    """A shared hold on the run directory's lock for a command that only reads the stages' outputs (`report`,
    `analyse`): any number of readers at once, none while a writer holds it, so a report never reads a
    half-written run. Refuses at once if a writer holds it."""
    path = Path(run_dir) / LOCK_FILE
    if not Path(run_dir).is_dir():
        yield
        return
    fd = _acquire(path, fcntl.LOCK_SH, lambda holder: (
        f"{run_dir} is being written by {_describe(holder)}; reading it now could see half its results. "
        f"Wait for that run to end, then rerun this command"))
    try:
        yield
    finally:
        os.close(fd)


@contextmanager
def run_lock(run_dir: str | Path, on_takeover=None) -> Iterator[dict]:
    """Hold the run directory's lock for the block; refuse at once (no waiting) if a live process holds it
    (a writer, or a reader holding `read_lock`). `on_takeover(previous)` is told about a lock file left by a
    process that is gone."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = _acquire(path, fcntl.LOCK_EX, lambda holder: (
        f"{run_dir} is in use by "
        f"{_describe(holder) if holder else 'another lantern process (a report or an analysis reading it)'}; "
        f"two commands writing one directory, or one reading what another writes, would corrupt it. "
        f"Wait for that command to end (or stop it), or use another --run-dir"))
    try:
        previous = _holder(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
        if previous and on_takeover is not None:
            on_takeover(previous)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": " ".join(["lantern", *sys.argv[1:]])[:300]}
        data = json.dumps(me).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        try:
            yield me
        finally:
            os.ftruncate(fd, 0)  # an empty file: released cleanly (a holder that dies leaves its content)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
