"""Reading verdicts and explanations out of LLM answers, and the classification metrics (against sklearn).

Fixed Responses stand in for the LLM here: these tests are about parsing and arithmetic only."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, f1_score, precision_score, recall_score,
                             roc_auc_score)

from lantern.explain.default import parse_explanation
from lantern.llm.base import Response
from lantern.score.answers import yes_probability
from lantern.score.metrics import bootstrap_interval, classification_metrics

# --- P(yes) ----------------------------------------------------------------------------------------


def lp(p: float) -> float:
    return math.log(p)


@pytest.mark.parametrize("logprobs, text, expected", [
    ({" Yes": lp(0.6), " No": lp(0.2), "yes": lp(0.1), "The": lp(0.05)}, "Yes", (0.7 / 0.9, "logprobs")),
    ({" no": lp(0.5), "NO": lp(0.1), " true": lp(0.2)}, "no", (0.2 / 0.8, "logprobs")),
    ({"Yes": lp(0.9)}, "", (1.0, "logprobs")),
    ({"Yes": lp(0.01), "The": lp(0.9)}, "The", (None, "low-mass")),  # yes at 1%, no absent: not P(yes) = 1
    ({" Yes": lp(0.3), " no": lp(0.1), "The": lp(0.6)}, "The", (None, "low-mass")),  # 0.4 of the mass < 0.5
    ({"The": lp(0.5), "A": lp(0.2)}, " Yes, it is", (None, "low-mass")),  # log-probs say neither: not read
    ({}, "No.", (0.0, "text")),
    (None, "**yes**", (1.0, "text")),
    (None, "  n", (0.0, "text")),
    (None, "Maybe", (None, "failed")),
    (None, "", (None, "failed")),
    (None, "yesterday", (None, "failed")),
])
def test_yes_probability(logprobs, text, expected):
    p, how = yes_probability(Response(text=text, first_token_logprobs=logprobs))
    assert how == expected[1]
    assert p == pytest.approx(expected[0]) if expected[0] is not None else p is None


def test_the_yes_no_mass_is_recorded_and_the_floor_is_a_setting():
    from lantern.score.answers import read_yes_no
    answer = read_yes_no(Response(text="Yes", first_token_logprobs={"Yes": lp(0.7), "No": lp(0.2), "A": lp(0.1)}))
    assert answer.mass == pytest.approx(0.9) and answer.p_yes == pytest.approx(0.7 / 0.9)
    assert read_yes_no(Response(text="Yes", first_token_logprobs={"Yes": lp(0.3), "A": lp(0.7)}), floor=0.2).p_yes == 1.0
    assert read_yes_no(Response(text="Yes")).mass is None  # no log-probs: nothing to say about the mass
    assert read_yes_no(Response(text="**", first_token_logprobs={"**": lp(0.9)}), floor=0).read_as == "low-mass"


def test_a_failed_call_is_never_read_as_an_answer():
    failed = Response(text="yes", first_token_logprobs={"yes": lp(0.99)}, error="HTTP 500")
    assert yes_probability(failed) == (None, "failed")


# --- metrics ---------------------------------------------------------------------------------------


def noisy_scores(seed: int, n: int = 300, n_failed: int = 25):
    """Random labels, probabilities that lean towards the label, and failures only on positives."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    probs = np.clip(0.3 * labels + rng.uniform(0, 0.75, size=n), 0, 1)
    failed = rng.choice(np.flatnonzero(labels == 1), size=n_failed, replace=False)
    with_failures = [None if i in set(failed.tolist()) else float(p) for i, p in enumerate(probs)]
    return labels, probs, with_failures


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn_and_exclude_failures(seed):
    labels, probs, with_failures = noisy_scores(seed)
    m = classification_metrics(labels.tolist(), with_failures)
    valid = np.array([p is not None for p in with_failures])
    y, p = labels[valid], probs[valid]
    pred = (p >= 0.5).astype(int)
    assert (m["n"], m["n_failed"]) == (valid.sum(), 25)
    assert (m["n_pos"], m["n_neg"]) == ((y == 1).sum(), (y == 0).sum())
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert 0.5 < m["balanced_accuracy"] < 0.95  # neither chance nor perfect: the comparison means something

    # Scoring failures as "no" would change the recall: they really are left out.
    as_no = (np.array([0.0 if q is None else q for q in with_failures]) >= 0.5).astype(int)
    assert m["recall"] != pytest.approx(recall_score(labels, as_no))

    low, high = m["balanced_accuracy_ci_low"], m["balanced_accuracy_ci_high"]
    assert low < m["balanced_accuracy"] < high
    assert 0.02 < high - low < 0.3


def test_bootstrap_interval_narrows_with_more_data():
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 4000):
        labels = rng.integers(0, 2, size=n)
        predictions = np.where(rng.uniform(size=n) < 0.8, labels, 1 - labels)
        low, high = bootstrap_interval(labels, predictions)
        assert low < balanced_accuracy_score(labels, predictions) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 4


def test_perfect_single_class_and_all_failed():
    perfect = classification_metrics([1, 0, 1, 0], [0.9, 0.1, 0.6, 0.4])
    assert perfect["balanced_accuracy"] == perfect["auroc"] == perfect["f1"] == 1.0
    assert perfect["balanced_accuracy_ci_low"] == perfect["balanced_accuracy_ci_high"] == 1.0

    one_class = classification_metrics([1, 1, 1], [0.9, 0.2, None])
    assert (one_class["n"], one_class["n_pos"], one_class["n_neg"], one_class["n_failed"]) == (2, 2, 0, 1)
    assert one_class["recall"] == 0.5 and one_class["accuracy"] == 0.5
    for key in ("balanced_accuracy", "auroc", "balanced_accuracy_ci_low", "balanced_accuracy_ci_high"):
        assert math.isnan(one_class[key])

    nothing = classification_metrics([1, 0], [None, None])
    assert (nothing["n"], nothing["n_failed"]) == (0, 2)
    assert all(math.isnan(nothing[k]) for k in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc"))


# --- explanations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, expected", [
    (" currency symbols before an amount of money\nFeature D\n", "currency symbols before an amount of money"),
    ("currency symbols.", "currency symbols"),
    ('Looking at the passages, the marked tokens are all prepositions.\n\n'
     'Explanation: the preposition "into" after a verb of motion.', 'the preposition "into" after a verb of motion'),
    ("Sure! Here is my explanation:\n\nExplanation:\n  names of rivers\n", "names of rivers"),
    ("explanation - Names of   rivers", "Names of rivers"),
    ("Explanation: **dates in verse references**", "dates in verse references"),
    ("x" * 400 + " words", ("x" * 400)[:300]),
    ('the word "the"', 'the word "the"'),
    ("'quoted phrase'", "quoted phrase"),
    ("Passage 1: the <<marked>> tokens", "Passage 1: the marked tokens"),  # a marked copy: marks dropped
    ("Names of rivers. They appear in lists.", "Names of rivers"),  # the first sentence
    ("code blocks\u21b5\u21b5 .. code-block:: none", "code blocks"),  # a copied newline mark ends the line
    # a quoted newline mark is a token the answer names (the 1.5B's chain-of-thought answer for a latent of x/y)
    ('Explanation: the tokens "x", "y", "\u21b5" and "x\u21b5" in code', 'the tokens "x", "y", "\u21b5" and "x\u21b5" in code'),
    ("Explanation: \u201c\u21b5\u201d and '\u21b5' tokens", "\u201c\u21b5\u201d and '\u21b5' tokens"),
    # ...but a quote that opens before a copied newline mark and closes after it is not a token
    ('The word "a\u21b5\u21b5Explanation: the token "b"', 'the token "b"'),
    ("don't\u21b5it's here", "don't"),
])
def test_parse_explanation(answer, expected):
    assert parse_explanation(answer) == expected


@pytest.mark.parametrize("garbage", ["", "   \n\n ", "12 34", "?!", "<<$>> 20 <<€>> 15", "Explanation:",
                                     "Explanation: ..."])
def test_parse_explanation_without_an_explanation(garbage):
    assert parse_explanation(garbage) is None


@pytest.mark.parametrize("answer, expected", [
    pytest.param("e.g. dates in verse references", "e.g. dates in verse references", id="abbreviation-cut-as-sentence"),
    pytest.param("**Explanation**: currency symbols", "currency symbols", id="markdown-bold-label"),
    pytest.param("an explanation-free phrase about rivers", "an explanation-free phrase about rivers",
                 id="label-matched-inside-a-phrase"),
])
def test_parse_explanation_labels_and_abbreviations(answer, expected):
    assert parse_explanation(answer) == expected


def test_balanced_accuracy_at_base_rate_reads_the_ranking_of_a_judge_that_always_says_yes():
    """A judge whose P(yes) is above 0.5 for every item but ranks the positives first: balanced accuracy at 0.5
    is chance, at the set's base rate it is perfect; a judge that ranks at random stays near chance either way."""
    labels = [1, 1, 1, 0, 0, 0]
    ranked = classification_metrics(labels, [0.95, 0.9, 0.85, 0.8, 0.7, 0.6])
    assert ranked["balanced_accuracy"] == 0.5
    assert ranked["balanced_accuracy_calibrated"] == ranked["auroc"] == 1.0
    assert ranked["balanced_accuracy_calibrated_ci_low"] == 1.0
    # Brier reads the calibration the ranking hides: always "yes" at 0.6-0.95 is far from 0
    # 0/1 answers (list mode, text-read): ties at the threshold share the yes calls instead of all saying yes
    ties = classification_metrics([1] * 5 + [0] * 5, [1, 1, 1, 0, 0] + [0] * 5)
    assert ties["balanced_accuracy"] == pytest.approx(0.8)
    # 3 ones called yes, the 7 zeros share the 2 remaining calls (2/7 each): TPR = TNR = 5/7
    assert ties["balanced_accuracy_calibrated"] == pytest.approx(5 / 7)
    assert ranked["brier"] == pytest.approx(np.mean([0.05**2, 0.1**2, 0.15**2, 0.8**2, 0.7**2, 0.6**2]))
    assert classification_metrics([1, 0], [1.0, 0.0])["brier"] == 0.0

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=400)
    noise = classification_metrics(y.tolist(), (0.6 + 0.3 * rng.random(400)).tolist())
    assert abs(noise["balanced_accuracy_calibrated"] - 0.5) < 0.08
    assert noise["balanced_accuracy_calibrated_ci_low"] < 0.5 < noise["balanced_accuracy_calibrated_ci_high"]

    # the number of "yes" calls matches the number of positives: no label of any item is used
    from lantern.score.metrics import base_rate_predictions
    p = rng.random(50)
    y50 = (rng.random(50) < 0.3).astype(int)
    assert base_rate_predictions(y50, p).sum() == y50.sum()
    assert (base_rate_predictions(y50, p) == base_rate_predictions(rng.permutation(y50), p)).all()


def test_fuzzing_wrong_marks_copy_the_span_structure_so_a_judge_without_the_explanation_is_at_chance():
    """Audit defect: neighbouring marks are shown as one span, so true marks came out as 1-2 spans and wrong
    marks as k scattered ones. A judge that reads only the number of spans (no explanation) must be at chance."""
    from lantern.score import fuzzing
    from lantern.score.metrics import auroc

    rng = np.random.default_rng(1)
    examples = []
    for i in range(200):
        acts = np.zeros(32)
        start = int(rng.integers(2, 24))
        acts[start:start + int(rng.integers(2, 5))] = rng.uniform(1, 3)  # one run of 2-4 firing tokens
        if rng.random() < 0.5:
            acts[int(rng.integers(28, 32))] = 2.0  # sometimes a second, single-token run
        examples.append({"split": "test", "kind": "activating", "activations": acts.tolist(), "latent": 7,
                         "start": i * 40})
    items = fuzzing.items(examples, mark_threshold=0.3, seed=0)
    pairs = {}
    for item in items:
        pairs.setdefault(item["example"]["start"], {})[item["label"]] = item["marks"]
    assert len(pairs) >= 190 and all(len(p) == 2 for p in pairs.values())  # pairs only
    for pair in pairs.values():
        if len(pair) == 2:
            right, wrong = pair[1], pair[0]
            assert sorted(n for _, n in fuzzing.spans(right)) == sorted(n for _, n in fuzzing.spans(wrong))
            acts = next(e["activations"] for e in examples if e["start"] in pairs and pair is pairs[e["start"]])
            assert all(acts[i] == 0 for i, marked in enumerate(wrong) if marked)
    spans_shown = [-len(fuzzing.spans(item["marks"])) for item in items]  # "fewer spans: yes"
    assert auroc(np.asarray([item["label"] for item in items]), np.asarray(spans_shown)) == pytest.approx(0.5)


def test_pooled_rows_average_latents_and_resample_latents_not_windows():
    """Audit defect: pooled per-decile rows bootstrapped windows across latents and computed one AUROC over
    latents whose scores live on different scales. Two latents each separate perfectly, on different scales."""
    from lantern.score.metrics import Outcome, group_rows, pool_latent_rows

    low = [Outcome(decile=d, source="random", label=int(d > 0), score=0.1 + 0.1 * (d > 0)) for d in (0, 0, 5, 5)]
    high = [Outcome(decile=d, source="random", label=int(d > 0), score=0.8 + 0.1 * (d > 0)) for d in (0, 0, 5, 5)]
    rows = [next(r for r in group_rows(latent, 200)[0] if r["decile"] == 5) for latent in (low, high)]
    assert [r["auroc"] for r in rows] == [1.0, 1.0]
    windows_pooled = group_rows(low + high, 200)[0]
    assert next(r for r in windows_pooled if r["decile"] == 5)["auroc"] < 1.0  # the old pooling
    pooled = pool_latent_rows(rows, 200)
    assert pooled["auroc"] == 1.0 and pooled["n"] == 4 and pooled["n_latents"] == 2
    assert pooled["interval_unit"] == "latents"
    spread = pool_latent_rows([{**rows[0], "accuracy": a} for a in (0.2, 0.4, 0.6, 0.8, 1.0)], 500)
    assert spread["accuracy"] == pytest.approx(0.6)
    assert spread["accuracy_ci_low"] < 0.5 and spread["accuracy_ci_high"] > 0.7  # the spread of 5 latents
    assert math.isnan(pool_latent_rows(rows[:1])["auroc_ci_low"])  # one latent: nothing to resample


def test_the_summary_is_readable_in_100_columns(tmp_path):
    """A newcomer's terminal: no summary line wider than 100 columns, every coder and scorer on one row."""
    from rich.console import Console

    from lantern.summary import print_summary

    row = {"coder": "neurons-topk32", "scorer": "detection", "latents": 32, "not_scored": 0, "explanations_failed": 1,
           "balanced_accuracy": 0.6123, "balanced_accuracy_ci95": 0.0456, "auroc": 0.7012, "auroc_ci95": 0.0789,
           "balanced_accuracy_calibrated": 0.655, "balanced_accuracy_calibrated_ci95": 0.05, "metric": "balanced_accuracy",
           "score": 0.6123, "score_ci95": 0.0456, "mode": None, "examples": 768, "examples_per_latent": 24.0,
           "failed_answers": 3, "prompt_tokens_per_latent": 3100.0, "completion_tokens_per_latent": 24.0,
           "explain_prompt_tokens_per_latent": 1100.0}
    summary = {"run_dir": "runs/x", "stage_seconds": {"cache": 90.0, "score": 490.0},
               "rows": [row, {**row, "scorer": "fuzzing"}],
               "llm": [{"stage": "score", "latents": 32, "calls": 1400, "cache_hits": 0, "failed": 3, "retries": 0,
                        "prompt_tokens_per_latent": 6200.0, "completion_tokens_per_latent": 37.0,
                        "paid_prompt_tokens": 198000, "evaluated_prompt_tokens": 105000}]}
    console = Console(width=100, record=True)
    print_summary(summary, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    lines = [line for line in text.splitlines() if "neurons-topk32" in line and "±" in line]
    assert len(lines) == 2 and all("0.612±0.046" in line and "0.701±0.079" in line for line in lines)
    assert "evaluated" in text and "105000" in text
