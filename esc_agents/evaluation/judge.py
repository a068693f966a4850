"""`judge`: an LLM judge compares two supporters' conversations of the same case on the judge
prompt's criteria. Each case is judged in both orders; a preference that flips with the order
is a position effect and counts as a tie. Judgments are appended per case and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from esc_agents.config import RunConfig
from esc_agents.core.jsonfile import write_json
from esc_agents.core.runlog import read_unique
from esc_agents.core.types import Message
from esc_agents.engine import Engine
from esc_agents.evaluation.compare import load_runs
from esc_agents.evaluation.metrics import bootstrap_ci, format_interval, in_case_order
from esc_agents.jobs import JobsResult, run_logged
from esc_agents.runs import RunRecord, check_run, record_run

JUDGMENTS = "judgments.jsonl"
OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}
SWAPPED = {"A": "B", "B": "A", "tie": "tie"}


def outcome(preference: str) -> str:
    """A preference for conversation A (the first run) as the first run's win / loss / tie."""
    return {"A": "win", "B": "loss", "tie": "tie"}[preference]


def combine(first_order: dict[str, str] | None, second_order: dict[str, str] | None) -> dict[str, str] | None:
    """Per criterion: the first run's outcome when both orders agree, a tie when they do not."""
    if first_order is None or second_order is None:
        return None
    return {criterion: outcome(p) if p == SWAPPED[second_order[criterion]] else "tie"
            for criterion, p in first_order.items()}


def trajectory_messages(trajectory: dict[str, Any]) -> list[Message]:
    return [Message(speaker=m["speaker"], content=m["content"]) for m in trajectory["messages"]]


async def judge_runs(config: RunConfig, runs: dict[str, Path], out: Path, *, concurrency: int = 8,
                     engine: Engine | None = None, allow_mismatch: bool = False) -> JobsResult:
    (a, b), (a_dir, b_dir) = list(runs), list(runs.values())
    loaded = load_runs(runs, allow_mismatch)
    trajectories, common = loaded.trajectories, loaded.common
    engine = engine or Engine(config)

    def planned() -> RunRecord:
        return RunRecord.new(config, engine.prompts, "judge", plugins=engine.plugin_fingerprints,
                             identities=engine.endpoint_identities, runs={a: str(a_dir), b: str(b_dir)})

    check_run(out, planned(), same_model=engine.same_model)  # a rerun with other settings: refused before any work

    def job(case_id: str):
        first, second = trajectories[a][case_id], trajectories[b][case_id]
        situation = first["messages"][0]["content"]

        async def run() -> dict[str, Any]:
            forward = await engine.judge.compare(situation, trajectory_messages(first), trajectory_messages(second))
            backward = await engine.judge.compare(situation, trajectory_messages(second), trajectory_messages(first))
            return {"case_id": case_id, "a": a, "b": b, "first_order": forward, "second_order": backward,
                    "outcome": combine(forward, backward)}

        return run

    return await run_logged(engine, out / JUDGMENTS, "case_id", {case_id: job(case_id) for case_id in common},
                            record=lambda: record_run(out, planned(), same_model=engine.same_model),
                            total=len(common), concurrency=concurrency, desc="judged cases")


def win_rates(outcomes: list[dict[str, str]], criteria: list[str]) -> dict[str, dict[str, Any]]:
    """Win / tie / loss counts per criterion and the win rate (a tie counts half) with a bootstrap interval."""
    rates = {}
    for criterion in criteria:
        said = [o[criterion] for o in outcomes]
        scores = np.array([OUTCOME_SCORE[s] for s in said])
        rates[criterion] = {"win": said.count("win"), "tie": said.count("tie"), "loss": said.count("loss"),
                            "win_rate": float(scores.mean()) if len(scores) else None,
                            "win_rate_ci95": bootstrap_ci(scores)}
    return rates


def summarize_judgments(out: Path, criteria: list[str]) -> dict[str, Any]:
    judgments = in_case_order(read_unique(out / JUDGMENTS, "case_id"))  # the interval: the cases', not their order
    valid = [j["outcome"] for j in judgments if j["outcome"] is not None]
    first = judgments[0] if judgments else {"a": "?", "b": "?"}
    summary = {"a": first["a"], "b": first["b"], "cases": len(judgments), "unparsable": len(judgments) - len(valid),
               "criteria": win_rates(valid, criteria)}
    write_json(out / "judge.json", summary)
    return summary


def format_judgments(summary: dict[str, Any]) -> str:
    lines = [f"{summary['a']} vs {summary['b']}: {summary['cases']} cases judged both ways "
             f"({summary['unparsable']} unparsable)",
             f"{'criterion':15s} {'win':>4s} {'tie':>4s} {'loss':>4s} {'win rate':>9s} {'95% CI':>15s}"]
    for name, c in summary["criteria"].items():
        rate = "-" if c["win_rate"] is None else f"{c['win_rate']:.3f}"
        lines.append(f"{name:15s} {c['win']:4d} {c['tie']:4d} {c['loss']:4d} {rate:>9s} "
                     f"{format_interval(c['win_rate_ci95']):>15s}")
    return "\n".join(lines)
