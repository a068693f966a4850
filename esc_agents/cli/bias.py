"""`rlff-esc bias`: a simulator-bias study, one supporter under several personas, user and critic
models and seeds."""

from __future__ import annotations

import argparse
from typing import Any

from esc_agents.cli import options
from esc_agents.cli.config_flags import ConfigFlags, option
from esc_agents.cli.outcome import critic_trust
from esc_agents.cli.studies import simulate_parts, unique_labels
from esc_agents.core.errors import UserError

HELP = "simulator-bias study: one supporter under several personas, user and critic models, seeds"
DESCRIPTION = """Run the same supporter on the same cases under every combination of user-simulator
persona, user-simulator endpoint, critic endpoint and seed (one simulate run each under
DIR/<condition>), and report SR / AT per condition, the SR shift against the first condition (paired
bootstrap), the final-score distribution shift (Wasserstein, KS test), the SR spread over seeds, SR
pooled over user-simulator models and seeds, and each varying factor pooled over seeds and the others."""


class BiasOptions(options.RunOptions):
    personas: str = option("cooperative,resistant", "user-simulator personas (prompt names or files)",
                           metavar="A,B,...")
    user_models: str | None = option(None, "endpoint profiles for the user simulator, one condition each",
                                     metavar="PROFILE,...", unset="--user-endpoint, else --endpoint, else the config's")
    critic_models: str | None = option(None, "endpoint profiles for the critic, one condition each",
                                       metavar="PROFILE,...",
                                       unset="--critic-endpoint, else --endpoint, else the config's")
    seeds: int = option(1, "seeds per condition", ge=1, metavar="K")
    labels: dict[str, str] = options.labels_option("conditions and factor levels (personas, user and critic models)")


FLAGS = ConfigFlags(BiasOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("bias", help=HELP, description=DESCRIPTION)
    FLAGS.add_to(parser)
    parser.set_defaults(func=run, writes="out")


def condition_options(condition, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """The shared run options (as `options.RunOptions` names them) a bias condition sets; a
    condition that does not vary the user or critic model keeps --user-endpoint / --critic-endpoint."""
    return {"persona": condition.persona,
            "user_endpoint": condition.user_model or getattr(args, "user_endpoint", None),
            "critic_endpoint": condition.critic_model or getattr(args, "critic_endpoint", None),
            "seed": condition.seed}


def varied_models(condition) -> dict[str, str]:
    """The endpoint fields a condition's models set, by the option that listed them (for errors)."""
    varied = {"user_simulator.endpoint": ("--user-models", condition.user_model),
              "critic.endpoint": ("--critic-models", condition.critic_model)}
    return {field: option for field, (option, model) in varied.items() if model}


def run(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.bias import FACTORS, bias_report, conditions, format_bias
    from esc_agents.evaluation.labels import check_labels

    def names(value: str | None) -> list[str | None]:
        return [name.strip() for name in value.split(",")] if value else [None]

    if args.persona is not None:
        raise UserError("bias: --persona sets one persona; name the study's personas with --personas A,B,...")
    cases = options.load_cases(args)
    studied = conditions(names(args.personas), names(args.user_models), names(args.critic_models), args.seeds,
                         args.seed or 0)
    unique_labels([condition.label for condition in studied])
    configs = {condition.label: options.config_from(argparse.Namespace(
        **{**vars(args), **condition_options(condition, args)}), blame=varied_models(condition))
        for condition in studied}
    # The rows --labels may name, before any run: conditions and each factor's levels as tables name them.
    ran = [condition.as_run(configs[condition.label].model_dump(mode="json")) for condition in studied]
    check_labels(args.labels, [[condition.label for condition in studied]]
                 + [list(dict.fromkeys(condition.level(factor) for condition in ran)) for factor in FACTORS])
    folders = simulate_parts(args, configs, cases)
    runs = {condition: folders[condition.label] for condition in studied}
    print(format_bias(bias_report(runs, args.out, labels=args.labels)))
    print(f"wrote {args.out / 'bias.json'} and {args.out / 'success_by_turn.png'}")
    return critic_trust(runs.values(), args.max_invalid_rate)
