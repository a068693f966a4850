"""The D_r file every stage reads: one JSON line per candidate reply and its simulated future,
typed here so a renamed or missing field fails where the file is read, not deep in a reader."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from esc_agents.core.errors import UserError
from esc_agents.core.runlog import read_jsonl, read_unique
from esc_agents.core.types import CriticScore, Message

RECORDS = "records.jsonl"
Line = TypeVar("Line", bound=BaseModel)


class RewardRecord(BaseModel):
    """One candidate reply of a sampled context with its simulated future and R_fut label. The raw
    parts (critic scores, K, T, success) are kept so `relabel` recomputes R_fut without an LLM call.

    Every version of `rewards` has written all of these fields, so none is optional; an unknown
    field is refused (`extra="forbid"`): it is a rename or a newer writer, never silently dropped.
    """

    model_config = ConfigDict(extra="forbid")

    key: str  # context_key#candidate_index
    context_key: str
    dialogue_id: str
    position: int  # the context's length in the source dialogue
    candidate_index: int
    emotion: str
    problem: str
    context: list[Message]
    candidate: Message
    future: list[Message]
    critic_scores: list[CriticScore]
    turn_scores: list[float | None]  # the critic's mean per future turn (None: no parsable verdict)
    K: int  # future turns run
    T: int  # future turns allowed
    success: bool
    provenance: dict[str, Any]
    r_fut: float | None  # None: the future ended without a parsable verdict
    label: int | None  # 1[r_fut > delta]
    formula: str
    formula_params: dict[str, float]
    delta: float


def read_records(path: Path, *, unique: bool = True) -> list[RewardRecord]:
    """The records of a D_r file, validated; with `unique`, refused if a key appears twice."""
    return validated(path, read_unique(path, "key") if unique else read_jsonl(path), RewardRecord)


def jsonl(lines: Iterable[BaseModel]) -> str:
    """Models as JSON lines, written as every record file of the project is (UTF-8 kept as is)."""
    return "".join(json.dumps(line.model_dump(), ensure_ascii=False) + "\n" for line in lines)


def validated(path: Path, lines: Iterable[dict[str, Any]], model: type[Line]) -> list[Line]:
    """JSON lines as `model`s; the first that does not fit is named in one line."""
    parsed = []
    for number, line in enumerate(lines, start=1):
        try:
            parsed.append(model.model_validate(line))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or "the line"
            raise UserError(f"{path}: record {number} is no {model.__name__} ({field}: {error['msg']})") from None
    return parsed
