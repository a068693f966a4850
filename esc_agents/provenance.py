"""What decided a result, saved as `run.json` beside it, and the check that a resumed run
(or a merge of parts) was made with the same settings."""

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
from esc_agents.config import RunConfig
from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.prompts import PROMPTS_DIR, Prompt, load_prompt, prompt_from_text, prompt_kind

VERSIONED_PACKAGES = ("langgraph", "langchain-openai", "openai", "transformers", "torch")


def versions() -> dict[str, str]:
    found = {"rlff-esc": __version__, "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def fingerprint(config: RunConfig, prompts: dict[str, Prompt], dataset: str,
                plugins: dict[str, dict[str, Any]] | None = None, **settings: Any) -> dict[str, Any]:
    """The settings that change results. Concurrency, timeouts and retry budgets don't;
    only the model behind each role's endpoint does. A Python role is named by its own
    fingerprint (`plugins`), never as the LLM binding it replaced. `settings` adds a command's own."""
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
        }
    return {
        "dataset": dataset, "roles": roles, "episode": config.episode.model_dump(), "seed": config.seed, **settings,
    }


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
    extra: dict[str, Any] | None = None, **settings: Any,
) -> dict:
    """Create `out/run.json`, or check that an existing one has the same fingerprint. `cases` are
    the ids the run is meant to finish (a resume with more adds to them): readers compare them
    with what finished, so a case that never ran is never silently left out of a metric. The
    prompts are recorded by name and content hash, their full texts kept too, so the run can be
    redone (and read) where their files are not: nothing in run.json names a place on this machine.
    `dry_run` only checks: a run with other settings is refused before any work, and nothing is
    written. A run may grow: where only `growable` fields (flattened names, e.g. how many contexts)
    differ, `grow(previous run record)` raises if the new settings would drop work the run holds,
    else the record takes the new settings. `extra` goes into a new record beside the fingerprint."""
    path = out / "run.json"
    current = fingerprint(config, prompts, dataset, plugins, **settings)
    if path.exists():
        previous = json.loads(path.read_text())
        if diff := differing_fields(previous["fingerprint"], current):
            if grow is None or not set(diff) <= set(growable):
                raise UserError(
                    f"{out} holds a run with other settings ({', '.join(diff)}); use a new --out or the same settings"
                )
            grow(previous)
            if dry_run:
                return previous
            before = _flatten(previous["fingerprint"])
            previous.setdefault("grown", []).append({
                "from": {field: before.get(field) for field in diff},
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            })
            previous.update(fingerprint=current, config=config.model_dump(mode="json"),
                            **({"held_out": held_out} if held_out is not None else {}))
            write_json(path, previous)
            return previous
        if dry_run:
            return previous
        known = previous.get("cases")
        if cases is not None and known is not None and not set(cases) <= set(known):
            previous["cases"] = known + [case for case in cases if case not in set(known)]
            write_json(path, previous)
        return previous
    if dry_run:
        return {}
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
    write_json(path, record)
    return record


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
