"""`trl:` in a training config: any field of the TRL / transformers config class a trainer is built
from, passed through as given. Without it every TRL setting the project did not re-declare
(`loss_type`, `scale_rewards`, `num_iterations`, ...) needed a code change to reach.

The settings are checked against the class's own dataclass fields (name, declared type, declared
choices) when the config loads, so a typo or a wrong type stops in one line before any weight
loads. The fields the run's own settings decide are refused there, naming the setting that decides
them: a value set two ways would leave the run card saying one thing and the trainer doing another.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from collections.abc import Mapping
from typing import Any

from esc_agents.core.errors import UserError


@functools.cache
def _fields(target: type) -> tuple[dict[str, dataclasses.Field], dict[str, Any]]:
    return ({field.name: field for field in dataclasses.fields(target) if field.init},
            typing.get_type_hints(target))


def check_passthrough(settings: Mapping[str, Any], target: type, decided: Mapping[str, str]) -> dict[str, Any]:
    """`settings` checked as fields of the dataclass `target`; `decided` maps the fields the run
    decides to the setting that decides them. Raises ValueError naming every problem."""
    from pydantic import TypeAdapter, ValidationError

    fields, hints = _fields(target)
    checked, problems = {}, []
    for key, value in settings.items():
        if key in decided:
            problems.append(f"trl.{key} is set by the run's own {decided[key]}; set it there, not in trl")
        elif key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            problems.append(f"trl.{key} is not a field of {target.__name__}"
                            + (f" (did you mean {close[0]}?)" if close else ""))
        else:
            try:
                value = TypeAdapter(hints[key]).validate_python(value, strict=True)
            except ValidationError as error:
                problems.append(f"trl.{key}: {error.errors()[0]['msg'].lower()}, got {value!r}{_yaml_hint(value)}")
                continue
            choices = fields[key].metadata.get("choices")
            if choices and value is not None and value not in choices:
                problems.append(f"trl.{key}: one of {', '.join(map(str, choices))}, got {value!r}")
                continue
            checked[key] = value
    if problems:
        raise ValueError("; ".join(problems))
    return checked


def _yaml_hint(value: Any) -> str:
    """YAML 1.1 reads a number such as 1e-4 (no dot) as text; say so, or the refusal puzzles."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads a number without a dot as text: write 1.0e-4, not 1e-4)"
    return ""


def trainer_config(target: type, config, decided: Mapping[str, str], converted: Mapping[str, Any],
                   defaults: Mapping[str, Any]):
    """The trainer's config object: the fields the run decides (`decided`, each the value of the
    setting of the same name in `config` unless `converted` gives it), `config.trl` over the
    project's `defaults` for the rest. A decided field this library version lacks is left out.
    What the class's own checks refuse is one line, before any weight loads."""
    fields, _ = _fields(target)
    own = {name: converted[name] if name in converted else getattr(config, setting)
           for name, setting in decided.items() if name in fields}
    try:
        return target(**{**defaults, **config.trl, **own})
    except (ValueError, TypeError) as error:
        raise UserError(f"{target.__name__}: {' '.join(str(error).split())}") from None


def effective(arguments) -> dict[str, Any]:
    """The trainer config a run trained with, for its run card: every field as JSON, and apart
    those that differ from the class's declared defaults (what this run, or its machine, chose;
    `to_dict` hides every *_token field behind a placeholder, which is not a choice)."""
    fields, _ = _fields(type(arguments))
    every = _as_json(arguments.to_dict())
    declared = _as_json({name: field.default_factory() if field.default is dataclasses.MISSING else field.default
                         for name, field in fields.items() if _has_default(field)})
    return {"class": f"{type(arguments).__module__}.{type(arguments).__name__}",
            "non_default": {key: value for key, value in every.items()
                            if declared.get(key, dataclasses.MISSING) != value and value != f"<{key.upper()}>"},
            "fields": every}


def _has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _as_json(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=lambda value: getattr(value, "value", str(value))))
