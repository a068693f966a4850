"""The `rlff-esc` parser, assembled from one module per command, and the entry point: a user
error is one line and exit code 2, Ctrl-C or SIGTERM 130, a reader gone away (`| head`) 141."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from esc_agents import __version__
from esc_agents.cli import (
    bias,
    compare,
    evaluate,
    export,
    graph,
    judge,
    prompts,
    report,
    rewards,
    roles,
    score,
    serve,
    simulate,
    train_grpo,
    train_rm,
    view,
    warmup_format,
)
from esc_agents.cli.options import PROCESS
from esc_agents.cli.values import Parser
from esc_agents.core import progress
from esc_agents.core.errors import UserError

# In the order `rlff-esc --help` lists them: the pipeline, then studies, then tools. Each module
# has add_parser(commands), which sets `func` (the command) and `writes` (the folder it locks).
COMMANDS = (simulate, rewards, train_rm, score, train_grpo, warmup_format, export, compare, bias, judge, report,
            view, evaluate, serve, graph, roles, prompts)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rlff-esc",
        description="RLFF-ESC: simulate emotional-support dialogues with LLM roles, build future-oriented "
        "rewards, train the reward model and the GRPO policy, and evaluate supporters.",
    )
    # The one option declared by hand: it prints the version and exits, it sets nothing.
    parser.add_argument("--version", action="version", version=f"rlff-esc {__version__}")
    # Options of the process, not of one command, so they go before the command or after it: a
    # command's parser leaves them unset unless given there, and the root's value stands.
    PROCESS.add_to(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    for command_parser in _command_parsers(parser):
        PROCESS.add_to(command_parser, title="options of every command", suppress=True)
    return parser


def _command_parsers(parser: argparse.ArgumentParser):
    """Every command's parser, actions (`rewards export`) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command_parser in action.choices.values():
                yield command_parser
                yield from _command_parsers(command_parser)


def _set_up_process(args: argparse.Namespace) -> None:
    """Before any command imports its work: plugin references (`--critic my_critics:EmpathyCritic`)
    import from --app-dir, as they would under `python -m` or pytest, though appended, so a file of
    the user's never shadows a package this tool imports (a `datasets.py` or a `training/` folder
    in the working directory); and the progress mode is set before tqdm is first imported."""
    app_dir = Path(args.app_dir).resolve()
    if not app_dir.is_dir():
        raise UserError(f"--app-dir {args.app_dir}: no such folder")
    if app_dir not in {Path(entry or ".").resolve() for entry in sys.path}:
        sys.path.append(str(app_dir))
    progress.set_mode(args.progress)


def _stop_on_sigterm(signum, frame) -> None:
    """A cluster scheduler's SIGTERM unwinds like Ctrl-C, so the embedded server we started stops
    too: it is turned into SIGINT, which asyncio's runner answers by cancelling its main task (every
    job stops at an await and its files stay whole) rather than by an interrupt raised wherever the
    loop happens to be, which could leave a task's exception to be printed as a traceback. Where
    SIGINT is ignored (a job started in the background by a shell), it is raised here instead."""
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


def _run(args: argparse.Namespace) -> int:
    """A command that writes a run folder holds it for its whole run (see runlock)."""
    from esc_agents.core.runlock import run_lock

    writes = getattr(args, "writes", None)
    folder = writes(args) if callable(writes) else getattr(args, writes or "-", None)
    if folder is None:
        return args.func(args)
    with run_lock(folder):
        return args.func(args)


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, so a reader that has gone is caught below
    except BrokenPipeError:
        # The reader (`| head`) has what it wanted: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: list[str] | None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        _set_up_process(args)
        return _run(args)
    except UserError as exc:
        print(f"rlff-esc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlff-esc: interrupted; finished results are saved, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
