"""Paired tests for two supporters run on the same cases: exact McNemar on success, a paired
bootstrap on turns. 130 test cases is small; these say whether a gap is more than noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from esc_agents.evaluation.metrics import BOOTSTRAP_RESAMPLES


def mcnemar(a_success: Sequence[bool], b_success: Sequence[bool]) -> dict[str, float | int]:
    """Exact McNemar: only discordant cases count; under H0 each is A's or B's with p = 1/2."""
    a, b = np.asarray(a_success, dtype=bool), np.asarray(b_success, dtype=bool)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = a_only + b_only
    p_value = float(stats.binomtest(a_only, discordant, 0.5).pvalue) if discordant else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": p_value}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], seed: int = 0,
                     resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float | list[float]]:
    """Mean of a - b over cases resampled together, its 95% interval, and a two-sided p-value
    (twice the share of resampled means on the far side of zero)."""
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = rng.choice(differences, size=(resamples, len(differences)), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    far_side = min((means <= 0).mean(), (means >= 0).mean())
    return {"mean_difference": float(differences.mean()), "ci95": [float(low), float(high)],
            "p_value": float(min(1.0, 2 * far_side))}
