"""`rlff-esc export`: a GRPO adapter merged into a model folder the local server can serve."""

from __future__ import annotations

import argparse
from pathlib import Path

from esc_agents.cli.config_flags import ConfigFlags, Options, option
from esc_agents.cli.values import OUT_FOLDER

HELP = "merge a GRPO adapter into a model folder the local server can serve"
DESCRIPTION = """Merge DIR/adapter into its base model and save a full model folder; `simulate
--supporter-model OUT` then serves and evaluates it."""


class ExportOptions(Options):
    adapter: Path = option(..., "a train-grpo folder", metavar="DIR")
    out: Path = option(..., "the merged model folder", parse=OUT_FOLDER, metavar="DIR")


FLAGS = ConfigFlags(ExportOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("export", help=HELP, description=DESCRIPTION)
    FLAGS.add_to(parser)
    parser.set_defaults(func=run, writes=None)


def run(args: argparse.Namespace) -> int:
    from training.grpo.export import export_policy

    folder = export_policy(args.adapter, args.out)
    print(f"merged policy -> {folder}; evaluate it with `rlff-esc simulate --supporter-model {folder} "
          "--supporter-prompt think ...`")
    return 0
