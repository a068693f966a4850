"""Reward-model scoring speed, batched against one pair at a time, same model, same pairs, one run.

Pairs are real ESConv training contexts with the reference supporter reply. The model is a
`train-rm` folder (--reward-model) or, by default, the embedded backbone with an untrained
two-class head: the same network and cost as a trained classification reward model.
Prints pairs per second for each mode and the process's peak memory, and as its last line
`batched/single=<x>`.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from esc_agents.config import ContextSampling
from esc_agents.datasets import load_cases
from training.contexts import sample_contexts
from training.reward_model.scorer import RewardScorer


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(scorer: RewardScorer, contexts, replies) -> tuple[float, list[float]]:
    start = time.perf_counter()
    scores = scorer.score(contexts, replies)
    return len(replies) / (time.perf_counter() - start), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward-model", default="random", help="a train-rm folder, or 'random' (default)")
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=384, help="for 'random' only")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()

    contexts = sample_contexts(load_cases("esconv:ppdpp_train"), ContextSampling(contexts=args.pairs), seed=0)
    histories = [[{"speaker": m.speaker, "content": m.content} for m in c.history] for c in contexts]
    replies = [c.case.dialog[c.position].content for c in contexts]
    if args.reward_model == "random":
        scorer = RewardScorer.untrained(max_length=args.max_length, batch_size=args.batch_size, dtype=args.dtype)
    else:
        scorer = RewardScorer.load(args.reward_model, batch_size=args.batch_size, dtype=args.dtype)
    lengths = [len(scorer.encode(h, r)) for h, r in zip(histories, replies)]
    print(f"{len(replies)} pairs, {sum(lengths) / len(lengths):.0f} tokens on average (max {max(lengths)}), "
          f"{torch.get_num_threads()} threads, {args.dtype}")
    scorer.score(histories[:2], replies[:2])  # warm-up

    scorer.batch_size = 1
    single_rate, single_scores = timed(scorer, histories, replies)
    single_peak = peak_rss_mib()
    scorer.batch_size = args.batch_size
    batched_rate, batched_scores = timed(scorer, histories, replies)
    drift = max(abs(a - b) for a, b in zip(single_scores, batched_scores))
    print(f"single   {single_rate:7.1f} pairs/s   peak RSS {single_peak:7.0f} MiB")
    print(f"batched  {batched_rate:7.1f} pairs/s   peak RSS {peak_rss_mib():7.0f} MiB   (batch {args.batch_size})")
    print(f"largest score difference between the two modes: {drift:.2e}")
    print(f"batched/single={batched_rate / single_rate:.2f}")


if __name__ == "__main__":
    main()
