"""`rlff-esc bias`: a simulator-bias study, one supporter under several personas, user and critic
models and seeds."""

from __future__ import annotations

import argparse
from typing import Any

from esc_agents.cli import options
from esc_agents.cli.outcome import critic_trust
from esc_agents.cli.studies import simulate_parts, unique_labels
from esc_agents.cli.values import COUNT

HELP = "simulator-bias study: one supporter under several personas, user and critic models, seeds"
DESCRIPTION = """Run the same supporter on the same cases under every combination of user-simulator
persona, user-simulator endpoint, critic endpoint and seed (one simulate run each under
DIR/<condition>), and report SR / AT per condition, the SR shift against the first condition (paired
bootstrap), the final-score distribution shift (Wasserstein, KS test), the SR spread over seeds and SR
pooled over user-simulator models."""


def add_parser(commands) -> None:
    parser = commands.add_parser("bias", help=HELP, description=DESCRIPTION)
    options.add_run_options(parser)
    parser.add_argument("--personas", default="cooperative,resistant", metavar="A,B,...",
                        help="user-simulator personas (prompt names or files; default: %(default)s)")
    parser.add_argument("--user-models", metavar="PROFILE,...", help="endpoint profiles for the user simulator")
    parser.add_argument("--critic-models", metavar="PROFILE,...", help="endpoint profiles for the critic")
    parser.add_argument("--seeds", type=COUNT, default=1, metavar="K", help="seeds per condition (default: %(default)s)")
    parser.set_defaults(func=run, writes="out")


def condition_options(condition) -> dict[str, Any]:
    """The shared run options (as `options.add_run_options` names them) a bias condition sets."""
    return {"persona": condition.persona, "user_endpoint": condition.user_model,
            "critic_endpoint": condition.critic_model, "seed": condition.seed}


def run(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.bias import bias_report, conditions, format_bias

    def names(value: str | None) -> list[str | None]:
        return [name.strip() for name in value.split(",")] if value else [None]

    cases = options.load_cases(args)
    studied = conditions(names(args.personas), names(args.user_models), names(args.critic_models), args.seeds,
                         args.seed or 0)
    unique_labels([condition.label for condition in studied])
    folders = simulate_parts(args, {condition.label: options.config_from(argparse.Namespace(
        **{**vars(args), **condition_options(condition)})) for condition in studied}, cases)
    runs = {condition: folders[condition.label] for condition in studied}
    print(format_bias(bias_report(runs, args.out)))
    print(f"wrote {args.out / 'bias.json'} and {args.out / 'success_by_turn.png'}")
    return critic_trust(runs.values(), args.max_invalid_rate)
