"""Read a finished cache: any latent's activations in O(its non-zeros), shards verified before first use."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lantern.cache import layout
from lantern.cache.shards import ShardView, check_files, from_stored
from lantern.errors import LanternError
from lantern.io import read_json


class LatentCache:
    """A finished cache of one coder.

    `verify=True` checks each shard file's sha256 the first time the shard is touched (one read of data the
    caller is about to read anyway); sizes are always checked, so a truncated file fails at once.
    """

    def __init__(self, cache_dir: str | Path, coder_name: str, verify: bool = True, expect_model: str | None = None):
        self.cache_dir = Path(cache_dir)
        self.dir = layout.coder_dir(self.cache_dir, coder_name)
        manifest = self.dir / layout.MANIFEST
        if not manifest.exists():
            raise LanternError(f"no finished cache for coder {coder_name!r} in {self.cache_dir} (run `lantern cache`)")
        self.manifest = read_json(manifest)
        if expect_model is not None and self.manifest["model"] != expect_model:
            raise LanternError(f"the cache in {self.dir} was built with model {self.manifest['model']!r}, not "
                               f"{expect_model!r}; its tokens and activations belong to that model")
        self.verify = verify
        self.value_dtype = self.manifest["dtypes"]["values"]
        self.shard_meta = self.manifest["shards"]
        self.shard_lo = np.array([s["latents"][0] for s in self.shard_meta], dtype=np.int64)
        self._open: dict[int, ShardView] = {}
        for number in range(len(self.shard_meta)):
            self._check_sizes(number)
        stats = np.load(self.dir / layout.STATS)
        self.stats = {key: stats[key] for key in stats.files}
        self.counts, self.maxima = self.stats["count"], self.stats["max"]
        self.tokens = np.load(self.cache_dir / layout.TOKENS, mmap_mode="r")
        self.seq_len = int(self.tokens.shape[1])
        self.num_latents = int(self.manifest["coder"]["num_latents"])

    def _check_sizes(self, number: int) -> None:
        meta = self.shard_meta[number]
        check_files(self.dir / meta["dir"], meta, verify=False)

    def shard(self, number: int) -> ShardView:
        if number not in self._open:
            meta = self.shard_meta[number]
            self._open[number] = ShardView.open(self.dir / meta["dir"], meta, verify=self.verify)
        return self._open[number]

    @property
    def n_shards(self) -> int:
        return len(self.shard_meta)

    def shard_number(self, latent: int) -> int:
        if not 0 <= latent < self.num_latents:
            raise IndexError(f"latent {latent} out of range 0..{self.num_latents - 1}")
        return int(np.searchsorted(self.shard_lo, latent, side="right") - 1)

    def activations(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """(flat token indices ascending, float32 values) of one latent."""
        _, tokens, values = self.shard(self.shard_number(latent)).latent_slice(latent, latent + 1)
        return tokens, from_stored(values, self.value_dtype)

    def latent_block(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr local to [lo, hi), tokens, float32 values) for latents lo..hi-1 inside one shard."""
        shard = self.shard(self.shard_number(lo))
        if hi > shard.hi:
            raise ValueError(f"latents {lo}..{hi} cross the shard boundary at {shard.hi}")
        indptr, tokens, values = shard.latent_slice(lo, hi)
        return indptr, tokens, from_stored(values, self.value_dtype)
