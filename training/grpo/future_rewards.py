"""R_fut for GRPO, in three modes: the reward model (`reward: model`, the paper's), each sampled
reply's own simulated future (`simulated`), or the reward model with a random share of the
replies also simulated to watch it (`hybrid`).

Futures run through the same `Engine` and episode graph as the reward stage, on an event loop
of their own in a background thread that lives as long as the training run: endpoints are
opened, and an unreachable one refused, before the policy loads; their HTTP clients stay bound
to that one loop; TRL's async reward call only awaits work submitted there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from scipy import stats

from esc_agents.config import RunConfig, build_config
from esc_agents.core.errors import JobFailure, UserError
from esc_agents.core.types import Message
from esc_agents.engine import Engine
from esc_agents.models.cache import cache_scope
from esc_agents.roles.replies import ReplyGuard
from graphs.episode import run_episode
from training.contexts import Context
from training.futures.formulas import FutureOutcome, checked_formula
from training.futures.records import jsonl
from training.grpo.config import GrpoRunConfig
from training.grpo.format_reward import FormatReward, FormatSpec, completion_text
from training.grpo.records import RewardUsed, SimulatedFuture
from training.reward_model.scorer import RewardScorer


def simulation_run_config(config: GrpoRunConfig) -> RunConfig:
    """The run config futures are simulated with: the named file (or the default), T, l and the
    formula overridden from the GRPO config; the formula and its δ are checked here."""
    settings = config.simulation
    window = {"context_window": config.context_window}  # the policy's view is the future supporter's too
    run_config = build_config(settings.config, {
        "episode": {"max_turns": settings.max_turns, "critic_samples": settings.critic_samples},
        "rewards": {"formula": settings.formula},
        "seed": config.seed,
    })
    run_config = run_config.model_copy(update={
        "supporter": run_config.supporter.model_copy(update=window),
        "future_supporter": run_config.future_supporter and run_config.future_supporter.model_copy(update=window),
    })
    rewards = run_config.rewards
    critic_range = Engine(run_config, use_cache=False).critic_range  # checks eta too; opens nothing
    checked_formula(rewards.formula, rewards.formula_params, rewards.delta, run_config.episode.max_turns, critic_range)
    return run_config


def reply_guard(config: GrpoRunConfig) -> ReplyGuard:
    """What every completion is cleaned of in every reward mode (the reward model's text as much as
    a simulated future's): role labels, and the verdict sentences of the critic futures would use."""
    return Engine(simulation_run_config(config), use_cache=False).reply_guard


def usage_delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {role: {field: value - before.get(role, {}).get(field, 0) for field, value in counts.items()}
            for role, counts in after.items()}


def usage_sum(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {role: {field: a.get(role, {}).get(field, 0) + b.get(role, {}).get(field, 0)
                   for field in {**a.get(role, {}), **b.get(role, {})}} for role in {**a, **b}}


def drop_futures_from(path: Path, step: int) -> list[dict[str, Any]]:
    """Keep in the futures file only the futures of steps before `step` (those of later steps
    are run again by a run resumed at `step`; a line torn by a kill goes too) and return them.
    The file is rewritten aside and renamed, so a kill leaves the old one or the new one."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept: list[str] = []
    rows: list[dict[str, Any]] = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["step"] < step:
            kept.append(line if line.endswith("\n") else line + "\n")
            rows.append(row)
    if kept != lines:
        staging = path.with_name(path.name + ".tmp")
        with staging.open("w", encoding="utf-8") as handle:
            handle.write("".join(kept))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    return rows


class FutureSimulator:
    """R_fut of (context, reply) pairs by running their futures; `None` for a future that failed
    after the endpoint's retries or ended without a parsable critic verdict."""

    def __init__(self, run_config: RunConfig, contexts: Sequence[Context], log_path: Path, *,
                 use_cache: bool = True, chat_models: dict | None = None, fresh_per_step: bool = True,
                 cache_path: Path | None = None, max_unscorable_steps: int = 3):
        self.run_config = run_config
        self.max_unscorable_steps = max_unscorable_steps
        self.unscorable_steps = 0  # steps in a row whose futures all gave no reward
        self.fresh_per_step = fresh_per_step
        rewards = run_config.rewards
        self.engine = Engine(run_config, use_cache=use_cache, chat_models=chat_models, cache_path=cache_path)
        critic_range = self.engine.critic_range
        max_turns = run_config.episode.max_turns
        self.formula, self.params = checked_formula(rewards.formula, rewards.formula_params, rewards.delta,
                                                    max_turns, critic_range)
        # A completion with no reply gets the formula's minimum: silence never beats the worst future.
        self.floor = self.formula.range(max_turns, self.params, critic_range)[0]
        self.contexts = {context.key: context for context in contexts}
        self.log_path = log_path
        self.totals = {"futures": 0, "failed": 0, "endpoint_wait_seconds": 0.0}
        self.prior_usage: dict[str, dict[str, int]] = {}  # calls of the steps before a resumed checkpoint
        self.kept_futures: list[dict[str, Any]] = []  # the futures file's rows before a resumed checkpoint

    def __enter__(self) -> FutureSimulator:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="future-simulator", daemon=True)
        self._thread.start()
        try:
            self._run(self.engine.__aenter__())
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._run(self.engine.__aexit__(None, None, None))
        finally:
            self._stop()

    def _run(self, coroutine: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def delta(self) -> float:
        return self.run_config.rewards.delta

    async def rewards(self, pairs: Sequence[tuple[str, str]], *, step: int, log_metric,
                      slots: Sequence[int] | None = None) -> list[float | None]:
        """R_fut per (context key, reply); each future is appended to the run folder."""
        futures = await self.simulate(pairs, step=step, log_metric=log_metric, slots=slots)
        self.record(futures)
        return [future.r_fut for future in futures]

    async def simulate(self, pairs: Sequence[tuple[str, str]], *, step: int, log_metric,
                       slots: Sequence[int] | None = None) -> list[SimulatedFuture]:
        """The future of each (context key, reply), all at once, with its R_fut (None: failed);
        cost and failures are logged for this step. `slots` are the pairs' places in the batch
        (default 0..n-1): with the step, they make each future's samples its own."""
        before = self.engine.meter.as_dict()
        started = time.perf_counter()
        scopes = [f"grpo step {step} completion {slot}" if self.fresh_per_step else None
                  for slot in (slots if slots is not None else range(len(pairs)))]
        futures = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._futures(pairs, step, scopes), self._loop))
        waited = time.perf_counter() - started
        cost = usage_delta(before, self.engine.meter.as_dict())
        failed = [f for f in futures if f.r_fut is None]
        self.totals["futures"] += len(futures)
        self.totals["failed"] += len(failed)
        self.totals["endpoint_wait_seconds"] += waited
        log_metric("futures/simulated", len(futures))
        log_metric("futures/failed", len(failed))
        log_metric("cost/endpoint_wait_s", waited)
        for role, counts in cost.items():
            for field in ("calls", "cached", "prompt_tokens", "completion_tokens"):
                log_metric(f"cost/{role}/{field}", counts[field])
        if failed:
            print(f"rlff-esc: warning: {len(failed)} of {len(futures)} futures at step {step} gave no reward "
                  f"({failed[0].error})", file=sys.stderr)
        if futures:
            self.unscorable_steps = self.unscorable_steps + 1 if len(failed) == len(futures) else 0
        if self.unscorable_steps >= self.max_unscorable_steps:
            raise UserError(f"no simulated future gave a reward in {self.unscorable_steps} steps in a row (last error: "
                            f"{failed[0].error}); check the critic prompt's verdict patterns, the future supporter and the endpoints "
                            "(simulation.max_unscorable_steps sets this limit)")
        return futures

    def record(self, futures: Sequence[SimulatedFuture]) -> None:
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(jsonl(futures))

    async def _futures(self, pairs: Sequence[tuple[str, str]], step: int,
                       scopes: Sequence[str | None]) -> list[SimulatedFuture]:
        return await asyncio.gather(*(self._future(key, reply, step, scope)
                                      for (key, reply), scope in zip(pairs, scopes)))

    async def _future(self, key: str, reply: str, step: int, scope: str | None) -> SimulatedFuture:
        cache_scope.set(scope)  # this future's own task: its calls alone are keyed under the scope
        context = self.contexts[key]
        candidate = Message(speaker="supporter", content=reply)
        try:
            trajectory = await run_episode(self.engine.episode_context(context.case, future=True),
                                           [*context.history, candidate])
        except JobFailure as exc:
            return SimulatedFuture(step=step, context_key=key, reply=reply, error=str(exc))
        outcome = FutureOutcome.of(trajectory, self.run_config.episode.max_turns)
        r_fut = self.formula(outcome, self.params)
        return SimulatedFuture(
            step=step, context_key=key, reply=reply, r_fut=r_fut,
            error=None if r_fut is not None else
            "cut short: the future supporter gave no usable reply" if outcome.cut_short else "no parsable critic verdict",
            turn_scores=outcome.turn_scores, K=outcome.turns, success=outcome.success,
            future=trajectory.messages[len(context.history) + 1:],
        )

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the simulator: its totals so far, calls included."""
        return {**self.totals, "usage": self.usage(), "unscorable_steps": self.unscorable_steps}

    def resume_at(self, step: int, state: dict[str, Any] | None) -> None:
        """Continue a run from its checkpoint after `step` steps: the futures of later steps, which
        run again, leave the futures file, and the totals are those saved with the checkpoint (for
        a checkpoint of an older version, futures and failures are counted from the file)."""
        kept = drop_futures_from(self.log_path, step)
        self.kept_futures = kept
        if state is not None:
            self.totals = {name: state[name] for name in self.totals}
            self.prior_usage = state["usage"]
            self.unscorable_steps = state.get("unscorable_steps", 0)
        elif kept:
            self.totals.update(futures=len(kept), failed=sum(row["r_fut"] is None for row in kept))
            print(f"rlff-esc: warning: the checkpoint at step {step} holds no simulation totals (an older version); "
                  "futures and failures before it are counted from the futures file, their calls and waiting "
                  "are not", file=sys.stderr)

    def usage(self) -> dict[str, dict[str, int]]:
        return usage_sum(self.prior_usage, self.engine.meter.as_dict())

    def summary(self) -> dict[str, Any]:
        return {**self.totals, "endpoint_wait_seconds": round(self.totals["endpoint_wait_seconds"], 1),
                "usage": self.usage(), "formula": self.formula.name, "formula_params": self.params,
                "max_turns": self.run_config.episode.max_turns,
                "critic_samples": self.run_config.episode.critic_samples}


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
    """Which completions of a reward call had a future that gave no reward. R_fmt reads it so
    those completions get no reward at all: TRL then leaves them out of the group baseline
    with advantage 0, instead of summing the missing R_fut as 0. Both reward functions run
    on TRL's event loop and get the same `completions` list, which keys the hand-over."""

    def __init__(self):
        self._calls: dict[int, asyncio.Future] = {}

    def _slot(self, completions: list) -> asyncio.Future:
        return self._calls.setdefault(id(completions), asyncio.get_running_loop().create_future())

    def publish(self, completions: list, indices: set[int]) -> None:
        self._slot(completions).set_result(indices)

    async def of(self, completions: list) -> set[int]:
        try:
            return await self._slot(completions)
        finally:
            self._calls.pop(id(completions), None)


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
                                                  step=step_of(trainer_state), log_metric=log_metric, slots=spoken)
            unscored = {i for i, value in zip(spoken, values) if value is None}
        finally:
            self.unscored.publish(completions, unscored)  # also on failure, so R_fmt never waits forever
        return with_reply_rewards(len(replies), spoken, values, self.simulator.floor)


class FormatRewardOfScoredFutures(FormatReward):
    """R_fmt, and no reward for a completion whose simulated future gave none."""

    def __init__(self, spec: FormatSpec, unscored: UnscoredCompletions):
        super().__init__(spec)
        self.unscored = unscored

    async def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        rewards = super().__call__(prompts, completions, **kwargs)
        unscored = await self.unscored.of(completions)
        return [None if i in unscored else reward for i, reward in enumerate(rewards)]


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
    map onto and are refused. futures.jsonl says which reward each checked completion got."""

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
            [(context_key[i], replies[i]) for i in checked], step=step, log_metric=log_metric, slots=checked))
        scores = await asyncio.to_thread(self.scorer.score, [context[i] for i in spoken], [replies[i] for i in spoken])
        rewards = with_reply_rewards(len(replies), spoken, scores, model_floor(self.scorer.objective, scores))
        futures = await simulation
        compared, replaced = [], 0
        for i, future in zip(checked, futures):
            future.reward_model_score, future.reward_used = rewards[i], "reward_model"
            if future.r_fut is None:
                continue
            compared.append((rewards[i], future.r_fut))
            if self.use_simulated:
                rewards[i], future.reward_used = self.on_model_scale(future.r_fut)
                replaced += 1
        self.simulator.record(futures)
        self.agreement.add([score for score, _ in compared], [value for _, value in compared])
        log_metric("hybrid/checked", len(compared))
        log_metric("hybrid/rewarded_by_simulation", replaced)
        for name, value in self.agreement.metrics().items():
            log_metric(f"hybrid/{name}", value)
        return rewards

    def on_model_scale(self, r_fut: float) -> tuple[float, RewardUsed]:
        """A simulated R_fut as the reward model's kind of value, and the name of that mapping."""
        if self.scorer.objective == "classification":
            return float(r_fut > self.simulator.delta), "simulated_label"
        return r_fut, "simulated_r_fut"
