"""Run many episodes concurrently, append each trajectory as it finishes, resume on rerun."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from esc_agents.config import RunConfig
from esc_agents.endpoints import UsageMeter
from esc_agents.engine import Engine
from esc_agents.errors import EndpointError
from esc_agents.provenance import write_run_record
from esc_agents.roles import EmptyReplyError
from esc_agents.runlog import RunLog
from esc_agents.types import Case
from graphs.episode import run_episode

# An episode that hits one of these fails alone; the rest of the run goes on.
EPISODE_FAILURES = (EndpointError, EmptyReplyError)


@dataclass
class SimulationResult:
    out: Path
    completed: int
    skipped: int
    failed: dict[str, str] = field(default_factory=dict)
    usage: UsageMeter = field(default_factory=UsageMeter)


async def simulate(
    config: RunConfig,
    cases: list[Case],
    out: Path,
    *,
    dataset: str,
    concurrency: int = 8,
    engine: Engine | None = None,
    progress: bool = True,
) -> SimulationResult:
    engine = engine or Engine(config)
    write_run_record(out, config, engine.prompts, dataset)
    log = RunLog(out / "trajectories.jsonl", key="case_id")
    pending = [case for case in cases if case.id not in log.done]
    result = SimulationResult(out=out, completed=0, skipped=len(cases) - len(pending), usage=engine.meter)
    if not pending:
        log.close()
        return result
    failures = (out / "failures.jsonl").open("a", encoding="utf-8")
    limit = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(cases), initial=result.skipped, desc="episodes", unit="ep", disable=not progress)

    async def one(case: Case) -> None:
        async with limit:
            try:
                trajectory = await run_episode(engine.episode_context(case))
            except EPISODE_FAILURES as exc:
                result.failed[case.id] = str(exc)
                failures.write(json.dumps({"case_id": case.id, "error": str(exc)}) + "\n")
                failures.flush()
            else:
                log.append(trajectory.model_dump(mode="json"))
                result.completed += 1
            bar.update(1)
            bar.set_postfix(ok=result.completed, failed=len(result.failed), calls=engine.meter.total_calls)

    try:
        async with engine:
            await asyncio.gather(*(one(case) for case in pending))
    finally:
        bar.close()
        log.close()
        failures.close()
    return result
