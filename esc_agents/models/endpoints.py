"""Every LLM call goes through here: one retry policy, one concurrency limit per endpoint,
the completion cache (with single-flight and offline replay), `n` detection, request seeds and
token accounting per role."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import convert_to_messages
from langchain_openai import ChatOpenAI
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from esc_agents.config import EndpointProfile
from esc_agents.core.errors import EndpointError, OfflineCacheMiss
from esc_agents.models.cache import CompletionCache, completion_key, model_identity

# Worth another try: rate limits, 5xx, timeouts, dropped connections. Anything else
# (400, 401, 404) will fail the same way again.
TRANSIENT_ERRORS = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    openai.APIConnectionError,
)


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


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


def resolve_api_key(name: str, profile: EndpointProfile) -> str:
    """Read the key from the variable the profile names; servers without auth get a dummy."""
    if profile.api_key_env:
        return os.environ.get(profile.api_key_env) or "EMPTY"
    return "EMPTY"


def request_seed(run_seed: int, index: int, attempt: int) -> int:
    """The `seed` sent for one sample: fixed by the run seed, yet different per sample index and
    attempt (one seed for all would make servers that honour it return m identical samples)."""
    digest = hashlib.sha256(f"{run_seed}:{index}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits: every server takes it


def chat_model_for(
    profile: EndpointProfile, api_key: str, request_model: str, http_client: httpx.AsyncClient
) -> BaseChatModel:
    # Retries are ours (tenacity), so the client's own retry loop is off. The HTTP client is the
    # endpoint's own, sized to its concurrency and closed with it (not a process-wide one tied
    # to whichever event loop created it first).
    return ChatOpenAI(
        model=request_model,
        base_url=profile.base_url,
        api_key=api_key,
        timeout=profile.timeout,
        max_retries=0,
        http_async_client=http_client,
    )


class Endpoint:
    """A named endpoint profile bound to a chat model, a semaphore and the cache. `offline`: every
    completion must come from the cache; a missing one raises OfflineCacheMiss."""

    def __init__(
        self,
        name: str,
        profile: EndpointProfile,
        *,
        cache: CompletionCache | None = None,
        meter: UsageMeter | None = None,
        chat_model: BaseChatModel | None = None,
        request_model: str | None = None,
        offline: bool = False,
    ):
        self.name = name
        self.profile = profile
        self.cache = cache
        self.offline = offline
        self.meter = meter if meter is not None else UsageMeter()
        self.request_model = request_model or profile.model
        self._http = None
        if chat_model is None:
            size = profile.max_concurrency
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            self._http = httpx.AsyncClient(limits=limits, timeout=profile.timeout)
            chat_model = chat_model_for(profile, resolve_api_key(name, profile), self.request_model, self._http)
        self.chat_model = chat_model
        self.supports_n = profile.supports_n
        # When set to a list, every request sent (not replayed) is appended: benchmarks replay
        # exactly these against the raw endpoint.
        self.request_log: list[dict[str, Any]] | None = None
        self._limit = asyncio.Semaphore(profile.max_concurrency)

    @cached_property
    def model_identity(self) -> str:
        """Computed once: for a model folder without a policy card it hashes the weights."""
        return model_identity(self.profile)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def preflight(self) -> None:
        """Fail fast, before any model load or episode, when the endpoint can't be reached."""
        url = self.profile.base_url.rstrip("/") + "/models"
        headers = {"Authorization": f"Bearer {resolve_api_key(self.name, self.profile)}"}
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"endpoint {self.name!r} at {self.profile.base_url} is unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code in (401, 403):
            hint = f"; set ${self.profile.api_key_env}" if self.profile.api_key_env else ""
            raise EndpointError(
                f"endpoint {self.name!r} at {self.profile.base_url} rejected the API key "
                f"(HTTP {response.status_code}){hint}"
            )

    async def complete(
        self,
        role: str,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
        indices: list[int],
        attempt: int = 0,
        seed: int = 0,
        use_cache: bool = True,
    ) -> list[Completion]:
        """One completion per sample index. Cached ones are replayed, ones an identical request
        is fetching right now are awaited; the rest are asked for in one request with `n` where
        the endpoint honours it, else one request each."""
        params = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
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
                fresh, requests = await self._sample(role, messages, params, missing, attempt)
                for index, completion in zip(missing, fresh):
                    results[index] = completion
                    if self.cache is not None:
                        self.cache.put(keys[index], {"text": completion.text})
                    if keys[index] in claimed:
                        claimed[keys[index]].set_result(completion.text)
        for index, fetch in fetching.items():
            results[index] = Completion(await asyncio.shield(fetch), cached=True)
        ordered = [results[index] for index in indices]
        self.meter.record(role, ordered, requests)
        return ordered

    async def _sample(
        self, role: str, messages: list[dict[str, str]], params: dict[str, Any], indices: list[int], attempt: int
    ) -> tuple[list[Completion], int]:
        def ask(first: int, n: int = 1):
            return self._request(role, messages, params, n, self._seed_for(params, first, attempt))

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

    def _seed_for(self, params: dict[str, Any], index: int, attempt: int) -> int | None:
        """The request's `seed` where the server honours one; an `n` request uses its first index."""
        return request_seed(params["seed"], index, attempt) if self.profile.honours_seed else None

    def _describe(self, exc: BaseException | None) -> str:
        if isinstance(exc, openai.APITimeoutError):
            return f"timed out after {self.profile.timeout:g} s"
        if isinstance(exc, openai.APIConnectionError):
            return f"connection to {self.profile.base_url} failed"
        if isinstance(exc, openai.APIStatusError):
            message = exc.message.splitlines()[0][:200] if exc.message else ""
            return f"HTTP {exc.status_code}: {message}"
        return f"{type(exc).__name__}: {exc}"

    async def _request(
        self, role: str, messages: list[dict[str, str]], params: dict[str, Any], n: int, seed: int | None
    ) -> list[Completion]:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT_ERRORS),
            stop=stop_after_attempt(self.profile.max_attempts),
            wait=wait_random_exponential(multiplier=0.5, max=self.profile.backoff_max),
            reraise=False,
        )
        kwargs: dict[str, Any] = {
            "temperature": params["temperature"],
            "max_tokens": params["max_tokens"],
        }
        if n > 1:
            kwargs["n"] = n
        if seed is not None:
            kwargs["seed"] = seed
        if self.request_log is not None:
            self.request_log.append({"messages": messages, **kwargs})
        try:
            async for attempt in retrying:
                with attempt:
                    async with self._limit:
                        result = await self.chat_model.agenerate([convert_to_messages(messages)], **kwargs)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise EndpointError(
                f"endpoint {self.name!r} ({self.profile.model}) failed for role {role} after "
                f"{self.profile.max_attempts} attempts: {self._describe(cause)}"
            ) from None
        except openai.APIError as exc:
            raise EndpointError(
                f"endpoint {self.name!r} ({self.profile.model}) refused a request for role {role}: "
                f"{self._describe(exc)}"
            ) from None
        usage = (result.llm_output or {}).get("token_usage") or {}
        generations = result.generations[0]
        share = max(len(generations), 1)
        return [
            Completion(
                text=generation.text,
                prompt_tokens=usage.get("prompt_tokens", 0) // share,
                completion_tokens=usage.get("completion_tokens", 0) // share,
            )
            for generation in generations
        ]


