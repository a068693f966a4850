"""The simulator of online futures for GRPO's `simulated` and `hybrid` rewards: each sampled
reply continued by the same `Engine` and episode graph as the reward stage, scored by the R_fut
formula, and appended to the run's futures file (which a resumed run cuts at its checkpoint).

Futures run on an event loop of their own in a background thread that lives as long as the
training run: endpoints are opened, and an unreachable one refused, before the policy loads;
their HTTP clients stay bound to that one loop; TRL's async reward call (`reward_terms.py`)
only awaits work submitted there.

Under several processes (`accelerate launch`) each simulates the futures of its own share of the
batch, and every step's counts, calls and futures are gathered (`across_processes`): every process
then holds and logs the run's numbers, and the main one alone writes the futures file.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

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
from training.grpo.records import SimulatedFuture
from training.run_folder import across_processes, from_main_process, is_main_process


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
        self.step_usage: dict[str, dict[str, int]] = {}  # calls of the steps since, every process's
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
        await self.record(futures)
        return [future.r_fut for future in futures]

    async def simulate(self, pairs: Sequence[tuple[str, str]], *, step: int, log_metric,
                       slots: Sequence[int] | None = None) -> list[SimulatedFuture]:
        """The future of each (context key, reply), all at once, with its R_fut (None: failed);
        cost and failures of the whole step, every process's, are counted and logged. `slots` are
        the pairs' places in the step's batch (default 0..n-1): with the step, they make each
        future's samples its own.

        TRL logs the mean over processes of what each logs (the sum of their values over the
        number of values); every process logs the step's gathered numbers, so that mean is the
        run's own. Endpoint waiting is the slowest process's: the step waits for it."""
        before = self.engine.meter.as_dict()
        started = time.perf_counter()
        scopes = [f"grpo step {step} completion {slot}" if self.fresh_per_step else None
                  for slot in (slots if slots is not None else range(len(pairs)))]
        futures = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._futures(pairs, step, scopes), self._loop))
        failed = [f for f in futures if f.r_fut is None]
        share = {"futures": len(futures), "failed": len(failed), "waited": time.perf_counter() - started,
                 "cost": usage_delta(before, self.engine.meter.as_dict()), "error": failed[0].error if failed else None}
        shares = await asyncio.to_thread(across_processes, share)  # off TRL's loop while processes wait for each other
        simulated, unscored = sum(s["futures"] for s in shares), sum(s["failed"] for s in shares)
        waited = max(s["waited"] for s in shares)
        cost = functools.reduce(usage_sum, (s["cost"] for s in shares))
        error = next((s["error"] for s in shares if s["error"] is not None), None)
        self.totals["futures"] += simulated
        self.totals["failed"] += unscored
        self.totals["endpoint_wait_seconds"] += waited
        self.step_usage = usage_sum(self.step_usage, cost)
        log_metric("futures/simulated", simulated)
        log_metric("futures/failed", unscored)
        log_metric("cost/endpoint_wait_s", waited)
        for role, counts in cost.items():
            for field in ("calls", "cached", "prompt_tokens", "completion_tokens"):
                log_metric(f"cost/{role}/{field}", counts[field])
        if unscored and is_main_process():
            print(f"rlff-esc: warning: {unscored} of {simulated} futures at step {step} gave no reward ({error})",
                  file=sys.stderr)
        if simulated:
            self.unscorable_steps = self.unscorable_steps + 1 if unscored == simulated else 0
        if self.unscorable_steps >= self.max_unscorable_steps:  # the same on every process: all stop together
            raise UserError(f"no simulated future gave a reward in {self.unscorable_steps} steps in a row (last error: "
                            f"{error}); check the critic prompt's verdict patterns, the future supporter and the endpoints "
                            "(simulation.max_unscorable_steps sets this limit)")
        return futures

    async def record(self, futures: Sequence[SimulatedFuture]) -> list[SimulatedFuture]:
        """Append the step's futures of every process, in process order, to the futures file, which
        the main process alone writes; return them (what the whole step simulated)."""
        everyone = [future for share in await asyncio.to_thread(across_processes, list(futures)) for future in share]
        if is_main_process():
            with self.log_path.open("a", encoding="utf-8") as handle:
                handle.write(jsonl(everyone))
        return everyone

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
        """What a checkpoint keeps of the simulator: its totals so far, calls included. They are the
        whole run's, the same on every process (each step's are gathered), so the main process
        writes them once and every process resumes from them, with any number of processes."""
        return {**self.totals, "usage": self.usage(), "unscorable_steps": self.unscorable_steps}

    def resume_at(self, step: int, state: dict[str, Any] | None) -> None:
        """Continue a run from its checkpoint after `step` steps: the futures of later steps, which
        run again, leave the futures file (the main process rewrites it; every process gets the
        rows kept), and the totals are those saved with the checkpoint (for a checkpoint of an
        older version, futures and failures are counted from the file)."""
        kept = from_main_process(lambda: drop_futures_from(self.log_path, step))
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
        return usage_sum(self.prior_usage, self.step_usage)

    def summary(self) -> dict[str, Any]:
        return {**self.totals, "endpoint_wait_seconds": round(self.totals["endpoint_wait_seconds"], 1),
                "usage": self.usage(), "formula": self.formula.name, "formula_params": self.params,
                "max_turns": self.run_config.episode.max_turns,
                "critic_samples": self.run_config.episode.critic_samples}
