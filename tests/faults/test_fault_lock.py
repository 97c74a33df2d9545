"""Two runs on one run directory: the second refuses with a clear message that names the first (pid, host,
command) and writes nothing; a lock left by a run killed with SIGKILL is taken over by the next one."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import write_sparsify_folder
from faultkit import ENV, lantern, lantern_cmd, write_corpus
from lantern.cache.repair import find_damage
from lantern.pipeline.lock import LOCK_FILE, RunLockedError, read_lock, run_lock


def test_lock_refuses_a_second_holder_and_is_free_after_release(tmp_path):
    with run_lock(tmp_path / "run") as me:
        assert me["pid"] == os.getpid()
        holder = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunLockedError, match=rf"in use by pid {os.getpid()} on host {socket.gethostname()}"):
            with run_lock(tmp_path / "run"):
                pass
    taken_over = []
    with run_lock(tmp_path / "run", on_takeover=taken_over.append):
        pass
    assert taken_over == []  # released cleanly: nothing to take over


def test_readers_share_the_lock_and_never_overlap_a_writer(tmp_path):
    """`report` and `analyse` read a run under a shared lock: several at once, none while a writer works, and no
    writer starts while one reads (a report must never see a half-written run)."""
    run = tmp_path / "run"
    with run_lock(run):
        with pytest.raises(RunLockedError, match=r"is being written by pid \d+ .*Wait for that run to end"):
            with read_lock(run):
                pass
        done = lantern("report", str(run))
        assert done.returncode == 2 and "is being written by" in " ".join(done.stderr.split())
    with read_lock(run), read_lock(run):  # two readers at once
        with pytest.raises(RunLockedError, match="a report or an analysis reading it"):
            with run_lock(run):
                pass
    with run_lock(run):  # free again once the readers are done
        pass


def _snapshot(run) -> dict[str, tuple[int, int]]:
    return {p.relative_to(run).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in run.rglob("*")
            if p.is_file()}


def test_second_run_refuses_and_a_killed_holder_is_taken_over(tmp_path, model_dir):
    corpus = write_corpus(tmp_path / "corpus.txt")
    coder = tmp_path / "coders" / "layers.1"
    write_sparsify_folder(coder, d_in=64, num_latents=64, k=4)
    run = tmp_path / "run"
    args = ["cache", "--run-dir", str(run), "--model", str(model_dir), "--corpus", str(corpus), "--coders",
            str(coder), "--layer", "1", "--tokens", "2048", "--batch-size", "1", "--run-mb", "0"]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(lantern_cmd(*args), stdout=log, stderr=log, env=ENV)
    try:
        lock = run / LOCK_FILE
        deadline = time.time() + 300
        while first.poll() is None and time.time() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGSTOP)  # the first run holds the lock, paused mid-work
        holder = json.loads(lock.read_text())
        assert holder["pid"] == first.pid
        before = _snapshot(run)
        # a second cache (even with other settings) and a records stage on the same directory both refuse
        for second in (args[:-2] + ["--batch-size", "2"], ["records", "--run-dir", str(run)]):
            done = lantern(*second)
            text = " ".join(done.stderr.split())
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
            assert f"is in use by pid {first.pid} on host {socket.gethostname()}" in text, text
            assert "lantern cache" in text and "use another --run-dir" in text, text
        assert _snapshot(run) == before, "a refused run wrote into the directory"
        os.kill(first.pid, signal.SIGKILL)  # the holder dies without releasing: its lock file still names it
        first.wait()
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        log.close()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == first.pid
    done = lantern(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    text = " ".join(done.stderr.split())
    assert f"took over the lock of pid {first.pid}" in text, text
    assert (run / LOCK_FILE).read_text() == ""  # released at the end
    damaged, total = find_damage(run / "cache", ["layers_1"])
    assert total >= 1 and not damaged
