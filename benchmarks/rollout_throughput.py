"""Generated-token throughput of the rollout engine on the embedded local server.

Three measurements in one run, same server, completion cache off; C is the number of requests
in flight at the server in both the engine and raw runs:
  engine      episodes through the LangGraph engine (endpoint layer, retries, cleaning), 2C of
              them at once so that C requests stay in flight while some episodes wait on the
              next turn (the endpoint's own limit holds requests at C)
  raw         exactly the requests the engine sent (same messages, same max_tokens), replayed
              straight to the endpoint with the openai client at concurrency C
  sequential  the engine with one episode and one request at a time, the way PPDPP's scripts run
Prints tokens/s for each and, as its last line, `engine/raw=<x> concurrent/sequential=<y>`.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from openai import AsyncOpenAI

from esc_agents.config import build_config
from esc_agents.datasets import load_cases
from esc_agents.engine import Engine
from esc_agents.models.local_server import LocalServer, serving_dtype
from graphs.episode import run_episode


async def engine_run(config, cases, concurrency: int, requests_in_flight: int) -> tuple[float, list[dict]]:
    """Tokens/s of the engine, and the requests it sent."""
    config = config.model_copy(deep=True)
    config.endpoints["local"].max_concurrency = requests_in_flight
    sent: list[dict] = []  # every request the engine sent: its messages, temperature, max_tokens, n, seed
    async with Engine(config, use_cache=False) as engine:
        (endpoint,) = engine.endpoints.values()
        endpoint.transport.request_observers.append(sent.append)
        limit = asyncio.Semaphore(concurrency)

        async def one(case):
            async with limit:
                await run_episode(engine.episode_context(case))

        start = time.perf_counter()
        await asyncio.gather(*(one(case) for case in cases))
        elapsed = time.perf_counter() - start
        tokens = sum(usage["completion_tokens"] for usage in engine.meter.as_dict().values())
    return tokens / elapsed, sent


async def raw_run(base_url: str, model: str, requests: list[dict], concurrency: int, temperature: float) -> float:
    client = AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=600)
    limit = asyncio.Semaphore(concurrency)

    async def one(request) -> int:
        async with limit:
            response = await client.chat.completions.create(
                model=model, messages=request["messages"], max_tokens=request["max_tokens"], temperature=temperature
            )
            return response.usage.completion_tokens

    start = time.perf_counter()
    tokens = await asyncio.gather(*(one(request) for request in requests))
    elapsed = time.perf_counter() - start
    await client.close()
    return sum(tokens) / elapsed


async def measure(args, config, model: str) -> tuple[float, float, float]:
    cases = load_cases("esconv:ppdpp_test")[: args.episodes]
    base_url = config.endpoints["local"].base_url
    warm_up = [{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}]
    await raw_run(base_url, model, warm_up, 1, 0.7)
    engine, sent = await engine_run(config, cases, 2 * args.concurrency, args.concurrency)
    print(f"engine     C={args.concurrency:<3d} {engine:7.1f} generated tok/s  ({len(sent)} requests, "
          f"{2 * args.concurrency} episodes at once)", flush=True)
    raw = await raw_run(base_url, model, sent, args.concurrency, config.supporter.temperature)
    print(f"raw        C={args.concurrency:<3d} {raw:7.1f} generated tok/s  (the same {len(sent)} requests)", flush=True)
    sequential, sent = await engine_run(config, cases[: args.sequential_episodes], 1, 1)
    print(f"sequential C=1   {sequential:7.1f} generated tok/s  ({len(sent)} requests)", flush=True)
    return engine, raw, sequential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight C (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=32, help="episodes for the concurrent runs")
    parser.add_argument("--sequential-episodes", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=1)
    parser.add_argument("--critic-samples", type=int, default=2)
    args = parser.parse_args()

    config = build_config(overrides={"episode": {"max_turns": args.max_turns, "critic_samples": args.critic_samples}})
    with LocalServer(config.endpoints["local"]) as server:
        print(f"embedded server: {server.model_dir.name}, dtype {serving_dtype(server.dtype)}", flush=True)
        engine, raw, sequential = asyncio.run(measure(args, config, str(server.model_dir)))
    print(f"engine/raw={engine / raw:.2f} concurrent/sequential={engine / sequential:.2f}")


if __name__ == "__main__":
    main()
