"""The futures file of a GRPO run with simulated rewards: one JSON line per simulated completion,
typed here so the writer (futures_simulator) and the readers (the viewer, tests) agree on its fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    field_serializer,
    model_serializer,
)

from esc_agents.core.runlog import read_jsonl
from esc_agents.core.types import Message
from training.futures.records import validated

FUTURES = "futures.jsonl"

# reward_model: the reward model's score; simulated_label / simulated_r_fut: the simulated R_fut
# on the reward model's scale (hybrid rewards with use_simulated)
RewardUsed = Literal["reward_model", "simulated_label", "simulated_r_fut"]


class SimulatedFuture(BaseModel):
    """One completion's simulated future at a training step, with its R_fut (None: the future
    failed or ended without a parsable verdict, `error` says which).

    The outcome parts (`turn_scores` … `future`) are absent when the future never ran, and
    `reward_model_score` / `reward_used` are written by hybrid rewards only: such fields default
    to None and a None one is left out of the line, as the file has always been written. An
    unknown field is refused (`extra="forbid"`): it is a rename, never silently dropped."""

    model_config = ConfigDict(extra="forbid")

    step: int
    context_key: str
    reply: str
    r_fut: float | None = None
    error: str | None = None
    turn_scores: list[float | None] | None = None
    K: int | None = None
    success: bool | None = None
    future: list[Message] | None = None
    reward_model_score: float | None = None
    reward_used: RewardUsed | None = None

    @field_serializer("future")
    def _messages_without_empty_parts(self, future: list[Message] | None) -> list[dict[str, Any]] | None:
        return None if future is None else [message.model_dump(exclude_none=True) for message in future]

    @model_serializer(mode="wrap")
    def _without_absent_parts(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        always = {"step", "context_key", "reply", "r_fut", "error"}
        return {name: value for name, value in handler(self).items() if value is not None or name in always}


def read_futures(path: Path) -> list[SimulatedFuture]:
    """The futures of a GRPO run folder's futures file, validated."""
    return validated(path, read_jsonl(path), SimulatedFuture)
