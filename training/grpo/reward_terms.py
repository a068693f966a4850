"""R_fut as TRL reward functions, in three modes: the reward model (`reward: model`, the
paper's), each sampled reply's own simulated future (`simulated`), or the reward model with a
random share of the replies also simulated to watch it (`hybrid`); and the hand-over that gives a
completion whose simulated future failed no reward from any other term of the rubric either.

Each is called by TRL with its reward-function signature, `(prompts, completions, **kwargs)`,
the kwargs being the dataset's columns (`context`, `context_key`) and TRL's own (`trainer_state`,
`log_metric`, ...). The futures themselves are `futures_simulator.FutureSimulator`'s.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

from scipy import stats

from training.grpo.format_reward import FormatSpec, completion_text
from training.grpo.futures_simulator import FutureSimulator
from training.grpo.records import RewardUsed
from training.reward_model.scorer import RewardScorer
from training.run_folder import process_index


def spoken_replies(completions: Sequence[Any], spec: FormatSpec, log_metric=None) -> tuple[list[str], list[int]]:
    """The reply of each completion, cleaned as every supporter turn is, and the indices of those
    with any reply left (the silent others are neither scored nor simulated). The spans cleaning
    removed as another role's words or a verdict are logged per step (`hack/forged_spans`): a
    policy learning to write them shows while it happens."""
    turns = [spec.turn(completion_text(completion)) for completion in completions]
    if log_metric is not None:
        log_metric("hack/forged_spans", sum(len(turn.forged) for turn in turns))
    replies = [turn.content for turn in turns]
    return replies, [i for i, reply in enumerate(replies) if reply]


def with_reply_rewards(length: int, spoken: list[int], values: Sequence[float | None],
                       silent: float) -> list[float | None]:
    """Rewards for a whole batch: the values at the spoken completions, `silent` for the others."""
    rewards: list[float | None] = [silent] * length
    for i, value in zip(spoken, values):
        rewards[i] = value
    return rewards


def batch_slots(completions: Sequence[Any], indices: Sequence[int]) -> list[int]:
    """The places of these completions in the step's whole batch: under several processes each
    scores its own contiguous slice of it, and no two futures of a step may share their samples."""
    first = process_index() * len(completions)
    return [first + i for i in indices]


def model_floor(objective: str, scores: Sequence[float]) -> float:
    """A silent completion's reward-model reward, never above the worst spoken reply's: the lowest
    probability for a classifier; for ranking and regression scores, which have no fixed minimum,
    the lowest score of the same batch."""
    return 0.0 if objective == "classification" else min(scores, default=0.0)


def step_of(trainer_state) -> int:
    return trainer_state.global_step if trainer_state is not None else 0


def _no_metric(name: str, value: float) -> None:
    """Stands in for TRL's `log_metric` when a reward function is called outside a trainer."""


class ModelFutureReward:
    """`reward: model` (the paper's): R_fut from the reward model on (context, reply)."""

    def __init__(self, scorer: RewardScorer, spec: FormatSpec):
        self.scorer = scorer
        self.spec = spec
        self.__name__ = "r_fut"

    def __call__(self, prompts, completions, context, log_metric=_no_metric, **_) -> list[float]:
        replies, spoken = spoken_replies(completions, self.spec, log_metric)
        scores = self.scorer.score([context[i] for i in spoken], [replies[i] for i in spoken])
        return with_reply_rewards(len(replies), spoken, scores, model_floor(self.scorer.objective, scores))


class UnscoredCompletions:
    """Which completions of a reward call had a future that gave no reward. Every other term of
    the rubric (R_fmt and the user's) reads it, so those completions get no reward at all: TRL
    then leaves them out of the group baseline with advantage 0, instead of summing the missing
    R_fut as 0. All the reward functions of a call run on TRL's event loop and get the same
    `completions` list, which keys the hand-over; `readers` is how many terms read each call's
    set (it is let go when the last has read it)."""

    def __init__(self, readers: int = 1):
        if readers < 1:
            raise ValueError("an unscored-completions hand-over needs at least one reader")
        self.readers = readers
        self._calls: dict[int, tuple[asyncio.Future, list[int]]] = {}

    def _slot(self, completions: list) -> tuple[asyncio.Future, list[int]]:
        return self._calls.setdefault(id(completions), (asyncio.get_running_loop().create_future(), [self.readers]))

    def publish(self, completions: list, indices: set[int]) -> None:
        self._slot(completions)[0].set_result(indices)

    async def of(self, completions: list) -> set[int]:
        future, left = self._slot(completions)
        try:
            return await future
        finally:
            left[0] -= 1
            if left[0] == 0:
                self._calls.pop(id(completions), None)


class WithheldWhereFutureFailed:
    """Another term of a `simulated` rubric (R_fmt, a user's term), giving no reward (None) to a
    completion whose simulated future gave none: a term that still paid such a row would put it
    back in the group baseline on that term alone. The term itself may be sync or async."""

    def __init__(self, term, unscored: UnscoredCompletions):
        self.term = term
        self.unscored = unscored
        self.__name__ = term.__name__

    async def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        try:
            rewards = self.term(prompts=prompts, completions=completions, **kwargs)
            if inspect.isawaitable(rewards):
                rewards = await rewards
        finally:
            unscored = await self.unscored.of(completions)  # read even when the term failed: the set is let go
        return [None if i in unscored else reward for i, reward in enumerate(rewards)]


class _UnscoredRowsCountedElsewhere(logging.Filter):
    """TRL warns with a whole row (context, prompt, completion) whenever every reward of a
    completion is None; here that is a failed future, already counted, named in one line and
    kept in futures.jsonl."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "All reward functions returned None" not in record.getMessage()


_UNSCORED_ROWS_FILTER = _UnscoredRowsCountedElsewhere()


class SimulatedFutureReward:
    """`reward: simulated`: R_fut of every completion from its own simulated future."""

    def __init__(self, simulator: FutureSimulator, spec: FormatSpec, unscored: UnscoredCompletions):
        self.simulator = simulator
        self.spec = spec
        self.unscored = unscored
        self.__name__ = "r_fut"
        logging.getLogger("trl.trainer.grpo_trainer").addFilter(_UNSCORED_ROWS_FILTER)  # once: same instance

    async def __call__(self, prompts, completions, context_key, trainer_state=None, log_metric=_no_metric,
                       **_) -> list[float | None]:
        replies, spoken = spoken_replies(completions, self.spec, log_metric)
        unscored: set[int] = set()
        try:
            values = await self.simulator.rewards([(context_key[i], replies[i]) for i in spoken],
                                                  step=step_of(trainer_state), log_metric=log_metric,
                                                  slots=batch_slots(completions, spoken))
            unscored = {i for i, value in zip(spoken, values) if value is None}
        finally:
            self.unscored.publish(completions, unscored)  # also on failure, so no other term waits forever
        return with_reply_rewards(len(replies), spoken, values, self.simulator.floor)


def checked_share(indices: list[int], fraction: float, rng: random.Random) -> list[int]:
    """A random subset of `fraction` of the indices; the fractional part is drawn, so the
    expected share is exactly `fraction` at any batch size."""
    exact = fraction * len(indices)
    count = math.floor(exact) + (rng.random() < exact - math.floor(exact))
    return sorted(rng.sample(indices, count))


class AgreementWindow:
    """The reward model's scores against simulated R_fut on the last N checked completions."""

    def __init__(self, size: int, objective: str, delta: float):
        self.pairs: deque[tuple[float, float]] = deque(maxlen=size)
        self.objective = objective
        self.delta = delta

    def add(self, scores: Sequence[float], simulated: Sequence[float]) -> None:
        self.pairs.extend(zip(scores, simulated))

    def metrics(self) -> dict[str, float]:
        """Spearman's rho (once it is defined), and for classification the accuracy of the
        model's label (P > 0.5) against the simulated one (R_fut > delta)."""
        result: dict[str, float] = {}
        if not self.pairs:
            return result
        scores, simulated = zip(*self.pairs)
        if len(self.pairs) >= 3 and len(set(scores)) > 1 and len(set(simulated)) > 1:
            result["spearman"] = float(stats.spearmanr(scores, simulated).statistic)
        if self.objective == "classification":
            result["label_accuracy"] = sum((s > 0.5) == (r > self.delta) for s, r in self.pairs) / len(self.pairs)
        return result


class HybridFutureReward:
    """`reward: hybrid`: the reward model scores every completion; a random `check_fraction` is
    also simulated and the two are compared as training goes, so reward hacking of the model
    shows in the logs (`hybrid/spearman`, `hybrid/label_accuracy`) while it happens.

    With `use_simulated`, a checked completion is rewarded on the reward model's own scale: a
    classifier's by the simulated label 1[R_fut > δ] (a probability's two ends), a regression
    model's by R_fut itself (what it was trained to predict); ranking scores have no scale to
    map onto and are refused. futures.jsonl says which reward each checked completion got.

    Under several processes each checks a share of its own completions; the counts and the
    agreement window are those of every process's checks (`FutureSimulator.record` gathers them),
    so each logs the run's numbers."""

    def __init__(self, scorer: RewardScorer, simulator: FutureSimulator, spec: FormatSpec, *,
                 fraction: float, use_simulated: bool, window: int, seed: int):
        self.scorer = scorer
        self.simulator = simulator
        self.spec = spec
        self.fraction = fraction
        self.use_simulated = use_simulated
        self.agreement = AgreementWindow(window, scorer.objective, simulator.delta)
        # A resumed run's window holds the checked futures before its checkpoint, as if never stopped.
        compared = [(row["reward_model_score"], row["r_fut"]) for row in simulator.kept_futures
                    if row.get("reward_model_score") is not None and row["r_fut"] is not None]
        self.agreement.add([score for score, _ in compared], [value for _, value in compared])
        self.seed = seed
        self.__name__ = "r_fut"

    async def __call__(self, prompts, completions, context, context_key, trainer_state=None,
                       log_metric=_no_metric, **_) -> list[float]:
        replies, spoken = spoken_replies(completions, self.spec, log_metric)
        step = step_of(trainer_state)
        checked = checked_share(spoken, self.fraction, random.Random(f"{self.seed}:{step}"))
        simulation = asyncio.ensure_future(self.simulator.simulate(
            [(context_key[i], replies[i]) for i in checked], step=step, log_metric=log_metric,
            slots=batch_slots(completions, checked)))
        scores = await asyncio.to_thread(self.scorer.score, [context[i] for i in spoken], [replies[i] for i in spoken])
        rewards = with_reply_rewards(len(replies), spoken, scores, model_floor(self.scorer.objective, scores))
        futures = await simulation
        for i, future in zip(checked, futures):
            future.reward_model_score, future.reward_used = rewards[i], "reward_model"
            if self.use_simulated and future.r_fut is not None:
                rewards[i], future.reward_used = self.on_model_scale(future.r_fut)
        checks = await self.simulator.record(futures)  # every process's, each with the score it was compared on
        compared = [(future.reward_model_score, future.r_fut) for future in checks if future.r_fut is not None]
        self.agreement.add([score for score, _ in compared], [value for _, value in compared])
        log_metric("hybrid/checked", len(compared))
        log_metric("hybrid/rewarded_by_simulation", sum(future.reward_used != "reward_model" for future in checks))
        for name, value in self.agreement.metrics().items():
            log_metric(f"hybrid/{name}", value)
        return rewards

    def on_model_scale(self, r_fut: float) -> tuple[float, RewardUsed]:
        """A simulated R_fut as the reward model's kind of value, and the name of that mapping."""
        if self.scorer.objective == "classification":
            return float(r_fut > self.simulator.delta), "simulated_label"
        return r_fut, "simulated_r_fut"
