"""The disk filling up mid-write, on a real full filesystem: a small tmpfs mounted in a private mount namespace
(`unshare --user --map-root-user --mount`, which needs no root where user namespaces are allowed; plain
`unshare --mount` as root otherwise). No ENOSPC is simulated: the kernel returns it.

- `lantern cache` meets the full disk part way: one clear error line, exit code 2, no file that reads as
  finished but is not (every .npy and .parquet present loads whole, no manifest), no temp file left; with
  space freed, the same command resumes and its cache equals one built on a roomy disk byte for byte.
- `lantern records` rewriting its files on a full disk: the same clear error, and the previous records are
  still there, unchanged, in place of half-written ones.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_sparsify_folder
from faultkit import ENV, lantern, write_corpus

PAGE = 4096


def _namespace_prefix(probe_dir: Path) -> list[str] | None:
    """How to get a private mount namespace that may mount a tmpfs here, or None if this machine allows none."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe_dir.mkdir()
    for prefix in ([unshare, "--user", "--map-root-user", "--mount"], [unshare, "--mount"]):
        probe = subprocess.run([*prefix, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe_dir)],
                               capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


def _pages(folder: Path) -> int:
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in folder.rglob("*") if p.is_file())


def _one_clear_error(result: dict) -> str:
    text = " ".join(result["stderr"].split())
    assert result["rc"] == 2 and "Traceback" not in result["stderr"], result["stderr"][-3000:]
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result["stderr"][-3000:]
    assert "is full" in text and "rerun the same command to resume" in text, text
    return text


def test_disk_full_mid_write_is_a_clear_error_and_loses_nothing(tmp_path, model_dir):
    prefix = _namespace_prefix(tmp_path / "probe")
    if prefix is None:
        pytest.skip("no private mount namespace here (unshare unavailable or not permitted), so no real small disk")
    corpus = write_corpus(tmp_path / "corpus.txt")
    coder = tmp_path / "coders" / "layers.1"
    write_sparsify_folder(coder, d_in=64, num_latents=64, k=4)
    cache_args = ["--model", str(model_dir), "--corpus", str(corpus), "--coders", f"{coder}", "--layer", "1",
                  "--tokens", "4096", "--latents", "2", "--batch-size", "2", "--run-mb", "0"]
    roomy = tmp_path / "roomy"
    done = lantern("cache", "--run-dir", str(roomy), *cache_args)
    assert done.returncode == 0, done.stderr[-2000:]
    needed = _pages(roomy)
    mount = tmp_path / "mnt"
    mount.mkdir()
    spec = {"mount": str(mount), "size": needed * 4 + (1 << 20), "cache_args": cache_args,
            "leave_for_cache": needed // 2, "leave_for_records": 2 * PAGE,
            "report": str(tmp_path / "report.json"), "copy_to": str(tmp_path / "copied")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    driver = Path(__file__).with_name("disk_full_driver.py")
    done = subprocess.run([*prefix, sys.executable, str(driver), str(tmp_path / "spec.json")], capture_output=True,
                          text=True, timeout=1500, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())

    # the cache stage: stopped part way with one clear line, nothing half-written in place, no temp file
    _one_clear_error(report["cache_full"])
    after = report["after_cache_full"]
    assert "cache/tokens.npy" in after["files"], "the disk filled before the cache stage began: make it later"
    assert "cache/layers_1/manifest.json" not in after["files"]
    assert after["unreadable"] == [] and after["temp"] == []
    # freed space: the same command resumes and ends with the cache a roomy disk gives
    assert report["cache_resumed"]["rc"] == 0, report["cache_resumed"]["stderr"]
    copied = tmp_path / "copied" / "cache"
    for path in sorted((roomy / "cache").rglob("*")):
        name = path.relative_to(roomy / "cache").as_posix()
        if path.is_file() and name != "layers_1/manifest.json":
            assert (copied / name).read_bytes() == path.read_bytes(), f"{name} differs from the roomy disk's"
    mine, theirs = (json.loads((d / "layers_1" / "manifest.json").read_text()) for d in (copied, roomy / "cache"))
    assert mine["shards"] == theirs["shards"]

    # records rewritten on a full disk: the error, and the previous records unchanged in place
    assert report["records"]["rc"] == 0, report["records"]["stderr"]
    text = _one_clear_error(report["records_full"])
    assert "records" in text
    before, after = report["before_records_full"], report["after_records_full"]
    records = [n for n in before["files"] if n.startswith("records/")]
    assert records and all(after["files"].get(n) == before["files"][n] for n in records)
    assert after["unreadable"] == [] and after["temp"] == []
