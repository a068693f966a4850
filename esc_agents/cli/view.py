"""`rlff-esc view`: browse the dialogues of run folders in one HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path

from esc_agents.cli.config_flags import ConfigFlags, Options, option
from esc_agents.cli.values import OUT_FILE

HELP = "browse the dialogues of run folders in one HTML file"
DESCRIPTION = """Transcripts with the critic's votes per turn (simulate), the same case side by side
(compare, bias), contexts with their candidates and simulated futures (rewards), GRPO completions and
their futures (train-grpo): filters and pages in one self-contained HTML file; no server."""


class ViewOptions(Options):
    folders: list[Path] = option(..., "simulate, compare, bias, rewards or train-grpo folders", positional=True,
                                 nargs="+", metavar="DIR")
    out: Path | None = option(None, "the viewer", parse=OUT_FILE, metavar="FILE.html",
                              unset="DIR/view.html for one folder")


FLAGS = ConfigFlags(ViewOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("view", help=HELP, description=DESCRIPTION)
    FLAGS.add_to(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.viewer import write_viewer

    print(f"wrote {write_viewer(args.folders, args.out)}")
    return 0
