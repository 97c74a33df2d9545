"""The shared intervals against scipy: the t-interval, the bootstrap mean interval, the row-wise Pearson (with
missing entries), and how each treats values that are not numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lantern.intervals import bootstrap_mean_interval, percentile_interval, rowwise_pearson, t_interval


def test_rowwise_pearson_with_missing_entries_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 40)), rng.normal(size=(5, 40))
    x[:, 30:] = y[:, 30:] = np.nan
    x[2, :10] = y[2, :10] = np.nan
    got = rowwise_pearson(x, y)
    for row in range(5):
        keep = ~np.isnan(x[row])
        assert got[row] == pytest.approx(stats.pearsonr(x[row, keep], y[row, keep]).statistic)
    assert np.isnan(rowwise_pearson(np.ones((1, 5)), np.arange(5.0)[None]))[0]  # constant: nan, not a number


def test_t_interval_matches_scipy_and_leaves_out_missing_values():
    values = np.random.default_rng(1).normal(0.6, 0.1, 30)
    mean, half = t_interval([*values, None, math.nan])
    ref = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert (mean - half, mean + half) == pytest.approx(ref)
    assert t_interval([0.5])[0] == 0.5 and math.isnan(t_interval([0.5])[1])
    assert all(math.isnan(v) for v in t_interval([]))


def test_bootstrap_mean_interval_matches_scipy_and_needs_two_values():
    values = np.random.default_rng(4).exponential(size=200)
    low, high = bootstrap_mean_interval(np.r_[values, np.nan], 4000, seed=0)
    ref = stats.bootstrap((values,), np.mean, n_resamples=4000, method="percentile",
                          random_state=0).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.02) and high == pytest.approx(ref.high, abs=0.02)
    assert all(math.isnan(v) for v in bootstrap_mean_interval([1.0, math.nan], 100))


def test_percentile_interval_drops_undefined_resamples():
    samples = np.r_[np.arange(101.0), np.full(50, np.nan)]
    assert percentile_interval(samples, 0.9) == pytest.approx((5.0, 95.0))
    assert all(math.isnan(v) for v in percentile_interval([np.nan]))
