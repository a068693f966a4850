"""Append-only JSONL results with resume.

Each finished result is written as one line and flushed to disk at once, so a killed run loses
at most the line being written. On reopen, a torn last line is cut off and the keys already
present are skipped: no duplicate, no loss.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def logged_keys(path: str | Path, key: str) -> set[str]:
    """The keys a results file holds, read without touching it (a torn last line is no result)."""
    path = Path(path)
    if not path.exists():
        return set()
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # the part after the last newline is torn
    return {json.loads(line)[key] for line in lines if line.strip()}


def read_unique(path: str | Path, key: str) -> list[dict[str, Any]]:
    """The records of a results file, refused if a key appears twice: readers must never count a
    case twice (two writers at once, or lines pasted in by hand, would make them)."""
    records = list(read_jsonl(path))
    twice = sorted(k for k, count in Counter(record[key] for record in records).items() if count > 1)
    if twice:
        raise UserError(f"{path} holds {len(twice)} {key}s more than once: {', '.join(twice)}; keep one line "
                        "each (or rerun into a new folder) before reading it")
    return records


class RunLog:
    def __init__(self, path: str | Path, key: str):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self.done: set[str] = {record[key] for record in self.records()}
        self._handle = self.path.open("a", encoding="utf-8")

    def _repair(self) -> None:
        """Drop a partial last line left by a kill mid-write."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def records(self) -> Iterator[dict[str, Any]]:
        return read_jsonl(self.path)

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done.add(record[self.key])

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
