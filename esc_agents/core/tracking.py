"""Experiment trackers for the commands that run episodes (`simulate`, `rewards`, `compare`,
`bias`), as training has them through TRL: the running success rate, calls, tokens and failures
logged as jobs finish, so a long study can be watched where its training runs are watched.

`--report-to none|tensorboard|wandb|trackio`. TensorBoard writes event files to
`<run folder>/tensorboard/`; wandb and trackio log to their own project `rlff-esc`, the run named
after its folder. A tracker whose package is not installed is refused before any model call.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError

TRACKERS = ("none", "tensorboard", "wandb", "trackio")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
PROJECT = "rlff-esc"


def check_tracker(name: str) -> None:
    """Refuse, in one line, a tracker that is unknown or whose package is missing."""
    if name not in TRACKERS:
        raise UserError(f"--report-to {name}: not one of {', '.join(TRACKERS)}")
    package = PACKAGES.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise UserError(f"--report-to {name} needs the {package} package: pip install {package}")


class Tracker:
    """Logs nothing: `--report-to none`, and the base of the others."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, folder: Path, config: dict[str, Any]):
        import wandb

        self.run = wandb.init(project=PROJECT, name=folder.name, dir=str(folder), config=config, reinit=True)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker(Tracker):
    def __init__(self, folder: Path, config: dict[str, Any]):
        import trackio

        self.trackio = trackio
        trackio.init(project=PROJECT, name=folder.name, config=config)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.trackio.log(metrics, step=step)

    def close(self) -> None:
        self.trackio.finish()


class _OnFirstLog(Tracker):
    """Opens its tracker when there is a first thing to log: a run refused before any job (another
    run's folder, bad input) leaves no tracker file or remote run behind."""

    def __init__(self, make):
        self.make, self.opened = make, None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.opened is None:
            self.opened = self.make()
        self.opened.log(metrics, step)

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()


def open_tracker(name: str, folder: Path, config: dict[str, Any] | None = None) -> Tracker:
    """The tracker `name` for the run in `folder` (checked with `check_tracker` first)."""
    check_tracker(name)
    makers = {"tensorboard": lambda: TensorBoardTracker(folder), "wandb": lambda: WandbTracker(folder, config or {}),
              "trackio": lambda: TrackioTracker(folder, config or {})}
    return _OnFirstLog(makers[name]) if name in makers else Tracker()
