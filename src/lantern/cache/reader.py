"""Read one latent's activations in O(its non-zeros) from a memory-mapped CSR cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lantern.cache import layout
from lantern.errors import LanternError
from lantern.io import read_json


class LatentCache:
    """A finished cache of one coder: `activations(latent)` returns (token_index, values) slices."""

    def __init__(self, cache_dir: str | Path, coder_name: str):
        self.cache_dir = Path(cache_dir)
        self.dir = layout.coder_dir(self.cache_dir, coder_name)
        manifest = self.dir / layout.MANIFEST
        if not manifest.exists():
            raise LanternError(f"no finished cache for coder {coder_name!r} in {self.cache_dir} (run `lantern cache`)")
        self.manifest = read_json(manifest)
        self.indptr = np.load(self.dir / layout.INDPTR)
        self.token_index = np.load(self.dir / layout.TOKEN_INDEX, mmap_mode="r")
        self.values = np.load(self.dir / layout.VALUES, mmap_mode="r")
        stats = np.load(self.dir / layout.STATS)
        self.counts, self.maxima = stats["count"], stats["max"]
        self.tokens = np.load(self.cache_dir / layout.TOKENS, mmap_mode="r")
        self.seq_len = int(self.tokens.shape[1])
        self.num_latents = len(self.indptr) - 1

    def activations(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[latent], self.indptr[latent + 1]
        return np.asarray(self.token_index[lo:hi]), np.asarray(self.values[lo:hi], dtype=np.float32)
