"""Append-only JSONL results with resume.

Each finished result is written as one line and fsynced at once. A line is written whole or not
at all: a write that fails part-way (a full disk, a file-size limit, a signal) is cut back before
the error goes on, and a line torn by a kill is cut off on reopen (readers skip it). The keys
already present are skipped on resume: no duplicate, no loss.
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
    """The records of a JSONL file. A last line without its newline that does not parse is a line
    torn by a kill, not a record: it is skipped (the writer cuts it off when the run resumes)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if line.endswith("\n"):
                    raise
                return


def append_line(fd: int, data: bytes) -> None:
    """Append `data` to the O_APPEND file `fd` and fsync it, or leave the file as it was: a write
    that fails part-way is truncated back before the error is raised."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.ftruncate(fd, start)
        raise


def cut_torn_line(path: str | Path) -> None:
    """Drop a partial last line left by a kill mid-write, so the next line starts on its own."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """One record appended to a JSONL file, fsynced, whole or not at all; a line torn by an
    earlier kill goes first (appended to, it would make the next record unreadable too)."""
    cut_torn_line(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        append_line(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    finally:
        os.close(fd)


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
        cut_torn_line(self.path)
        self.done: set[str] = {record[key] for record in self.records()}
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def records(self) -> Iterator[dict[str, Any]]:
        return read_jsonl(self.path)

    def append(self, record: dict[str, Any]) -> None:
        append_line(self._fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self.done.add(record[self.key])

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
