"""Stage 2: per coder, the examples of the latents to explain (disjoint splits, typed verified negatives).

Pass 1 (the survey of every latent, which samples the latents and finds co-occurring neighbours) runs here;
pass 2 is partitioned by latent range, each partition writing its rows of `records/<coder>.parquet`, which
concatenate into the whole table (rows are sorted by latent first)."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lantern.cache import layout
from lantern.cache.reader import LatentCache
from lantern.cache.window_index import WindowIndex
from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.executors import partitions
from lantern.executors.base import Executor, split_ranges
from lantern.executors.local import LocalExecutor
from lantern.io import read_json, write_parquet
from lantern.pipeline.files import CACHE, latents_file, records_file
from lantern.progress import console, progress_bar
from lantern.records.build import Extras, Survey, build_blocks, cache_grid, plan_records, records_summary
from lantern.records.matching import MATCHED_SUFFIX, check_widths, decoder_directions, match_latents, write_pairs


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
            grid = cache_grid(cache, cfg.records.ctx_len)
            extras.window_index = index
            extras.cell_embeddings = index.embed(grid.cell_start(grid.full_cells()), cache.seq_len, cfg.records.ctx_len)
    neighbours = cache.dir / layout.DECODER_NEIGHBOURS
    if neighbours.exists():
        extras.decoder_neighbours = np.load(neighbours)["neighbours"]
    return extras


def records_partition(cfg: RunConfig, name: str, index: int, survey_: Survey, blocks: list) -> dict:
    """Pass 2 for some latent blocks of coder `name` (a Ray task, or a call in this process)."""
    cache = LatentCache(cfg.path / CACHE, name, expect_model=cfg.model)

    def write(folder):
        extras = load_extras(cache, cfg)
        with progress_bar() as bar:
            task = bar.add_task(f"records {name} [{index}]", total=sum(len(inside) for _, _, inside in blocks))
            grid = cache_grid(cache, cfg.records.ctx_len)
            table = build_blocks(cache, cfg.records, grid, survey_, blocks, extras,
                                 on_block=lambda n: bar.advance(task, n))
        write_parquet(records_file(folder, name), table)
        return {"rows": table.num_rows}

    return partitions.write_partition(cfg.path, f"records-{name}", index, write)


def matched_to(cfg: RunConfig) -> str:
    """The coder whose sampled latents the others match (records.match_latents_to), checked before any records are
    built (every coder has cached decoder directions of one width); '' when none."""
    anchor = cfg.records.match_latents_to
    if not anchor:
        return ""
    names = coder_names(cfg)
    if anchor not in names:
        raise LanternError(f"records.match_latents_to={anchor!r} names no coder of this run; its coders: "
                           f"{', '.join(names)}")
    widths = {name: decoder_directions(layout.coder_dir(cfg.path / CACHE, name), name, mmap=True).shape[1]
              for name in names}
    check_widths(anchor, widths)
    return anchor


class Matcher:
    """`choose` for plan_records: the eligible latents of `name` whose decoder directions best match the anchor's
    sampled latents (whose records were built first); `save` writes the pairs once this coder's records exist."""

    def __init__(self, cfg: RunConfig, cache: LatentCache, name: str, anchor: str):
        self.cfg, self.name, self.anchor = cfg, name, anchor
        self.chosen = pq.read_table(latents_file(cfg.path, anchor), columns=["latent"]).column("latent").to_numpy()
        anchor_dirs = decoder_directions(layout.coder_dir(cfg.path / CACHE, anchor), anchor)
        self.anchor_dirs = anchor_dirs[self.chosen]
        self.own = decoder_directions(cache.dir, name)
        self.pairs = None

    def __call__(self, eligible: np.ndarray) -> np.ndarray:
        rows, latents = match_latents(self.anchor_dirs, self.own, eligible)
        cosines = np.einsum("ij,ij->i", self.anchor_dirs[rows], self.own[latents])
        self.pairs = (self.chosen[rows], latents, cosines)
        return latents

    def save(self) -> None:
        write_pairs(records_file(self.cfg.path, self.name).with_suffix(MATCHED_SUFFIX), self.anchor, *self.pairs)


class Pinned:
    """`choose` for plan_records: the latents another run sampled for this coder (records.latents_from), those
    eligible here, in that run's order; the ones no longer eligible are counted for a note."""

    def __init__(self, cfg: RunConfig, name: str):
        path = latents_file(cfg.path / cfg.records.latents_from, name)  # relative to this run's directory
        if not path.exists():
            raise LanternError(f"records.latents_from={cfg.records.latents_from!r}: no sampled latents of coder "
                               f"{name!r} there ({path} is missing); build that run's records first")
        self.latents = pq.read_table(path, columns=["latent"]).column("latent").to_numpy()
        self.dropped = 0

    def __call__(self, eligible: np.ndarray) -> np.ndarray:
        kept = self.latents[np.isin(self.latents, eligible)]
        self.dropped = len(self.latents) - len(kept)
        return kept


def run_records(cfg: RunConfig, executor: Executor | None = None) -> dict:
    started = time.perf_counter()
    executor = executor or LocalExecutor()
    counts = {}
    anchor = matched_to(cfg)
    for name in sorted(coder_names(cfg), key=lambda n: n != anchor):  # the anchor's latents first
        cache = LatentCache(cfg.path / CACHE, name, expect_model=cfg.model)
        choose = Matcher(cfg, cache, name, anchor) if anchor and name != anchor else (
            Pinned(cfg, name) if cfg.records.latents_from else None)
        # pairs of an earlier build would not describe the records about to be built
        records_file(cfg.path, name).with_suffix(MATCHED_SUFFIX).unlink(missing_ok=True)
        grid, survey_, selected, blocks = plan_records(cache, cfg.records, cfg.latents, choose)
        stage = f"records-{name}"
        partitions.begin(cfg.path, stage)
        groups = [blocks[a:b] for a, b in split_ranges(len(blocks), executor.partitions(len(blocks)))]
        # a worker finds the windows again; this process reuses the survey's (same result, less work)
        shipped = survey_ if executor.name == "local" else replace(survey_, tables={})
        shared = executor.share(shipped)
        executor.map(records_partition, [(cfg, name, i, shared, group) for i, group in enumerate(groups)],
                     f"records {name}")
        partitions.merge(cfg.path, stage, len(groups), [str(records_file("", name))])
        partitions.end(cfg.path, stage)
        table = pq.read_table(records_file(cfg.path, name))
        summary = records_summary(table, selected, survey_, cache, cfg.records)
        write_parquet(latents_file(cfg.path, name), summary)
        if isinstance(choose, Matcher):
            choose.save()
        if isinstance(choose, Pinned) and choose.dropped:
            console.print(f"[yellow]note:[/yellow] {name}: {choose.dropped} of the {len(choose.latents)} latents of "
                          f"{cfg.records.latents_from} are not eligible with these record settings (fewer than "
                          f"{cfg.records.windows_needed} windows of {cfg.records.ctx_len} tokens): not explained here")
        counts[name] = len(summary)
        wanted = cfg.records.n_negatives + cfg.records.n_similar_negatives + cfg.records.n_neighbour_negatives
        short = [s["latent"] for s in summary if s["n_negatives"] < wanted]
        if short:
            console.print(f"[yellow]note:[/yellow] {name}: {len(short)} latent(s) got fewer than {wanted} verified "
                          f"negatives (dense latents have few all-zero windows; counts per source in "
                          f"{latents_file(cfg.path, name).name})")
        thin = [s["latent"] for s in summary if cfg.records.n_test_per_decile and s["deciles_tested"] < 10]
        if thin:
            console.print(f"[yellow]note:[/yellow] {name}: {len(thin)} latent(s) have test windows in fewer than 10 "
                          f"activation deciles (too few windows; `deciles_tested` in {latents_file(cfg.path, name).name})")
    if not any(counts.values()):
        raise LanternError(
            f"no latent has {cfg.records.windows_needed} disjoint activating windows of {cfg.records.ctx_len} "
            f"tokens in {cfg.tokens} tokens; cache more tokens (--tokens)")
    return {"seconds": time.perf_counter() - started, "latents": counts}
