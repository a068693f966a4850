"""Run keyed jobs concurrently: each result is appended the moment it completes, keys already in
the log are skipped (resume), and a job that fails after its retries is recorded and listed
while the others go on. Used by `simulate` (a job is an episode) and `rewards` (a job is one
candidate's future)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esc_agents.core import progress as progress_report
from esc_agents.core.errors import JobFailure
from esc_agents.core.runlog import RunLog, append_jsonl, logged_keys, read_jsonl
from esc_agents.core.tracking import Tracker
from esc_agents.models.endpoints import UsageMeter

Job = Callable[[], Awaitable[dict[str, Any]]]
FAILURES = "failures.jsonl"


def outstanding_failures(folder: Path, key: str, done: set[str]) -> list[dict[str, Any]]:
    """Failures recorded in `folder` whose key has not completed since (a rerun may have)."""
    return [failure for failure in read_jsonl(folder / FAILURES) if failure[key] not in done]


def append_failure(path: Path, failure: dict[str, Any]) -> None:
    """One failure line, fsynced and whole like every result line (see RunLog.append)."""
    append_jsonl(path, failure)


@dataclass
class JobsResult:
    completed: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def _token_summary(meter: UsageMeter) -> str:
    return " ".join(
        f"{role[:3]}={usage.completion_tokens / 1000:.1f}k" for role, usage in sorted(meter.roles.items())
    )


def _progress_metrics(desc: str, result: JobsResult, successes: list[bool], meter: UsageMeter) -> dict[str, float]:
    """What a tracker is told as each job ends: jobs done and failed, the running success rate (of
    this session's episodes or futures), requests sent and tokens generated per role so far."""
    metrics = {f"{desc}/completed": result.completed, f"{desc}/failed": len(result.failed),
               "cost/requests": meter.total_calls}
    if successes:
        metrics[f"{desc}/success_rate_running"] = sum(successes) / len(successes)
    for role, usage in meter.roles.items():
        metrics[f"cost/{role}/completion_tokens"] = usage.completion_tokens
    return metrics


async def run_logged(engine, path: Path, key: str, jobs: dict[str, Job], *, record: Callable[[], Any],
                     total: int, concurrency: int, desc: str, progress: bool = True,
                     tracker: Tracker | None = None) -> JobsResult:
    """Run the jobs whose key `path` does not hold yet. Endpoints are checked (and servers started)
    only when there is work, and `record()` writes the run's record only once they answered: an
    unreachable endpoint leaves nothing behind that would refuse the corrected rerun."""
    done = logged_keys(path, key)
    jobs = {name: job for name, job in jobs.items() if name not in done}
    if not jobs:
        record()
        return JobsResult(skipped=total)
    async with engine:
        record()
        with RunLog(path, key=key) as log:
            return await run_jobs(jobs, log, total=total, concurrency=concurrency, meter=engine.meter,
                                  desc=desc, progress=progress, tracker=tracker)


async def run_jobs(
    jobs: dict[str, Job],
    log: RunLog,
    *,
    total: int,
    concurrency: int,
    meter: UsageMeter,
    desc: str,
    progress: bool = True,
    tracker: Tracker | None = None,
) -> JobsResult:
    result = JobsResult(skipped=total - len(jobs))
    successes: list[bool] = []  # of this session's results that say whether they succeeded
    limit = asyncio.Semaphore(concurrency)
    bar = progress_report.stage(total, desc=desc, initial=result.skipped, show=progress)

    async def one(key: str, job: Job) -> None:
        async with limit:
            try:
                record = await job()
            except JobFailure as exc:
                result.failed[key] = str(exc)
                append_failure(log.path.parent / FAILURES, {log.key: key, "error": str(exc)})
            else:
                log.append(record)
                result.completed += 1
                if isinstance(record.get("success"), bool):
                    successes.append(record["success"])
            bar.update(1)
            if tracker is not None:
                tracker.log(_progress_metrics(desc, result, successes, meter), step=result.completed + len(result.failed))
            bar.set_postfix_str(
                f"ok={result.completed} failed={len(result.failed)} calls={meter.total_calls} {_token_summary(meter)}"
            )

    try:
        await asyncio.gather(*(one(key, job) for key, job in jobs.items()))
    finally:
        bar.close()
    return result
