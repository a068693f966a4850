"""Token accounting: observers the endpoint tells about every completed call, after the fact.
They see what was asked and answered, and take no part in producing it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from esc_agents.models.completion import Completion


class UsageObserver(Protocol):
    def record(self, role: str, completions: list[Completion], requests: int) -> None:
        """`completions`: one per sample index asked for, replayed ones marked `cached`;
        `requests`: how many requests reached the server for them."""


@dataclass
class RoleUsage:
    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class UsageMeter:
    """LLM calls and tokens per role; a cached completion counts as `cached`, not a call."""

    roles: dict[str, RoleUsage] = field(default_factory=lambda: defaultdict(RoleUsage))

    def record(self, role: str, completions: list[Completion], requests: int) -> None:
        usage = self.roles[role]
        usage.calls += requests
        for completion in completions:
            if completion.cached:
                usage.cached += 1
            else:
                usage.prompt_tokens += completion.prompt_tokens
                usage.completion_tokens += completion.completion_tokens

    @property
    def total_calls(self) -> int:
        return sum(usage.calls for usage in self.roles.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {role: vars(usage).copy() for role, usage in sorted(self.roles.items())}
