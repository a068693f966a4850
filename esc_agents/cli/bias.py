"""`rlff-esc bias`: a simulator-bias study, one supporter under several personas, user and critic
models and seeds."""

from __future__ import annotations

import argparse
from typing import Any

from esc_agents.cli import options
from esc_agents.cli.outcome import critic_trust
from esc_agents.cli.studies import simulate_parts, unique_labels
from esc_agents.cli.values import COUNT
from esc_agents.core.errors import UserError

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
    parser.add_argument("--user-models", metavar="PROFILE,...",
                        help="endpoint profiles for the user simulator, one condition each (default: "
                        "--user-endpoint, else --endpoint, else the config's)")
    parser.add_argument("--critic-models", metavar="PROFILE,...",
                        help="endpoint profiles for the critic, one condition each (default: --critic-endpoint, "
                        "else --endpoint, else the config's)")
    parser.add_argument("--seeds", type=COUNT, default=1, metavar="K", help="seeds per condition (default: %(default)s)")
    parser.set_defaults(func=run, writes="out")


def condition_options(condition, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """The shared run options (as `options.add_run_options` names them) a bias condition sets; a
    condition that does not vary the user or critic model keeps --user-endpoint / --critic-endpoint."""
    return {"persona": condition.persona,
            "user_endpoint": condition.user_model or getattr(args, "user_endpoint", None),
            "critic_endpoint": condition.critic_model or getattr(args, "critic_endpoint", None),
            "seed": condition.seed}


def run(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.bias import bias_report, conditions, format_bias

    def names(value: str | None) -> list[str | None]:
        return [name.strip() for name in value.split(",")] if value else [None]

    if args.persona is not None:
        raise UserError("bias: --persona sets one persona; name the study's personas with --personas A,B,...")
    cases = options.load_cases(args)
    studied = conditions(names(args.personas), names(args.user_models), names(args.critic_models), args.seeds,
                         args.seed or 0)
    unique_labels([condition.label for condition in studied])
    folders = simulate_parts(args, {condition.label: options.config_from(argparse.Namespace(
        **{**vars(args), **condition_options(condition, args)})) for condition in studied}, cases)
    runs = {condition: folders[condition.label] for condition in studied}
    print(format_bias(bias_report(runs, args.out)))
    print(f"wrote {args.out / 'bias.json'} and {args.out / 'success_by_turn.png'}")
    return critic_trust(runs.values(), args.max_invalid_rate)
