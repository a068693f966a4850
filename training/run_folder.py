"""What every training run folder shares: it belongs to one configuration, it resumes from its
last checkpoint after a kill, and it gets a PNG of the logged curves."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.core.plotting import figure_file
from esc_agents.provenance import differing_fields

CHECKPOINTS = "checkpoints"
RUN_SETTINGS = "train_config.json"


def claim(out: Path, settings: dict[str, Any]) -> None:
    """A folder belongs to one configuration and one dataset; a rerun with others is refused."""
    out.mkdir(parents=True, exist_ok=True)
    saved = out / RUN_SETTINGS
    if saved.exists():
        differ = differing_fields(json.loads(saved.read_text()), settings)
        if differ:
            raise UserError(f"{out} was trained with other settings ({', '.join(differ)}); use another --out")
    else:
        write_json(saved, settings)


def last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / CHECKPOINTS
    found = get_last_checkpoint(str(folder)) if folder.exists() else None
    if found:
        print(f"rlff-esc: resuming from {found}", file=sys.stderr)
    return found


def plot_log_history(history: list[dict[str, Any]], panels: dict[str, dict[str, str]], path: Path) -> None:
    """One panel per title, each with lines {label: logged key} against the step."""
    with figure_file(path, xlabel="step", ylabel="", panels=len(panels)) as axes:
        for axis, (title, lines) in zip(axes, panels.items()):
            axis.set_title(title, fontsize=9)
            for label, key in lines.items():
                points = [(entry["step"], entry[key]) for entry in history if key in entry]
                if points:
                    axis.plot(*zip(*points), marker=".", label=label)
            if len(lines) > 1:
                axis.legend(fontsize=7)
