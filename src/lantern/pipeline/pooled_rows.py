"""Per-decile and per-source rows pooled over each coder's latents. Pooling needs every latent, so a scoring
partition leaves it to the merge (score_merge.py); a pass over all latents in one call pools at once."""
from __future__ import annotations

from lantern.score.base import Scorer
from lantern.score.metrics import pool_latent_rows


def pooled_rows(by_decile: list[dict], by_source: list[dict], resamples: int) -> tuple[list[dict], list[dict]]:
    """Per-decile and per-source rows pooled over each coder's latents (latent is null), per scorer, made from
    the per-latent rows (`pool_latent_rows`: means over latents, intervals from resampling latents), in the order
    the (coder, scorer) pairs first appear."""
    pooled = []
    for rows, key in ((by_decile, "decile"), (by_source, "source")):
        grouped: dict[tuple, list[dict]] = {}
        for row in rows:
            if row.get("latent") is not None:
                grouped.setdefault((row["coder"], row["scorer"], row[key]), []).append(row)
        pooled.append([{"coder": coder, "latent": None, "scorer": scorer, key: group,
                        **pool_latent_rows(members, resamples)}
                       for (coder, scorer, group), members in sorted(
                           grouped.items(), key=lambda item: (_first_seen(rows, item[0][:2]), item[0][2]))])
    return pooled[0], pooled[1]


def pooling_resamples(scorers: list[Scorer]) -> int:
    """Resamples for the pooled intervals: the most any scorer asks for, since one pool spans every scorer's rows."""
    return max((scorer.settings.bootstrap_resamples for scorer in scorers), default=1000)


def _first_seen(rows: list[dict], pair: tuple[str, str]) -> int:
    return next(i for i, r in enumerate(rows) if (r["coder"], r["scorer"]) == pair)
