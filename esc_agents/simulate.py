"""`simulate`: one episode per case, run concurrently, each trajectory appended as it finishes."""

from __future__ import annotations

from pathlib import Path

from esc_agents.config import RunConfig
from esc_agents.engine import Engine
from esc_agents.jobs import JobsResult, run_jobs
from esc_agents.provenance import write_run_record
from esc_agents.runlog import RunLog
from esc_agents.types import Case
from graphs.episode import run_episode


async def simulate(
    config: RunConfig,
    cases: list[Case],
    out: Path,
    *,
    dataset: str,
    concurrency: int = 8,
    engine: Engine | None = None,
    progress: bool = True,
) -> JobsResult:
    engine = engine or Engine(config)
    write_run_record(out, config, engine.prompts, dataset, cases=[case.id for case in cases],
                     plugins=engine.plugin_fingerprints, critic_range=engine.critic_range)

    def episode(case: Case):
        async def job() -> dict:
            return (await run_episode(engine.episode_context(case))).model_dump(mode="json")

        return job

    with RunLog(out / "trajectories.jsonl", key="case_id") as log:
        jobs = {case.id: episode(case) for case in cases if case.id not in log.done}
        if not jobs:
            return JobsResult(skipped=len(cases))
        async with engine:
            return await run_jobs(
                jobs, log, total=len(cases), concurrency=concurrency,
                meter=engine.meter, desc="episodes", progress=progress,
            )
