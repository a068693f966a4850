"""Everything one run needs to call models: prompts, endpoints, cache, the embedded server, roles.

Prompts are loaded and validated in the constructor, before any server starts or any call is
made; endpoints are checked for reachability on entry. An offline engine replays a finished run
from the cache alone: no server starts, no endpoint is checked, a missing completion is an error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from esc_agents.cache import CompletionCache
from esc_agents.config import RunConfig
from esc_agents.endpoints import Endpoint, UsageMeter
from esc_agents.errors import UserError
from esc_agents.local_server import LocalServer, cache_dir
from esc_agents.prompts import load_prompt, prompt_kind
from esc_agents.roles import Critic, Judge, Supporter, UserSimulator
from esc_agents.types import Case
from graphs.episode import EpisodeContext


def default_cache_path() -> Path:
    return cache_dir() / "completions.sqlite"


class Engine:
    def __init__(
        self,
        config: RunConfig,
        *,
        use_cache: bool = True,
        cache_path: str | Path | None = None,
        chat_models: dict[str, BaseChatModel] | None = None,
        offline: bool = False,
    ):
        if offline and not use_cache:
            raise UserError("--offline replays completions from the cache; it cannot go with --no-cache")
        self.config = config
        self.offline = offline
        self.prompts = {role: load_prompt(prompt_kind(role), binding.prompt) for role, binding in config.roles().items()}
        self.prompts["critic"].check_success_threshold(config.episode.success_threshold)
        self.cache = CompletionCache(cache_path or default_cache_path()) if use_cache else None
        self.meter = UsageMeter()
        self._chat_models = chat_models or {}
        self._servers: list[LocalServer] = []
        self.endpoints: dict[str, Endpoint] = {}

    async def __aenter__(self) -> Engine:
        try:
            for name in sorted({binding.endpoint for binding in self.config.roles().values()}):
                self.endpoints[name] = await self._open_endpoint(name)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        regenerations = self.config.episode.empty_reply_retries
        common = {"seed": self.config.seed, "use_cache": self.cache is not None}
        self.supporter = Supporter(
            "supporter", self.endpoints[self.config.supporter.endpoint], self.prompts["supporter"],
            self.config.supporter, regenerations=regenerations, **common,
        )
        self.user_simulator = UserSimulator(
            "user_simulator", self.endpoints[self.config.user_simulator.endpoint], self.prompts["user_simulator"],
            self.config.user_simulator, regenerations=regenerations, **common,
        )
        self.critic = Critic(
            "critic", self.endpoints[self.config.critic.endpoint], self.prompts["critic"],
            self.config.critic, regenerations=self.config.episode.critic_retries, **common,
        )
        self.judge = None
        if (judge := self.config.judge) is not None:
            self.judge = Judge("judge", self.endpoints[judge.endpoint], self.prompts["judge"], judge,
                               regenerations=self.config.episode.critic_retries, **common)
        self.future_supporter = self.supporter
        if (binding := self.config.future_supporter) is not None:
            self.future_supporter = Supporter(
                "future_supporter", self.endpoints[binding.endpoint], self.prompts["future_supporter"],
                binding, regenerations=regenerations, **common,
            )
        return self

    async def _open_endpoint(self, name: str) -> Endpoint:
        profile = self.config.endpoints[name]
        shared = {"cache": self.cache, "meter": self.meter, "offline": self.offline}
        if name in self._chat_models:
            return Endpoint(name, profile, chat_model=self._chat_models[name], **shared)
        if self.offline:
            return Endpoint(name, profile, **shared)
        request_model = None
        if profile.embedded:
            server = LocalServer(profile)
            self._servers.append(server)
            request_model = await asyncio.to_thread(server.start)
        endpoint = Endpoint(name, profile, request_model=request_model, **shared)
        await endpoint.preflight()
        return endpoint

    def episode_context(self, case: Case, *, future: bool = False) -> EpisodeContext:
        """Context for an evaluation episode, or (`future=True`) for a simulated future, whose
        supporter turns come from the future supporter."""
        episode = self.config.episode
        return EpisodeContext(
            case=case,
            supporter=self.future_supporter if future else self.supporter,
            user_simulator=self.user_simulator,
            critic=self.critic,
            max_turns=episode.max_turns,
            critic_samples=episode.critic_samples,
            success_threshold=episode.success_threshold,
        )

    async def __aexit__(self, *exc) -> None:
        for endpoint in self.endpoints.values():
            await endpoint.close()
        for server in self._servers:
            await asyncio.to_thread(server.stop)
        self._servers.clear()
        if self.cache is not None:
            self.cache.close()
