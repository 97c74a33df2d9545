"""The analyses' statistics on synthetic arrays, checked against scipy's own functions (these need more latents
than a test run can afford)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from lantern.analysis.overlap import compare_sets
from lantern.analysis.stats import (fit_line, holm, mann_whitney, mean_ci, pearson_ci, random_rotation,
                                    spearman_ci, unit_rows)


def correlated(n: int, rho: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = rho * x + math.sqrt(1 - rho ** 2) * rng.standard_normal(n)
    return x, y


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_spearman_and_its_bootstrap_interval_match_scipy(rho):
    x, y = correlated(300, rho, seed=int(rho * 10))
    x[[3, 7]] = np.nan  # unscored latents are left out, not zeroed
    c = spearman_ci(x, y, resamples=2000, seed=1)
    keep = np.isfinite(x)
    assert c.n == 298
    expected = stats.spearmanr(x[keep], y[keep])
    assert c.value == pytest.approx(expected.statistic) and c.p_value == pytest.approx(expected.pvalue)
    assert c.ci_low < c.value < c.ci_high
    if rho == 0.5:  # scipy's (unvectorised) bootstrap is slow: one comparison of the interval is enough
        ref = stats.bootstrap((x[keep], y[keep]), lambda a, b: stats.spearmanr(a, b).statistic, paired=True,
                              vectorized=False, n_resamples=2000, method="percentile",
                              random_state=2).confidence_interval
        assert c.ci_low == pytest.approx(ref.low, abs=0.02) and c.ci_high == pytest.approx(ref.high, abs=0.02)


def test_spearman_of_too_few_or_constant_values_is_nan():
    assert math.isnan(spearman_ci([1, 2], [2, 1]).value)
    c = spearman_ci([1, 2, 3, 4], [5, 5, 5, 5])
    assert math.isnan(c.value) and c.n == 4


def test_pearson_interval_is_fisher_z_and_covers_the_truth():
    x, y = correlated(400, 0.6, seed=3)
    c = pearson_ci(x, y)
    assert c.value == pytest.approx(stats.pearsonr(x, y).statistic)
    half = 1.959964 / math.sqrt(400 - 3)
    assert c.ci_low == pytest.approx(math.tanh(math.atanh(c.value) - half))
    assert c.ci_low < 0.6 < c.ci_high
    line = fit_line(x, y)
    ref = stats.linregress(x, y)
    assert (line.slope, line.intercept) == pytest.approx((ref.slope, ref.intercept))


def test_mean_interval_matches_scipy_bootstrap():
    values = np.random.default_rng(4).exponential(size=200)
    m = mean_ci(values, resamples=4000, seed=0)
    ref = stats.bootstrap((values,), np.mean, n_resamples=4000, method="percentile",
                          random_state=0).confidence_interval
    assert m.value == pytest.approx(values.mean()) and m.n == 200
    assert m.ci_low == pytest.approx(ref.low, abs=0.02) and m.ci_high == pytest.approx(ref.high, abs=0.02)
    assert math.isnan(mean_ci([1.0]).ci_low) and mean_ci([]).n == 0


def test_mann_whitney_matches_scipy_and_finds_a_shift():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.6, 0.1, 80), rng.normal(0.5, 0.1, 60)
    d = mann_whitney(a, b)
    ref = stats.mannwhitneyu(a, b, alternative="two-sided")
    assert d.u == ref.statistic and d.p_value == pytest.approx(ref.pvalue)
    assert d.auc == pytest.approx(np.mean(a[:, None] > b[None, :]))  # no ties among continuous draws
    assert d.p_value < 1e-6 and d.auc > 0.7
    same = mann_whitney(rng.normal(0, 1, 80), rng.normal(0, 1, 80))
    assert same.p_value > 0.01


def test_holm_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.2])
    adjusted = holm(p)
    # sorted 0.01, 0.03, 0.04, 0.2 with m = 4: 0.04, 0.09, 0.09 (monotone), 0.2
    assert adjusted[[0, 2, 1, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert math.isnan(adjusted[3])


def test_matching_recovers_a_planted_correspondence_and_the_baselines_do_not():
    rng = np.random.default_rng(6)
    a = unit_rows(rng.standard_normal((40, 16)))
    perm = rng.permutation(40)
    b = unit_rows(a[perm] + 0.1 * rng.standard_normal((40, 16)))  # b[i] is a noisy copy of a[perm[i]]
    found = compare_sets(a, b, rng, repeats=10)
    rows, cols = optimize.linear_sum_assignment(-(a @ b.T))
    assert (found["rows"] == rows).all() and (found["cols"] == cols).all()
    assert (perm[found["cols"]] == found["rows"]).mean() > 0.9
    assert found["fraction_close"] > 0.9
    assert found["matched"].mean() > found["null"].mean() + 0.3  # rotation destroys the correspondence
    unrelated = compare_sets(a, unit_rows(rng.standard_normal((40, 16))), rng, repeats=10)
    assert unrelated["fraction_close"] < 0.25
    # ...while most of its matches beat the 95th percentile of random pairs: the optimum alone lifts them
    assert (unrelated["matched"] > np.percentile(unrelated["baseline"], 95)).mean() > 0.5
    assert abs(unrelated["matched"].mean() - unrelated["null"].mean()) < 0.1


def test_random_rotation_is_orthogonal():
    q = random_rotation(12, np.random.default_rng(0))
    assert np.allclose(q @ q.T, np.eye(12))
