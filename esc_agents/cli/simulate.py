"""`rlff-esc simulate`: run episodes on a dataset and write trajectories."""

from __future__ import annotations

import argparse
import asyncio

from esc_agents.cli import options, outcome

HELP = "run episodes on a dataset and write trajectories"
DESCRIPTION = """Run supporter / user simulator / critic episodes concurrently. Appends
DIR/trajectories.jsonl as episodes finish; a rerun resumes."""


def add_parser(commands) -> None:
    parser = commands.add_parser("simulate", help=HELP, description=DESCRIPTION)
    options.RUN.add_to(parser)
    parser.set_defaults(func=run, writes="out")


def run(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.metrics import evaluate_run, format_summary
    from esc_agents.simulate import simulate

    config = options.config_from(args)
    cases = options.load_cases(args)
    engine = options.engine(args, config)
    tracker = options.tracker(args, args.out, config)
    try:
        result = asyncio.run(simulate(config, cases, args.out, dataset=args.dataset, concurrency=args.concurrency,
                                      engine=engine, tracker=tracker))
    finally:
        tracker.close()
    print(f"{result.completed} episodes run, {result.skipped} already done, {len(result.failed)} failed -> {args.out}")
    outcome.print_usage(engine.meter)
    if result.completed or result.skipped:
        print(format_summary(evaluate_run(args.out)))
    return outcome.report_failures(result.failed, "episodes") or outcome.critic_trust([args.out], args.max_invalid_rate)
