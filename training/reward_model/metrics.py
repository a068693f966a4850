"""How well a reward model's scores match D_r: the paper's classification numbers, and the
ranking numbers every objective can be compared on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from training.reward_model.data import same_context_pairs

CALIBRATION_BINS = 10


def classification_metrics(probabilities: Sequence[float], labels: Sequence[int]) -> dict[str, float | None]:
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(labels, dtype=int)
    predicted = (p > 0.5).astype(int)
    true_pos = int(((predicted == 1) & (y == 1)).sum())
    precision = true_pos / max(int(predicted.sum()), 1)
    recall = true_pos / max(int(y.sum()), 1)
    return {
        "accuracy": float((predicted == y).mean()),
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "auc": auc(p, y),
        "calibration_error": expected_calibration_error(p, y),
        "positive_rate": float(y.mean()),
    }


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney U statistic over (positive, negative) pairs; None with one class."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if not len(positives) or not len(negatives):
        return None
    u = stats.mannwhitneyu(positives, negatives, alternative="two-sided").statistic
    return float(u / (len(positives) * len(negatives)))


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Mean |confidence - accuracy| over equal-width probability bins, weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(p[members].mean() - y[members].mean())
    return float(error)


def ranking_metrics(scores: Sequence[float], rows: Sequence[dict]) -> dict[str, float | int | None]:
    """Pairwise accuracy on same-context candidates with different R_fut (a tie counts half)
    and Spearman's rho between score and R_fut."""
    keyed = [{**row, "_score": float(score)} for row, score in zip(rows, scores, strict=True)]
    pairs = same_context_pairs(keyed)
    wins = [1.0 if p.chosen["_score"] > p.rejected["_score"] else 0.5 if p.chosen["_score"] == p.rejected["_score"]
            else 0.0 for p in pairs]
    r_fut = [row["r_fut"] for row in rows]
    rho = None
    if len(set(r_fut)) > 1 and len(set(map(float, scores))) > 1:
        rho = float(stats.spearmanr(list(scores), r_fut).statistic)
    return {"pairwise_accuracy": float(np.mean(wins)) if wins else None, "pairs": len(pairs), "spearman": rho}
