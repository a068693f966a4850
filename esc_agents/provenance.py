"""What decided a result, saved as `run.json` beside it, and the check that a resumed run
(or a merge of parts) was made with the same settings and against the same servers."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from esc_agents import __version__
from esc_agents.config import RoleConfig, RunConfig
from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.prompts import PROMPTS_DIR, Prompt, load_prompt, prompt_from_text, prompt_kind

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


def _objects_as_factories(config: RunConfig, plugins: dict[str, dict[str, Any]] | None) -> RunConfig:
    """`config` with each role object passed in bound as the factory its fingerprint names, so the
    config run.json keeps, like its fingerprint, never shows the LLM role that object replaced."""
    bindings = config.roles()
    objects = {role: RoleConfig(factory=made["plugin"], args=made.get("args", {}))
               for role, made in (plugins or {}).items() if bindings[role].factory is None}
    return config.model_copy(update=objects) if objects else config


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    flat_a, flat_b = _flatten(a), _flatten(b)
    return sorted(key for key in flat_a.keys() | flat_b.keys() if flat_a.get(key) != flat_b.get(key))


def write_run_record(
    out: Path, config: RunConfig, prompts: dict[str, Prompt], dataset: str, *, cases: list[str] | None = None,
    held_out: dict[str, Any] | None = None, plugins: dict[str, dict[str, Any]] | None = None,
    critic_range: tuple[float, float] | None = None, dry_run: bool = False,
    growable: tuple[str, ...] = (), grow: Callable[[dict[str, Any]], None] | None = None,
    extra: dict[str, Any] | None = None, identities: dict[str, dict[str, str]] | None = None,
    same_model: bool = False, **settings: Any,
) -> dict:
    """Create `out/run.json`, or check that an existing one has the same fingerprint. `cases` are
    the ids the run is meant to finish (a resume with more adds to them): readers compare them
    with what finished, so a case that never ran is never silently left out of a metric. The
    prompts are recorded by name and content hash, their full texts kept too, so the run can be
    redone (and read) where their files are not: nothing in run.json names a place on this machine.
    `dry_run` only checks: a run with other settings is refused before any work, and nothing is
    written. A run may grow: where only `growable` fields (flattened names, e.g. how many contexts)
    differ, `grow(previous run record)` raises if the new settings would drop work the run holds,
    else the record takes the new settings. `extra` goes into a new record beside the fingerprint.

    `identities` (by role: what serves it, known once the endpoints answered) are compared apart
    from the settings: one unknown on either side (an older run.json, an offline replay, a dry run)
    is no difference, and the record learns it; one that differs is refused, naming both, unless
    `same_model` says the moved server serves the same weights, which the record keeps under
    `identity_changes`. Half the episodes from one server and half from another would otherwise
    pass for one run."""
    path = out / "run.json"
    config = _objects_as_factories(config, plugins)
    current = fingerprint(config, prompts, dataset, plugins, identities, **settings)
    if not path.exists():
        return {} if dry_run else _new_run_record(out, current, config, prompts, cases, held_out, critic_range, extra)
    previous = json.loads(path.read_text())
    recorded = previous["fingerprint"]
    moves = moved_servers(recorded, current)
    current = _with_known_identities(current, recorded, {role for role, _, _ in moves})
    diff = differing_fields(settings_only(recorded), settings_only(current))
    if diff and (grow is None or not set(diff) <= set(growable)):
        raise UserError(
            f"{out} holds a run with other settings ({', '.join(diff)}); use a new --out or the same settings"
        )
    if moves and not same_model:
        raise UserError(_moved_message(out, moves))
    if diff:
        grow(previous)
    if dry_run:
        return previous
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    updated = dict(previous)
    if diff:
        before = _flatten(recorded)
        grown = {"from": {field: before.get(field) for field in diff}, "at": now}
        updated.update(grown=[*previous.get("grown", []), grown], config=config.model_dump(mode="json"),
                       **({"held_out": held_out} if held_out is not None else {}))
    if moves:
        updated[IDENTITY_CHANGES] = [*previous.get(IDENTITY_CHANGES, []), *(
            {"role": role, "from": before, "to": after, "at": now} for role, before, after in moves)]
    updated["fingerprint"] = current
    known = previous.get("cases")
    if cases is not None and known is not None and not set(cases) <= set(known):
        updated["cases"] = known + [case for case in cases if case not in set(known)]
    if updated != previous:
        write_json(path, updated)
    return updated


def _new_run_record(out: Path, current: dict[str, Any], config: RunConfig, prompts: dict[str, Prompt],
                    cases: list[str] | None, held_out: dict[str, Any] | None,
                    critic_range: tuple[float, float] | None, extra: dict[str, Any] | None) -> dict:
    record = {
        "fingerprint": current,
        "config": config.model_dump(mode="json"),
        "prompts": {role: prompt_record(prompt) for role, prompt in prompts.items()},
        "prompt_texts": {role: prompt.text for role, prompt in prompts.items()},
        "critic_range": list(critic_range or prompts["critic"].score_range) if critic_range or "critic" in prompts
        else None,
        **({"cases": list(cases)} if cases is not None else {}),
        **({"held_out": held_out} if held_out is not None else {}),
        **(extra or {}),
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", record)
    return record


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


def served_identities(run: dict[str, Any], role: str) -> list[dict[str, str]]:
    """Every server that `role` of a run ran on, taken as one: the one it records now and each one a
    resume with --same-model moved it from."""
    earlier = [change["from"] for change in run.get(IDENTITY_CHANGES, []) if change.get("role") == role]
    return [identity for identity in (role_identity(run["fingerprint"], role), *earlier) if identity]


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


def _with_known_identities(current: dict[str, Any], recorded: dict[str, Any], moved: set[str]) -> dict[str, Any]:
    """`current` keeping what the record knew of each role's server that this session did not learn
    (an offline replay must not erase it); a moved role takes its new server whole."""
    roles = {}
    for role, spec in (current.get("roles") or {}).items():
        known, now = role_identity(recorded, role), role_identity(current, role)
        merged = now if role in moved or not known else {**known, **(now or {})}
        roles[role] = {**spec, IDENTITY: merged} if merged else spec
    return {**current, "roles": roles} if "roles" in current else current


def _moved_message(out: Path, moves: list[tuple[str, dict, dict]]) -> str:
    changes: dict[tuple[str, str], list[str]] = {}
    for role, before, after in moves:
        changes.setdefault((describe_identity(before), describe_identity(after)), []).append(role)
    said = "; ".join(f"{', '.join(roles)} on {before}, now on {after}" for (before, after), roles in changes.items())
    return (f"{out} holds a run made against another server ({said}); use a new --out, or --same-model "
            "if the server moved but serves the same weights")


def prompt_record(prompt: Prompt) -> dict[str, Any]:
    """A prompt as run.json names it: by name and content hash, never by where its file was."""
    builtin = prompt.path.resolve().is_relative_to(PROMPTS_DIR)
    return {"name": prompt.name, "sha256": prompt.sha256, "source": "built-in" if builtin else "file"}


def run_prompt(folder: Path, run: dict[str, Any], role: str) -> Prompt:
    """The prompt a run's `role` used, resolved where the run folder is now: its text as run.json
    keeps it, else a built-in prompt of its name with the same content, else (run.json files
    written before prompts were recorded by name) the file it named, if it is still there with the
    same content. Anything else is one line saying what is missing."""
    spec = run["fingerprint"]["roles"].get(role)
    if spec is None or "prompt_sha256" not in spec:
        raise UserError(f"{folder}: the {role} of this run is not an LLM role with a prompt")
    name, sha256 = spec["prompt"], spec["prompt_sha256"]
    text = (run.get("prompt_texts") or {}).get(role)
    if text is not None and _sha256(text) == sha256:
        return prompt_from_text(prompt_kind(role), name, text, folder / "run.json")
    looked = []
    recorded = (run.get("prompts") or {}).get(role)
    candidates = [PROMPTS_DIR / prompt_kind(role) / f"{name}.yaml"]
    if isinstance(recorded, str):  # older run.json: the file's path then
        candidates.append(Path(recorded))
    for path in candidates:
        looked.append(str(path))
        if path.is_file() and _sha256(path.read_text(encoding="utf-8")) == sha256:
            return load_prompt(prompt_kind(role), str(path))
    raise UserError(f"{folder}/run.json does not keep the text of its {role} prompt {name!r} (sha256 "
                    f"{sha256[:12]}), and no file with that content was found (looked at: {', '.join(looked)}); "
                    "put that prompt file back, or add its text under prompt_texts")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
