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
    """Each field counts one unit (a table that put requests and samples in one column would add
    apples to pears: one request with n = 10 brings 10 samples). Names kept from older files."""

    calls: int = 0  # requests that reached the server
    cached: int = 0  # samples replayed from the cache (or from an identical request in flight)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    samples: int = 0  # samples the server returned
    cached_calls: int = 0  # asks for a prompt's samples that the cache answered whole: no request sent


@dataclass
class UsageMeter:
    """Requests, samples and tokens per role; a cached sample counts as `cached`, not a request."""

    roles: dict[str, RoleUsage] = field(default_factory=lambda: defaultdict(RoleUsage))

    def record(self, role: str, completions: list[Completion], requests: int) -> None:
        usage = self.roles[role]
        usage.calls += requests
        for completion in completions:
            if completion.cached:
                usage.cached += 1
            else:
                usage.samples += 1
                usage.prompt_tokens += completion.prompt_tokens
                usage.completion_tokens += completion.completion_tokens
        if completions and not requests and all(completion.cached for completion in completions):
            usage.cached_calls += 1

    @property
    def total_calls(self) -> int:
        return sum(usage.calls for usage in self.roles.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {role: vars(usage).copy() for role, usage in sorted(self.roles.items())}
