"""Command-line options derived from the fields of a pydantic config, so that an option's name,
type, bounds, help and shown default cannot drift from the field it sets.

`ConfigFlags(Model, ["max_steps", Flag("simulation.max_turns", "--future-turns")])` declares
`--max-steps` (int, >= 1 as the field says, help = the field's description and default) and
`--future-turns`; `load(args, path)` merges defaults <- the YAML file <- the options given, and
validates the result through the model. A value is refused at parse time when it breaks the field's
own bounds, and after the merge when it breaks a rule of the whole model; either way the error is
one line naming the option."""

from __future__ import annotations

import argparse
import re
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from esc_agents.cli.values import key_value, number
from esc_agents.core.errors import UserError

# Field bounds as the checked-number keywords of `values.number`.
BOUNDS = {annotated_types.Ge: ("minimum", "ge"), annotated_types.Gt: ("above", "gt"),
          annotated_types.Le: ("maximum", "le"), annotated_types.Lt: ("below", "lt")}
METAVARS = {int: "N", float: "X", str: "TEXT", Path: "PATH"}
# How the help names the value of fields that recur across configs, unless a Flag names it.
NAMED = {"learning_rate": "LR", "batch_size": "B", "num_generations": "G", "epochs": "E", "seed": "SEED",
         "report_to": "TRACKER", "max_length": "TOKENS", "max_completion_length": "TOKENS"}


@dataclass(frozen=True)
class Flag:
    """One config field as an option: `field` is its dotted path in the config; `option` defaults
    to the last part in kebab case; `metavar` only changes how the help names the value."""

    field: str
    option: str | None = None
    metavar: str | None = None

    @property
    def name(self) -> str:
        return self.option or "--" + self.field.rpartition(".")[2].replace("_", "-")

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--").replace("-", "_")


def _field(model: type[BaseModel], path: str) -> tuple[FieldInfo, Any]:
    """The field at a dotted path and its default in the model's default instance."""
    value: Any = model()
    info = None
    for part in path.split("."):
        if not isinstance(value, BaseModel) or part not in type(value).model_fields:
            raise TypeError(f"{model.__name__} has no field {path}")
        info = type(value).model_fields[part]
        value = getattr(value, part)
    return info, value


def _optional(annotation: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of `X | None`; other annotations as they are."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0], len(members) < len(get_args(annotation))
    return annotation, False


def _is_mapping(kind: Any) -> bool:
    return kind is dict or get_origin(kind) is dict


def shown(default: Any) -> str:
    """A default as the help shows it."""
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, (list, tuple)):
        return ", ".join(map(str, default))
    if isinstance(default, dict):
        return ", ".join(f"{key}={value}" for key, value in default.items()) or "none"
    return str(default)


def _argument(flag: Flag, info: FieldInfo, default: Any) -> dict[str, Any]:
    """add_argument's keywords for one field. Every option defaults to None (not given), so an
    option left out never overrides the config file."""
    if not info.description:
        raise TypeError(f"{flag.field} has no description: give it Field(description=...), the option's help")
    kind, optional = _optional(info.annotation)
    bounds = {}
    for constraint in info.metadata:
        keyword = BOUNDS.get(type(constraint))
        if keyword is None:
            raise TypeError(f"{flag.field}: the command line cannot check {constraint!r}")
        bounds[keyword[0]] = getattr(constraint, keyword[1])
    if isinstance(kind, type) and issubclass(kind, BaseModel) and optional and default is None:
        # optional sub-settings (e.g. lora): a switch that turns them on (see `load`)
        argument = {"action": "store_const", "const": {}}
    elif kind is bool:
        argument = {"action": "store_true" if default is False else argparse.BooleanOptionalAction}
    elif get_origin(kind) is Literal:
        argument = {"choices": list(get_args(kind))}
    elif kind in (int, float):
        argument = {"type": number(kind, **bounds), "metavar": METAVARS[kind]}
    elif kind in (str, Path):
        argument = {"type": kind, "metavar": METAVARS[kind]}
    elif get_origin(kind) is list and get_args(kind) == (str,):
        argument = {"action": "append", "metavar": "TEXT"}
    elif _is_mapping(kind):  # a pass-through mapping: KEY=VALUE, repeated
        argument = {"action": "append", "type": key_value, "metavar": "KEY=VALUE"}
    else:
        raise TypeError(f"{flag.field}: no command-line form for {info.annotation!r}")
    leaf = flag.field.rpartition(".")[2]
    if "metavar" in argument and (flag.metavar or leaf in NAMED):
        argument["metavar"] = flag.metavar or NAMED[leaf]
    text = f"{info.description} (default: {shown(default)})"
    return {**argument, "default": None, "dest": flag.dest, "help": text.replace("%", "%%")}


class ConfigFlags:
    """Options for some fields of one pydantic config (see the module's docstring)."""

    def __init__(self, model: type[BaseModel], flags: Iterable[str | Flag]):
        self.model = model
        self.flags = [flag if isinstance(flag, Flag) else Flag(flag) for flag in flags]
        self.fields = {flag.name: _field(model, flag.field) for flag in self.flags}

    def add_to(self, parser: argparse.ArgumentParser, *, title: str | None = None,
               exclude: Iterable[str] = ()) -> None:
        """Declare the options (but those whose field is in `exclude`), grouped under `title`."""
        group = parser.add_argument_group(title or f"{self.model.__name__} fields (override --config FILE)")
        for flag in self.flags:
            if flag.field not in exclude:
                info, default = self.fields[flag.name]
                group.add_argument(flag.name, **_argument(flag, info, default))

    def given(self, args: argparse.Namespace) -> dict[str, str]:
        """{field path: option} of the options given on the command line."""
        return {flag.field: flag.name for flag in self.flags if getattr(args, flag.dest, None) is not None}

    def overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        """The options given, as a nested dict of config fields (a switch's sub-settings are turned
        on in `load`: an empty dict would read as no override)."""
        nested: dict[str, Any] = {}
        for flag in self.flags:
            value = getattr(args, flag.dest, None)
            if value is not None and value != {}:
                mapping = _is_mapping(_optional(self.fields[flag.name][0].annotation)[0])
                _put(nested, flag.field, dict(value) if mapping else value)  # KEY=VALUE pairs: the last wins
        return nested

    def load(self, args: argparse.Namespace, path: str | Path | None):
        """The config: defaults <- the file at `path` <- the options given, validated by the model;
        a problem that an option given causes is one line naming it, any other names the file."""
        from esc_agents.config import load_typed

        given = self.given(args)
        switches = [flag.field for flag in self.flags if getattr(args, flag.dest, None) == {}]

        def complete(data: dict[str, Any]) -> None:
            for field in switches:  # on, with the file's settings if it has them, else the defaults
                if _get(data, field) is None:
                    _put(data, field, {})
            try:
                self.model.model_validate(data)
            except ValidationError as exc:
                raise UserError(describe_problems(exc, given, str(path or "config"))) from None

        return load_typed(self.model, path, self.overrides(args), complete=complete)


def _get(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def _named_at(field: str, message: str) -> int | None:
    """Where a message names a field: by its dotted path, or by its last part where the message
    names no dotted path ending in that part (`critic.endpoint` is not named by a message about
    `supporter.endpoint`)."""
    leaf = field.rpartition(".")[2]
    found = re.search(rf"(?<![\w.]){re.escape(field)}\b", message)
    if found is None and not re.search(rf"\w\.{re.escape(leaf)}\b", message):
        found = re.search(rf"\b{re.escape(leaf)}\b", message)
    return None if found is None else found.start()


def describe_problems(error: ValidationError, given: dict[str, str], source: str) -> str:
    """One line: each problem under the options that caused it (a field's own error, or a rule of
    the whole model whose message names the field), the others under the config file."""
    from esc_agents.config import describe_validation_error

    problems, blamed = [], False
    for found in sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden"):
        where = ".".join(str(part) for part in found["loc"])
        message = "unknown key" if found["type"] == "extra_forbidden" else found["msg"].removeprefix("Value error, ")
        if where:
            options = list(dict.fromkeys(option for field, option in given.items()
                                         if where == field or where.startswith(field + ".")))
        else:  # in the order the message names them
            named: dict[str, int] = {}
            for field, option in given.items():
                if (at := _named_at(field, message)) is not None:
                    named[option] = min(at, named.get(option, at))
            options = sorted(named, key=named.get)
        blamed = blamed or bool(options)
        problems.append(f"{', '.join(options)}: {message}" if options else f"{source}: {where or '(top level)'}: {message}")
    return "; ".join(problems) if blamed else describe_validation_error(error, source)
