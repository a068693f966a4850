"""`rlff-esc warmup-format`: a few supervised steps on think-format demonstrations, a cold start
for policies too small to write the format (its settings are the arguments of
`training.grpo.warmup.warm_up_format`; it has no config file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from esc_agents.cli.values import COUNT, POSITIVE, SEED

HELP = "a few supervised steps on think-format demonstrations (cold start for tiny policies)"
DESCRIPTION = """Fine-tune a LoRA on ESConv demonstrations written in the think format (a one-line
reading of the seeker, then the reference reply), merge it and save a model folder for `train-grpo
--policy`. Needed when the policy never writes the format, so R_fmt would give GRPO no signal."""


def add_parser(commands) -> None:
    parser = commands.add_parser("warmup-format", help=HELP, description=DESCRIPTION)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    parser.add_argument("--policy", default="embedded", help="default: %(default)s")
    parser.add_argument("--dataset", default="esconv:ppdpp_train", help="default: %(default)s")
    parser.add_argument("--prompt", default="think", help="think-format supporter prompt (default: %(default)s)")
    parser.add_argument("--steps", type=COUNT, default=20, help="default: %(default)s")
    parser.add_argument("--save-steps", type=COUNT, metavar="N",
                        help="steps between checkpoints in DIR.checkpoints/, where a killed run resumes "
                        "(default: a quarter of --steps)")
    parser.add_argument("--contexts", type=COUNT, default=200, help="demonstrations (default: %(default)s)")
    parser.add_argument("--context-window", type=COUNT, metavar="N",
                        help="the latest N messages of a context in the prompt (default: all, as in train-grpo)")
    parser.add_argument("--learning-rate", type=POSITIVE, default=2e-4, help="default: %(default)s")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.set_defaults(func=run, writes=workdir)


def workdir(args: argparse.Namespace) -> Path:
    """The folder warm-up locks: DIR itself is replaced whole at the end, so its work folder beside it."""
    return args.out.with_name(args.out.name + ".checkpoints")


def run(args: argparse.Namespace) -> int:
    from training.grpo.warmup import warm_up_format

    folder = warm_up_format(args.out, policy=args.policy, dataset=args.dataset, prompt=args.prompt,
                            steps=args.steps, contexts=args.contexts, learning_rate=args.learning_rate, seed=args.seed,
                            context_window=args.context_window, save_steps=args.save_steps)
    print(f"format warm-up done -> {folder}; start GRPO from it with `rlff-esc train-grpo --policy {folder} ...`")
    return 0
