"""The intervals every reported figure carries, and the row-wise Pearson the bootstraps share.

One module so that every figure is bounded the same way: one quantile method, one rule for values that are not
numbers (left out, never zeroed), and the resample count and seed always passed by the caller, who knows them.
The scorers' own resampling schemes (balanced accuracy, AUROC, proportions) live with their metric in
`score/metrics.py` and end here, in `percentile_interval`.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95
NAN = float("nan")


def finite(values) -> np.ndarray:
    """The values that are numbers, as floats: None, nan and inf mark a latent without a value, which is left
    out rather than counted as zero."""
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def percentile_interval(samples, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap values (nan when there are none): a resample whose statistic
    is undefined (one class or a constant side drawn) is dropped, not counted as an extreme."""
    samples = finite(samples)
    if len(samples) == 0:
        return NAN, NAN
    alpha = (1 - level) / 2
    return float(np.quantile(samples, alpha)), float(np.quantile(samples, 1 - alpha))


def bootstrap_mean_interval(values, n_resamples: int, seed: int = 0,
                            level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the finite `values` (nan with fewer than two).

    `n_resamples` has no default: the scorers use 1000 and the analyses 2000, and each says which."""
    values = finite(values)
    if len(values) < 2:
        return NAN, NAN
    draw = np.random.default_rng(seed).integers(0, len(values), size=(n_resamples, len(values)))
    return percentile_interval(values[draw].mean(axis=1), level)


def t_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """Mean of the finite `values` and the half-width of its Student-t interval (nan half-width with fewer than
    two; nan mean with none). No resampling, so no seed: the run summary and the validation table use it."""
    values = finite(values)
    if len(values) == 0:
        return NAN, NAN
    mean = float(values.mean())
    if len(values) < 2:
        return mean, NAN
    half = stats.t.ppf(1 - (1 - level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, float(half)


def rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair, so a whole batch of bootstrap resamples is one array operation.

    nan in `x` marks an entry missing from both rows (windows padded to one width); a constant row gives nan,
    not a number, so `percentile_interval` drops it."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    mask = ~np.isnan(x)
    n = mask.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(mask, x - np.where(mask, x, 0).sum(axis=1, keepdims=True) / n, 0)
        dy = np.where(mask, y - np.where(mask, y, 0).sum(axis=1, keepdims=True) / n, 0)
        denom = np.sqrt((dx ** 2).sum(axis=1) * (dy ** 2).sum(axis=1))
        return np.where(denom > 0, (dx * dy).sum(axis=1) / denom, np.nan)
