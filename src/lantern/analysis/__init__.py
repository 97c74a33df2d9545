"""`lantern analyse`: the paper's analyses of a run, one module each, written under RUN_DIR/analysis/ with an
index.json that lists every analysis (name, title, description, files, n) or the one-line reason it was skipped."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from lantern.analysis import agreement, coders, cost, intervention, overlap, sampling
from lantern.analysis.common import INDEX, Context, Skip
from lantern.configure import load_run
from lantern.errors import LanternError
from lantern.io import read_json, write_json
from lantern.progress import progress_bar

ANALYSES = {m.NAME: m for m in (agreement, sampling, intervention, coders, overlap, cost)}


def run_analyses(run_dir: Path, compare: list[Path] = (), only: list[str] | None = None,
                 pairs: list[tuple[str, str]] | None = None, resamples: int = 2000, seed: int = 0) -> dict:
    """Run the chosen analyses (all by default) and write index.json; returns the index."""
    unknown = sorted(set(only or []) - set(ANALYSES))
    if unknown:
        raise LanternError(f"unknown analysis {', '.join(unknown)}: choose from {', '.join(ANALYSES)}")
    ctx = Context(cfg=load_run(run_dir), compare=[load_run(p) for p in compare], resamples=resamples, seed=seed,
                  pairs=pairs)
    entries = []
    chosen = {name: module for name, module in ANALYSES.items() if not only or name in only}
    with progress_bar() as bar:
        task = bar.add_task("analyses", total=len(chosen))
        for name, module in chosen.items():
            bar.update(task, description=f"analyses: {name}")
            entries.append(_run_one(ctx, name, module))
            bar.advance(task)
    if only and (ctx.out_dir / INDEX).exists():  # keep what earlier runs of the other analyses wrote
        done = {e["name"] for e in entries}
        earlier = {e["name"]: e for e in read_json(ctx.out_dir / INDEX).get("analyses", []) if e["name"] not in done}
        entries = [next(e for e in entries if e["name"] == n) if n in done else earlier[n]
                   for n in ANALYSES if n in done or n in earlier]
    index = {"run_dir": str(ctx.run_dir), "compared_runs": [str(c.path) for c in ctx.compare],
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "resamples": resamples,
             "seed": seed, "analyses": entries}
    write_json(ctx.out_dir / INDEX, index)
    return index


def _run_one(ctx: Context, name: str, module) -> dict:
    """One analysis's index entry: done with its files, skipped with the reason, or an error of bad input (the
    other analyses still run)."""
    entry = {"name": name, "title": module.TITLE, "description": module.DESCRIPTION}
    started = time.perf_counter()
    try:
        done = module.run(ctx)
    except Skip as skip:
        entry.update(status="skipped", reason=str(skip), files=[], n=0, notes=[])
    except LanternError as err:
        entry.update(status="error", reason=str(err), files=[], n=0, notes=[])
    else:
        entry.update(status="done", reason=None, files=done.files, n=done.n, notes=done.notes)
    entry["seconds"] = round(time.perf_counter() - started, 3)
    return entry
