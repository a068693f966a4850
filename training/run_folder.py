"""What every training run folder shares: it belongs to one configuration, it resumes from its
last checkpoint after a kill, and it gets a PNG of the logged curves. A run launched with several
processes (`accelerate launch`) has one writer per file, its main process; the helpers at the end
say which process that is and hand values between them."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.core.plotting import figure_file
from esc_agents.provenance import differing_fields

CHECKPOINTS = "checkpoints"
RUN_SETTINGS = "train_config.json"


def claim(out: Path, settings: dict[str, Any], *, may_grow: tuple[str, ...] = ()) -> None:
    """A folder belongs to one configuration and one dataset; a rerun with others is refused.
    A setting named in `may_grow` (flattened, e.g. `config.max_steps`) may be raised: the run
    then continues from its last checkpoint, and the folder records the new value."""
    out.mkdir(parents=True, exist_ok=True)
    saved = out / RUN_SETTINGS
    if not saved.exists():
        write_json(saved, settings)
        return
    previous = json.loads(saved.read_text())
    differ = differing_fields(previous, settings)
    grown = [name for name in differ if name in may_grow and _grows(_field(previous, name), _field(settings, name))]
    refused = [name for name in differ if name not in grown]
    if refused:
        hint = "".join(f"; {name} may only grow" for name in refused if name in may_grow)
        raise UserError(f"{out} was trained with other settings ({', '.join(refused)}){hint}; use another --out")
    if grown:
        print(f"rlff-esc: extending {out}: " + ", ".join(
            f"{name} {_field(previous, name)} -> {_field(settings, name)}" for name in grown), file=sys.stderr)
        write_json(saved, settings)


def _field(settings: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        settings = settings.get(key) if isinstance(settings, dict) else None
    return settings


def _grows(before: Any, after: Any) -> bool:
    return isinstance(before, int) and isinstance(after, int) and after > before


def last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / CHECKPOINTS
    found = get_last_checkpoint(str(folder)) if folder.exists() else None
    if found:
        print(f"rlff-esc: resuming from {found}", file=sys.stderr)
    return found


def checkpoint_step(checkpoint: str | None) -> int:
    """The optimizer steps a checkpoint holds (0: none, the run starts from scratch)."""
    if checkpoint is None:
        return 0
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]


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


T = TypeVar("T")


def training_processes():
    """accelerate's state of a run launched with several processes; None for a run in one (for
    which nothing is initialised, so code run outside a trainer stays as it was)."""
    torch = sys.modules.get("torch")  # a process that has not loaded torch has no process group
    if torch is None or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    from accelerate import PartialState

    return PartialState()


def is_main_process() -> bool:
    """Whether this process writes the run folder's own files (one writer per file)."""
    processes = training_processes()
    return processes is None or processes.is_main_process


def process_index() -> int:
    processes = training_processes()
    return 0 if processes is None else processes.process_index


def main_process_first():
    """A block the main process runs before the others enter it (a file it writes is then only
    read by them)."""
    processes = training_processes()
    return contextlib.nullcontext() if processes is None else processes.main_process_first()


def across_processes(value: T) -> list[T]:
    """`value` from every process, in process order (`[value]` in a one-process run). Every process
    must call it at the same point. It may run in any thread: the current GPU, which an object
    collective goes through under NCCL, is per thread, so it is set here."""
    processes = training_processes()
    if processes is None:
        return [value]
    from accelerate.utils import gather_object

    if processes.device.type == "cuda":
        import torch

        torch.cuda.set_device(processes.device)
    return gather_object([value])


def from_main_process(work: Callable[[], T]) -> T:
    """`work()` done by the main process alone (it may write the run folder's files), its result
    handed to every process."""
    processes = training_processes()
    if processes is None:
        return work()
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([work() if processes.is_main_process else None])[0]
