"""Sending one chat request to an OpenAI-compatible server: the endpoint's own HTTP client and
ChatOpenAI, its concurrency limit, and the retry policy (tenacity). Knows nothing of sample
indices, the cache or roles beyond naming one in an error."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
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
from esc_agents.core.errors import EndpointError
from esc_agents.models.completion import Completion

# Worth another try: rate limits, 5xx, timeouts, dropped connections. Anything else
# (400, 401, 404) will fail the same way again.
TRANSIENT_ERRORS = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    openai.APIConnectionError,
)

# Called once per request sent (not per retry of it) with what was sent: the messages and the
# keyword arguments (temperature, max_tokens, and n and seed where set).
RequestObserver = Callable[[dict[str, Any]], None]


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


def retry_policy(profile: EndpointProfile) -> AsyncRetrying:
    """Transient errors only, up to `max_attempts` tries, jittered exponential backoff capped at
    `backoff_max` seconds; a fresh one per request."""
    return AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        stop=stop_after_attempt(profile.max_attempts),
        wait=wait_random_exponential(multiplier=0.5, max=profile.backoff_max),
        reraise=False,
    )


def served_identity(base_url: str, models: httpx.Response, requested: str) -> dict[str, str]:
    """Who answers requests for `requested`: the base URL, and from the server's `/models` list the
    served model's `id` (the entry of that name, else the only entry: a one-model server such as
    llama.cpp answers any name with it) and, where the server names them as vLLM does, the weights
    it was loaded from (`root`). A name alone does not tell two servers apart; these may. Only what
    the server offers is recorded."""
    identity = {"base_url": base_url.rstrip("/")}
    try:
        listed = models.json().get("data") if models.status_code == 200 else None
    except (ValueError, AttributeError):
        listed = None
    entries = [entry for entry in listed or [] if isinstance(entry, dict) and entry.get("id")]
    chosen = [entry for entry in entries if entry["id"] == requested] or (entries if len(entries) == 1 else [])
    if chosen:
        identity["model"] = str(chosen[0]["id"])
        if (root := chosen[0].get("root")) and root != chosen[0]["id"]:
            identity["root"] = str(root)
    return identity


class Transport:
    """One endpoint profile's connection: `send` makes one request (with `n` samples) under the
    concurrency limit and the retry policy. `chat_model` replaces the HTTP client (tests)."""

    def __init__(
        self,
        name: str,
        profile: EndpointProfile,
        *,
        chat_model: BaseChatModel | None = None,
        request_model: str | None = None,
    ):
        self.name = name
        self.profile = profile
        self.request_model = request_model or profile.model
        self._http = None
        if chat_model is None:
            size = profile.max_concurrency
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            self._http = httpx.AsyncClient(limits=limits, timeout=profile.timeout)
            chat_model = chat_model_for(profile, resolve_api_key(name, profile), self.request_model, self._http)
        self.chat_model = chat_model
        self.request_observers: list[RequestObserver] = []
        self._limit = asyncio.Semaphore(profile.max_concurrency)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def preflight(self) -> dict[str, str]:
        """Fail fast, before any model load or episode, when the endpoint can't be reached; else say
        what answers there (`served_identity`), so a run can tell when its server was swapped."""
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
        return served_identity(self.profile.base_url, response, self.request_model)

    def describe(self, exc: BaseException | None) -> str:
        if isinstance(exc, openai.APITimeoutError):
            return f"timed out after {self.profile.timeout:g} s"
        if isinstance(exc, openai.APIConnectionError):
            return f"connection to {self.profile.base_url} failed"
        if isinstance(exc, openai.APIStatusError):
            message = exc.message.splitlines()[0][:200] if exc.message else ""
            return f"HTTP {exc.status_code}: {message}"
        return f"{type(exc).__name__}: {exc}"

    async def send(
        self,
        role: str,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
        n: int = 1,
        seed: int | None = None,
    ) -> list[Completion]:
        """The completions of one request; the usage it reports is shared evenly among them.
        A transient error is retried; what still fails is an EndpointError naming `role`."""
        kwargs: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if n > 1:
            kwargs["n"] = n
        if seed is not None:
            kwargs["seed"] = seed
        for observe in self.request_observers:
            observe({"messages": messages, **kwargs})
        try:
            async for attempt in retry_policy(self.profile):
                with attempt:
                    async with self._limit:
                        result = await self.chat_model.agenerate([convert_to_messages(messages)], **kwargs)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise EndpointError(
                f"endpoint {self.name!r} ({self.profile.model}) failed for role {role} after "
                f"{self.profile.max_attempts} attempts: {self.describe(cause)}"
            ) from None
        except openai.APIError as exc:
            raise EndpointError(
                f"endpoint {self.name!r} ({self.profile.model}) refused a request for role {role}: "
                f"{self.describe(exc)}"
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
