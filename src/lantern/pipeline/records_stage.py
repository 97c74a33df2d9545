"""Stage 2: per coder, the examples of the latents to explain (disjoint splits, typed verified negatives)."""
from __future__ import annotations

import time

import numpy as np

from lantern.cache import layout
from lantern.cache.reader import LatentCache
from lantern.cache.window_index import WindowIndex
from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.io import read_json, write_parquet
from lantern.pipeline.files import CACHE, latents_file, records_file
from lantern.progress import console, progress_bar
from lantern.records.build import Extras, build_records
from lantern.records.cells import Grid


def coder_names(cfg: RunConfig) -> list[str]:
    """Coder names in config order, read from the finished cache manifests."""
    names = []
    for manifest in sorted((cfg.path / CACHE).glob("*/manifest.json")):
        names.append(read_json(manifest)["coder"]["name"])
    return names


def load_extras(cache: LatentCache, cfg: RunConfig) -> Extras:
    """The shared window index (hard negatives) and decoder neighbours, where the cache has them."""
    extras = Extras()
    if (cache.cache_dir / layout.WINDOWS).exists():
        try:
            index = WindowIndex(cache.cache_dir)
        except FileNotFoundError:
            index = None
        if index is not None:
            grid = Grid(int(cache.tokens.shape[0]), cache.seq_len, cfg.records.ctx_len)
            extras.window_index = index
            extras.cell_embeddings = index.embed(grid.cell_start(grid.full_cells()), cache.seq_len, cfg.records.ctx_len)
    neighbours = cache.dir / layout.DECODER_NEIGHBOURS
    if neighbours.exists():
        extras.decoder_neighbours = np.load(neighbours)["neighbours"]
    return extras


def run_records(cfg: RunConfig) -> dict:
    started = time.perf_counter()
    counts = {}
    for name in coder_names(cfg):
        cache = LatentCache(cfg.path / CACHE, name, expect_model=cfg.model)
        with progress_bar() as bar:
            task = bar.add_task(f"records {name}", total=cfg.latents)
            table, summary = build_records(cache, cfg.records, cfg.latents, load_extras(cache, cfg),
                                           on_block=lambda n: bar.advance(task, n))
        write_parquet(records_file(cfg.path, name), table)
        write_parquet(latents_file(cfg.path, name), summary)
        counts[name] = len(summary)
        wanted = cfg.records.n_negatives + cfg.records.n_similar_negatives + cfg.records.n_neighbour_negatives
        short = [s["latent"] for s in summary if s["n_negatives"] < wanted]
        if short:
            console.print(f"[yellow]note:[/yellow] {name}: {len(short)} latent(s) got fewer than {wanted} verified "
                          f"negatives (dense latents have few all-zero windows; counts per source in "
                          f"{latents_file(cfg.path, name).name})")
    if not any(counts.values()):
        raise LanternError(
            f"no latent has {cfg.records.windows_needed} disjoint activating windows of {cfg.records.ctx_len} "
            f"tokens in {cfg.tokens} tokens; cache more tokens (--tokens)")
    return {"seconds": time.perf_counter() - started, "latents": counts}
