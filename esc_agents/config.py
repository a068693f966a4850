"""Typed run configuration: endpoint profiles, role bindings, episode settings.

One `RunConfig` decides a result. It is built from the built-in defaults, then a YAML file
(`--config`), then command-line overrides, validated by pydantic (unknown keys and wrong
types are errors), and saved with every run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from esc_agents.core.errors import UserError
from esc_agents.core.yamlfile import load_yaml

T = TypeVar("T", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EndpointProfile(Strict):
    """Where an LLM role's completions come from. `kind` names the backend that serves the profile
    (esc_agents/models/backends.py): `openai`, any OpenAI-compatible server at `base_url` (the
    default); `embedded`, the local server this package starts (`embedded: true` is its older
    spelling, read where no kind is given); `factory`, a LangChain chat model made by calling
    `factory` (`package.module:callable`) with `args` (`factory:` alone implies the kind; `model`
    defaults to the factory's path). `api_key_env` names the variable holding the key; the key
    itself never enters a config, a log or a run folder.

    `honours_seed`: the server samples reproducibly from a request's `seed`, so each request gets
    one derived from the run seed, sample index and attempt. The built-in `vllm` and `openai`
    profiles set it; the embedded `local` one does not (there only the cache makes a rerun exact)."""

    kind: str = "openai"
    base_url: str | None = None  # every kind but `factory` needs it
    model: str | None = None  # likewise; for `factory`, its path unless given
    factory: str | None = None  # kind factory: package.module:callable returning a BaseChatModel
    args: dict[str, Any] = Field(default_factory=dict)  # kind factory: the callable's keyword arguments
    api_key_env: str | None = None
    timeout: float = Field(120.0, gt=0)
    max_concurrency: int = Field(16, ge=1)
    max_attempts: int = Field(5, ge=1)
    backoff_max: float = Field(20.0, ge=0)
    supports_n: bool | None = None  # None: detect on first use
    honours_seed: bool = False
    embedded: bool = False  # kind embedded, as older configs say it; kept equal to `kind == "embedded"`
    model_path: str | None = None  # embedded only: serve this model folder instead of the bundled model
    embedded_kv_tokens: int = Field(65536, ge=1024)  # embedded only: KV-cache capacity of the local server
    embedded_dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # auto: bf16 where the CPU has bf16 units

    @model_validator(mode="before")
    @classmethod
    def _kind_from_older_keys(cls, data: Any) -> Any:
        """A profile without `kind` is a factory's where it names one, embedded where it says
        `embedded: true` (every config and run.json written before kinds), else openai. The
        built-in `local` says `embedded: true`, so a YAML that gives it another kind wins."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind") or ("factory" if data.get("factory") is not None
                                    else "embedded" if data.get("embedded") else "openai")
        data["kind"], data["embedded"] = kind, kind == "embedded"
        if kind == "factory" and data.get("model") is None and isinstance(data.get("factory"), str):
            data["model"] = data["factory"]
        return data

    @model_validator(mode="after")
    def _what_the_kind_needs(self) -> EndpointProfile:
        if (self.kind == "factory") != (self.factory is not None):
            raise ValueError("kind factory needs `factory: package.module:callable`" if self.factory is None
                             else f"factory: only a profile of kind factory has one, not kind {self.kind}")
        if self.kind != "factory" and (missing := [name for name in ("base_url", "model") if not getattr(self, name)]):
            raise ValueError(f"{' and '.join(missing)} required for kind {self.kind}")
        return self

    @model_serializer(mode="wrap")
    def _as_older_configs_say_it(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Written out (run.json's config) an openai or embedded profile reads as it did before
        kinds (`embedded` says which), so a run's recorded config does not change with this field."""
        dumped = handler(self)
        if self.kind in ("openai", "embedded"):
            dumped.pop("kind", None)
        if self.factory is None:
            dumped.pop("factory", None)
            if not self.args:
                dumped.pop("args", None)
        return dumped


class RoleConfig(Strict):
    """An LLM role (which endpoint and prompt, and its sampling parameters), or a role written in
    Python (`factory`: an installed role name or `package.module:callable`, called with `args`)."""

    endpoint: str = "local"
    prompt: str | None = None
    factory: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(96, ge=1)
    # Supporters only: the latest N messages of the dialogue in the supporter's prompt (None: all).
    # One setting for every stage: stage-1 candidates and futures are written with it, the reward
    # model is trained and scores with the window of its data, and GRPO's prompts must match it.
    context_window: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _llm_or_python(self) -> RoleConfig:
        if (self.prompt is None) == (self.factory is None):
            raise ValueError("give a role either a prompt (an LLM role) or a factory (a Python role)")
        return self

    @model_serializer(mode="wrap")
    def _only_what_the_role_uses(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A Python role calls no endpoint and samples nothing: written out (run.json's config), its
        binding is its factory and args, not the LLM defaults it was merged over."""
        dumped = handler(self)
        return {key: dumped[key] for key in ("factory", "args") if key in dumped} if self.factory else dumped


class EpisodeConfig(Strict):
    max_turns: int = Field(8, ge=1)
    critic_samples: int = Field(10, ge=1)
    success_threshold: float = 0.5
    critic_retries: int = Field(2, ge=0)
    empty_reply_retries: int = Field(2, ge=0)


class ContextSampling(Strict):
    """Which dialogue prefixes become reward contexts (stage 1)."""

    dialogues: int | None = Field(None, ge=1)  # use the first N dialogues; None: all
    contexts: int | None = Field(None, ge=1, description="contexts to sample; unset: every selected context")
    positions: Literal["all", "random", "first"] = "random"
    per_dialogue: int = Field(1, ge=1)  # k for `random` and `first`
    min_history: int = Field(1, ge=1)  # messages before the supporter's turn


class RewardConfig(Strict):
    candidates: int = Field(4, ge=1)  # m
    formula: str = "terminal_efficiency"
    formula_params: dict[str, float] = Field(default_factory=dict)
    delta: float = 0.5  # label = 1[R_fut > delta]
    sampling: ContextSampling = ContextSampling()


BUILTIN_ENDPOINTS: dict[str, dict[str, Any]] = {
    "local": {
        "base_url": "http://127.0.0.1:8765/v1",
        "model": "smollm2-135m-instruct",
        "embedded": True,
        "supports_n": False,
        # Measured on 2 cores: batched throughput peaks near 16 requests in flight, then falls.
        "max_concurrency": 16,
    },
    "vllm": {
        "base_url": "http://127.0.0.1:8000/v1",
        "model": "Qwen/Qwen2.5-72B-Instruct",
        "api_key_env": "VLLM_API_KEY",
        "max_concurrency": 64,
        "honours_seed": True,
    },
    "openai": {
        "base_url": "https://api.openai.com/v1",
        "model": "gpt-4o",
        "api_key_env": "OPENAI_API_KEY",
        "max_concurrency": 8,
        "honours_seed": True,
    },
}


class RunConfig(Strict):
    endpoints: dict[str, EndpointProfile] = Field(
        default_factory=lambda: {name: EndpointProfile(**p) for name, p in BUILTIN_ENDPOINTS.items()}
    )
    supporter: RoleConfig = RoleConfig(prompt="vanilla", temperature=0.7, max_tokens=96)
    user_simulator: RoleConfig = RoleConfig(prompt="cooperative", temperature=0.7, max_tokens=64)
    critic: RoleConfig = RoleConfig(prompt="default", temperature=1.1, max_tokens=24)
    # The supporter that continues simulated futures; unset, the candidate proposer does.
    future_supporter: RoleConfig | None = None
    # The pairwise quality judge of `rlff-esc judge`; unset outside it.
    judge: RoleConfig | None = None
    episode: EpisodeConfig = EpisodeConfig()
    rewards: RewardConfig = RewardConfig()
    seed: int = 0

    def roles(self) -> dict[str, RoleConfig]:
        """Every role binding in use, by role name."""
        bound = {"supporter": self.supporter, "user_simulator": self.user_simulator, "critic": self.critic}
        if self.future_supporter is not None:
            bound["future_supporter"] = self.future_supporter
        if self.judge is not None:
            bound["judge"] = self.judge
        return bound

    @model_validator(mode="after")
    def _roles_name_known_endpoints(self) -> RunConfig:
        for role, binding in self.roles().items():
            if binding.context_window is not None and role not in ("supporter", "future_supporter"):
                raise ValueError(f"{role}.context_window: only a supporter's view is windowed")
            if binding.factory is not None:
                continue  # a Python role calls no endpoint
            name = binding.endpoint
            if name not in self.endpoints:
                known = ", ".join(sorted(self.endpoints))
                raise ValueError(f"{role}.endpoint: unknown endpoint profile {name!r} (known: {known})")
        return self


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line for a pydantic error, every problem in it; a misspelt key is reported before the
    field it hides."""
    problems = []
    for found in sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden"):
        where = ".".join(str(part) for part in found["loc"]) or "(top level)"
        problems.append(f"{where}: {'unknown key' if found['type'] == 'extra_forbidden' else found['msg']}")
    return f"{source}: {'; '.join(problems)}"


def load_typed(model: type[T], path: str | Path | None, overrides: dict[str, Any] | None = None,
               defaults: dict[str, Any] | None = None,
               complete: Callable[[dict[str, Any]], None] | None = None,
               describe: Callable[[ValidationError, str], str] = describe_validation_error) -> T:
    """defaults <- YAML file <- overrides (nested dicts, None values ignored), validated by
    `model`; every failure is one line naming the file and the field, or, as `describe(error,
    source)` writes it, the command-line option the overriding value came from."""
    data = dict(defaults if defaults is not None else model().model_dump())
    source = "config"
    if path is not None:
        source = str(path)
        try:
            loaded = load_yaml(Path(path))[1] or {}
        except FileNotFoundError:
            raise UserError(f"config file not found: {path}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: the top level must be a mapping")
        data = _merge(data, loaded)
    data = _merge(data, _drop_none(overrides or {}))
    if complete is not None:
        complete(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe(exc, source)) from None


def build_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 describe: Callable[[ValidationError, str], str] = describe_validation_error) -> RunConfig:
    defaults = {**RunConfig().model_dump(exclude={"endpoints"}), "endpoints": BUILTIN_ENDPOINTS}
    return load_typed(RunConfig, path, overrides, defaults, complete=_future_supporter_follows, describe=describe)


def _future_supporter_follows(data: dict[str, Any]) -> None:
    """Unset fields of the future supporter follow the supporter's; a binding given a factory
    drops the built-in default prompt it was merged over (it is a Python role now), while a
    prompt the user named beside a factory stays, and is refused as ambiguous."""
    if isinstance(data.get("future_supporter"), dict):
        data["future_supporter"] = _merge(data["supporter"], data["future_supporter"])
    defaults = RunConfig().roles()
    for role, binding in data.items():
        if isinstance(binding, dict) and binding.get("factory") is not None and role in defaults \
                and binding.get("prompt") == defaults[role].prompt:
            binding["prompt"] = None


class Given(dict):
    """A mapping an option gave whole (`--trl KEY=VALUE` pairs): a None in it is a value the user
    wrote (`KEY=null`), not an option left unset, so it is kept."""


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    """The options given: None is an option left unset, except inside a `Given` mapping."""
    cleaned = {}
    for key, value in values.items():
        if isinstance(value, Given):
            if value:
                cleaned[key] = dict(value)
        elif isinstance(value, dict):
            value = _drop_none(value)
            if value:
                cleaned[key] = value
        elif value is not None:
            cleaned[key] = value
    return cleaned
