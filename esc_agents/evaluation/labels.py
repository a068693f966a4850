"""Display names for the rows of a table (`--labels a=Name,b=Name` of compare, bias and report):
a run folder or supporter spec such as `warm.yaml-alt` names files, a paper's table wants a name.
Only what is shown is renamed; folders keep their names, so runs still resume and compare."""

from __future__ import annotations

import re
from typing import Any

from esc_agents.core.errors import UserError


def check_labels(names: dict[str, str], tables: list[list[str]]) -> None:
    """Refuse, before any work, a key that names no row of any table (a typo would otherwise
    leave a row unrenamed without a word) and names that would give two rows of one table the
    same name (their rows would merge)."""
    known = {row for rows in tables for row in rows}
    if unknown := [key for key in names if key not in known]:
        raise UserError(f"--labels: {', '.join(unknown)} names no row (the rows: {', '.join(sorted(known))})")
    for rows in tables:
        rename_keys(dict.fromkeys(rows), names)


def rename(names: dict[str, str], key: str) -> str:
    return names.get(key, key)


def rename_keys(mapping: dict[str, Any], names: dict[str, str], separator: str | None = None) -> dict[str, Any]:
    """The mapping with its keys renamed, in the same order (with `separator`, each part of a
    key such as `persona|user model` on its own); two keys given one name are refused."""
    renamed: dict[str, Any] = {}
    for key, value in mapping.items():
        name = separator.join(rename(names, part) for part in key.split(separator)) if separator else rename(names, key)
        if name in renamed:
            raise UserError(f"--labels: two rows of one table would both be named {name!r}")
        renamed[name] = value
    return renamed


def rename_in_text(text: str, names: dict[str, str]) -> str:
    """Each key named as a whole word in `text` (a warning, say) replaced by its name."""
    if not names:
        return text
    keys = "|".join(re.escape(key) for key in sorted(names, key=len, reverse=True))
    return re.sub(rf"(?<![\w./-])({keys})(?![\w./-])", lambda match: names[match.group(1)], text)
