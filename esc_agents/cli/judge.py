"""`rlff-esc judge`: an LLM judge's pairwise verdicts on two supporters, and the human annotation
round trip (export sheets, import filled ones)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from esc_agents.cli import options, outcome
from esc_agents.cli.config_flags import ConfigFlags, Options, option
from esc_agents.cli.values import OUT_FOLDER
from esc_agents.config import RunConfig
from esc_agents.core.errors import UserError

HELP = "LLM-judge pairwise quality of two supporters, both orders; human annotation round trip"
DESCRIPTION = """Compare two simulate runs case by case with an LLM judge on the judge prompt's
criteria (default: fluency, empathy, identification, suggestion, overall). Each case is judged in both
orders; a preference that flips with the order counts as a tie. Prints win/tie/loss per criterion with
95% intervals; writes judge.json and judgments.jsonl (appended, resumable)."""


class JudgeOptions(options.EngineOptions):
    """The judge's options: the runs, and the judge's binding in the run config."""

    target = RunConfig

    runs: list[Path] | None = option(None, "the two simulate runs (A first)", nargs=2, metavar="DIR",
                                     needed="required unless an ACTION is given")
    out: Path | None = option(None, "output folder (created or resumed)", parse=OUT_FOLDER, metavar="DIR",
                              needed="required unless an ACTION is given")
    config: str | None = option(None, "YAML config: endpoint profiles", metavar="FILE",
                                unset="none, the built-in profiles")
    judge_prompt: str = option("default", "the judge's prompt", metavar="NAME|FILE", sets="judge.prompt")
    judge_endpoint: str = option("local", "endpoint profile of the judge", metavar="PROFILE", sets="judge.endpoint")
    concurrency: int = option(8, "pairs judged at once", ge=1, metavar="CONCURRENCY")
    seed: int | None = option(None, "part of every cache key: a new seed draws new samples", sets="seed")
    allow_mismatch: bool = option(False, "judge runs whose settings differ")


class SheetOptions(Options):
    """An action that writes an annotation sheet and its key to --out, in an order drawn by --seed."""

    out: Path = option(..., "folder for the sheet and key", parse=OUT_FOLDER, metavar="DIR")
    seed: int = option(0, "draws the item order")


class PairSheetOptions(SheetOptions):
    runs: list[Path] = option(..., "the two simulate runs", nargs=2, metavar="DIR")
    judge_prompt: str = option("default", "the judge prompt whose criteria become the sheet's columns",
                               metavar="NAME|FILE")


class EpisodeSheetOptions(SheetOptions):
    run: Path = option(..., "a simulate run", metavar="DIR")


class ImportOptions(Options):
    key: Path = option(..., "the key written beside the sheet", positional=True, metavar="KEY.json")
    sheets: list[Path] = option(..., "one per annotator", positional=True, nargs="+", metavar="SHEET.csv")
    judgments: Path | None = option(None, "a `judge` output folder to compare with", metavar="DIR", unset="none")


FLAGS = ConfigFlags(JudgeOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("judge", help=HELP, description=DESCRIPTION)
    FLAGS.add_to(parser)
    parser.set_defaults(func=run, writes="out")
    actions = parser.add_subparsers(dest="judge_command", metavar="ACTION")

    pairs = actions.add_parser(
        "export", help="annotation sheet of the same pairs: random item ids and A/B order, key kept apart",
        description="Write a CSV sheet of the two runs' dialogues on their common cases for human raters, with "
        "item ids and the A/B order drawn by --seed, and the key (which side is which) in a separate file.")
    ConfigFlags(PairSheetOptions, ["runs", "out", "seed", "judge_prompt"]).add_to(pairs)
    pairs.set_defaults(func=run_export, writes="out")
    episodes = actions.add_parser("export-critic", help="annotation sheet of one run's episodes for human success labels",
                                  description="Write a CSV sheet of one run's episodes for raters to label "
                                  "success (yes / no), to set against the critic's verdicts; the key goes apart.")
    ConfigFlags(EpisodeSheetOptions, ["run", "out", "seed"]).add_to(episodes)
    episodes.set_defaults(func=run_export_critic, writes="out")

    imported = actions.add_parser(
        "import", help="read filled sheets; human results, Krippendorff's alpha, Cohen's kappa with the model",
        description="Read the filled sheets (pairs: 1, 2 or tie per criterion; episodes: yes or no; a blank cell "
        "is not rated) with their key; print the human results, agreement between raters (Krippendorff's alpha) "
        "and, with --judgments, agreement with the model (Cohen's kappa).")
    ConfigFlags(ImportOptions).add_to(imported)
    imported.set_defaults(func=run_import, writes=None)


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
    given = FLAGS.given(args)
    config = build_config(args.config, FLAGS.overrides(args),
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
