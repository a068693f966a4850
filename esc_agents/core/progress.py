"""Progress for whoever reads stderr: live bars on a terminal; in a log file or a pipe, one line
per finished stage, since a bar's carriage-return frames would bury everything else there.

`rlff-esc --progress auto|on|off` sets the mode for the whole process (auto: bars only where
stderr is a terminal). The bars of the libraries underneath (the Hugging Face trainers', the
datasets writer's) are turned off through tqdm's `TQDM_DISABLE` default where ours are, which
tqdm reads when it is first imported: `set_mode` runs before any command imports it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

MODES = ("auto", "on", "off")
_mode = "auto"


def set_mode(mode: str) -> None:
    global _mode
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)}")
    _mode = mode
    if not bars():
        os.environ["TQDM_DISABLE"] = "1"


def bars() -> bool:
    """Whether live bars are drawn: asked for, or left to auto with stderr on a terminal."""
    return _mode == "on" or (_mode == "auto" and sys.stderr.isatty())


class StageLine:
    """A bar's stand-in where none is drawn: silent while the stage runs, one line when it ends."""

    def __init__(self, total: int, initial: int, desc: str):
        self.total, self.n, self.desc, self.postfix = total, initial, desc, ""
        self.started = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text.strip()

    def close(self) -> None:
        seconds = time.monotonic() - self.started
        print(f"{self.desc}: {self.n}/{self.total} in {seconds:.0f}s" + (f" ({self.postfix})" if self.postfix else ""),
              file=sys.stderr, flush=True)


class _Silent(StageLine):
    def close(self) -> None:
        pass


def stage(total: int, *, desc: str, initial: int = 0, show: bool = True) -> Any:
    """What reports one stage of `total` steps: a tqdm bar, a StageLine, or nothing visible when
    `show` is false (a caller that reports on its own) or the mode is off."""
    if not show or _mode == "off":
        return _Silent(total, initial, desc)
    if not bars():
        return StageLine(total, initial, desc)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, disable=False)
