"""`rlff-esc train-rm` (stage 2: the reward model on D_r) and `train-rm ablate` (all three
objectives on one split)."""

from __future__ import annotations

import argparse
from pathlib import Path

from esc_agents.cli import options
from esc_agents.cli.config_flags import ConfigFlags, Flag, option
from esc_agents.cli.values import OUT_FOLDER
from esc_agents.core.errors import UserError
from training.reward_model.config import RewardModelConfig

# The RewardModelConfig fields the command line sets; name, type, bounds, help and default come from the field.
FLAGS = ConfigFlags(RewardModelConfig, [
    "objective", Flag("backbone", metavar="NAME|DIR"), "max_steps", "epochs", "batch_size", "learning_rate",
    "max_length", "lora", "report_to", "seed",
    # any other field of the trainer's config, e.g. --trl lr_scheduler_type=cosine
    Flag("trl", metavar="KEY=VALUE"),
])

HELP = "train the reward model on D_r (stage 2)"
DESCRIPTION = """Train a reward model on D_r, split by dialogue, with the classification (default),
ranking or regression objective; write the model, metrics.json, predictions and loss curves. Any other
field of the trainer's config (TRL's RewardConfig for ranking, transformers' TrainingArguments otherwise)
is set with trl: in the --config file or --trl KEY=VALUE (repeatable), checked before any weight loads."""


def add_parser(commands) -> None:
    parser = commands.add_parser("train-rm", help=HELP, description=DESCRIPTION)
    add_options(parser, objective=True)
    parser.set_defaults(func=run, writes="out")
    actions = parser.add_subparsers(dest="train_rm_command", metavar="ACTION")
    ablate = actions.add_parser("ablate", help="train all three objectives on the same split; print one table",
                                description="Train classification, ranking and regression into DIR/<objective> "
                                "with the same data, split and backbone, and compare them.")
    add_options(ablate, objective=False)
    ablate.set_defaults(func=run_ablate, writes="out")


class TrainRmOptions(options.HeldOutOptions):
    """The command's own options, beside the RewardModelConfig fields."""

    data: Path | None = option(None, "`rewards export` folder (any format) or a `rewards` run folder (split here by "
                               "dialogue)", metavar="DIR", needed="required")
    out: Path | None = option(None, "run folder (created, or resumed after a kill)", parse=OUT_FOLDER, metavar="DIR",
                              needed="required")
    config: str | None = option(None, "YAML with any RewardModelConfig field", metavar="FILE",
                                unset="none, the defaults")


OWN = ConfigFlags(TrainRmOptions, ["data", "out", "config", "eval_split", "allow_eval_overlap"])


def add_options(parser: argparse.ArgumentParser, *, objective: bool) -> None:
    OWN.add_to(parser)
    FLAGS.add_to(parser, exclude=() if objective else ("objective",))


def config(args: argparse.Namespace):
    if args.data is None or args.out is None:
        raise UserError("train-rm needs --data DIR and --out DIR")
    return FLAGS.load(args, args.config)


def run(args: argparse.Namespace) -> int:
    from training.reward_model.train import format_metrics_table, train_reward_model

    settings = config(args)
    metrics = train_reward_model(settings, args.data, args.out, **options.held_out_options(args))
    print(format_metrics_table({settings.objective: metrics}))
    print(f"wrote {args.out / 'model'}, metrics.json, predictions.jsonl, loss_curves.png")
    return 0


def run_ablate(args: argparse.Namespace) -> int:
    from training.reward_model.train import ablate, format_metrics_table

    results = ablate(config(args), args.data, args.out, **options.held_out_options(args))
    print(format_metrics_table(results))
    print(f"wrote {args.out / 'ablation.json'} and one folder per objective")
    return 0
