"""Paired tests for two supporters run on the same cases: exact McNemar on success, a paired
bootstrap interval and a sign-flip test on turns and rates. 130 test cases is small; these say
whether a gap is more than noise.

Callers pass case-aligned outcomes in case-id order (`metrics.in_case_order`): the bootstrap
draws indices, so the same cases in another order would give another interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from esc_agents.evaluation.metrics import BOOTSTRAP_RESAMPLES, p_method

# Distinct sums of signed differences the exact sign-flip distribution may hold: every pattern of
# up to 20 nonzero differences (2^20), and any number of differences on a few values (turns,
# success rates), whose sums repeat.
EXACT_SUPPORT = 2 ** 20
# Sign patterns drawn where the exact distribution is out of reach (resolution 1/SIGN_FLIPS).
SIGN_FLIPS = 100_000


def mcnemar(a_success: Sequence[bool], b_success: Sequence[bool]) -> dict[str, float | int]:
    """Exact McNemar: only discordant cases count; under H0 each is A's or B's with p = 1/2."""
    a, b = np.asarray(a_success, dtype=bool), np.asarray(b_success, dtype=bool)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = a_only + b_only
    p_value = float(stats.binomtest(a_only, discordant, 0.5).pvalue) if discordant else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": p_value}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], seed: int = 0,
                     resamples: int = BOOTSTRAP_RESAMPLES, flips: int = SIGN_FLIPS) -> dict[str, object]:
    """Mean of a - b, its 95% interval from cases resampled together, and a two-sided p-value
    from a paired sign-flip test (under H0 each case's difference is as likely negative as
    positive), with how that p-value was computed. The p-value is not read off the bootstrap: its
    resampled means are centred on the observed difference, not on H0, and on few discordant
    cases that gives p-values far too small (4 of 130 cases all one way: 0.04, where the exact
    test says 0.125)."""
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = rng.choice(differences, size=(resamples, len(differences)), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    test = sign_flip(differences, seed, flips)
    return {"mean_difference": float(differences.mean()), "ci95": [float(low), float(high)],
            "p_value": test.p_value, "p_method": test.method, "p_flips": test.flips}


@dataclass(frozen=True)
class SignFlip:
    p_value: float
    flips: int | None  # None: exact, every sign pattern weighed

    @property
    def method(self) -> str:
        """`exact`, or `monte carlo, N flips, resolution 1/N`: a p-value is only as fine as its draws."""
        return p_method(self.flips)


def sign_flip(differences: np.ndarray, seed: int = 0, flips: int = SIGN_FLIPS) -> SignFlip:
    """Two-sided p of a mean difference of 0, signs flipped. Cases with no difference flip to
    themselves, so only the others count. Exact where the distribution of the signed sum fits
    EXACT_SUPPORT (always for up to 20 nonzero differences; for any number of turn or 0/1
    differences, where it is the binomial test); else `flips` random sign patterns, whose
    resolution the result carries."""
    nonzero = np.asarray(differences, dtype=float)
    nonzero = nonzero[nonzero != 0]
    if len(nonzero) < 2:  # no pattern of signs is more extreme than another
        return SignFlip(1.0, None)
    exact = _exact_sign_flip_p(nonzero)
    if exact is not None:
        return SignFlip(exact, None)
    rng = np.random.default_rng(seed)
    observed, hits, left = abs(nonzero.sum()), 0, flips
    tolerance = 1e-9 * np.abs(nonzero).sum()
    while left:  # in chunks: flips x differences signs at once would not fit in memory
        chunk = min(left, 10_000)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(chunk, len(nonzero)))
        hits += int((np.abs(signs @ nonzero) >= observed - tolerance).sum())
        left -= chunk
    # The observed pattern counts as one of the draws: a p-value of 0 is never reported.
    return SignFlip(min(1.0, (hits + 1) / (flips + 1)), flips)


def _exact_sign_flip_p(nonzero: np.ndarray, limit: int = EXACT_SUPPORT) -> float | None:
    """P(|sum of ±|d_i|| >= |observed sum|) with every sign pattern equally likely, built one
    difference at a time over the distinct sums reached (on a grid that merges only float noise);
    None when the distinct sums outgrow `limit`."""
    units = np.abs(nonzero) / np.abs(nonzero).max()
    grid = 1e-9
    sums, probabilities = np.zeros(1), np.ones(1)
    for magnitude in units:
        keys = np.round(np.concatenate([sums + magnitude, sums - magnitude]) / grid).astype(np.int64)
        keys, where = np.unique(keys, return_inverse=True)
        if len(keys) > limit:
            return None
        probabilities = np.bincount(where, weights=np.concatenate([probabilities, probabilities]) / 2)
        sums = keys * grid
    observed = abs(nonzero.sum()) / np.abs(nonzero).max()
    tolerance = grid * (len(units) + 1)  # each step rounds by at most half a grid step
    return float(min(1.0, probabilities[np.abs(sums) >= observed - tolerance].sum()))
