"""`rlff-esc evaluate`: the SR / AT summary of a simulate run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esc_agents.cli.config_flags import ConfigFlags, option
from esc_agents.cli.options import TrustOptions
from esc_agents.cli.outcome import critic_trust

HELP = "SR / AT summary of a simulate run"
DESCRIPTION = """Write DIR/summary.json and DIR/success_by_turn.png; print a table."""


class EvaluateOptions(TrustOptions):
    run: Path = option(..., "a simulate run folder", positional=True, metavar="DIR")


FLAGS = ConfigFlags(EvaluateOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("evaluate", help=HELP, description=DESCRIPTION)
    FLAGS.add_to(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.metrics import evaluate_run, format_summary

    summary = evaluate_run(args.run)
    print(format_summary(summary))
    print(f"wrote {args.run / 'summary.json'} and {args.run / 'success_by_turn.png'}")
    if not summary["complete"]:
        left = len(summary["failed_cases"]) + len(summary["missing_cases"])
        print(f"rlff-esc: error: the run is incomplete ({left} cases did not run); rerun its simulate command",
              file=sys.stderr)
        return 2
    return critic_trust([args.run], args.max_invalid_rate)
