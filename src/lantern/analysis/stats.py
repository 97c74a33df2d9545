"""The statistics the analyses report, each with its n and an interval: bootstrap intervals over latents for a
Spearman correlation and for a mean, Mann-Whitney U with Holm's correction, a least-squares line with Pearson's r
and its Fisher-z interval, and one-to-one matching by the Hungarian algorithm."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from lantern.intervals import LEVEL, bootstrap_mean_interval, finite, percentile_interval, rowwise_pearson

RESAMPLES = 2000


def finite_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both values are numbers (a latent a scorer could not score is left out, not zeroed)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


@dataclass
class Correlation:
    """A correlation over latents."""

    value: float
    """Spearman's rho (or Pearson's r); nan with fewer than 3 pairs or a constant side."""
    ci_low: float
    ci_high: float
    """Percentile bootstrap interval over latents (pairs resampled together)."""
    p_value: float
    """Two-sided test of no association (scipy)."""
    n: int
    """Pairs where both values are numbers."""


def spearman_ci(x, y, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Correlation:
    """Spearman's rho with a paired percentile bootstrap interval (latents resampled with replacement; resamples
    whose ranks are constant on one side are dropped)."""
    x, y = finite_pairs(x, y)
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(math.nan, math.nan, math.nan, math.nan, n)
    result = stats.spearmanr(x, y)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    boot = rowwise_pearson(stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1))
    low, high = percentile_interval(boot, level)
    return Correlation(float(result.statistic), low, high, float(result.pvalue), n)


def pearson_ci(x, y, level: float = LEVEL) -> Correlation:
    """Pearson's r with the Fisher-z interval (exact enough for n >= 10; reported with n so readers can judge)."""
    x, y = finite_pairs(x, y)
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(math.nan, math.nan, math.nan, math.nan, n)
    result = stats.pearsonr(x, y)
    r = float(result.statistic)
    if n > 3 and abs(r) < 1:
        half = stats.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
        low, high = math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)
    else:
        low = high = math.nan
    return Correlation(r, low, high, float(result.pvalue), n)


@dataclass
class Mean:
    value: float
    ci_low: float
    ci_high: float
    """Percentile bootstrap interval of the mean."""
    n: int


def mean_ci(values, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Mean:
    """The mean of the finite `values` with its bootstrap interval (nan with fewer than two)."""
    values = finite(values)
    if len(values) == 0:
        return Mean(math.nan, math.nan, math.nan, 0)
    low, high = bootstrap_mean_interval(values, resamples, seed, level)
    return Mean(float(values.mean()), low, high, len(values))


@dataclass
class Difference:
    """Two independent samples compared by the two-sided Mann-Whitney U test."""

    u: float
    """U of the first sample."""
    p_value: float
    auc: float
    """U / (n_a n_b): the probability that a value of the first sample exceeds one of the second (ties half)."""
    n_a: int
    n_b: int


def mann_whitney(a, b) -> Difference:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return Difference(math.nan, math.nan, math.nan, len(a), len(b))
    result = stats.mannwhitneyu(a, b, alternative="two-sided")
    u = float(result.statistic)
    return Difference(u, float(result.pvalue), u / (len(a) * len(b)), len(a), len(b))


def signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p: the paired test that assumes no distribution of the scores."""
    if len(differences) < 2:
        return math.nan
    if np.all(differences == 0):
        return 1.0
    # Pratt keeps zero differences in the ranking: variants that share explanations tie on many latents, and
    # dropping those ties (the default) would rest p on the few that differ
    return float(stats.wilcoxon(differences, zero_method="pratt").pvalue)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error) of several p-values; nan stays nan."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    if len(valid) == 0:
        return out
    order = valid[np.argsort(p[valid])]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


@dataclass
class Line:
    """A least-squares line y = slope x + intercept, and Pearson's r of the points."""

    slope: float
    intercept: float
    r: Correlation


def fit_line(x, y) -> Line:
    x, y = finite_pairs(x, y)
    r = pearson_ci(x, y)
    if len(x) < 2 or np.ptp(x) == 0:
        return Line(math.nan, math.nan, r)
    fit = stats.linregress(x, y)
    return Line(float(fit.slope), float(fit.intercept), r)


def match(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of rows to columns that maximises the summed similarity (Hungarian algorithm);
    min(rows, columns) pairs."""
    return optimize.linear_sum_assignment(similarity, maximize=True)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))
