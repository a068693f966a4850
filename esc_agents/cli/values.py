"""The argparse types an option's field names (checked numbers, output paths, KEY=VALUE pairs) and
a parser whose errors are one line.

A count of 0 (`--concurrency 0` waits forever on a semaphore that never opens) or a negative
rate would otherwise reach the run and fail late, hang, or end in a traceback; argparse's usage
dump would bury the one line that says what is wrong."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """Bad arguments are one line and exit code 2, like every other user error."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        print(f"rlff-esc: error: {command + ': ' if command else ''}{message}", file=sys.stderr)
        sys.exit(2)


def number(kind: type = int, *, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None, below: float | None = None) -> Callable[[str], float]:
    """An argparse type: `kind` within the bounds, named in the error when it is not."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be above {above:g}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {text}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be below {below:g}, got {text}")
        return value

    parse.checked = True  # the option sweep in the tests looks for this
    return parse


# An option's bounds are its field's (config_flags.py builds its `number`); this one also checks
# the environment's default of --max-invalid-rate.
SHARE = number(float, minimum=0, maximum=1)


def labels(text: str) -> dict[str, str]:
    """An argparse type for `--labels a=Name,b=Name`: row -> display name, each pair whole."""
    names: dict[str, str] = {}
    for pair in text.split(","):
        key, sep, name = (part.strip() for part in pair.partition("="))
        if not sep or not key or not name:
            raise argparse.ArgumentTypeError(f"{pair.strip()!r} is not ROW=NAME")
        if key in names:
            raise argparse.ArgumentTypeError(f"{key} is given twice")
        names[key] = name
    return names


def output(kind: str) -> Callable[[str], Path]:
    """An argparse type for an output `folder` or `file`: refused at once when it is empty (which
    would mean the working directory), a file where a folder is wanted or the reverse, or under a
    file, instead of a traceback after the work is done."""
    def parse(text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"is empty; name a {kind}")
        path = Path(text)
        if kind == "folder" and path.is_file():
            raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
        if kind == "file" and path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; name the file to write")
        blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
        if blocking is not None:
            raise argparse.ArgumentTypeError(f"{blocking} is a file, so {text} cannot be made")
        return path

    return parse


def key_value(text: str) -> tuple[str, object]:
    """An argparse type for `KEY=VALUE`, the value read as YAML (`none` stays the string "none",
    `null` is None, `0.1` a number, `true` a bool), as it would be in the config file."""
    import yaml

    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise argparse.ArgumentTypeError(f"{key.strip()}: {value!r} is not a YAML value "
                                         f"({' '.join(str(error).split())})") from None


def named_number(text: str) -> tuple[str, float]:
    """An argparse type for `NAME=NUMBER` (a formula parameter, `lambda=0.5`)."""
    name, equals, value = (part.strip() for part in text.partition("="))
    try:
        number = float(value)
    except ValueError:
        number = None
    if not equals or not name or number is None or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"takes NAME=NUMBER, got {text!r}")
    return name, number


def existing_file(text: str) -> Path:
    """An argparse type for a file the command reads: refused at once when it is not there."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is {'a folder' if path.is_dir() else 'not there'}; name a file")
    return path


OUT_FOLDER = output("folder")  # run folders, export folders, LaTeX tables
OUT_FILE = output("file")  # an HTML report or viewer, a scored JSONL
