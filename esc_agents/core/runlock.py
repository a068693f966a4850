"""One writer per run folder.

Two copies of one command on one folder (two terminals, a scheduler's requeue) would each run
every job and append it, so readers would count cases twice. A writer holds an exclusive
`flock` on `DIR/.writer.lock` for its whole run; the file names the holder (pid, host, start,
command) so a refused second writer can say who has it. The kernel drops the lock when its
process dies, however it dies: a lock file left by a killed writer is taken over, not obeyed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from esc_agents.core.errors import UserError

LOCK_FILE = ".writer.lock"


def _holder(handle) -> dict:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except ValueError:
        return {}


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"
            f" ({holder.get('command', '?')})")


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold `folder` for writing, or raise UserError naming the writer that holds it. A folder
    this call created is removed again if the command leaves nothing in it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a run folder; choose another folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise UserError(f"{folder} is being written by {_describe(holder)}; wait for it to finish or "
                            "use another --out") from None
        # The previous holder may have removed the file between our open and our lock.
        if path.exists() and os.path.samestat(os.fstat(handle.fileno()), path.stat()):
            break
        handle.close()
    if stale := _holder(handle):
        print(f"rlff-esc: taking over {folder}'s lock from {_describe(stale)}, which is no longer running",
              file=sys.stderr)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "command": " ".join(["rlff-esc", *(a for a in sys.argv[1:3] if not a.startswith("-"))])}))
    handle.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
