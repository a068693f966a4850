"""JSON files every reader can trust: no NaN or Infinity (not JSON; most readers reject them or
read them as strings), and written whole or not at all (a kill mid-write leaves the old file)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(inner) for inner in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def write_json(path: str | Path, value: Any) -> None:
    """Write-then-rename, fsynced: the file is either the old one or the complete new one."""
    path = Path(path)
    staging = path.with_name(path.name + ".tmp")
    try:
        with staging.open("w", encoding="utf-8") as handle:
            handle.write(dumps(value, indent=2, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:  # a full disk or a signal mid-write: the old file stays, no staging file is left
        staging.unlink(missing_ok=True)
        raise
