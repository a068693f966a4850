"""R_fut formulas, by name. Each turns a simulated future's raw parts (per-turn critic means,
K, T, success) into a scalar, so any formula can be applied later to stored futures without
re-simulating (`rlff-esc rewards relabel`).

Add a formula by decorating a function with `@register(name, defaults, bounds)`; `bounds`
gives the formula's range for T, its parameters and the critic's score range (the lowest and
highest verdict score), used to check a label threshold δ and to give a silent reply the
formula's minimum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from esc_agents.core.errors import UserError
from esc_agents.roles.plugins import load_plugin


@dataclass(frozen=True)
class FutureOutcome:
    turn_scores: list[float | None]  # critic mean per future turn (None: no parsable verdict)
    turns: int  # K
    max_turns: int  # T
    success: bool

    @classmethod
    def of(cls, trajectory, max_turns: int) -> FutureOutcome:
        """The raw parts of a simulated future (a `Trajectory` run from a candidate reply)."""
        return cls([score.mean for score in trajectory.scores], trajectory.turns, max_turns, trajectory.success)

    @classmethod
    def of_record(cls, record) -> FutureOutcome:
        """The raw parts a reward record keeps of its future (`relabel` and `stats` read them)."""
        return cls(record.turn_scores, record.K, record.T, record.success)

    @property
    def final_score(self) -> float | None:
        return self.turn_scores[-1] if self.turn_scores else None

    @property
    def cut_short(self) -> bool:
        """Ended before T without the goal: only the future supporter's missing reply ends a future
        so (the graph's `no_reply`). Its scores so far say nothing of how it would have ended."""
        return not self.success and self.turns < self.max_turns


Formula = Callable[[FutureOutcome, dict[str, float]], float | None]
Bounds = Callable[[int, dict[str, float], tuple[float, float]], tuple[float, float]]
DEFAULT_CRITIC_RANGE = (-1.0, 1.0)  # the built-in critic's verdict scores


@dataclass(frozen=True)
class RewardFormula:
    name: str
    compute: Formula
    defaults: dict[str, float]
    bounds: Bounds
    description: str

    def params(self, overrides: dict[str, float] | None = None) -> dict[str, float]:
        unknown = set(overrides or {}) - set(self.defaults)
        if unknown:
            raise UserError(
                f"formula {self.name!r} has no parameter {sorted(unknown)[0]!r} "
                f"(parameters: {', '.join(self.defaults) or 'none'})"
            )
        return {**self.defaults, **(overrides or {})}

    def __call__(self, outcome: FutureOutcome, params: dict[str, float]) -> float | None:
        """R_fut, or None for a future cut short (any formula: none was made for a future that
        did not end) or one the formula cannot score."""
        return None if outcome.cut_short else self.compute(outcome, params)

    def range(self, max_turns: int, params: dict[str, float],
              critic_range: tuple[float, float] = DEFAULT_CRITIC_RANGE) -> tuple[float, float]:
        return self.bounds(max_turns, params, critic_range)


FORMULAS: dict[str, RewardFormula] = {}


def register(name: str, defaults: dict[str, float], bounds: Bounds) -> Callable[[Formula], Formula]:
    def wrap(compute: Formula) -> Formula:
        FORMULAS[name] = RewardFormula(name, compute, defaults, bounds, (compute.__doc__ or "").strip())
        return compute

    return wrap


FORMULA_ENTRY_POINTS = "rlff_esc.formulas"


def get_formula(name: str) -> RewardFormula:
    """A built-in formula, an installed one (`rlff_esc.formulas` entry points), or
    `package.module:function`. A plain function `(outcome, params) -> float | None` may carry
    `defaults` (its parameters) and `bounds` (`(T, params, critic_range) -> (low, high)`, its range;
    without it, the critic's range is assumed)."""
    if name in FORMULAS:
        return FORMULAS[name]
    return _as_formula(name, load_plugin(name, FORMULA_ENTRY_POINTS, "reward formula", FORMULAS))


def _as_formula(name: str, found) -> RewardFormula:
    if isinstance(found, RewardFormula):
        return found
    if not callable(found):
        raise UserError(f"reward formula {name!r} is not callable")
    return RewardFormula(name, found, dict(getattr(found, "defaults", {})), getattr(found, "bounds", _critic_bounds),
                         (found.__doc__ or "").strip())


def _critic_bounds(max_turns: int, params: dict[str, float], critic: tuple[float, float]) -> tuple[float, float]:
    return critic


def check_threshold(formula: RewardFormula, delta: float, max_turns: int, params: dict[str, float],
                    critic_range: tuple[float, float] = DEFAULT_CRITIC_RANGE) -> None:
    low, high = formula.range(max_turns, params, critic_range)
    if not low <= delta < high:
        raise UserError(f"delta {delta} is outside the range [{low:g}, {high:g}) of formula {formula.name!r} "
                        f"with critic scores in [{critic_range[0]:g}, {critic_range[1]:g}]")


def checked_formula(name: str, overrides: dict[str, float] | None, delta: float, max_turns: int,
                    critic_range: tuple[float, float] = DEFAULT_CRITIC_RANGE) -> tuple[RewardFormula, dict[str, float]]:
    """The named formula with its resolved parameters, once δ is known to lie in its range."""
    formula = get_formula(name)
    params = formula.params(overrides)
    check_threshold(formula, delta, max_turns, params, critic_range)
    return formula, params


@register("terminal_efficiency", {"lambda": 0.5}, lambda t, p, c: (c[0], c[1] + p["lambda"] * (t - 1) / t))
def terminal_efficiency(outcome: FutureOutcome, params: dict[str, float]) -> float | None:
    """s_K + λ·1[success]·(T − K)/T: end well, and among successes end sooner (the default)."""
    if outcome.final_score is None:
        return None
    bonus = params["lambda"] * (outcome.max_turns - outcome.turns) / outcome.max_turns if outcome.success else 0.0
    return outcome.final_score + bonus


@register("terminal", {}, lambda t, p, c: c)
def terminal(outcome: FutureOutcome, params: dict[str, float]) -> float | None:
    """s_K: the critic's mean score when the future stopped."""
    return outcome.final_score


@register("discounted", {"gamma": 0.8}, lambda t, p, c: c)
def discounted(outcome: FutureOutcome, params: dict[str, float]) -> float | None:
    """Σ_k γ^(K−k)·s_k / Σ_k γ^(K−k): every turn's score counts, the latest most."""
    weighted = [
        (params["gamma"] ** (outcome.turns - k), score)
        for k, score in enumerate(outcome.turn_scores, start=1)
        if score is not None
    ]
    if not weighted:
        return None
    return sum(w * s for w, s in weighted) / sum(w for w, _ in weighted)
