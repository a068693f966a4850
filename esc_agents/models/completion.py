"""The value every layer of an endpoint passes up: one sampled completion, its token usage, and
whether it was replayed; and the interface the layers share. At the bottom of the models room, so
the cache layer can make a completion without loading the HTTP client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


class CompletionSource(Protocol):
    """What each layer of an endpoint offers the one above (the sampler over the transport, the
    cache layer over the sampler): one completion per sample index, in order, and how many
    requests reached the server for them. `params`: temperature, max_tokens and the run's seed."""

    async def sample(
        self, role: str, messages: list[dict[str, str]], params: dict[str, Any], indices: list[int], attempt: int
    ) -> tuple[list[Completion], int]: ...
