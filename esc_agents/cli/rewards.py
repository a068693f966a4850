"""`rlff-esc rewards` (stage 1: the future-oriented reward dataset D_r) and its actions on a
rewards folder: relabel, merge, stats, export."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Literal

from esc_agents.cli import options, outcome
from esc_agents.cli.config_flags import ConfigFlags, Options, option
from esc_agents.cli.values import OUT_FOLDER, named_number
from esc_agents.core.errors import UserError

HELP = "build the future-oriented reward dataset D_r (stage 1)"
DESCRIPTION = """For sampled contexts of training dialogues, sample m candidate supporter replies,
simulate each one's future with the episode graph, and append one record per (context, candidate) to
DIR/records.jsonl. A rerun resumes; --shard i/N splits the work across machines."""


def formulas() -> str:
    """The R_fut formulas, built in and registered, as the help lists them."""
    from training.futures.formulas import FORMULAS

    return ": " + ", ".join(sorted(FORMULAS))


class RewardsOptions(options.RunOptions):
    """Building D_r: the run options, and the stage-1 settings of the run config."""

    dataset: str = option("esconv:ppdpp_train", options.RunOptions.model_fields["dataset"].description,
                          metavar="DATASET")
    limit: int | None = option(None, "use the first N cases", ge=1, metavar="N", unset="all",
                               sets="rewards.sampling.dialogues")
    out: Path | None = option(None, "run folder (created or resumed)", parse=OUT_FOLDER, metavar="DIR",
                              needed="required unless an ACTION is given")
    contexts: int | None = option(None, "contexts to sample", ge=1, metavar="N", sets="rewards.sampling.contexts",
                                  unset="all selected")
    candidates: int | None = option(None, "candidate replies per context m", ge=1, metavar="M",
                                    sets="rewards.candidates")
    positions: Literal["all", "random", "first"] | None = option(None, "which positions of each dialogue",
                                                                 sets="rewards.sampling.positions")
    per_dialogue: int | None = option(None, "positions per dialogue for random/first", ge=1, metavar="K",
                                      sets="rewards.sampling.per_dialogue")
    min_history: int | None = option(None, "messages before the reply", ge=1, metavar="N",
                                     sets="rewards.sampling.min_history")
    formula: str | None = option(None, "R_fut formula", metavar="FORMULA", more=formulas, sets="rewards.formula")
    delta: float | None = option(None, "label = 1[R_fut > delta]", metavar="DELTA", sets="rewards.delta")
    param: dict[str, float] | None = option(None, "formula parameter, e.g. lambda=0.5 or gamma=0.8 (repeatable)",
                                            parse=named_number, metavar="NAME=VALUE", sets="rewards.formula_params")
    shard: str | None = option(None, "produce only the i-th of N disjoint parts", metavar="i/N", unset="all")
    future_supporter_prompt: str | None = option(None, "supporter that continues futures", metavar="NAME|FILE",
                                                 sets="future_supporter.prompt", unset="the candidate proposer")
    future_supporter_endpoint: str | None = option(None, "endpoint profile of the supporter that continues futures",
                                                   metavar="PROFILE", sets="future_supporter.endpoint",
                                                   unset="the proposer's")


class RelabelOptions(Options):
    folder: Path = option(..., "a rewards folder", positional=True, metavar="DIR")
    formula: str = option(..., "R_fut formula", metavar="FORMULA", more=formulas)
    delta: float = option(0.5, "label = 1[R_fut > delta], whatever delta the run had", metavar="DELTA")
    param: dict[str, float] = option({}, "formula parameter, e.g. lambda=0.5 or gamma=0.8 (repeatable)",
                                     parse=named_number, metavar="NAME=VALUE")
    out: Path | None = option(None, "write a relabelled copy here and leave DIR as it is", parse=OUT_FOLDER,
                              metavar="DIR", unset="relabel DIR in place")


class MergeOptions(Options):
    parts: list[Path] = option(..., "the shard folders", positional=True, nargs="+", metavar="PART")
    out: Path = option(..., "the merged folder (new)", parse=OUT_FOLDER, metavar="DIR")
    same_model: bool = option(False, "parts whose roles ran on different servers (one per node) serve the same "
                              "weights")


class StatsOptions(Options):
    folder: Path = option(..., "a rewards folder", positional=True, metavar="DIR")


class ExportOptions(Options):
    folder: Path = option(..., "a rewards folder", positional=True, metavar="DIR")
    out: Path = option(..., "the dataset folder", parse=OUT_FOLDER, metavar="DIR")
    format: Literal["hf", "parquet", "jsonl"] = option("hf", "Hugging Face datasets folder, parquet or JSONL per "
                                                       "split")
    valid: float = option(0.1, "share of dialogues", ge=0, le=1, metavar="VALID")
    test: float = option(0.1, "share of dialogues", ge=0, le=1, metavar="TEST")
    seed: int = option(0, "draws the split")
    overwrite: bool = option(False, "replace an export already in --out (by default it is refused)")


FLAGS = ConfigFlags(RewardsOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("rewards", help=HELP, description=DESCRIPTION)
    FLAGS.add_to(parser)
    options.HELD_OUT.add_to(parser)
    parser.set_defaults(func=run, writes="out")
    actions = parser.add_subparsers(dest="rewards_command", metavar="ACTION")

    relabel = actions.add_parser("relabel", help="recompute R_fut and labels with another formula; no LLM call",
                                 description="Recompute every record's R_fut and label from its raw parts with "
                                 "--formula, its --param values and --delta; no LLM call. The settings the futures "
                                 "were generated with stay in the fingerprint, so the generating command still "
                                 "resumes (its new records get these labels).")
    ConfigFlags(RelabelOptions).add_to(relabel)
    relabel.set_defaults(func=run_relabel, writes=lambda args: args.out or args.folder)

    merge = actions.add_parser("merge", help="validate and merge shard folders",
                               description="Check that the --shard parts were made with the same settings, merge "
                               "their records, failures and costs into a new folder, and report duplicate and "
                               "missing keys.")
    ConfigFlags(MergeOptions).add_to(merge)
    merge.set_defaults(func=run_merge, writes="out")

    stats = actions.add_parser("stats", help="counts, success, label balance, R_fut histogram, cost",
                               description="Print and write DIR/stats.json and DIR/r_fut_hist.png: records and "
                               "scored ones, success rate and mean K over every future, label balance and R_fut "
                               "spread over the scored ones, calls per record.")
    ConfigFlags(StatsOptions).add_to(stats)
    stats.set_defaults(func=run_stats, writes=None)

    export = actions.add_parser("export", help="split by dialogue and write a dataset for the reward model",
                                description="Split the scored records by dialogue into train, valid and test "
                                "(no dialogue in two splits) and write them for `train-rm --data`.")
    ConfigFlags(ExportOptions).add_to(export)
    export.set_defaults(func=run_export, writes="out")
    # Building D_r needs --out; an ACTION has its own. argparse cannot require an option only
    # without a sub-command (`run` checks it), so the usage says it.
    parser.usage = f"%(prog)s [OPTIONS] --out DIR\n       %(prog)s {{{','.join(actions.choices)}}} ..."


def run(args: argparse.Namespace) -> int:
    from training.futures.export import format_stats, stats
    from training.futures.generate import generate_rewards

    if args.out is None:
        raise UserError("rewards: --out DIR is required")
    config = options.config_from(args, flags=FLAGS)
    if config.rewards.candidates < 2:
        print("rlff-esc: warning: m < 2 candidates gives no within-context pairs for a ranking reward model",
              file=sys.stderr)
    engine = options.engine(args, config)
    tracker = options.tracker(args, args.out, config)
    try:
        result = asyncio.run(generate_rewards(
            config, args.out, dataset=args.dataset, shard_spec=args.shard, concurrency=args.concurrency, engine=engine,
            tracker=tracker, **options.held_out_options(args),
        ))
    finally:
        tracker.close()
    print(f"{result.completed} futures run, {result.skipped} already done, {len(result.failed)} failed -> {args.out}")
    outcome.print_usage(engine.meter)
    untrusted = False
    if result.completed or result.skipped:
        summary = stats(args.out)
        print(format_stats(summary))
        untrusted = outcome.too_many_invalid("the critic's", summary["invalid_critic_rate"], args.max_invalid_rate)
    return outcome.report_failures(result.failed, "futures") or (3 if untrusted else 0)


def run_relabel(args: argparse.Namespace) -> int:
    from training.futures.export import format_stats, stats
    from training.futures.generate import relabel

    report = relabel(args.folder, args.formula, args.delta, args.param, out=args.out)
    target = args.out or args.folder
    print(f"relabelled {report['records']} records with {args.formula} (δ = {args.delta:g}); "
          f"{report['labels_changed']} labels changed; no LLM call -> {target}")
    print(format_stats(stats(target)))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from training.futures.generate import merge

    report = merge(args.parts, args.out, same_model=args.same_model)
    print(f"merged {len(args.parts)} parts: {report['records']} records -> {args.out}")
    for name in ("duplicates", "missing", "unexpected"):
        keys = report[name]
        print(f"  {name:10s} {len(keys)}" + (f": {', '.join(keys[:10])}{' …' if len(keys) > 10 else ''}" if keys else ""))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from training.futures.export import format_stats, stats

    print(format_stats(stats(args.folder)))
    print(f"wrote {args.folder / 'stats.json'} and {args.folder / 'r_fut_hist.png'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from training.futures.export import export

    rows = export(args.folder, args.out, fmt=args.format, valid=args.valid, test=args.test, seed=args.seed,
                  overwrite=args.overwrite)
    print(f"exported {', '.join(f'{name} {count}' for name, count in rows.items())} rows ({args.format}) -> {args.out}")
    return 0
