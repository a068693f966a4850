"""Roles written in Python: the interfaces every role meets, a base class for plugin authors, and
how a binding's `factory` becomes a role object.

A role binding in a run config is either an LLM role (`{endpoint, prompt, temperature, ...}`) or
a factory (`{factory: NAME or "package.module:callable", args: {...}}`). NAME is looked up among
the `rlff_esc.roles` entry points, so `pip install my-critics` adds names usable in YAML and on
the command line (`--critic NAME`, `--seeker NAME`); the built-in known-answer roles are
registered the same way. A plugin role calls no endpoint; what it says must follow from its
fingerprint, the run seed, the case and the history, so runs replay exactly and a resume with
another plugin is refused like one with another prompt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import random
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from esc_agents.core.errors import UserError
from esc_agents.core.plugins import installed, load_plugin
from esc_agents.core.types import Case, CriticScore, Message

ROLE_ENTRY_POINTS = "rlff_esc.roles"


@runtime_checkable
class SupporterRole(Protocol):
    async def reply(self, case: Case, history: list[Message]) -> Message: ...


@runtime_checkable
class UserSimulatorRole(Protocol):
    async def reply(self, case: Case, history: list[Message]) -> Message: ...


@runtime_checkable
class CriticRole(Protocol):
    score_range: tuple[float, float]  # lowest and highest verdict score; success is a mean above eta

    async def judge(self, case: Case, history: list[Message], samples: int) -> CriticScore: ...


@runtime_checkable
class JudgeRole(Protocol):
    async def compare(self, situation: str, a: list[Message], b: list[Message]) -> dict[str, str] | None: ...


PROTOCOLS: dict[str, type] = {
    "supporter": SupporterRole, "future_supporter": SupporterRole, "user_simulator": UserSimulatorRole,
    "critic": CriticRole, "judge": JudgeRole,
}


class PythonRole:
    """Base class for plugin roles. Subclass it, implement `reply` (supporter, seeker) or `judge`
    (critic, with `score_range`), and draw any randomness from `self.rng(...)`: seeded by the run
    seed, the role's fingerprint and what you pass (the case id and history, a sample index), so
    the same inputs give the same outputs in every run. Constructor keyword arguments are the
    binding's `args` and enter the fingerprint."""

    version = "1"  # bump when the role's behaviour changes, so old run folders refuse a resume

    def __init__(self, **args: Any):
        self.args = args
        self.seed = 0

    def fingerprint(self) -> dict[str, Any]:
        cls = type(self)
        return {"class": f"{cls.__module__}:{cls.__qualname__}", "version": self.version, "args": self.args}

    def rng(self, *parts: Any) -> random.Random:
        blob = json.dumps([self.seed, self.fingerprint(), [str(part) for part in parts]], sort_keys=True)
        return random.Random(hashlib.sha256(blob.encode()).hexdigest())

    async def candidates(self, case: Case, history: list[Message], count: int) -> list[Message]:
        """m alternative replies for stage 1: `reply` with the sample index in its history key."""
        return [await self.reply_sample(case, history, index) for index in range(count)]

    async def reply_sample(self, case: Case, history: list[Message], index: int) -> Message:
        return await self.reply(case, history)


def transcript_key(case: Case, history: list[Message]) -> str:
    """A short stable name of a point in a conversation, for `PythonRole.rng`."""
    text = case.id + "\n" + "\n".join(f"{m.speaker}: {m.content}" for m in history)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def installed_roles() -> dict[str, importlib.metadata.EntryPoint]:
    return installed(ROLE_ENTRY_POINTS)


def make_role(role: str, spec: str, args: dict[str, Any], seed: int) -> Any:
    """The role object a factory binding names, checked against its role's interface."""
    factory: Callable[..., Any] = load_plugin(spec, ROLE_ENTRY_POINTS, "role factory")
    try:
        made = factory(**args)
    except TypeError as exc:
        raise UserError(f"{role}: factory {spec!r} does not take args {sorted(args)} ({exc})") from None
    protocol = PROTOCOLS[role]
    if not isinstance(made, protocol):
        raise UserError(f"{role}: {spec!r} made a {type(made).__name__}, which lacks what a {role} needs "
                        f"({', '.join(name for name in ('reply', 'judge', 'compare') if hasattr(protocol, name))})")
    if role == "critic":
        low, high = made.score_range
        if not low < high:
            raise UserError(f"critic {spec!r}: score_range must be (lowest, highest), got {made.score_range}")
    if isinstance(made, PythonRole):
        made.seed = seed
    return made


def role_fingerprint(role_object: Any, spec: str | None) -> dict[str, Any]:
    """What identifies a plugin role in run.json: its own fingerprint where it has one, else its
    class (a role object passed in directly has no factory spec)."""
    own = role_object.fingerprint() if callable(getattr(role_object, "fingerprint", None)) else {}
    cls = type(role_object)
    return {"plugin": spec or f"{cls.__module__}:{cls.__qualname__}", **own}


def describe(entry: importlib.metadata.EntryPoint) -> str:
    try:
        doc = inspect.getdoc(entry.load()) or ""
    except Exception as exc:  # a broken plugin is listed, not fatal
        return f"(cannot load: {type(exc).__name__})"
    return doc.splitlines()[0] if doc else ""
