"""Finding a user's Python object by name: an installed entry point of a group, or a
`package.module:attribute` path. Roles, R_fut formulas, datasets and endpoint backends are all
found this way, so each registry reads the same and a user's object needs no edit of ours.

Here in core, below every room that has a registry (inputs, models, roles, training), so that each
can use it without importing upwards."""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable
from typing import Any

from esc_agents.core.errors import UserError

WHERE_MODULES_ARE = ("rlff-esc imports your own modules from the working directory, or from the folder "
                     "`rlff-esc --app-dir DIR` names, and from installed packages "
                     "(from Python: put its folder on sys.path)")


def installed(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    """The entry points of `group` that installed packages declare, by name."""
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=group)}


def import_object(spec: str, what: str) -> Any:
    """The object `package.module:attribute` names (the attribute may be dotted); anything that
    keeps it from loading is one line naming `spec`."""
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as exc:  # ValueError: an empty module name
        raise UserError(f"{what} {spec!r} cannot be loaded ({type(exc).__name__}: {exc})"
                        + where_modules_are(module_name, exc)) from None
    return target


def load_plugin(spec: str, group: str, what: str, known: Iterable[str] = ()) -> Any:
    """The object an installed entry point of `group` names, or `package.module:attribute`.
    `known` are built-in names, for the error."""
    entries = installed(group)
    if spec in entries:
        return entries[spec].load()
    if ":" not in spec:
        names = ", ".join(sorted([*known, *entries])) or "none installed"
        raise UserError(f"unknown {what} {spec!r} (known: {names}; or package.module:attribute)")
    return import_object(spec, what)


def where_modules_are(module_name: str, exc: Exception) -> str:
    """Where to put the plugin's own module, when that (not an import inside it) is what is missing."""
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing is None or not (module_name == missing or module_name.startswith(missing + ".")):
        return ""
    return "; " + WHERE_MODULES_ARE
