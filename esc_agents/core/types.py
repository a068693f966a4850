"""Types every stage shares: a case, a message, a critic score, a trajectory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

Speaker = Literal["seeker", "supporter"]


class Message(BaseModel):
    """One utterance. `content` is what the other roles see; `raw` keeps the model's full output
    (think blocks, strategy tags) so nothing the model produced is lost."""

    model_config = ConfigDict(extra="forbid")

    speaker: Speaker
    content: str
    raw: str | None = None
    strategy: str | None = None
    # Spans cleaning removed because they spoke as another role or carried a critic's verdict.
    forged: list[str] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _forged_only_when_any(self, handler):
        """Files keep their old shape: `forged` is written only for a reply that had such spans."""
        data = handler(self)
        if isinstance(data, dict) and not data.get("forged"):
            data.pop("forged", None)
        return data


def windowed(history: list, window: int | None) -> list:
    """The latest `window` messages (all of them for None): what a supporter, and the reward
    model judging its reply, see of the dialogue."""
    return history[-window:] if window else history


class Case(BaseModel):
    """A seeker's situation to simulate, mapped from any dataset onto one shape."""

    model_config = ConfigDict(extra="forbid")

    id: str
    situation: str
    emotion: str = "unknown"
    problem: str = "unknown"
    dialog: list[Message] = Field(default_factory=list)
    source: str = ""


class CriticScore(BaseModel):
    """The critic's l samples for one turn. `mean` is over parsable verdicts only;
    unparsable answers are kept in `invalid`, never turned into a score."""

    model_config = ConfigDict(extra="forbid")

    samples: list[float]
    verdicts: list[str]
    invalid: list[str] = Field(default_factory=list)
    mean: float | None


# no_reply: the supporter gave no usable reply after its regenerations (a failed episode).
EpisodeStatus = Literal["success", "max_turns", "no_reply"]


class Trajectory(BaseModel):
    """A finished episode (or simulated future), one JSONL line of `trajectories.jsonl`."""

    model_config = ConfigDict(extra="forbid")

    case_id: str
    emotion: str
    problem: str
    messages: list[Message]
    scores: list[CriticScore]
    turns: int
    success: bool
    final_score: float | None
    status: EpisodeStatus

    def counted_turns(self, max_turns: int) -> int:
        """The turns this episode counts in AT (see `counted_turns`)."""
        return counted_turns(self, max_turns)


def counted_turns(trajectory: Trajectory | Mapping[str, Any], max_turns: int) -> int:
    """The turns an episode counts in average turns (AT, the PPDPP protocol): its own where it
    succeeded, T = `max_turns` where it failed, an episode ended by a supporter with no usable
    reply included (a failure that ended early is no quicker success). `trajectory`: a
    `Trajectory`, or a line of trajectories.jsonl as read (any version's)."""
    if isinstance(trajectory, Trajectory):
        turns, success = trajectory.turns, trajectory.success
    else:
        turns, success = trajectory["turns"], trajectory["success"]
    return turns if success else max_turns


def invalid_verdict_rate(scores: Iterable[dict[str, Any]]) -> float:
    """The share of critic answers that matched no verdict, over stored `CriticScore`s."""
    invalid = verdicts = 0
    for score in scores:
        invalid += len(score["invalid"])
        verdicts += len(score["samples"]) + len(score["invalid"])
    return invalid / verdicts if verdicts else 0.0
