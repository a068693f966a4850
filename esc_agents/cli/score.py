"""`rlff-esc score`: (context, reply) pairs scored with a trained reward model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from esc_agents.cli.config_flags import ConfigFlags, Options, option
from esc_agents.cli.values import OUT_FILE
from esc_agents.core.errors import UserError

HELP = "score (context, reply) pairs with a trained reward model"
DESCRIPTION = """Read JSONL rows with `context` and `reply`, write them back with `score`; with `r_fut`
and `label` present, also print the reward model's metrics on them."""


class ScoreOptions(Options):
    pairs: Path = option(..., "one JSON object per line with `context` (messages) and `reply`", positional=True,
                         metavar="FILE.jsonl")
    reward_model: str = option(..., "a `train-rm` folder, or 'random' for an untrained head", metavar="DIR|random")
    out: Path | None = option(None, "the scored pairs", parse=OUT_FILE, metavar="FILE", unset="FILE.scored.jsonl")
    batch_size: int = option(16, "pairs per forward pass", ge=1, metavar="BATCH_SIZE")


FLAGS = ConfigFlags(ScoreOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("score", help=HELP, description=DESCRIPTION)
    FLAGS.add_to(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esc_agents.core.runlog import read_jsonl
    from training.reward_model.scorer import RewardScorer
    from training.reward_model.train import evaluate_scores

    if not args.pairs.exists():
        raise UserError(f"file not found: {args.pairs}")
    rows = list(read_jsonl(args.pairs))
    for index, row in enumerate(rows):
        if not isinstance(row.get("context"), list) or not isinstance(row.get("reply"), str):
            raise UserError(f"{args.pairs}: row {index} needs `context` (list of {{speaker, content}}) and `reply`")
    scorer = RewardScorer.load(args.reward_model, batch_size=args.batch_size)
    scores = scorer.score([row["context"] for row in rows], [row["reply"] for row in rows])
    out = args.out or args.pairs.with_name(args.pairs.stem + ".scored.jsonl")
    out.write_text("".join(json.dumps({**row, "score": score}, ensure_ascii=False) + "\n"
                           for row, score in zip(rows, scores)))
    print(f"scored {len(rows)} pairs with {args.reward_model} ({scorer.objective}); mean score "
          f"{sum(scores) / max(len(scores), 1):.3f} -> {out}")
    if rows and all("r_fut" in row and "label" in row for row in rows):
        metrics = evaluate_scores(scores, rows, scorer.objective)
        print("  " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)))
    return 0
