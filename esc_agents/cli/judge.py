"""`rlff-esc judge`: an LLM judge's pairwise verdicts on two supporters, and the human annotation
round trip (export sheets, import filled ones)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from esc_agents.cli import options, outcome
from esc_agents.cli.values import COUNT, OUT_FOLDER, SEED
from esc_agents.core.errors import UserError

HELP = "LLM-judge pairwise quality of two supporters, both orders; human annotation round trip"
DESCRIPTION = """Compare two simulate runs case by case with an LLM judge on the judge prompt's
criteria (default: fluency, empathy, identification, suggestion, overall). Each case is judged in both
orders; a preference that flips with the order counts as a tie. Prints win/tie/loss per criterion with
95% intervals; writes judge.json and judgments.jsonl (appended, resumable)."""


def add_parser(commands) -> None:
    parser = commands.add_parser("judge", help=HELP, description=DESCRIPTION)
    parser.add_argument("--runs", type=Path, nargs=2, metavar="DIR", help="the two simulate runs (A first)")
    parser.add_argument("--out", type=OUT_FOLDER, metavar="DIR", help="output folder (created or resumed)")
    parser.add_argument("--config", metavar="FILE", help="YAML config: endpoint profiles")
    add_judge_prompt_option(parser, "the judge's prompt")
    parser.add_argument("--judge-endpoint", metavar="PROFILE", help="endpoint profile of the judge (default local)")
    parser.add_argument("--concurrency", type=COUNT, default=8, help="pairs judged at once (default: %(default)s)")
    parser.add_argument("--seed", type=SEED, help="part of every cache key: a new seed draws new samples (default 0)")
    options.add_cache_options(parser)
    options.add_same_model_option(parser)
    parser.add_argument("--allow-mismatch", action="store_true", help="judge runs whose settings differ")
    options.add_max_invalid_rate(parser)
    parser.set_defaults(func=run, writes="out")
    actions = parser.add_subparsers(dest="judge_command", metavar="ACTION")

    pairs = actions.add_parser(
        "export", help="annotation sheet of the same pairs: random item ids and A/B order, key kept apart",
        description="Write a CSV sheet of the two runs' dialogues on their common cases for human raters, with "
        "item ids and the A/B order drawn by --seed, and the key (which side is which) in a separate file.")
    pairs.add_argument("--runs", type=Path, nargs=2, required=True, metavar="DIR", help="the two simulate runs")
    add_sheet_options(pairs, run_export)
    add_judge_prompt_option(pairs, "whose criteria become the sheet's columns")
    episodes = actions.add_parser("export-critic", help="annotation sheet of one run's episodes for human success labels",
                                  description="Write a CSV sheet of one run's episodes for raters to label "
                                  "success (yes / no), to set against the critic's verdicts; the key goes apart.")
    episodes.add_argument("--run", type=Path, required=True, metavar="DIR", help="a simulate run")
    add_sheet_options(episodes, run_export_critic)

    imported = actions.add_parser(
        "import", help="read filled sheets; human results, Krippendorff's alpha, Cohen's kappa with the model",
        description="Read the filled sheets (pairs: 1, 2 or tie per criterion; episodes: yes or no; a blank cell "
        "is not rated) with their key; print the human results, agreement between raters (Krippendorff's alpha) "
        "and, with --judgments, agreement with the model (Cohen's kappa).")
    imported.add_argument("key", type=Path, metavar="KEY.json", help="the key written beside the sheet")
    imported.add_argument("sheets", type=Path, nargs="+", metavar="SHEET.csv", help="one per annotator")
    imported.add_argument("--judgments", type=Path, metavar="DIR", help="a `judge` output folder to compare with")
    imported.set_defaults(func=run_import, writes=None)


def add_judge_prompt_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--judge-prompt", default="default", metavar="NAME|FILE",
                        help=f"{what} (default: %(default)s)")


def add_sheet_options(sheet: argparse.ArgumentParser, func) -> None:
    """An action that writes an annotation sheet and its key to --out, in an order drawn by --seed."""
    sheet.add_argument("--out", type=OUT_FOLDER, required=True, metavar="DIR", help="folder for the sheet and key")
    sheet.add_argument("--seed", type=SEED, default=0, help="draws the item order (default: %(default)s)")
    sheet.set_defaults(func=func, writes="out")


def run(args: argparse.Namespace) -> int:
    from esc_agents.cli.config_flags import describe_problems
    from esc_agents.config import build_config
    from esc_agents.evaluation.judge import (
        format_judgments,
        judge_runs,
        summarize_judgments,
    )

    if not args.runs or len(args.runs) != 2 or args.out is None:
        raise UserError("judge needs --runs A B (two simulate runs) and --out DIR")
    given = {"judge.endpoint": "--judge-endpoint"} if args.judge_endpoint else {}
    config = build_config(args.config, {"judge": {"endpoint": args.judge_endpoint or "local",
                                                   "prompt": args.judge_prompt}, "seed": args.seed},
                          describe=lambda error, source: describe_problems(error, given, source))
    engine = options.engine(args, config)
    result = asyncio.run(judge_runs(config, {folder.name: folder for folder in args.runs}, args.out,
                                    concurrency=args.concurrency, engine=engine, allow_mismatch=args.allow_mismatch))
    summary = summarize_judgments(args.out, engine.judge_criteria)
    print(format_judgments(summary))
    print(f"wrote {args.out / 'judge.json'} and {args.out / 'judgments.jsonl'}")
    untrusted = outcome.too_many_invalid("the judge's", summary["unparsable"] / max(summary["cases"], 1),
                                         args.max_invalid_rate)
    return outcome.report_failures(result.failed, "judged cases") or (3 if untrusted else 0)


def run_export(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.annotation import KEY, export_pairs
    from esc_agents.prompts import load_prompt

    criteria = load_prompt("judge", args.judge_prompt).spec.criteria
    sheet = export_pairs({folder.name: folder for folder in args.runs}, args.out, criteria, seed=args.seed)
    print(f"wrote {sheet} (give it to annotators; one filled copy each) and {args.out / KEY} (keep it apart)")
    return 0


def run_export_critic(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.annotation import KEY, export_success

    sheet = export_success(args.run, args.out, seed=args.seed)
    print(f"wrote {sheet} (annotators fill `success` with yes/no) and {args.out / KEY} (keep it apart)")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.annotation import import_sheets

    report = import_sheets(args.key, args.sheets, args.judgments)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.key.parent / 'agreement.json'}")
    return 0
