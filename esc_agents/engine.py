"""Everything one run needs to call models: prompts, endpoints, cache, the embedded server, roles.

Prompts are loaded and validated, and Python roles made, in the constructor, before any server
starts or any call is made; endpoints (of LLM roles only) are checked for reachability on entry.
A role can also be passed in as an object (`roles={"critic": MyCritic()}`): it replaces that
role's binding, and run.json records it by its own fingerprint. An offline engine replays a finished run
from the cache alone: no server starts, no endpoint is checked, a missing completion is an error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from esc_agents.config import RunConfig
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case
from esc_agents.models.cache import CompletionCache
from esc_agents.models.endpoints import Endpoint, UsageMeter
from esc_agents.models.local_server import LocalServer, cache_dir
from esc_agents.prompts import check_success_threshold, load_prompt, prompt_kind
from esc_agents.roles.llm import Critic, Judge, Supporter, UserSimulator
from esc_agents.roles.plugins import make_role, role_fingerprint
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
        roles: dict[str, object] | None = None,
    ):
        if offline and not use_cache:
            raise UserError("--offline replays completions from the cache; it cannot go with --no-cache")
        self.config = config
        self.offline = offline
        bindings = config.roles()
        injected = roles or {}
        if unknown := set(injected) - set(bindings):
            raise UserError(f"roles= names no role of this run: {', '.join(sorted(unknown))}")
        self.plugins = {role: injected.get(role) or make_role(role, binding.factory, binding.args, config.seed)
                        for role, binding in bindings.items() if role in injected or binding.factory is not None}
        self.plugin_fingerprints = {role: role_fingerprint(plugin, None if role in injected else bindings[role].factory)
                                    for role, plugin in self.plugins.items()}
        self.prompts = {role: load_prompt(prompt_kind(role), binding.prompt)
                        for role, binding in bindings.items() if role not in self.plugins}
        critic = self.plugins.get("critic")
        name = f"critic {bindings['critic'].factory or type(critic).__name__!r}" if critic else \
            f"critic prompt {self.prompts['critic'].name!r}"
        check_success_threshold(name, self.critic_range, config.episode.success_threshold)
        self.cache = CompletionCache(cache_path or default_cache_path()) if use_cache else None
        self.meter = UsageMeter()
        self._chat_models = chat_models or {}
        self._servers: list[LocalServer] = []
        self.endpoints: dict[str, Endpoint] = {}

    @property
    def critic_range(self) -> tuple[float, float]:
        """The critic's lowest and highest verdict score: the scale of eta, R_fut and delta."""
        if "critic" in self.plugins:
            return tuple(self.plugins["critic"].score_range)
        return self.prompts["critic"].score_range

    @property
    def judge_criteria(self) -> list[str]:
        if "judge" in self.plugins:
            return list(getattr(self.plugins["judge"], "criteria", ["overall"]))
        return self.prompts["judge"].spec.criteria

    async def __aenter__(self) -> Engine:
        try:
            llm_endpoints = {binding.endpoint for role, binding in self.config.roles().items()
                             if role not in self.plugins}
            for name in sorted(llm_endpoints):
                self.endpoints[name] = await self._open_endpoint(name)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        config = self.config
        self.supporter = self._role("supporter", Supporter, config.episode.empty_reply_retries)
        self.user_simulator = self._role("user_simulator", UserSimulator, config.episode.empty_reply_retries)
        self.critic = self._role("critic", Critic, config.episode.critic_retries)
        self.judge = self._role("judge", Judge, config.episode.critic_retries) if config.judge is not None else None
        self.future_supporter = self.supporter
        if config.future_supporter is not None:
            self.future_supporter = self._role("future_supporter", Supporter, config.episode.empty_reply_retries)
        return self

    def _role(self, role: str, llm_role: type, regenerations: int):
        """The plugin bound to `role`, else its LLM role on its endpoint."""
        if role in self.plugins:
            return self.plugins[role]
        binding = self.config.roles()[role]
        return llm_role(role, self.endpoints[binding.endpoint], self.prompts[role], binding,
                        regenerations=regenerations, seed=self.config.seed, use_cache=self.cache is not None)

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
