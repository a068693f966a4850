"""Commands made of several simulate runs on the same cases (`compare`, `bias`): one run folder
per labelled part under DIR."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from esc_agents.cli.options import engine
from esc_agents.cli.outcome import report_failures
from esc_agents.core.errors import UserError


def unique_labels(labels: list[str]) -> list[str]:
    """Two parts with one label would share a folder, and one would hide the other."""
    if twice := sorted({label for label in labels if labels.count(label) > 1}):
        raise UserError(f"{', '.join(twice)} named more than once; each part needs its own name")
    return labels


def simulate_parts(args: argparse.Namespace, configs: dict, cases) -> dict[str, Path]:
    """The simulate runs of a multi-run command, one per label under DIR; failed episodes are listed
    and the study goes on with the cases that finished. Every part's prompts are loaded first: a
    typo in the last spec must not cost the runs before it."""
    from esc_agents.cli.options import tracker
    from esc_agents.core.runlock import run_lock
    from esc_agents.simulate import simulate

    engines = {label: engine(args, config) for label, config in configs.items()}
    for label, part in engines.items():
        print(f"{label}:", file=sys.stderr)
        with run_lock(args.out / label):
            logger = tracker(args, args.out / label, part.config)  # each part a run of its own in the tracker
            try:
                result = asyncio.run(simulate(part.config, cases, args.out / label, dataset=args.dataset,
                                              concurrency=args.concurrency, engine=part, tracker=logger))
            finally:
                logger.close()
        if result.failed:
            report_failures(result.failed, f"episodes of {label}")
    return {label: args.out / label for label in configs}
