"""A `lantern cache` killed with SIGKILL mid-run resumes from its finished batches, and its result equals
an uninterrupted run's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import write_sparsify_folder
from lantern.cache.reader import LatentCache


def _cache_cmd(run: Path, model_dir: Path, coder: Path, corpus: Path) -> list[str]:
    return [sys.executable, "-m", "lantern.cli", "cache", "--run-dir", str(run), "--model", str(model_dir),
            "--corpus", str(corpus), "--coders", f"{coder},neurons-topk:8", "--layer", "1", "--tokens", "32768", "--batch-size", "1", "--run-mb", "0"]


def test_killed_cache_resumes_and_matches(tmp_path, model_dir):
    corpus = tmp_path / "text.txt"
    words = " ".join(f"word{i % 97} and the {i % 13} of" for i in range(7000))
    corpus.write_text(words)
    coder = tmp_path / "coders" / "layers.1"
    write_sparsify_folder(coder, d_in=64, num_latents=64, k=4)

    killed = tmp_path / "killed"
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(_cache_cmd(killed, model_dir, coder, corpus), stdout=log, stderr=log)
    parts = killed / "cache" / "layers_1" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(parts.glob("run-*[0-9]"))) < 2 and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = sorted(p.name for p in parts.glob("run-*[0-9]"))
    assert len(finished_before) >= 2, (tmp_path / "killed.log").read_text()[-2000:]
    assert not (killed / "cache" / "layers_1" / "manifest.json").exists()
    mtimes = {p.name: p.stat().st_mtime_ns for p in parts.glob("run-*[0-9]")}

    resumed = subprocess.run(_cache_cmd(killed, model_dir, coder, corpus), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    clean = tmp_path / "clean"
    done = subprocess.run(_cache_cmd(clean, model_dir, coder, corpus), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    for name in ("layers_1", "neurons-topk8"):
        a, b = LatentCache(killed / "cache", name), LatentCache(clean / "cache", name)
        for latent in range(a.num_latents):
            for x, y in zip(a.activations(latent), b.activations(latent)):
                assert np.array_equal(x, y), f"{name} latent {latent} differs after resume"
        assert a.manifest["fingerprint"] == b.manifest["fingerprint"]
    # finished batches were not recomputed: the merge consumed the runs written before the kill unchanged
    assert mtimes, "no finished batch survived the kill"
    assert not parts.exists(), "runs are removed once merged"
