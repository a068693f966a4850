"""The two failure signals of a GRPO run that the method asks to log: a format reward still flat
after many steps (the policy rarely writes the format, so R_fmt gives GRPO nothing to compare)
and an R_fut that falls early (the policy moves away from what the reward pays for, often by
finding something else it pays for). Read from the logged history, as warnings, not errors: a
run may recover, and only a person reading the replies can tell."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

R_FMT, R_FUT = "rewards/r_fmt/mean", "rewards/r_fut/mean"
WINDOW = 10  # logged steps compared at each end
FLAT_AFTER = 20  # logged steps before R_fmt counts as flat; also the early span of R_fut
FLAT_GAIN = 0.05  # R_fmt must gain at least this much between the first and the last window
FORMAT_LEARNT = 0.9  # an R_fmt this high is no failure, however flat


def _series(history: list[dict[str, Any]], key: str) -> list[float]:
    """The logged values of `key`; a step whose completions all went unscored logs NaN, which is
    no value (one would make every mean and rank below NaN, and silence the warnings)."""
    return [float(entry[key]) for entry in history
            if entry.get(key) is not None and math.isfinite(float(entry[key]))]


def failure_signals(history: list[dict[str, Any]]) -> list[str]:
    """One line per signal the history shows (none for a healthy run or one too short to tell)."""
    signals = []
    r_fmt = _series(history, R_FMT)
    if len(r_fmt) >= FLAT_AFTER:
        first, last = float(np.mean(r_fmt[:WINDOW])), float(np.mean(r_fmt[-WINDOW:]))
        if last - first < FLAT_GAIN and last < FORMAT_LEARNT:
            signals.append(f"format reward flat: R_fmt {first:.2f} over the first {WINDOW} logged steps and "
                           f"{last:.2f} over the last {WINDOW} of {len(r_fmt)}; a policy that rarely writes the "
                           "format gets no signal from it (`rlff-esc warmup-format` gives it a start)")
    early = _series(history, R_FUT)[:FLAT_AFTER]
    if len(early) >= WINDOW and len(set(early)) > 1:
        rho, p_value = stats.spearmanr(range(len(early)), early)
        if rho < 0 and p_value < 0.05:
            signals.append(f"R_fut falling early: Spearman rho {rho:.2f} (p = {p_value:.3f}) against the step over "
                           f"the first {len(early)} logged steps, {early[0]:.2f} to {early[-1]:.2f}; read the "
                           "replies (`rlff-esc view`) for a shortcut the reward pays for")
    return signals
