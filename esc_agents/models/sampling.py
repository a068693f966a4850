"""From sample indices to requests: one request with `n` where the server honours it (detected
on first use when the profile does not say), else one request per index; and the `seed` each
request carries where the server honours seeds."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from esc_agents.models.scope import cache_scope
from esc_agents.models.completion import Completion
from esc_agents.models.transport import Transport


def request_seed(run_seed: int, index: int, attempt: int, scope: str | None = None) -> int:
    """The `seed` sent for one sample: fixed by the run seed, yet different per sample index and
    attempt (one seed for all would make servers that honour it return m identical samples), and
    per cache scope: a GRPO step's fresh future must be a new sample on a server that honours
    seeds too, not the same seed's replay of an earlier step's future."""
    blob = f"{run_seed}:{index}:{attempt}" if scope is None else f"{run_seed}:{index}:{attempt}:{scope}"
    digest = hashlib.sha256(blob.encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits: every server takes it


class Sampler:
    """`supports_n`: True or False as the profile says, None until the first request for several
    samples shows whether the server returns them all; what it learns holds for the endpoint."""

    def __init__(self, transport: Transport, *, supports_n: bool | None, honours_seed: bool):
        self.transport = transport
        self.supports_n = supports_n
        self.honours_seed = honours_seed

    async def sample(
        self, role: str, messages: list[dict[str, str]], params: dict[str, Any], indices: list[int], attempt: int
    ) -> tuple[list[Completion], int]:
        def ask(first: int, n: int = 1):
            return self.transport.send(role, messages, temperature=params["temperature"],
                                       max_tokens=params["max_tokens"], n=n,
                                       seed=self.seed_for(params["seed"], first, attempt))

        count = len(indices)
        if count > 1 and self.supports_n is not False:
            batch = await ask(indices[0], n=count)
            if len(batch) >= count:
                self.supports_n = True
                return batch[:count], 1
            self.supports_n = False  # the server ignored n: ask for the rest one by one
            rest = await asyncio.gather(*(ask(index) for index in indices[len(batch):]))
            return batch + [c for single in rest for c in single], 1 + len(rest)
        singles = await asyncio.gather(*(ask(index) for index in indices))
        return [c for single in singles for c in single], count

    def seed_for(self, run_seed: int, index: int, attempt: int) -> int | None:
        """The request's `seed` where the server honours one; an `n` request uses its first index."""
        return request_seed(run_seed, index, attempt, cache_scope.get()) if self.honours_seed else None
