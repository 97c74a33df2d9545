"""Runs inside a private mount namespace (`unshare`), so it can mount a small tmpfs that no one else sees and that
vanishes with it: `python disk_full_driver.py SPEC.json`. It fills the tmpfs up to a few KB with a filler file,
runs `lantern` commands on a run directory there, and writes what it saw (exit codes, messages, the state of
every file) to the JSON report named in the spec, copying the run directory out to the real disk at the end."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def fill(mount: Path, leave: int) -> None:
    """Leave about `leave` bytes free on the tmpfs."""
    filler = mount / "filler"
    filler.unlink(missing_ok=True)
    stat = os.statvfs(mount)
    free = stat.f_bavail * stat.f_frsize
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.posix_fallocate(fd, 0, max(free - leave, 1))
    finally:
        os.close(fd)


def state(run: Path) -> dict:
    """Every file: its sha256 and whether it reads back whole (.npy/.parquet); names of leftover temp files."""
    import pyarrow.parquet as pq

    files, unreadable = {}, []
    for path in sorted(run.rglob("*")):
        if not path.is_file():
            continue
        name = path.relative_to(run).as_posix()
        files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            if path.suffix == ".npy" and ".partial" not in name:
                np.load(path)
            elif path.suffix == ".parquet":
                pq.read_table(path)
        except Exception as err:  # noqa: BLE001 - reported, judged by the test
            unreadable.append(f"{name}: {err}")
    return {"files": files, "unreadable": unreadable,
            "temp": [n for n in files if n.rsplit("/", 1)[-1].startswith(".") and n.endswith(".tmp")]}


def lantern(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-m", "lantern.cli", *args], capture_output=True, text=True, timeout=900)
    return {"rc": done.returncode, "stderr": done.stderr[-4000:]}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    mount = Path(spec["mount"])
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spec['size']}", "tmpfs", str(mount)], check=True)
    run = mount / "run"
    cache_args = ["cache", "--run-dir", str(run), *spec["cache_args"]]
    report = {}
    fill(mount, spec["leave_for_cache"])  # the cache stage meets a full disk part way
    report["cache_full"] = lantern(cache_args)
    report["after_cache_full"] = state(run)
    (mount / "filler").unlink()
    report["cache_resumed"] = lantern(cache_args)
    report["records"] = lantern(["records", "--run-dir", str(run)])
    report["before_records_full"] = state(run)
    fill(mount, spec["leave_for_records"])  # records rewrite their files: the disk fills mid-write
    report["records_full"] = lantern(["records", "--run-dir", str(run)])
    report["after_records_full"] = state(run)
    (mount / "filler").unlink()
    shutil.copytree(run, spec["copy_to"])
    Path(spec["report"]).write_text(json.dumps(report))


if __name__ == "__main__":
    main()
