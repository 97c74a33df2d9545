"""Classification metrics for one latent and scorer, with n and a bootstrap interval.

Failed answers are excluded from the metrics but counted (`n_failed`); they are never scored as "no".
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support, roc_auc_score


def _balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(balanced_accuracy_score(labels, predictions)) if len(np.unique(labels)) > 1 else float("nan")


def bootstrap_interval(labels: np.ndarray, predictions: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of balanced accuracy, resampling positives and negatives separately."""
    if len(np.unique(labels)) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    pos_draw = rng.choice(pos, size=(n_resamples, len(pos)))
    neg_draw = rng.choice(neg, size=(n_resamples, len(neg)))
    tpr = predictions[pos_draw].mean(axis=1)
    tnr = 1 - predictions[neg_draw].mean(axis=1)
    scores = (tpr + tnr) / 2
    alpha = (1 - level) / 2
    return float(np.quantile(scores, alpha)), float(np.quantile(scores, 1 - alpha))


def classification_metrics(labels: list[int], probabilities: list[float | None], threshold: float = 0.5) -> dict:
    """Accuracy, balanced accuracy (+95% CI), precision, recall, F1, AUROC, n, n_pos, n_neg, n_failed."""
    y_all = np.asarray(labels, dtype=int)
    valid = np.asarray([p is not None for p in probabilities], dtype=bool)
    y = y_all[valid]
    p = np.asarray([q for q in probabilities if q is not None], dtype=float)
    result = {"n": int(valid.sum()), "n_pos": int((y == 1).sum()), "n_neg": int((y == 0).sum()),
              "n_failed": int((~valid).sum())}
    nan = float("nan")
    if len(y) == 0:
        return {**result, "accuracy": nan, "balanced_accuracy": nan, "precision": nan, "recall": nan, "f1": nan,
                "auroc": nan, "balanced_accuracy_ci_low": nan, "balanced_accuracy_ci_high": nan}
    predictions = (p >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(y, predictions, average="binary", zero_division=0)
    low, high = bootstrap_interval(y, predictions)
    auroc = float(roc_auc_score(y, p)) if len(np.unique(y)) > 1 else nan
    return {**result, "accuracy": float((predictions == y).mean()), "balanced_accuracy": _balanced_accuracy(y, predictions),
            "precision": float(precision), "recall": float(recall), "f1": float(f1), "auroc": auroc,
            "balanced_accuracy_ci_low": low, "balanced_accuracy_ci_high": high}
