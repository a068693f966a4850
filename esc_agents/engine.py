"""Everything one run needs to call models: prompts, endpoints, cache, their backends, roles.

Prompts are loaded and validated, Python roles made, and the backend of each LLM role's endpoint
profile checked (its kind known, a factory importable), in the constructor, before any server
starts or any call is made; on entry each backend is opened (the embedded server started, a
factory's chat model made) and endpoints with a server are checked for reachability.
A role can also be passed in as an object (`roles={"critic": MyCritic()}`): it replaces that
role's binding, and run.json records it by its own fingerprint. An offline engine replays a finished run
from the cache alone: no server starts, no endpoint is checked, a missing completion is an error.
What serves each LLM role is learnt on entry (`endpoint_identities`) for run.json; `same_model` lets
a run folder resume against a server that moved but serves the same weights.
"""

from __future__ import annotations

from pathlib import Path

from langchain_core.language_models import BaseChatModel

from esc_agents.config import RunConfig
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case
from esc_agents.models.cache import CompletionCache
from esc_agents.models.backends import Backend, backend_for
from esc_agents.models.endpoints import Endpoint, UsageMeter
from esc_agents.models.local_server import cache_dir
from esc_agents.prompts import check_success_threshold, load_prompt, prompt_kind
from esc_agents.roles.llm import Critic, Judge, Supporter, UserSimulator
from esc_agents.roles.plugins import make_role, role_fingerprint
from esc_agents.roles.replies import ReplyGuard, guard_of
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
        same_model: bool = False,
    ):
        if offline and not use_cache:
            raise UserError("--offline replays completions from the cache; it cannot go with --no-cache")
        self.config = config
        self.offline = offline
        self.same_model = same_model
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
        self._chat_models = chat_models or {}
        llm_endpoints = {binding.endpoint for role, binding in bindings.items() if role not in self.plugins}
        self.backends: dict[str, Backend] = {name: backend_for(config.endpoints[name], name)
                                             for name in sorted(llm_endpoints - set(self._chat_models))}
        for backend in self.backends.values():
            backend.check()
        self._opened: list[Backend] = []
        self.cache = CompletionCache(cache_path or default_cache_path()) if use_cache else None
        self.meter = UsageMeter()
        self.endpoints: dict[str, Endpoint] = {}

    @property
    def critic_range(self) -> tuple[float, float]:
        """The critic's lowest and highest verdict score: the scale of eta, R_fut and delta."""
        if "critic" in self.plugins:
            return tuple(self.plugins["critic"].score_range)
        return self.prompts["critic"].score_range

    @property
    def endpoint_identities(self) -> dict[str, dict[str, str]]:
        """What serves each LLM role, where known: learnt on entry, so empty before it. An offline
        engine knows what needs no server (embedded weights, a factory), a test's chat model
        nothing; a Python role has none."""
        bindings = self.config.roles()
        return {role: endpoint.identity for role, binding in bindings.items() if role not in self.plugins
                and (endpoint := self.endpoints.get(binding.endpoint)) is not None and endpoint.identity is not None}

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
        # A supporter's replies reach the critic only without the critic's verdict sentences.
        guard = {"guard": self.reply_guard} if llm_role is Supporter else {}
        return llm_role(role, self.endpoints[binding.endpoint], self.prompts[role], binding,
                        regenerations=regenerations, seed=self.config.seed, use_cache=self.cache is not None, **guard)

    @property
    def reply_guard(self) -> ReplyGuard:
        return guard_of(self.prompts.get("critic"))

    async def _open_endpoint(self, name: str) -> Endpoint:
        profile = self.config.endpoints[name]
        shared = {"cache": self.cache, "meter": self.meter, "offline": self.offline}
        if name in self._chat_models:
            return Endpoint(name, profile, chat_model=self._chat_models[name], **shared)
        backend = self.backends[name]
        if self.offline:
            endpoint = Endpoint(name, profile, backend=backend, **shared)
            endpoint.identify()
            return endpoint
        self._opened.append(backend)
        opened = await backend.open()
        endpoint = Endpoint(name, profile, chat_model=opened.chat_model, request_model=opened.request_model,
                            backend=backend, **shared)
        if opened.preflight:
            await endpoint.preflight()
        else:
            endpoint.identify()
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
        for backend in self._opened:
            await backend.close()
        self._opened.clear()
        if self.cache is not None:
            self.cache.close()
