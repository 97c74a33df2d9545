"""Sorted runs: the cache's write-ahead unit.

Batches of (latent, token, value) triplets are buffered in memory up to a byte budget, then spilled as one
run sorted by latent (tokens stay ascending inside a latent because batches arrive in token order). A run
is a folder `run-<first batch>-<end batch>` renamed into place when complete, so a killed writer leaves
only whole runs behind and resumes at the first batch no run covers.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lantern.io import save_npy

_RUN_NAME = re.compile(r"^run-(\d{7})-(\d{7})$")
LATENT_PTR, TOKENS, VALUES = "latent_ptr.npy", "tokens.npy", "values.npy"


@dataclass
class Run:
    """One finished run on disk covering batches [first, end)."""

    path: Path
    first: int
    end: int

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(latent_ptr, tokens, values), memory-mapped so a merge reads only the slices it needs."""
        return (np.load(self.path / LATENT_PTR), np.load(self.path / TOKENS, mmap_mode="r"),
                np.load(self.path / VALUES, mmap_mode="r"))


def finished_runs(folder: Path) -> list[Run]:
    """Complete runs in batch order (half-written `.partial` folders are ignored and later replaced)."""
    runs = []
    if folder.exists():
        for path in folder.iterdir():
            match = _RUN_NAME.match(path.name)
            if match and path.is_dir():
                runs.append(Run(path, int(match.group(1)), int(match.group(2))))
    return sorted(runs, key=lambda r: r.first)


def covered_batches(runs: list[Run]) -> set[int]:
    return {b for run in runs for b in range(run.first, run.end)}


@dataclass
class RunWriter:
    """Buffers one coder's triplets and spills them as sorted runs of at most about `budget_bytes`."""

    folder: Path
    num_latents: int
    budget_bytes: int
    _latents: list[np.ndarray] = field(default_factory=list)
    _tokens: list[np.ndarray] = field(default_factory=list)
    _values: list[np.ndarray] = field(default_factory=list)
    _first: int | None = None
    _end: int | None = None
    _bytes: int = 0

    def add(self, batch: int, latents: np.ndarray, tokens: np.ndarray, values: np.ndarray) -> None:
        """Append one batch; batches must come in increasing order without gaps inside a run."""
        if self._end is not None and batch != self._end:
            self.flush()
        if self._first is None:
            self._first = batch
        self._end = batch + 1
        self._latents.append(latents)
        self._tokens.append(tokens)
        self._values.append(values)
        self._bytes += latents.nbytes + tokens.nbytes + values.nbytes
        if self._bytes >= self.budget_bytes:
            self.flush()

    def flush(self) -> None:
        if self._first is None:
            return
        latents = np.concatenate(self._latents)
        order = np.argsort(latents, kind="stable")
        counts = np.bincount(latents, minlength=self.num_latents)
        latent_ptr = np.zeros(self.num_latents + 1, dtype=np.int64)
        np.cumsum(counts, out=latent_ptr[1:])
        final = self.folder / f"run-{self._first:07d}-{self._end:07d}"
        staging = final.with_name(final.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            save_npy(staging / LATENT_PTR, latent_ptr)
            save_npy(staging / TOKENS, np.concatenate(self._tokens)[order])
            save_npy(staging / VALUES, np.concatenate(self._values)[order])
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # e.g. a full disk: leave no half-written run behind
            raise
        staging.rename(final)
        self._latents, self._tokens, self._values = [], [], []
        self._first = self._end = None
        self._bytes = 0
