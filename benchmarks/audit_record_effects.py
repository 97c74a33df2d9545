"""What two audit fixes change in a run's records, measured without an LLM (issue "Scores a reviewer can trust").

1. Test windows per activation decile: how many of the 10 deciles each latent's activating test windows cover,
   and the strongest decile tested (the old split drew the explain windows first, so `top` sampling left the
   strongest deciles untested for latents with few windows).
2. Fuzzing's formatting cue: a judge that sees no explanation and answers "correctly marked" when the marks form
   fewer spans. Its AUROC over the fuzzing items (true vs wrong marks) is the cue's strength: 0.5 means none.

Records are rebuilt from the run's own cache with its saved record settings (nothing in the run is changed).
Run it once on today's code and once on an older checkout (same command, `PYTHONPATH=<old>/src`) for
before/after:

    python benchmarks/audit_record_effects.py runs/default-3 runs/validate-1.5b
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lantern.cache.reader import LatentCache
from lantern.config import RunConfig
from lantern.pipeline.files import CACHE
from lantern.records.build import build_records
from lantern.score import fuzzing
from lantern.score.metrics import auroc


def span_count(marks: list[bool]) -> int:
    return sum(1 for i, marked in enumerate(marks) if marked and (i == 0 or not marks[i - 1]))


def measure(run_dir: Path) -> list[dict]:
    cfg = RunConfig.load(run_dir)
    out = []
    for cache_dir in sorted(p for p in (run_dir / CACHE).iterdir() if (p / "manifest.json").exists()):
        cache = LatentCache(run_dir / CACHE, cache_dir.name)
        table, summary = build_records(cache, cfg.records, n_latents=cfg.latents)
        rows = table.to_pylist()
        tested = [r for r in rows if r["split"] == "test" and r["kind"] == "activating"]
        per_latent: dict[int, set[int]] = {}
        for r in tested:
            per_latent.setdefault(r["latent"], set()).add(r["decile"])
        items = fuzzing.items(rows, cfg.explainer.mark_threshold, cfg.seed)
        labels = np.asarray([item["label"] for item in items])
        cue = np.asarray([-span_count(item["marks"]) for item in items], dtype=float)
        out.append({"run": run_dir.name, "coder": cache_dir.name, "latents": len(per_latent),
                    "deciles_tested": float(np.mean([len(d) for d in per_latent.values()])),
                    "strongest_decile_tested": float(np.mean([max(d) for d in per_latent.values()])),
                    "latents_missing_decile_10": sum(10 not in d for d in per_latent.values()),
                    "fuzzing_items": len(items), "span_cue_auroc": auroc(labels, cue)})
    return out


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("| run | coder | latents | deciles tested (mean of 10) | strongest decile tested | latents without "
          "decile 10 | fuzzing items | span-count cue AUROC |")
    print("|---|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        for r in measure(Path(arg)):
            print(f"| {r['run']} | {r['coder']} | {r['latents']} | {r['deciles_tested']:.2f} | "
                  f"{r['strongest_decile_tested']:.2f} | {r['latents_missing_decile_10']} | {r['fuzzing_items']} | "
                  f"{r['span_cue_auroc']:.3f} |")


if __name__ == "__main__":
    main()
