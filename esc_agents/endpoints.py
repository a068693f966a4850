"""Every LLM call goes through here: one retry policy, one concurrency limit per endpoint,
the completion cache, `n` detection and token accounting per role."""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from dataclasses import dataclass, field
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

from esc_agents.cache import CompletionCache, completion_key
from esc_agents.config import EndpointProfile
from esc_agents.errors import EndpointError

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
    """A named endpoint profile bound to a chat model, a semaphore and the cache."""

    def __init__(
        self,
        name: str,
        profile: EndpointProfile,
        *,
        cache: CompletionCache | None = None,
        meter: UsageMeter | None = None,
        chat_model: BaseChatModel | None = None,
        request_model: str | None = None,
    ):
        self.name = name
        self.profile = profile
        self.cache = cache
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
        """One completion per sample index. Cached ones are replayed; the rest are asked for
        in one request with `n` where the endpoint honours it, else one request each."""
        params = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        keys = {
            index: completion_key(
                model=self.profile.model, messages=messages, params=params, index=index, attempt=attempt
            )
            for index in indices
        }
        results: dict[int, Completion] = {}
        if self.cache is not None and use_cache:
            for index, key in keys.items():
                hit = self.cache.get(key)
                if hit is not None:
                    results[index] = Completion(hit["text"], cached=True)
        missing = [index for index in indices if index not in results]
        requests = 0
        if missing:
            fresh, requests = await self._sample(role, messages, params, len(missing))
            for index, completion in zip(missing, fresh):
                results[index] = completion
                if self.cache is not None:
                    self.cache.put(keys[index], {"text": completion.text})
        ordered = [results[index] for index in indices]
        self.meter.record(role, ordered, requests)
        return ordered

    async def _sample(
        self, role: str, messages: list[dict[str, str]], params: dict[str, Any], count: int
    ) -> tuple[list[Completion], int]:
        if count > 1 and self.supports_n is not False:
            batch = await self._request(role, messages, params, n=count)
            if len(batch) >= count:
                self.supports_n = True
                return batch[:count], 1
            self.supports_n = False  # the server ignored n: ask for the rest one by one
            rest = await asyncio.gather(
                *(self._request(role, messages, params, n=1) for _ in range(count - len(batch)))
            )
            return batch + [c for single in rest for c in single], 1 + len(rest)
        singles = await asyncio.gather(*(self._request(role, messages, params, n=1) for _ in range(count)))
        return [c for single in singles for c in single], count

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
        self, role: str, messages: list[dict[str, str]], params: dict[str, Any], n: int
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


