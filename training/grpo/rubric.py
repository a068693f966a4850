"""GRPO's reward as a rubric: a weighted list of reward functions, as TRL's `reward_funcs` with
`reward_weights` (and verifiers' `Rubric(funcs, weights)`). The run's own terms come first,
R_fut (weight 1; from the reward model, simulated futures or both, `reward_terms.py`) and R_fmt
(weight `alpha`); a user adds any other as `rewards: [{fn: mypkg.terms:length_penalty, weight:
-0.1}]` in the config, or `--reward-fn mypkg.terms:length_penalty:-0.1` (repeatable). TRL logs each
term on its own (`rewards/<name>/mean`) and their weighted sum as `reward`.

A user's term is a plain function (or callable object), sync or async, with TRL's reward-function
signature, `fn(prompts, completions, **kwargs) -> list[float | None]`, one value per completion
(None: no reward from this term). It is found as `package.module:function` (imported from the
working directory or an installed package) or as an `rlff_esc.rewards` entry point, and called
with these keyword arguments, one list entry per completion:

- `prompts`: the chat messages the policy was prompted with (system and user, as dicts);
- `completions`: what it wrote, `[{"role": "assistant", "content": text}]` each;
- `completion_ids`: the completion's token ids;
- `replies`: the reply the seeker would see, cleaned as R_fut sees it ("" when there is none);
- `context`: the dialogue before the reply, `{"speaker", "content"}` dicts;
- `context_key`: the training context's key;

and, not per completion, TRL's `trainer_state` (`global_step`, ...), `log_metric(name, value)`
and `log_extra(column, values)`. In a `simulated` run a completion whose future failed gets None
from every term, the user's included, so that no term alone puts it back in the group baseline.
"""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError
from esc_agents.core.plugins import installed, load_plugin
from training.grpo.config import RESERVED_TERM_NAMES, TERM_NAME, GrpoRunConfig, RewardTermSetting
from training.grpo.format_reward import FormatReward, FormatSpec
from training.grpo.futures_simulator import FutureSimulator
from training.grpo.reward_terms import (
    HybridFutureReward,
    ModelFutureReward,
    SimulatedFutureReward,
    UnscoredCompletions,
    WithheldWhereFutureFailed,
    spoken_replies,
)
from training.reward_model.scorer import RewardScorer

ENTRY_POINTS = "rlff_esc.rewards"
# What a user's term is called with besides prompts and completions (see the module's docstring).
TERM_KWARGS = ("completion_ids", "replies", "context", "context_key", "trainer_state", "log_metric", "log_extra")


@dataclass(frozen=True)
class UserTerm:
    """A user's reward function, found and checked, with its name and weight."""

    name: str
    weight: float
    fn: Any
    given: str  # as the config or --reward-fn named it
    target: str  # module:qualname of what it resolved to
    source: str  # "path" or "entry point"
    file: str | None  # the module's file, where it has one

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "fn": self.given, "source": self.source,
                "target": self.target, **({"file": self.file} if self.file else {})}


def user_terms(config: GrpoRunConfig) -> list[UserTerm]:
    """The user's terms of `config.rewards`, each loaded and checked: found, callable with TRL's
    reward-function keywords, under a name no other term has. Anything wrong is one line (a
    UserError) naming the term; call it before any weight loads."""
    terms: list[UserTerm] = []
    for setting in config.rewards:
        term = _load(setting)
        if term.name in RESERVED_TERM_NAMES or term.name in {other.name for other in terms}:
            raise UserError(f"reward term {setting.fn!r}: its name {term.name!r} is taken "
                            f"({', '.join([*RESERVED_TERM_NAMES, *(t.name for t in terms)])}); give it another with "
                            "`name:` in the config's rewards list")
        terms.append(term)
    return terms


def _load(setting: RewardTermSetting) -> UserTerm:
    from_entry_point = setting.fn in installed(ENTRY_POINTS)
    fn = load_plugin(setting.fn, ENTRY_POINTS, "reward term")
    if not callable(fn):
        raise UserError(f"reward term {setting.fn!r} is not a function (it is a {type(fn).__name__!r} object)")
    name = setting.name or getattr(fn, "__name__", None) or type(fn).__name__
    if not re.fullmatch(TERM_NAME, name):
        raise UserError(f"reward term {setting.fn!r}: {name!r} cannot name its logged reward "
                        "(rewards/<name>/mean); give it one with `name:` in the config's rewards list")
    try:
        inspect.signature(fn).bind(prompts=[], completions=[], **dict.fromkeys(TERM_KWARGS))
    except TypeError as error:
        raise UserError(f"reward term {setting.fn!r} cannot be called as fn(prompts, completions, **kwargs) "
                        f"({error}); it is also given {', '.join(TERM_KWARGS)}") from None
    except ValueError:  # a builtin without a signature: TRL will tell
        pass
    module_name = getattr(fn, "__module__", None) or type(fn).__module__
    file = getattr(sys.modules.get(module_name), "__file__", None)
    return UserTerm(name=name, weight=setting.weight, fn=fn, given=setting.fn,
                    target=f"{module_name}:{getattr(fn, '__qualname__', type(fn).__qualname__)}",
                    source="entry point" if from_entry_point else "path",
                    file=str(Path(file).resolve()) if file else None)


class UserReward:
    """A user's term as TRL calls it: under its name, with `replies` added to TRL's keywords."""

    def __init__(self, term: UserTerm, spec: FormatSpec):
        self.term = term
        self.spec = spec
        self.__name__ = term.name

    def _arguments(self, completions, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"completions": completions, "replies": spoken_replies(completions, self.spec)[0], **kwargs}

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        return self.term.fn(prompts=prompts, **self._arguments(completions, kwargs))


class AsyncUserReward(UserReward):
    async def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        return await self.term.fn(prompts=prompts, **self._arguments(completions, kwargs))


def user_reward(term: UserTerm, spec: FormatSpec) -> UserReward:
    fn = term.fn
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
    return (AsyncUserReward if is_async else UserReward)(term, spec)


@dataclass
class Rubric:
    """The reward functions in TRL's order and their weights, and what the run card records."""

    funcs: list
    weights: list[float]
    records: list[dict[str, Any]]

    @property
    def names(self) -> list[str]:
        return [record["name"] for record in self.records]


def rubric(config: GrpoRunConfig, spec: FormatSpec, simulator: FutureSimulator | None = None,
           terms: list[UserTerm] | None = None) -> Rubric:
    """[R_fut, R_fmt, *the user's terms], weighted [1, alpha, *their weights]; R_fut as
    `config.reward` says. In a `simulated` run every term after R_fut gives no reward to a
    completion whose future gave none. `terms`: the user's, already loaded (`user_terms`)."""
    terms = user_terms(config) if terms is None else terms
    others = [FormatReward(spec), *(user_reward(term, spec) for term in terms)]
    if config.reward == "simulated":
        unscored = UnscoredCompletions(readers=len(others))
        r_fut = SimulatedFutureReward(simulator, spec, unscored)
        others = [WithheldWhereFutureFailed(term, unscored) for term in others]
    else:
        scorer = RewardScorer.load(config.reward_model, batch_size=config.scorer_batch_size)
        r_fut = HybridFutureReward(scorer, simulator, spec, fraction=config.check_fraction,
                                   use_simulated=config.hybrid_use_simulated, window=config.agreement_window,
                                   seed=config.seed) if config.reward == "hybrid" else ModelFutureReward(scorer, spec)
    built_in = [{"name": "r_fut", "weight": 1.0, "fn": _path(type(r_fut)), "source": "built-in",
                 "reward": config.reward},
                {"name": "r_fmt", "weight": config.alpha, "fn": _path(FormatReward), "source": "built-in"}]
    return Rubric(funcs=[r_fut, *others], weights=[1.0, config.alpha, *(term.weight for term in terms)],
                  records=[*built_in, *(term.record() for term in terms)])


def _path(kind: type) -> str:
    return f"{kind.__module__}:{kind.__qualname__}"
