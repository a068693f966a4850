"""YAML files written by hand (configs, prompt files): a file that is not text, or not YAML, is
one line naming the file and, for YAML, the line and column where parsing stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from esc_agents.core.errors import UserError


def load_yaml(path: Path) -> tuple[str, Any]:
    """(text, parsed value) of `path`; FileNotFoundError is left to the caller, who knows what
    the file was meant to be."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = " ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None))))
        raise UserError(f"{path}: not valid YAML{where}: {reason or str(exc).splitlines()[0]}") from None
