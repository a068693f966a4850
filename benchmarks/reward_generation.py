"""Reward-dataset generation speed on the embedded local server, in one run.

  concurrent  `generate_rewards` with C futures at once, fresh cache
  sequential  the same with C = 1, on other contexts (so nothing is replayed), fresh cache
  replay      the concurrent run again into a new folder with its cache: every completion replayed
Prints records per minute, LLM calls per record, and as its last line
`concurrent/sequential=<x> replay_speedup=<y> replay_calls=<n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from esc_agents.config import build_config
from esc_agents.engine import Engine
from esc_agents.models.local_server import LocalServer
from training.futures.generate import generate_rewards


async def timed_run(config, out: Path, cache: Path, concurrency: int) -> tuple[float, int, int]:
    """Seconds, records written, LLM calls made."""
    engine = Engine(config, cache_path=cache)
    start = time.perf_counter()
    result = await generate_rewards(
        config, out, dataset="esconv:ppdpp_train", concurrency=concurrency, engine=engine, progress=False
    )
    return time.perf_counter() - start, result.completed, engine.meter.total_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--contexts", type=int, default=8)
    parser.add_argument("--sequential-contexts", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--critic-samples", type=int, default=2)
    args = parser.parse_args()

    def config(contexts: int, seed: int):
        return build_config(overrides={
            "episode": {"max_turns": args.max_turns, "critic_samples": args.critic_samples},
            "rewards": {"candidates": args.candidates, "sampling": {"contexts": contexts}},
            "seed": seed,
        })

    concurrent_config = config(args.contexts, seed=0)
    with LocalServer(concurrent_config.endpoints["local"]), tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        seconds, records, calls = asyncio.run(
            timed_run(concurrent_config, root / "concurrent", root / "cache.sqlite", args.concurrency)
        )
        concurrent_rate = records / seconds * 60
        print(f"concurrent C={args.concurrency:<3d} {records} records in {seconds:6.1f} s  "
              f"{concurrent_rate:6.2f} records/min  {calls / records:.1f} LLM calls/record", flush=True)
        seq_seconds, seq_records, seq_calls = asyncio.run(
            timed_run(config(args.sequential_contexts, seed=1), root / "sequential", root / "seq.sqlite", 1)
        )
        sequential_rate = seq_records / seq_seconds * 60
        print(f"sequential C=1   {seq_records} records in {seq_seconds:6.1f} s  "
              f"{sequential_rate:6.2f} records/min  {seq_calls / seq_records:.1f} LLM calls/record", flush=True)
        replay_seconds, replay_records, replay_calls = asyncio.run(
            timed_run(concurrent_config, root / "replay", root / "cache.sqlite", args.concurrency)
        )
        print(f"replay     C={args.concurrency:<3d} {replay_records} records in {replay_seconds:6.1f} s  "
              f"{replay_calls} LLM calls", flush=True)
    print(f"concurrent/sequential={concurrent_rate / sequential_rate:.2f} "
          f"replay_speedup={seconds / replay_seconds:.1f} replay_calls={replay_calls}")


if __name__ == "__main__":
    main()
