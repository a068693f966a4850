"""`rlff-esc compare`: several supporters on the same cases, with paired tests."""

from __future__ import annotations

import argparse
from pathlib import Path

from esc_agents.cli import options
from esc_agents.cli.config_flags import ConfigFlags, option
from esc_agents.cli.outcome import critic_trust
from esc_agents.cli.studies import simulate_parts, unique_labels
from esc_agents.core.errors import UserError

HELP = "several supporters on the same cases, with paired tests"
DESCRIPTION = """Run each supporter on the same cases with the same user simulator and critic (one
simulate run per supporter under DIR/<label>, sharing the completion cache), or read existing runs, and
report SR / AT / final score with 95% intervals, McNemar on success and a paired bootstrap interval with a sign-flip test on turns per
pair, and SR-by-turn curves in one PNG. A supporter is a prompt name or file (vanilla, think, strategy)
on --supporter-endpoint (else --endpoint, else the config's), PROMPT@PROFILE for another endpoint, a
model folder from `rlff-esc export`, or a train-grpo folder (merged on first use)."""


class CompareOptions(options.RunOptions):
    supporters: str | None = option(None, "supporter specs to run and compare", metavar="A,B,...", unset="none")
    runs: list[Path] | None = option(None, "compare existing simulate runs instead", nargs="+", metavar="DIR",
                                     unset="none")
    allow_mismatch: bool = option(False, "compare runs whose cases or settings differ (a warning is kept in the "
                                  "report)")
    labels: dict[str, str] = options.labels_option("the supporters (labels as printed, e.g. warm.yaml-alt=Warm)")


FLAGS = ConfigFlags(CompareOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("compare", help=HELP, description=DESCRIPTION)
    FLAGS.add_to(parser)
    parser.set_defaults(func=run, writes="out")


def run(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.compare import compare_runs, format_comparison
    from esc_agents.evaluation.labels import check_labels

    if not args.runs and not args.supporters:
        raise UserError("compare needs --supporters A,B[,...] or --runs DIR DIR ...")
    if args.runs and args.supporters:
        raise UserError("compare takes --supporters (to run) or --runs (to read), not both")
    # Each spec names its supporter whole; these would be silently overridden by it.
    if args.supporters and (given := [name for name, value in (("--supporter-prompt", args.supporter_prompt),
                                                                ("--supporter-model", args.supporter_model))
                                      if value is not None]):
        raise UserError(f"compare: {' and '.join(given)} cannot go with --supporters; name each supporter in "
                        "--supporters (a prompt, PROMPT@PROFILE or a model folder)")
    specs = [spec.strip() for spec in args.supporters.split(",")] if not args.runs else []
    labels = unique_labels([folder.name for folder in args.runs] if args.runs else
                           [options.supporter(spec)[0] for spec in specs])
    if len(labels) < 2:
        raise UserError("compare needs at least two supporters or runs")
    check_labels(args.labels, [labels])  # before any run: a typo must not cost them
    if args.runs:
        runs = dict(zip(labels, args.runs))
    else:
        runs = simulate_parts(args, {label: options.config_from(args, supporter_spec=spec)
                                     for label, spec in zip(labels, specs)}, options.load_cases(args))
    print(format_comparison(compare_runs(runs, args.out, allow_mismatch=args.allow_mismatch, labels=args.labels)))
    print(f"wrote {args.out / 'compare.json'} and {args.out / 'success_by_turn.png'}")
    return critic_trust(runs.values(), args.max_invalid_rate)
