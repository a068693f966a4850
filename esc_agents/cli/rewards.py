"""`rlff-esc rewards` (stage 1: the future-oriented reward dataset D_r) and its actions on a
rewards folder: relabel, merge, stats, export."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from esc_agents.cli import options, outcome
from esc_agents.cli.values import COUNT, OUT_FOLDER, SCORE, SEED, SHARE
from esc_agents.core.errors import UserError

HELP = "build the future-oriented reward dataset D_r (stage 1)"
DESCRIPTION = """For sampled contexts of training dialogues, sample m candidate supporter replies,
simulate each one's future with the episode graph, and append one record per (context, candidate) to
DIR/records.jsonl. A rerun resumes; --shard i/N splits the work across machines."""


def add_parser(commands) -> None:
    from training.futures.formulas import FORMULAS

    formulas = ", ".join(sorted(FORMULAS))
    parser = commands.add_parser("rewards", help=HELP, description=DESCRIPTION)
    options.add_run_options(parser, dataset="esconv:ppdpp_train", out_required=False)
    parser.add_argument("--contexts", type=COUNT, metavar="N", help="contexts to sample (default: all selected)")
    parser.add_argument("--candidates", type=COUNT, metavar="M", help="candidate replies per context m (default 4)")
    parser.add_argument("--positions", choices=["all", "random", "first"],
                        help="which positions of each dialogue (default random)")
    parser.add_argument("--per-dialogue", type=COUNT, metavar="K", help="positions per dialogue for random/first (default 1)")
    parser.add_argument("--min-history", type=COUNT, metavar="N", help="messages before the reply (default 1)")
    parser.add_argument("--formula", help=f"R_fut formula: {formulas} (default terminal_efficiency)")
    parser.add_argument("--delta", type=SCORE, help="label = 1[R_fut > delta] (default 0.5)")
    add_param_option(parser, "formula parameter, e.g. lambda=0.5 or gamma=0.8 (rewards.formula_params)")
    parser.add_argument("--shard", metavar="i/N", help="produce only the i-th of N disjoint parts")
    parser.add_argument("--future-supporter-prompt", metavar="NAME|FILE",
                        help="supporter that continues futures (default: the candidate proposer)")
    parser.add_argument("--future-supporter-endpoint", metavar="PROFILE",
                        help="endpoint profile of the supporter that continues futures (default: the proposer's)")
    options.add_held_out_options(parser)
    parser.set_defaults(func=run, writes="out")
    actions = parser.add_subparsers(dest="rewards_command", metavar="ACTION")

    relabel = actions.add_parser("relabel", help="recompute R_fut and labels with another formula; no LLM call",
                                 description="Recompute every record's R_fut and label from its raw parts with "
                                 "--formula, its --param values and --delta; no LLM call. The settings the futures "
                                 "were generated with stay in the fingerprint, so the generating command still "
                                 "resumes (its new records get these labels).")
    relabel.add_argument("folder", type=Path, metavar="DIR", help="a rewards folder")
    relabel.add_argument("--formula", required=True, help=formulas)
    relabel.add_argument("--delta", type=SCORE, default=0.5,
                         help="label = 1[R_fut > delta] (default: %(default)s, whatever delta the run had)")
    add_param_option(relabel, "formula parameter, e.g. lambda=0.5 or gamma=0.8")
    relabel.add_argument("--out", type=OUT_FOLDER, metavar="DIR",
                         help="write a relabelled copy here and leave DIR as it is (default: relabel DIR in place)")
    relabel.set_defaults(func=run_relabel, writes=lambda args: args.out or args.folder)

    merge = actions.add_parser("merge", help="validate and merge shard folders",
                               description="Check that the --shard parts were made with the same settings, merge "
                               "their records, failures and costs into a new folder, and report duplicate and "
                               "missing keys.")
    merge.add_argument("parts", type=Path, nargs="+", metavar="PART", help="the shard folders")
    merge.add_argument("--out", type=OUT_FOLDER, required=True, metavar="DIR", help="the merged folder (new)")
    merge.add_argument("--same-model", action="store_true",
                       help="parts whose roles ran on different servers (one per node) serve the same weights")
    merge.set_defaults(func=run_merge, writes="out")

    stats = actions.add_parser("stats", help="counts, success, label balance, R_fut histogram, cost",
                               description="Print and write DIR/stats.json and DIR/r_fut_hist.png: records and "
                               "scored ones, success rate and mean K over every future, label balance and R_fut "
                               "spread over the scored ones, calls per record.")
    stats.add_argument("folder", type=Path, metavar="DIR", help="a rewards folder")
    stats.set_defaults(func=run_stats, writes=None)

    export = actions.add_parser("export", help="split by dialogue and write a dataset for the reward model",
                                description="Split the scored records by dialogue into train, valid and test "
                                "(no dialogue in two splits) and write them for `train-rm --data`.")
    export.add_argument("folder", type=Path, metavar="DIR", help="a rewards folder")
    export.add_argument("--out", type=OUT_FOLDER, required=True, metavar="DIR", help="the dataset folder")
    export.add_argument("--format", choices=["hf", "parquet", "jsonl"], default="hf",
                        help="Hugging Face datasets folder, parquet or JSONL per split (default: %(default)s)")
    export.add_argument("--valid", type=SHARE, default=0.1, help="share of dialogues (default: %(default)s)")
    export.add_argument("--test", type=SHARE, default=0.1, help="share of dialogues (default: %(default)s)")
    export.add_argument("--seed", type=SEED, default=0, help="draws the split (default: %(default)s)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an export already in --out (by default it is refused)")
    export.set_defaults(func=run_export, writes="out")
    # Building D_r needs --out; an ACTION has its own. argparse cannot require an option only
    # without a sub-command (`run` checks it), so the usage says it.
    parser.usage = f"%(prog)s [OPTIONS] --out DIR\n       %(prog)s {{{','.join(actions.choices)}}} ..."


def add_param_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=help)


def formula_params(pairs: list[str]) -> dict[str, float]:
    params = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            params[name] = float(value)
        except ValueError:
            raise UserError(f"--param takes NAME=NUMBER, got {pair!r}") from None
    return params


def run(args: argparse.Namespace) -> int:
    from training.futures.export import format_stats, stats
    from training.futures.generate import generate_rewards

    if args.out is None:
        raise UserError("rewards: --out DIR is required")
    config = options.config_from(args, blame={"future_supporter.endpoint": "--future-supporter-endpoint"}
                                 if args.future_supporter_endpoint else None, future_supporter={
        "endpoint": args.future_supporter_endpoint, "prompt": args.future_supporter_prompt,
    } if (args.future_supporter_endpoint or args.future_supporter_prompt) else None, rewards={
        "candidates": args.candidates, "formula": args.formula, "delta": args.delta,
        "formula_params": formula_params(args.param) or None,
        "sampling": {"dialogues": args.limit, "contexts": args.contexts, "positions": args.positions,
                     "per_dialogue": args.per_dialogue, "min_history": args.min_history},
    })
    if config.rewards.candidates < 2:
        print("rlff-esc: warning: m < 2 candidates gives no within-context pairs for a ranking reward model",
              file=sys.stderr)
    engine = options.engine(args, config)
    result = asyncio.run(generate_rewards(
        config, args.out, dataset=args.dataset, shard_spec=args.shard, concurrency=args.concurrency, engine=engine,
        **options.held_out_options(args),
    ))
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

    report = relabel(args.folder, args.formula, args.delta, formula_params(args.param), out=args.out)
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
