"""`lantern cache --repair`: check every cached shard of a run against its manifest and recompute the damaged
ones (cache/repair.py). The subject model and coders are loaded only when something is damaged."""
from __future__ import annotations

import time

from lantern.cache import layout
from lantern.cache.repair import RepairReport, find_damage, repair_cache
from lantern.coders.loading import load_coders
from lantern.config import RunConfig
from lantern.errors import LanternError
from lantern.models.loading import load_subject_model
from lantern.pipeline.files import CACHE


def run_repair(cfg: RunConfig) -> RepairReport:
    started = time.perf_counter()
    cache_dir = cfg.path / CACHE
    names = sorted(p.parent.name for p in cache_dir.glob(f"*/{layout.MANIFEST}"))
    if not names:
        raise LanternError(f"{cache_dir} holds no finished cache to repair: run `lantern cache --run-dir "
                           f"{cfg.path}` (an unfinished cache resumes)")
    damaged, total = find_damage(cache_dir, names)
    if not damaged:
        return RepairReport(shards_total=total, seconds=time.perf_counter() - started)
    subject = load_subject_model(cfg.model)
    coders = [c for spec in cfg.coders for c in load_coders(spec, subject.model, cfg.layer)]
    report = repair_cache(cache_dir, subject.model, coders, found=(damaged, total))
    report.seconds = time.perf_counter() - started
    return report
