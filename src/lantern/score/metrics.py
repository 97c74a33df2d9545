"""The metrics every scorer shares, each with its n and a bootstrap interval.

Failed answers are excluded from the metrics but counted (`n_failed`); they are never scored as "no".
Per latent, scorers report what fits them (classification metrics, AUROC, accuracy, correlations); the same
figures are then broken down per activation decile and per negative source (`group_rows`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from lantern.intervals import LEVEL, NAN, percentile_interval, rowwise_pearson
from lantern.intervals import bootstrap_mean_interval as mean_interval  # the scorers' name (intervention.py)

RESAMPLES = 1000
_CHUNK = 4_000_000
"""Resampled values held at once by the vectorised bootstraps (bounded memory for pooled groups)."""


# --- classification (detection, fuzzing) ---------------------------------------------------------------


def _balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Balanced accuracy of yes predictions (0/1, or fractional where tied items share the yes calls)."""
    if len(np.unique(labels)) < 2:
        return NAN
    return float((predictions[labels == 1].mean() + 1 - predictions[labels == 0].mean()) / 2)


def bootstrap_interval(labels: np.ndarray, predictions: np.ndarray, n_resamples: int = RESAMPLES, seed: int = 0,
                       level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of balanced accuracy, resampling positives and negatives separately."""
    if len(np.unique(labels)) < 2:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    pos_draw = rng.choice(pos, size=(n_resamples, len(pos)))
    neg_draw = rng.choice(neg, size=(n_resamples, len(neg)))
    tpr = predictions[pos_draw].mean(axis=1)
    tnr = 1 - predictions[neg_draw].mean(axis=1)
    return percentile_interval((tpr + tnr) / 2, level)


def base_rate_predictions(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Yes for the items the judge ranks highest, as many as the set holds positives.

    Why: a small judge can rank right and still answer "yes" (P >= 0.5) to nearly everything, which makes
    balanced accuracy at 0.5 read 0.500 whatever it ranks. The scorer built the set, so how many items are
    positive is known by design; putting the threshold at that base rate uses no item's label, only the count.
    Items tied at the threshold share the remaining yes calls (a fractional prediction each), so 0/1 answers
    or a run of P(yes) = 1.0 are neither all called yes nor cut in an arbitrary order."""
    probabilities = np.asarray(probabilities, dtype=float)
    k = int((np.asarray(labels) == 1).sum())
    predictions = np.zeros(len(probabilities))
    if k == 0:
        return predictions
    threshold = np.sort(probabilities)[::-1][k - 1]
    above, tied = probabilities > threshold, probabilities == threshold
    predictions[above] = 1.0
    predictions[tied] = (k - above.sum()) / tied.sum()
    return predictions


CLASSIFICATION_FIGURES = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc",
                          "balanced_accuracy_ci_low", "balanced_accuracy_ci_high", "auroc_ci_low", "auroc_ci_high",
                          "balanced_accuracy_calibrated", "balanced_accuracy_calibrated_ci_low",
                          "balanced_accuracy_calibrated_ci_high", "brier")


def classification_metrics(labels: list[int], probabilities: list[float | None], threshold: float = 0.5,
                           n_resamples: int = RESAMPLES) -> dict:
    """Accuracy, balanced accuracy (+95% CI), precision, recall, F1, AUROC (+95% CI), n, n_pos, n_neg,
    n_failed; `balanced_accuracy_calibrated` (+95% CI): the same with the threshold at the set's base rate
    (`base_rate_predictions`), which reads the judge's ranking rather than its calibration; and `brier`, the mean
    squared error of P(yes) (a proper scoring rule: 0 perfect, 0.25 for a judge that always says 0.5), which
    reads its calibration."""
    y_all = np.asarray(labels, dtype=int)
    valid = np.asarray([p is not None for p in probabilities], dtype=bool)
    y = y_all[valid]
    p = np.asarray([q for q in probabilities if q is not None], dtype=float)
    result = {"n": int(valid.sum()), "n_pos": int((y == 1).sum()), "n_neg": int((y == 0).sum()),
              "n_failed": int((~valid).sum())}
    if len(y) == 0:
        return {**result, **dict.fromkeys(CLASSIFICATION_FIGURES, NAN)}
    predictions = (p >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(y, predictions, average="binary", zero_division=0)
    low, high = bootstrap_interval(y, predictions, n_resamples)
    auroc_low, auroc_high = auroc_interval(y, p, n_resamples)
    at_rate = base_rate_predictions(y, p)
    rate_low, rate_high = bootstrap_interval(y, at_rate, n_resamples)
    return {**result, "accuracy": float((predictions == y).mean()), "balanced_accuracy": _balanced_accuracy(y, predictions),
            "precision": float(precision), "recall": float(recall), "f1": float(f1), "auroc": auroc(y, p),
            "balanced_accuracy_ci_low": low, "balanced_accuracy_ci_high": high,
            "auroc_ci_low": auroc_low, "auroc_ci_high": auroc_high,
            "balanced_accuracy_calibrated": _balanced_accuracy(y, at_rate),
            "balanced_accuracy_calibrated_ci_low": rate_low, "balanced_accuracy_calibrated_ci_high": rate_high,
            "brier": float(np.mean((p - y) ** 2))}


# --- proportions (accuracy of intruder choices, per-decile hit rates) ----------------------------------


def proportion_interval(successes: np.ndarray, n_resamples: int = RESAMPLES, seed: int = 0,
                        level: float = LEVEL) -> tuple[float, float]:
    """Bootstrap interval of a proportion (the mean of n resampled Bernoulli outcomes is Binomial(n, p) / n,
    drawn directly)."""
    successes = np.asarray(successes, dtype=bool)
    if len(successes) == 0:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    draws = rng.binomial(len(successes), successes.mean(), size=n_resamples)
    return percentile_interval(draws / len(successes), level)


def accuracy_vs_chance(correct: np.ndarray, chance: float, n_resamples: int = RESAMPLES) -> dict:
    """Accuracy with its interval, the chance rate, and the one-sided binomial p-value of beating it."""
    correct = np.asarray(correct, dtype=bool)
    if len(correct) == 0:
        return {"accuracy": NAN, "accuracy_ci_low": NAN, "accuracy_ci_high": NAN, "chance": chance, "p_value": NAN}
    low, high = proportion_interval(correct, n_resamples)
    p_value = stats.binomtest(int(correct.sum()), len(correct), chance, alternative="greater").pvalue
    return {"accuracy": float(correct.mean()), "accuracy_ci_low": low, "accuracy_ci_high": high, "chance": chance,
            "p_value": float(p_value)}


# --- AUROC (surprisal, embedding, simulation windows) -------------------------------------------------


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) > 1 else NAN


def auroc_interval(labels: np.ndarray, scores: np.ndarray, n_resamples: int = RESAMPLES, seed: int = 0,
                   level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of AUROC, resampling positives and negatives separately.

    AUROC is the mean over (positive, negative) pairs of [pos > neg] + 0.5 [pos == neg]; a resample weights
    each pair by how often both were drawn, so every resample is one matrix product (no Python loop)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    if len(pos) * len(neg) > _CHUNK:  # too many pairs for one matrix: rank each resample instead
        values = [_auroc_by_ranks(rng.choice(pos, len(pos)), rng.choice(neg, len(neg))) for _ in range(n_resamples)]
        return percentile_interval(values, level)
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    values = []
    step = max(1, _CHUNK // (len(pos) + 2 * len(neg)))
    for lo in range(0, n_resamples, step):
        b = min(step, n_resamples - lo)
        w_pos = rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), size=b)
        w_neg = rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), size=b)
        values.append(((w_pos @ wins) * w_neg).sum(axis=1) / (len(pos) * len(neg)))
    return percentile_interval(np.concatenate(values), level)


def _auroc_by_ranks(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos n_neg), ties counted half."""
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# --- correlations (simulation) -----------------------------------------------------------------------


def _padded(windows: list[np.ndarray]) -> np.ndarray:
    width = max(len(w) for w in windows)
    out = np.full((len(windows), width), np.nan)
    for i, w in enumerate(windows):
        out[i, :len(w)] = w
    return out


def correlations(true: list[np.ndarray], predicted: list[np.ndarray], n_resamples: int = RESAMPLES, seed: int = 0,
                 level: float = LEVEL) -> dict:
    """Pearson and Spearman correlation of predicted with true token activations over all windows, with
    intervals from resampling whole windows (tokens of one window are not independent)."""
    keys = ("pearson", "pearson_ci_low", "pearson_ci_high", "spearman", "spearman_ci_low", "spearman_ci_high")
    if not true:
        return dict.fromkeys(keys, NAN)
    x, y = np.concatenate(true).astype(float), np.concatenate(predicted).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input gives nan, which is what we report
        pearson = float(stats.pearsonr(x, y).statistic) if len(x) > 1 else NAN
        spearman = float(stats.spearmanr(x, y).statistic) if len(x) > 1 else NAN
    tx, ty = _padded(list(true)), _padded(list(predicted))
    k, width = tx.shape
    rng = np.random.default_rng(seed)
    pearsons, spearmans = [], []
    step = max(1, _CHUNK // (k * width))
    for lo in range(0, n_resamples, step):
        draw = rng.integers(0, k, size=(min(step, n_resamples - lo), k))
        bx, by = tx[draw].reshape(len(draw), -1), ty[draw].reshape(len(draw), -1)
        pearsons.append(rowwise_pearson(bx, by))
        spearmans.append(rowwise_pearson(stats.rankdata(bx, axis=1, nan_policy="omit"),
                                          stats.rankdata(by, axis=1, nan_policy="omit")))
    p_low, p_high = percentile_interval(np.concatenate(pearsons), level)
    s_low, s_high = percentile_interval(np.concatenate(spearmans), level)
    return dict(zip(keys, (pearson, p_low, p_high, spearman, s_low, s_high)))


# --- outcomes and their breakdown per decile and per negative source ----------------------------------


@dataclass(frozen=True)
class Outcome:
    """One scored unit (a window, a marked variant, an intruder trial) as the shared metrics read it."""

    decile: int
    """Activation decile 1..10 of an activating window (or an intruder trial's windows); 0 for a negative."""
    source: str
    """Where a negative came from (random, similar, neighbour-cooccurrence, neighbour-decoder, wrong-marks)."""
    failed: bool = False
    """The answer could not be read: counted in `n_failed`, left out of every figure."""
    label: int | None = None
    """1: the latent fires here (or the marks are right); 0: it does not; None: no two classes (intruder)."""
    score: float | None = None
    """How much the scorer thinks this is the latent's (P(yes), loss drop, similarity, peak prediction)."""
    correct: bool | None = None
    """Whether a verdict was right, for scorers that give one."""
    true: tuple[float, ...] | None = None
    """Token activations (simulation)."""
    predicted: tuple[float, ...] | None = None
    """Predicted token activations (simulation)."""


FIGURES = ("n", "n_failed", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "auroc", "auroc_ci_low",
           "auroc_ci_high", "pearson", "pearson_ci_low", "pearson_ci_high", "spearman", "spearman_ci_low",
           "spearman_ci_high", "mean_score")


def figures(members: list[Outcome], contrast: list[Outcome] = (), n_resamples: int = RESAMPLES) -> dict:
    """n, failures, accuracy, mean score of `members`; AUROC and correlations of `members` plus `contrast`
    (the other class, where `members` hold only one)."""
    read = [o for o in members if not o.failed]
    out = dict.fromkeys(FIGURES, NAN)
    out.update(n=len(read), n_failed=len(members) - len(read))
    verdicts = np.asarray([o.correct for o in read if o.correct is not None], dtype=bool)
    if len(verdicts):
        low, high = proportion_interval(verdicts, n_resamples)
        out.update(accuracy=float(verdicts.mean()), accuracy_ci_low=low, accuracy_ci_high=high)
    scores = [o.score for o in read if o.score is not None]
    if scores:
        out["mean_score"] = float(np.mean(scores))
    both = read + [o for o in contrast if not o.failed]
    labelled = [o for o in both if o.label is not None and o.score is not None]
    if labelled:
        labels = np.asarray([o.label for o in labelled])
        values = np.asarray([o.score for o in labelled], dtype=float)
        low, high = auroc_interval(labels, values, n_resamples)
        out.update(auroc=auroc(labels, values), auroc_ci_low=low, auroc_ci_high=high)
    tokens = [o for o in both if o.true is not None and o.predicted is not None]
    if tokens:
        out.update(correlations([np.asarray(o.true) for o in tokens], [np.asarray(o.predicted) for o in tokens],
                                n_resamples))
    return out


def _contrast(group: list[Outcome], everything: list[Outcome]) -> list[Outcome]:
    """Where a group holds one class only (a decile's activating windows, one source's negatives), its AUROC
    and correlation are taken against all of the latent's outcomes of the other class."""
    labels = {o.label for o in group if o.label is not None}
    if len(labels) != 1:
        return []
    return [o for o in everything if o.label is not None and o.label not in labels]


def group_rows(outcomes: list[Outcome], n_resamples: int = RESAMPLES) -> tuple[list[dict], list[dict]]:
    """(per-decile rows, per-source rows). Deciles 1..10 hold activating units, decile 0 the negatives;
    sources are those of the negatives (units labelled 0)."""
    by_decile: dict[int, list[Outcome]] = {}
    by_source: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_decile.setdefault(o.decile, []).append(o)
        if o.label == 0:
            by_source.setdefault(o.source, []).append(o)
    deciles = [{"decile": d, **figures(members, _contrast(members, outcomes), n_resamples)}
               for d, members in sorted(by_decile.items())]
    sources = [{"source": s, **figures(members, _contrast(members, outcomes), n_resamples)}
               for s, members in sorted(by_source.items())]
    return deciles, sources


POOLED_FIGURES = ("accuracy", "auroc", "pearson", "spearman", "mean_score")


def pool_latent_rows(rows: list[dict], n_resamples: int = RESAMPLES) -> dict:
    """One group's rows of several latents (a decile, a negative source) pooled: `n` and `n_failed` summed, each
    figure the mean over the latents that have it, its interval from resampling latents (a cluster bootstrap:
    windows of one latent are not independent, and one latent's AUROC is not on another's score scale).
    `interval_unit` says so; `n_latents` counts the group's latents, `<figure>_latents` those behind each mean."""
    out = dict.fromkeys(FIGURES, NAN)
    out.update(n=int(sum(r.get("n") or 0 for r in rows)), n_failed=int(sum(r.get("n_failed") or 0 for r in rows)),
               interval_unit="latents", n_latents=len(rows))
    for name in POOLED_FIGURES:
        values = np.asarray([r.get(name) for r in rows if r.get(name) is not None], dtype=float)
        values = values[np.isfinite(values)]
        out[f"{name}_latents"] = len(values)
        if len(values):
            out[name] = float(values.mean())
            if name != "mean_score":
                out[f"{name}_ci_low"], out[f"{name}_ci_high"] = mean_interval(values, n_resamples)
    return out
