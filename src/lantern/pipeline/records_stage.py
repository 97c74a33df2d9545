"""Stage 2: per coder, the examples of the latents to explain (explain/test splits, verified negatives)."""
from __future__ import annotations

import time

from lantern.cache.reader import LatentCache
from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.io import read_json, write_parquet
from lantern.progress import console, progress_bar
from lantern.pipeline.files import CACHE, latents_file, records_file
from lantern.records.build import build_records


def coder_names(cfg: RunConfig) -> list[str]:
    """Coder names in config order, read from the finished cache manifests."""
    names = []
    for manifest in sorted((cfg.path / CACHE).glob("*/manifest.json")):
        names.append(read_json(manifest)["coder"]["name"])
    return names


def run_records(cfg: RunConfig) -> dict:
    started = time.perf_counter()
    counts = {}
    for name in coder_names(cfg):
        cache = LatentCache(cfg.path / CACHE, name)
        with progress_bar() as bar:
            task = bar.add_task(f"records {name}", total=cfg.latents)
            rows, summary = build_records(cache, cfg.records, cfg.latents, on_record=lambda: bar.advance(task))
        write_parquet(records_file(cfg.path, name), rows)
        write_parquet(latents_file(cfg.path, name), summary)
        counts[name] = sum(s["has_record"] for s in summary)
        short = [s["latent"] for s in summary if s["has_record"] and s["n_negatives"] < cfg.records.n_negatives]
        if short:
            console.print(f"[yellow]note:[/yellow] {name}: {len(short)} latent(s) fire so densely that fewer than "
                          f"{cfg.records.n_negatives} all-zero windows exist (their scores have fewer negatives)")
    if not any(counts.values()):
        raise LanternError(
            f"no latent has {cfg.records.min_windows} disjoint activating windows of {cfg.records.ctx_len} tokens "
            f"in {cfg.tokens} tokens; cache more tokens (--tokens)")
    return {"seconds": time.perf_counter() - started, "latents": counts}
