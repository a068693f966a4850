"""`rlff-esc train-rm` (stage 2: the reward model on D_r) and `train-rm ablate` (all three
objectives on one split)."""

from __future__ import annotations

import argparse
from pathlib import Path

from esc_agents.cli import options
from esc_agents.cli.values import COUNT, POSITIVE, SEED
from esc_agents.core.errors import UserError

HELP = "train the reward model on D_r (stage 2)"
DESCRIPTION = """Train a reward model on D_r, split by dialogue, with the classification (default),
ranking or regression objective; write the model, metrics.json, predictions and loss curves."""


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


def add_options(parser: argparse.ArgumentParser, *, objective: bool) -> None:
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="`rewards export` folder (any format) or a `rewards` run folder (split here by dialogue)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="run folder (created, or resumed after a kill)")
    parser.add_argument("--config", metavar="FILE", help="YAML with any RewardModelConfig field")
    if objective:
        parser.add_argument("--objective", choices=["classification", "ranking", "regression"],
                            help="training objective (default classification, the paper's)")
    parser.add_argument("--backbone", help="'embedded' (default), a model folder, or a cached hub id")
    parser.add_argument("--max-steps", type=COUNT, metavar="N", help="optimizer steps (overrides --epochs)")
    parser.add_argument("--epochs", type=POSITIVE, metavar="E", help="passes over the training split (default 1)")
    parser.add_argument("--batch-size", type=COUNT, metavar="B")
    parser.add_argument("--learning-rate", type=POSITIVE, metavar="LR")
    parser.add_argument("--max-length", type=COUNT, metavar="TOKENS", help="context is cut from the left to fit")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (merged into the saved model)")
    parser.add_argument("--report-to", metavar="TRACKER", help="tensorboard, wandb, ... (default none)")
    parser.add_argument("--seed", type=SEED)
    options.add_held_out_options(parser)


def config(args: argparse.Namespace):
    from training.reward_model.config import load_reward_model_config

    if args.data is None or args.out is None:
        raise UserError("train-rm needs --data DIR and --out DIR")
    return load_reward_model_config(
        args.config, objective=getattr(args, "objective", None), backbone=args.backbone, max_steps=args.max_steps,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_length=args.max_length, lora={} if args.lora else None, seed=args.seed,
        report_to=[args.report_to] if args.report_to else None,
    )


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
