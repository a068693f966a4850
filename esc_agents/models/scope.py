"""The cache scope: a name every completion made under it is drawn for. GRPO's online futures run
under "their step and completion", so a (context, reply) pair seen again draws a fresh future. The
cache puts the scope in its key, the sampler in the seed it sends; one variable serves both layers
so neither imports the other."""

from __future__ import annotations

import contextvars

cache_scope: contextvars.ContextVar[str | None] = contextvars.ContextVar("cache_scope", default=None)
