"""`rlff-esc warmup-format`: a few supervised steps on think-format demonstrations, a cold start
for policies too small to write the format; its settings are `FormatWarmupConfig`'s fields."""

from __future__ import annotations

import argparse
from pathlib import Path

from esc_agents.cli.config_flags import ConfigFlags, Flag, Options, option
from esc_agents.cli.values import OUT_FOLDER
from training.grpo.config import FormatWarmupConfig

# Name, type, bounds, help and default of each option come from its FormatWarmupConfig field.
FLAGS = ConfigFlags(FormatWarmupConfig, [
    Flag("policy", metavar="NAME|DIR"), Flag("dataset", metavar="NAME"), Flag("prompt", metavar="NAME"), "steps",
    "save_steps", "contexts", "context_window", "learning_rate", "seed",
])

HELP = "a few supervised steps on think-format demonstrations (cold start for tiny policies)"
DESCRIPTION = """Fine-tune a LoRA on ESConv demonstrations written in the think format (a one-line
reading of the seeker, then the reference reply), merge it and save a model folder for `train-grpo
--policy`. Needed when the policy never writes the format, so R_fmt would give GRPO no signal."""


class WarmupOptions(Options):
    """The command's own options, beside the FormatWarmupConfig fields."""

    out: Path = option(..., "the warmed-up model folder (for `train-grpo --policy DIR`)", parse=OUT_FOLDER,
                       metavar="DIR")
    config: str | None = option(None, "YAML with any FormatWarmupConfig field", metavar="FILE",
                                unset="none, the defaults")


OWN = ConfigFlags(WarmupOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("warmup-format", help=HELP, description=DESCRIPTION)
    OWN.add_to(parser)
    FLAGS.add_to(parser)
    parser.set_defaults(func=run, writes=workdir)


def workdir(args: argparse.Namespace) -> Path:
    """The folder warm-up locks: DIR itself is replaced whole at the end, so its work folder beside it."""
    return args.out.with_name(args.out.name + ".checkpoints")


def run(args: argparse.Namespace) -> int:
    from training.grpo.warmup import warm_up_format

    folder = warm_up_format(args.out, FLAGS.load(args, args.config))
    print(f"format warm-up done -> {folder}; start GRPO from it with `rlff-esc train-grpo --policy {folder} ...`")
    return 0
