"""Corpus statistics per latent, computed once when a shard is merged and reused by records and reports."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lantern.io import atomic_path

QUANTILES = np.linspace(0.1, 0.9, 9)
"""Inner decile edges of each latent's non-zero activations."""


def segment_stats(indptr: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """count, max, mean and decile edges of each latent's non-zeros, vectorised over the segments."""
    counts = np.diff(indptr)
    n = len(counts)
    values = np.asarray(values, dtype=np.float32)
    out = {"count": counts.astype(np.int64), "max": np.zeros(n, np.float32), "mean": np.zeros(n, np.float32),
           "quantiles": np.zeros((n, len(QUANTILES)), np.float32)}
    nonempty = counts > 0
    if not nonempty.any():
        return out
    starts = indptr[:-1][nonempty]
    out["max"][nonempty] = np.maximum.reduceat(values, starts)
    out["mean"][nonempty] = np.add.reduceat(values.astype(np.float64), starts) / counts[nonempty]
    segment = np.repeat(np.arange(n), counts)
    ordered = values[np.lexsort((values, segment))]
    # nearest-rank (lower) quantile inside each latent's sorted segment
    rank = np.floor(QUANTILES[None, :] * (counts[nonempty, None] - 1)).astype(np.int64)
    out["quantiles"][nonempty] = ordered[starts[:, None] + rank]
    return out


def save_stats(path: Path, parts: list[dict[str, np.ndarray]], n_tokens_cached: int) -> dict[str, np.ndarray]:
    """Concatenate per-shard stats (in latent order) and add the firing rate over the cached tokens."""
    stats = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    stats["firing_rate"] = stats["count"] / max(n_tokens_cached, 1)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **stats)
    return stats
