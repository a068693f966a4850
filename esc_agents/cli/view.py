"""`rlff-esc view`: browse the dialogues of run folders in one HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path

from esc_agents.cli.values import OUT_FILE

HELP = "browse the dialogues of run folders in one HTML file"
DESCRIPTION = """Transcripts with the critic's votes per turn (simulate), the same case side by side
(compare, bias), contexts with their candidates and simulated futures (rewards), GRPO completions and
their futures (train-grpo): filters and pages in one self-contained HTML file; no server."""


def add_parser(commands) -> None:
    parser = commands.add_parser("view", help=HELP, description=DESCRIPTION)
    parser.add_argument("folders", type=Path, nargs="+", metavar="DIR",
                        help="simulate, compare, bias, rewards or train-grpo folders")
    parser.add_argument("--out", type=OUT_FILE, metavar="FILE.html", help="default: DIR/view.html for one folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.viewer import write_viewer

    print(f"wrote {write_viewer(args.folders, args.out)}")
    return 0
