"""What decided a result: the fingerprint `run.json` keeps (`esc_agents.runs` reads and writes
the file), and the comparisons that tell whether a resumed run (or a merge of parts) was made with
the same settings and against the same servers."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

from esc_agents import __version__
from esc_agents.config import RunConfig
from esc_agents.prompts import PROMPTS_DIR, Prompt

VERSIONED_PACKAGES = ("langgraph", "langchain-openai", "openai", "transformers", "torch")
# In a role's fingerprint: what served it (`Endpoint.identity`), where it was known.
IDENTITY = "identity"
# In run.json: each server change a resume accepted with --same-model.
IDENTITY_CHANGES = "identity_changes"


def versions() -> dict[str, str]:
    found = {"rlff-esc": __version__, "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def fingerprint(config: RunConfig, prompts: dict[str, Prompt], dataset: str,
                plugins: dict[str, dict[str, Any]] | None = None,
                identities: dict[str, dict[str, str]] | None = None, **settings: Any) -> dict[str, Any]:
    """The settings that change results. Concurrency, timeouts and retry budgets don't;
    only the model behind each role's endpoint does: its profile's model name, and what was found
    serving it (`identities`, by role, where known), since one name can be served by other weights.
    A Python role is named by its own fingerprint (`plugins`), never as the LLM binding it replaced.
    `settings` adds a command's own."""
    roles = {}
    for role, binding in config.roles().items():
        if plugins and role in plugins:
            roles[role] = plugins[role]
            continue
        roles[role] = {
            "model": config.endpoints[binding.endpoint].model,
            "prompt": prompts[role].name,
            "prompt_sha256": prompts[role].sha256,
            "temperature": binding.temperature,
            "max_tokens": binding.max_tokens,
            "context_window": binding.context_window,
            **({IDENTITY: identities[role]} if identities and role in identities else {}),
        }
    return {
        "dataset": dataset, "roles": roles, "episode": config.episode.model_dump(), "seed": config.seed, **settings,
    }


def flattened(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level, by dotted names (`episode.max_turns`)."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(flattened(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    flat_a, flat_b = flattened(a), flattened(b)
    return sorted(key for key in flat_a.keys() | flat_b.keys() if flat_a.get(key) != flat_b.get(key))


def role_identity(fingerprint: dict[str, Any], role: str) -> dict[str, str] | None:
    """What served `role` of a run, as its fingerprint records it (None: unknown, or a Python role)."""
    spec = (fingerprint.get("roles") or {}).get(role)
    return spec.get(IDENTITY) if isinstance(spec, dict) else None


def settings_only(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint without the servers' identities, which are compared apart (`same_server`)."""
    roles = fingerprint.get("roles")
    if not isinstance(roles, dict):
        return fingerprint
    return {**fingerprint, "roles": {role: {key: value for key, value in spec.items() if key != IDENTITY}
                                     if isinstance(spec, dict) else spec for role, spec in roles.items()}}


def same_server(a: dict[str, str] | None, b: dict[str, str] | None) -> bool:
    """Whether two identities may name one server: an unknown one may be any; known ones must be of
    one kind (embedded weights, a factory, or a base URL) and agree on all that both recorded."""
    if not a or not b:
        return True
    common = a.keys() & b.keys()
    return bool(common) and all(a[key] == b[key] for key in common)


def moved_servers(recorded: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, dict, dict]]:
    """(role, recorded identity, current identity) for each role whose known server changed."""
    return [(role, before, after) for role in (current.get("roles") or {})
            if not same_server(before := role_identity(recorded, role), after := role_identity(current, role))]


def describe_identity(identity: dict[str, str]) -> str:
    if "weights" in identity:
        return f"embedded weights {identity['weights']}"
    if "factory" in identity:
        return f"factory {identity['factory']} (model {identity.get('model')}, args {identity.get('args')})"
    served = f" serving {identity['model']}" if "model" in identity else " (no model listed)"
    return identity.get("base_url", "?") + served + (f" from {identity['root']}" if "root" in identity else "")


def prompt_record(prompt: Prompt) -> dict[str, Any]:
    """A prompt as run.json names it: by name and content hash, never by where its file was."""
    builtin = prompt.path.resolve().is_relative_to(PROMPTS_DIR)
    return {"name": prompt.name, "sha256": prompt.sha256, "source": "built-in" if builtin else "file"}
