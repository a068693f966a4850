"""`simulate`: one episode per case, run concurrently, each trajectory appended as it finishes."""

from __future__ import annotations

from pathlib import Path

from esc_agents.config import RunConfig
from esc_agents.core.tracking import Tracker
from esc_agents.core.types import Case
from esc_agents.engine import Engine
from esc_agents.jobs import JobsResult, run_logged
from esc_agents.runs import TRAJECTORIES, RunRecord, check_run, record_run
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
    tracker: Tracker | None = None,
) -> JobsResult:
    engine = engine or Engine(config)

    def planned() -> RunRecord:
        return RunRecord.new(config, engine.prompts, dataset, cases=[case.id for case in cases],
                             plugins=engine.plugin_fingerprints, critic_range=engine.critic_range,
                             identities=engine.endpoint_identities)

    check_run(out, planned(), same_model=engine.same_model)  # a rerun with other settings: refused before any work

    def episode(case: Case):
        async def job() -> dict:
            return (await run_episode(engine.episode_context(case))).model_dump(mode="json")

        return job

    return await run_logged(engine, out / TRAJECTORIES, "case_id", {case.id: episode(case) for case in cases},
                            record=lambda: record_run(out, planned(), same_model=engine.same_model),
                            total=len(cases), concurrency=concurrency, desc="episodes",
                            progress=progress, tracker=tracker)
