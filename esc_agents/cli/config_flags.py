"""Command-line options derived from the fields of pydantic models, so that an option's name,
type, bounds, help and shown default cannot drift from the field it sets. Every option of every
command is declared here (tests/test_cli_options.py walks the parser to check it); two kinds of
model give them:

A config (GrpoRunConfig, RewardModelConfig, ...), merged with a YAML file:
`ConfigFlags(Model, ["max_steps", Flag("simulation.max_turns", "--future-turns")])` declares
`--max-steps` (int, >= 1 as the field says, help = the field's description and default) and
`--future-turns`; a list of sub-settings takes a `parse` that reads one of them from an option's
text (`Flag("rewards", "--reward-fn", parse=...)`, repeatable). Each option defaults to None (not
given); `load(args, path)` merges defaults <- the YAML file <- the options given, and validates the
result through the model.

A command's own options, an `Options` model with one field each, declared with `option(...)`: what
the command line needs beyond the field's type, bounds, default and description is said there (a
metavar, an argparse type such as an output folder, a positional place, `sets`: the fields of the
model's `target` config, a RunConfig, that the option overrides). `ConfigFlags(Model)` declares
them all; an option defaults to its field's default, except one that sets config fields: it
defaults to None (not given: the config file decides), its help shows the config's default, and
`overrides(args)` / `given(args)` turn the options given into config overrides and say which
option set which field.

A value is refused at parse time when it breaks the field's own bounds, and after the merge when it
breaks a rule of the whole config; either way the error is one line naming the option."""

from __future__ import annotations

import argparse
import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from esc_agents.cli.values import key_value, number
from esc_agents.config import Given
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
    to the last part in kebab case; `metavar` only changes how the help names the value; `parse`
    reads one item of a list of sub-settings from the option's text (raising
    argparse.ArgumentTypeError), the option repeated for several."""

    field: str
    option: str | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None

    @property
    def name(self) -> str:
        return self.option or "--" + self.field.rpartition(".")[2].replace("_", "-")

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--").replace("-", "_")


@dataclass(frozen=True)
class Cli:
    """What the option of an `Options` field needs beyond the field's type, bounds, default and
    description (see `option`)."""

    metavar: str | None = None  # how the help names the value
    parse: Callable[[str], Any] | None = None  # an argparse type for one value (values.py), not the field type's
    positional: bool = False  # an argument, not an option
    nargs: int | str | None = None  # values taken at once (`--runs A B`, `DIR [DIR ...]`)
    repeat: bool | None = None  # the option may be repeated; unset: so for list and mapping fields without nargs
    sets: tuple[str, ...] = ()  # the fields of the model's `target` config the option overrides
    unset: str | None = None  # what a default of None means, as the help says it ("all")
    needed: str | None = None  # when the command needs it though the parser does not (an ACTION takes its own)
    more: Callable[[], str] | None = None  # help known only when the parser is built (registered names)


def option(default: Any = PydanticUndefined, description: str = "", *,
           default_factory: Callable[[], Any] | None = None, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, sets: str | tuple[str, ...] = (), **cli: Any) -> Any:
    """A field of an `Options` model: its default (`...`: required), the option's help, its bounds
    (checked when parsed), and the rest of `Cli`."""
    bounds = {name: value for name, value in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if value is not None}
    if default_factory is not None:
        field = Field(default_factory=default_factory, description=description, **bounds)
    else:
        field = Field(default, description=description, **bounds)
    field.metadata.append(Cli(sets=(sets,) if isinstance(sets, str) else tuple(sets), **cli))
    return field


class Options(BaseModel):
    """The options of a command, one `option(...)` field each; `target` is the config whose fields
    their `sets` name."""

    model_config = ConfigDict(extra="forbid")
    target: ClassVar[type[BaseModel] | None] = None


def _cli(info: FieldInfo) -> Cli:
    return next((item for item in info.metadata if isinstance(item, Cli)), Cli())


def _is_options(model: type[BaseModel]) -> bool:
    return issubclass(model, Options)


def _info(model: type[BaseModel], path: str) -> FieldInfo:
    """The field at a dotted path, through the sub-models its parts name."""
    kind: Any = model
    info = None
    for part in path.split("."):
        if not (isinstance(kind, type) and issubclass(kind, BaseModel)) or part not in kind.model_fields:
            raise TypeError(f"{model.__name__} has no field {path}")
        info = kind.model_fields[part]
        kind = _optional(info.annotation)[0]
    return info


def _default(model: type[BaseModel], path: str) -> Any:
    """The default at a dotted path: the top-level field's default, then the parts of it (None
    under sub-settings that are unset by default: the option, not the sub-model, decides there);
    PydanticUndefined for a required field."""
    head, *rest = path.split(".")
    value = model.model_fields[head].get_default(call_default_factory=True)
    for part in rest:
        value = getattr(value, part) if isinstance(value, BaseModel) else None
    return value


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
        return ", ".join(map(str, default)) or "none"
    if isinstance(default, dict):
        return ", ".join(f"{key}={value}" for key, value in default.items()) or "none"
    return str(default)


class _Pairs(argparse.Action):
    """KEY=VALUE options, repeated, gathered into one mapping (a key given again: the last wins)."""

    def __call__(self, parser, namespace, values, option_string=None):
        key, value = values
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest, None) or {}), key: value})


def _scalar(kind: Any, bounds: dict[str, float], where: str) -> dict[str, Any]:
    """add_argument's type (or choices) and metavar for one value of `kind`."""
    if get_origin(kind) is Literal:
        return {"choices": list(get_args(kind))}
    if kind in (int, float):
        return {"type": number(kind, **bounds), "metavar": METAVARS[kind]}
    if kind in (str, Path):
        return {"type": kind, "metavar": METAVARS[kind]}
    raise TypeError(f"{where}: no command-line form for {kind!r}")


def _argument(flag: Flag, info: FieldInfo, default: Any, model: type[BaseModel]) -> tuple[list[str], dict[str, Any]]:
    """add_argument's names and keywords for one field. A config's options default to None (not
    given), so an option left out never overrides the config file; so do an `Options` model's
    options that set config fields, the others default to their field's default."""
    if not info.description:
        raise TypeError(f"{flag.field} has no description: give it Field(description=...), the option's help")
    cli, options = _cli(info), _is_options(model)
    kind, optional = _optional(info.annotation)
    bounds = {}
    for constraint in info.metadata:
        if isinstance(constraint, Cli):
            continue
        keyword = BOUNDS.get(type(constraint))
        if keyword is None:
            raise TypeError(f"{flag.field}: the command line cannot check {constraint!r}")
        bounds[keyword[0]] = getattr(constraint, keyword[1])
    parse = flag.parse or cli.parse
    sequence = get_origin(kind) in (list, tuple)
    repeat = cli.repeat if cli.repeat is not None else (sequence or _is_mapping(kind)) and cli.nargs is None
    if isinstance(kind, type) and issubclass(kind, BaseModel) and optional and default is None:
        # optional sub-settings (e.g. lora): a switch that turns them on (see `load`)
        argument = {"action": "store_const", "const": {}}
    elif kind is bool:
        argument = {"action": "store_true" if default is False else argparse.BooleanOptionalAction}
    elif cli.nargs is not None:  # several values at once: one list
        argument = {"nargs": cli.nargs, **({"type": parse} if parse else
                                           _scalar(get_args(kind)[0] if sequence else kind, bounds, flag.field))}
    elif repeat and _is_mapping(kind):  # a mapping: KEY=VALUE (or what `parse` reads), repeated
        argument = {"action": _Pairs, "type": parse or key_value, "metavar": "KEY=VALUE"}
    elif repeat and sequence:  # one item per option given
        item = get_args(kind)[0]
        argument = {"action": "append", "metavar": "TEXT", **({"type": parse} if parse else {} if item is str
                                                               else _scalar(item, bounds, flag.field))}
    elif parse is not None:
        argument = {"type": parse, "metavar": METAVARS.get(kind, "TEXT")}
    else:
        argument = _scalar(kind, bounds, flag.field)
    leaf = flag.field.rpartition(".")[2]
    if "metavar" in argument and (flag.metavar or cli.metavar or leaf in NAMED):
        argument["metavar"] = flag.metavar or cli.metavar or NAMED[leaf]
    required = default is PydanticUndefined
    text = info.description + (cli.more() if cli.more else "")
    if cli.needed:
        text += f" ({cli.needed})"
    elif not required:
        if default is None and cli.sets:  # the config decides: its default
            default = _default(model.target, cli.sets[0])
        text += f" (default: {cli.unset if default is None and cli.unset else shown(default)})"
    argument["help"] = text.replace("%", "%%")
    if not options or cli.sets:
        argument["default"] = None
    elif not required:
        argument["default"] = default
    if cli.positional:
        return [flag.dest], argument
    return [flag.name], {**argument, "dest": flag.dest, **({"required": True} if required and options else {})}


class ConfigFlags:
    """Options for some fields of one pydantic config, or for every field of an `Options` model
    (see the module's docstring)."""

    def __init__(self, model: type[BaseModel], flags: Iterable[str | Flag] | None = None):
        self.model = model
        self.options = _is_options(model)
        self.flags = [flag if isinstance(flag, Flag) else Flag(flag)
                      for flag in (model.model_fields if flags is None else flags)]
        self.infos = {flag.name: _info(model, flag.field) for flag in self.flags}
        for flag in self.flags:
            if (sets := _cli(self.infos[flag.name]).sets) and not self.options:
                raise TypeError(f"{flag.field}: only an Options field sets config fields")
            for target in sets:
                if model.target is None:
                    raise TypeError(f"{model.__name__}.{flag.field} sets {target}, but the model has no target")
                _info(model.target, target)

    @property
    def fields(self) -> dict[str, tuple[FieldInfo, Any]]:
        """{option: (field, default)}; a default is read when asked (one may come from the
        environment, read when the parser is built)."""
        return {flag.name: (self.infos[flag.name], _default(self.model, flag.field)) for flag in self.flags}

    def add_to(self, parser: argparse.ArgumentParser, *, title: str | None = None, exclude: Iterable[str] = (),
               suppress: bool = False) -> None:
        """Declare the options (but those whose field is in `exclude`), grouped under `title` (a
        config's by default; an `Options` model's go with the parser's own unless titled).
        `suppress`: an option left out sets nothing, so a value given to a parent parser stands."""
        group = parser if self.options and title is None else parser.add_argument_group(
            title or f"{self.model.__name__} fields (override --config FILE)")
        for flag in self.flags:
            if flag.field in exclude:
                continue
            names, keywords = _argument(flag, self.infos[flag.name], _default(self.model, flag.field), self.model)
            if suppress:
                keywords["default"] = argparse.SUPPRESS
            action = group.add_argument(*names, **keywords)
            action.model, action.field = self.model, flag.field  # derived, not declared by hand (see the tests)

    def targets(self, flag: Flag) -> tuple[str, ...]:
        """The config fields an option sets: a config's own field, or an `Options` field's `sets`."""
        return _cli(self.infos[flag.name]).sets if self.options else (flag.field,)

    def given(self, args: argparse.Namespace) -> dict[str, str]:
        """{config field path: option} of the options given on the command line; where two set one
        field, the later declared (which wins in `overrides`)."""
        return {target: flag.name for flag in self.flags if getattr(args, flag.dest, None) is not None
                for target in self.targets(flag)}

    def overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        """The options given, as a nested dict of config fields (a switch's sub-settings are turned
        on in `load`: an empty dict would read as no override). An `Options` field that sets a
        config field and has a default of its own gives that default when not given."""
        nested: dict[str, Any] = {}
        for flag in self.flags:
            info, targets = self.infos[flag.name], self.targets(flag)
            value = getattr(args, flag.dest, None)
            if value is None and self.options and targets and not info.is_required():
                value = _default(self.model, flag.field)
            if value is not None and value != {}:
                mapping = _is_mapping(_optional(info.annotation)[0])
                for target in targets:
                    _put(nested, target, Given(value) if mapping else value)  # KEY=VALUE pairs: the last wins
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
