"""Every LLM call goes through an `Endpoint`: a named profile with its layers stacked, top down,
  cache (cache.py)          replay, single-flight, offline replay; the key scheme
  sampling (sampling.py)    `n` where the server honours it, else one request per sample; seeds
  transport (transport.py)  ChatOpenAI on the endpoint's HTTP client (or the backend's own chat
                            model), concurrency limit, retries
and observers told of each finished call (metering.py's UsageMeter: tokens per role). What serves
the profile (a server to point at, the embedded one, a factory's chat model) is its backend's
business (backends.py)."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from esc_agents.config import EndpointProfile
from esc_agents.models.backends import Backend, backend_for
from esc_agents.models.cache import CachingLayer, CompletionCache
from esc_agents.models.completion import Completion
from esc_agents.models.metering import UsageMeter, UsageObserver
from esc_agents.models.sampling import Sampler
from esc_agents.models.transport import Transport

__all__ = ["Completion", "Endpoint", "UsageMeter", "UsageObserver"]


class Endpoint:
    """A named endpoint profile with its transport, sampler and cache layer. `offline`: every
    completion must come from the cache; a missing one raises OfflineCacheMiss. `meter` is the
    first of `observers`; a benchmark that wants every request sent adds to
    `transport.request_observers`."""

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
        backend: Backend | None = None,
    ):
        self.name = name
        self.profile = profile
        self.backend = backend or backend_for(profile, name)  # names the model; opened by the engine
        self.transport = Transport(name, profile, chat_model=chat_model, request_model=request_model)
        supports_n = self.backend.supports_n if profile.supports_n is None else profile.supports_n
        self.sampler = Sampler(self.transport, supports_n=supports_n, honours_seed=profile.honours_seed)
        self.caching = CachingLayer(profile, cache, self.sampler, offline=offline, identify=self.backend.model_identity)
        self.meter = meter if meter is not None else UsageMeter()
        self.observers: list[UsageObserver] = [self.meter]
        # What serves this endpoint, once known (`preflight`, else what the backend knows unasked):
        # run.json keeps it, so a run resumed or compared against another server is caught.
        self.identity: dict[str, str] | None = None

    @property
    def chat_model(self) -> BaseChatModel:
        return self.transport.chat_model

    @property
    def supports_n(self) -> bool | None:
        """As the profile says, or as learnt from the first request for several samples."""
        return self.sampler.supports_n

    async def close(self) -> None:
        await self.transport.close()

    def identify(self) -> None:
        """What serves this endpoint, as its backend knows without asking (embedded weights, as the
        cache key names them, with no port; a factory): offline, and where there is no server."""
        self.identity = self.backend.known_identity()

    async def preflight(self) -> None:
        """Fail before any episode when the server cannot be reached; else learn who serves."""
        served = await self.transport.preflight()
        self.identity = self.backend.known_identity() or served

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
        completions, requests = await self.caching.sample(role, messages, params, indices, attempt,
                                                          use_cache=use_cache)
        for observer in self.observers:
            observer.record(role, completions, requests)
        return completions
