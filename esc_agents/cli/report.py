"""`rlff-esc report`: one self-contained HTML file for any mix of run folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from esc_agents.cli import options
from esc_agents.cli.config_flags import ConfigFlags, Options, option
from esc_agents.cli.values import OUT_FILE, OUT_FOLDER

HELP = "one self-contained HTML file for any mix of run folders"
DESCRIPTION = """Tables, embedded PNG plots, resolved configs and the dialogues (the `view` viewer,
embedded) of simulate, compare, bias, judge, rewards, train-rm and train-grpo folders, in one HTML file
with no external asset. Two or more train-grpo folders (e.g. one per --reward mode) also get their
curves on shared axes and a cost table."""


class ReportOptions(Options):
    folders: list[Path] = option(..., "run folders of any command", positional=True, nargs="+", metavar="DIR")
    out: Path = option(..., "the report (its folder is created)", parse=OUT_FILE, metavar="FILE.html")
    labels: dict[str, str] = options.labels_option("folders, supporters, conditions and factor levels")
    latex: Path | None = option(None, "also write the SR / AT tables of compare, bias and evaluated simulate "
                                "folders, with their 95% intervals, as LaTeX (booktabs) files into DIR",
                                parse=OUT_FOLDER, metavar="DIR", unset="none")


FLAGS = ConfigFlags(ReportOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("report", help=HELP, description=DESCRIPTION)
    FLAGS.add_to(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.report import write_report

    print(f"wrote {write_report(args.folders, args.out, labels=args.labels)}")
    if args.latex:
        from esc_agents.evaluation.latex import write_latex

        written = write_latex(args.folders, args.latex, skip_others=True, labels=args.labels)
        print(f"wrote {len(written)} LaTeX tables into {args.latex}: {', '.join(path.name for path in written)}")
    return 0
