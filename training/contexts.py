"""Dialogue contexts c_{1:t-1} for stage 1 (and later the GRPO prompts).

A context is a prefix of a training dialogue that ends with a seeker utterance and is followed
by a supporter turn in the reference dialogue. Consecutive utterances by one speaker were
already merged by the dataset loader, so "ends with a seeker utterance" means the whole run of
seeker messages before that supporter turn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from esc_agents.config import ContextSampling
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case, Message


@dataclass(frozen=True)
class Context:
    case: Case
    position: int  # index in the merged dialogue of the supporter turn to replace

    @property
    def key(self) -> str:
        return f"{self.case.id}@{self.position}"

    @property
    def history(self) -> list[Message]:
        return self.case.dialog[: self.position]


def eligible_positions(case: Case, min_history: int) -> list[int]:
    dialog = case.dialog
    return [
        index
        for index in range(max(1, min_history), len(dialog))
        if dialog[index].speaker == "supporter" and dialog[index - 1].speaker == "seeker"
    ]


def sample_contexts(cases: list[Case], sampling: ContextSampling, seed: int, *,
                    prefix_stable: bool = False) -> list[Context]:
    """Seeded: the same cases, settings and seed give the same contexts in the same order.

    `prefix_stable`: `contexts = N` keeps the first N of one seeded permutation of the selected
    contexts, in that order, so a larger N keeps every context of a smaller one, at the same place
    (a reward dataset grows by the new contexts only, and shard i/N keeps its contexts). Without
    it, the order reward datasets made before could grow keep (a seeded sample, in dialogue order)."""
    rng = random.Random(seed)
    chosen: list[Context] = []
    for case in cases[: sampling.dialogues]:
        positions = eligible_positions(case, sampling.min_history)
        if sampling.positions == "first":
            positions = positions[: sampling.per_dialogue]
        elif sampling.positions == "random":
            positions = sorted(rng.sample(positions, min(sampling.per_dialogue, len(positions))))
        chosen += [Context(case, position) for position in positions]
    if not chosen:
        raise UserError(
            f"no eligible context (a seeker turn followed by a supporter turn, at least "
            f"{sampling.min_history} messages in) in {len(cases)} dialogues"
        )
    if sampling.contexts is not None and prefix_stable:
        order = list(range(len(chosen)))
        rng.shuffle(order)
        return [chosen[index] for index in order[: sampling.contexts]]
    if sampling.contexts is not None and sampling.contexts < len(chosen):
        keep = set(rng.sample(range(len(chosen)), sampling.contexts))
        chosen = [context for index, context in enumerate(chosen) if index in keep]
    return chosen


def shard(contexts: list[Context], spec: str | None) -> list[Context]:
    """`i/N`: every N-th context from the i-th, so N shards are disjoint and cover all."""
    if spec is None:
        return contexts
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise UserError(f"--shard must look like i/N (e.g. 0/4), got {spec!r}") from None
    if not 0 <= index < count:
        raise UserError(f"--shard {spec}: need 0 <= i < N")
    return contexts[index::count]
