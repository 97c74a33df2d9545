"""The shared metrics against scikit-learn and scipy: AUROC, Pearson, Spearman, proportions, their bootstrap
intervals (compared with plain loop bootstraps), the per-decile / per-source breakdown, and reading digits and
echoed prompts. Fixed numbers stand in for answers here: these tests are about arithmetic and parsing."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from lantern.llm.base import Response
from lantern.score.answers import digit_choice, expected_digit
from lantern.score.echo import covering, token_spans
from lantern.score.metrics import (Outcome, accuracy_vs_chance, auroc, auroc_interval, correlations, group_rows,
                                   proportion_interval)


def scored(seed: int, n_pos: int = 60, n_neg: int = 80, shift: float = 0.8):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    return labels, rng.normal(size=n_pos + n_neg) + shift * labels


def loop_bootstrap_auroc(labels, scores, n=600, seed=1):
    rng = np.random.default_rng(seed)
    pos, neg = scores[labels == 1], scores[labels == 0]
    values = []
    for _ in range(n):
        p, q = rng.choice(pos, len(pos)), rng.choice(neg, len(neg))
        values.append(roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(q))], np.r_[p, q]))
    return np.quantile(values, [0.025, 0.975])


@pytest.mark.parametrize("seed", [0, 1])
def test_auroc_and_its_interval_match_sklearn_and_a_loop_bootstrap(seed):
    labels, scores = scored(seed)
    scores = np.round(scores, 1)  # ties, counted half as sklearn does
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    low, high = auroc_interval(labels, scores, 2000)
    reference = loop_bootstrap_auroc(labels, scores)
    assert low < auroc(labels, scores) < high
    assert low == pytest.approx(reference[0], abs=0.03) and high == pytest.approx(reference[1], abs=0.03)


def test_auroc_interval_by_ranks_for_many_pairs(monkeypatch):
    import lantern.score.metrics as metrics

    labels, scores = scored(3, 300, 300)
    matrix = auroc_interval(labels, scores, 500)
    monkeypatch.setattr(metrics, "_CHUNK", 1000)  # forces the rank-per-resample path
    ranked = auroc_interval(labels, scores, 500)
    assert ranked == pytest.approx(matrix, abs=0.02)


def test_auroc_of_one_class_is_nan():
    assert math.isnan(auroc(np.ones(4), np.arange(4.0)))
    assert all(math.isnan(v) for v in auroc_interval(np.ones(4), np.arange(4.0)))


def windows(seed: int, k: int = 30, width: int = 12, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    true = [np.maximum(rng.normal(size=width), 0) * (i % 3 != 0) for i in range(k)]
    predicted = [t + noise * rng.normal(size=width) for t in true]
    return true, predicted


@pytest.mark.parametrize("seed", [0, 1])
def test_correlations_match_scipy_and_a_loop_cluster_bootstrap(seed):
    true, predicted = windows(seed)
    got = correlations(true, predicted, 2000)
    x, y = np.concatenate(true), np.concatenate(predicted)
    assert got["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert got["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(7)
    loop_p, loop_s = [], []
    for _ in range(1000):
        pick = rng.integers(0, len(true), len(true))
        bx, by = np.concatenate([true[i] for i in pick]), np.concatenate([predicted[i] for i in pick])
        loop_p.append(stats.pearsonr(bx, by).statistic)
        loop_s.append(stats.spearmanr(bx, by).statistic)
    for name, values in (("pearson", loop_p), ("spearman", loop_s)):
        low, high = np.quantile(values, [0.025, 0.975])
        assert got[f"{name}_ci_low"] < got[name] < got[f"{name}_ci_high"]
        assert got[f"{name}_ci_low"] == pytest.approx(low, abs=0.03)
        assert got[f"{name}_ci_high"] == pytest.approx(high, abs=0.03)


def test_correlations_of_windows_of_unequal_length_and_of_nothing():
    true = [np.array([0.0, 1, 2]), np.array([3.0, 0])]
    predicted = [np.array([0.1, 0.9, 2.2]), np.array([2.5, 0.3])]
    got = correlations(true, predicted, 200)
    assert got["pearson"] == pytest.approx(stats.pearsonr(np.r_[true[0], true[1]], np.r_[predicted[0], predicted[1]])[0])
    assert all(math.isnan(v) for v in correlations([], [], 10).values())


def test_proportion_interval_is_close_to_wilson_and_p_value_is_scipys():
    correct = np.r_[np.ones(70, bool), np.zeros(130, bool)]
    low, high = proportion_interval(correct, 4000)
    wilson = stats.binomtest(70, 200).proportion_ci(method="wilson")
    assert low == pytest.approx(wilson.low, abs=0.02) and high == pytest.approx(wilson.high, abs=0.02)
    got = accuracy_vs_chance(correct, 0.2)
    assert got["accuracy"] == 0.35 and got["chance"] == 0.2
    assert got["p_value"] == pytest.approx(stats.binomtest(70, 200, 0.2, alternative="greater").pvalue)
    assert math.isnan(accuracy_vs_chance(np.zeros(0, bool), 0.2)["accuracy"])


def test_group_rows_take_each_decile_against_all_negatives_and_count_failures():
    rng = np.random.default_rng(0)
    outcomes = []
    for decile in range(1, 11):
        for _ in range(6):
            outcomes.append(Outcome(decile=decile, source="quantiles", label=1, score=float(rng.normal() + decile / 5),
                                    correct=bool(rng.random() < 0.7)))
    for source in ("random", "neighbour-cooccurrence"):
        for _ in range(20):
            outcomes.append(Outcome(decile=0, source=source, label=0, score=float(rng.normal() + (source != "random")),
                                    correct=bool(rng.random() < 0.8)))
    outcomes += [Outcome(decile=3, source="quantiles", label=1, failed=True),
                 Outcome(decile=0, source="random", label=0, failed=True)]
    deciles, sources = group_rows(outcomes, 200)
    by_decile = {r["decile"]: r for r in deciles}
    negatives = [o for o in outcomes if o.label == 0 and not o.failed]
    positives = [o for o in outcomes if o.label == 1 and not o.failed]
    for d in range(1, 11):
        mine = [o for o in positives if o.decile == d]
        expected = roc_auc_score([1] * len(mine) + [0] * len(negatives), [o.score for o in mine + negatives])
        assert by_decile[d]["auroc"] == pytest.approx(expected)
        assert by_decile[d]["accuracy"] == pytest.approx(np.mean([o.correct for o in mine]))
        assert by_decile[d]["auroc_ci_low"] <= by_decile[d]["auroc"] <= by_decile[d]["auroc_ci_high"]
    assert (by_decile[3]["n"], by_decile[3]["n_failed"]) == (6, 1)
    assert (by_decile[0]["n"], by_decile[0]["n_failed"]) == (40, 1)
    by_source = {r["source"]: r for r in sources}
    assert set(by_source) == {"random", "neighbour-cooccurrence"}
    for source, row in by_source.items():
        mine = [o for o in negatives if o.source == source]
        expected = roc_auc_score([1] * len(positives) + [0] * len(mine), [o.score for o in positives + mine])
        assert row["auroc"] == pytest.approx(expected)
    assert by_source["random"]["n_failed"] == 1
    assert by_source["random"]["auroc"] > by_source["neighbour-cooccurrence"]["auroc"]  # the harder negatives


def test_group_rows_correlate_each_decile_with_the_negatives():
    true, predicted = windows(4, k=12)
    outcomes = [Outcome(decile=1 + i % 2 if t.any() else 0, source="random" if not t.any() else "quantiles",
                        label=int(t.any()), score=float(p.max()), true=tuple(t), predicted=tuple(p))
                for i, (t, p) in enumerate(zip(true, predicted))]
    deciles, _ = group_rows(outcomes, 100)
    first = [o for o in outcomes if o.decile in (0, 1)]
    row = next(r for r in deciles if r["decile"] == 1)
    x = np.concatenate([o.true for o in first])
    assert row["pearson"] == pytest.approx(stats.pearsonr(x, np.concatenate([o.predicted for o in first]))[0])


# --- reading digits and echoed prompts -----------------------------------------------------------------


def test_expected_digit_sums_spellings_and_renormalises():
    lp = math.log
    value, mass = expected_digit({"3": lp(0.2), " 3": lp(0.1), "7": lp(0.3), "the": lp(0.3), "12": lp(0.1)})
    assert value == pytest.approx((3 * 0.3 + 7 * 0.3) / 0.6) and mass == pytest.approx(0.6)
    assert expected_digit({"the": 0.0}) is None and expected_digit(None) is None


def test_digit_choice_reads_logprobs_then_text_and_fails_honestly():
    lp = math.log
    probs, how = digit_choice(Response(text="2", first_token_logprobs={"2": lp(0.6), "4": lp(0.2), "9": lp(0.2)}),
                              range(1, 6))
    assert how == "logprobs" and probs == pytest.approx({2: 0.75, 4: 0.25})  # 9 is not an allowed answer
    assert digit_choice(Response(text=" 3]", first_token_logprobs={"x": 0.0}), range(1, 6)) == ({3: 1.0}, "text")
    assert digit_choice(Response(text="13"), range(1, 6)) == (None, "failed")
    assert digit_choice(Response(text="3", error="HTTP 500"), range(1, 6)) == (None, "failed")


def test_token_spans_survive_pieces_bytes_and_a_bos():
    prompt = "A\u00e9 b\t?\nc"
    tokens = ["<bos>", "A", "<0xC3>", "<0xA9>", "\u2581b", "\t", "?", "\n", "c"]
    spans = token_spans(prompt, tokens)
    assert spans[0] is None and spans[2] is None and spans[3] is None
    assert spans[4] == (2, 4) and spans[6] == (5, 6) and spans[8] == (7, 8)
    assert covering(spans, prompt.index("?")) == 6 and covering(spans, 1) is None
