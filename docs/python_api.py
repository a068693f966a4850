"""rlff-esc from Python: a config, an engine with a role object passed in directly, one episode,
then a whole `simulate` run, read back through `RunFolder`. Runs on the embedded default, or on
the endpoints and roles of a run config (`--config`, as `rlff-esc simulate --config` reads it):

    .venv/bin/python docs/python_api.py --out runs/python-api --limit 4
    .venv/bin/python docs/python_api.py --config docs/configs/vllm-qwen72b.yaml --out runs/python-api-qwen
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from esc_agents.config import build_config
from esc_agents.core.types import CriticScore, counted_turns
from esc_agents.datasets import load_cases
from esc_agents.engine import Engine
from esc_agents.evaluation.metrics import evaluate_run
from esc_agents.roles.plugins import PythonRole, transcript_key
from esc_agents.runs import RunFolder
from esc_agents.simulate import simulate
from graphs.episode import run_episode


class QuestionCritic(PythonRole):
    """A critic written in a few lines: the seeker feels better when the last reply asks something."""

    score_range = (-1.0, 1.0)

    async def judge(self, case, history, samples):
        replies = [m.content for m in history if m.speaker == "supporter"]
        base = 1.0 if replies and "?" in replies[-1] else -0.5
        rng = self.rng(transcript_key(case, history))  # seeded: the same run replays exactly
        scores = [base if rng.random() < 0.8 else -base for _ in range(samples)]
        return CriticScore(samples=scores, verdicts=[str(s) for s in scores], mean=sum(scores) / samples)


async def main(out: Path, limit: int, config_file: Path | None = None) -> None:
    config = build_config(config_file, {"episode": {"max_turns": 2, "critic_samples": 3}})
    cases = load_cases("esconv:ppdpp_test")[:limit]

    # One episode: the engine starts (or reuses) the embedded server for the LLM roles.
    async with Engine(config, roles={"critic": QuestionCritic()}) as engine:
        trajectory = await run_episode(engine.episode_context(cases[0]))
    for message in trajectory.messages:
        print(f"{message.speaker:>9}: {message.content}")
    print(f"success={trajectory.success} after {trajectory.turns} turns; critic means "
          f"{[score.mean for score in trajectory.scores]}")

    # A whole run: resumable, and run.json names the critic by its fingerprint, not as the LLM critic.
    engine = Engine(config, roles={"critic": QuestionCritic()})
    result = await simulate(config, cases, out, dataset="esconv:ppdpp_test", engine=engine, progress=False)
    print(f"{result.completed} episodes run, {result.skipped} already done")
    run = RunFolder.open(out)  # the run folder, typed: run.json's record, its trajectories, its prompts
    print("critic in run.json:", run.fingerprint.roles["critic"])
    prompts = {role: run.prompt(role).name for role, spec in run.fingerprint.roles.items() if "prompt" in spec}
    print(f"dataset {run.fingerprint.dataset}, T = {run.max_turns}, {len(run.cases())} cases, LLM prompts {prompts}")
    for record in run.trajectories():
        print(record["case_id"], record["status"], record["turns"], "AT counts", counted_turns(record, run.max_turns))
    summary = evaluate_run(out)
    print(f"SR {summary['success_rate']:.3f}, AT {summary['average_turns']:.2f} on {summary['cases']} cases")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/python-api"))
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="run config YAML: endpoint profiles and role bindings (default: the embedded model)")
    args = parser.parse_args()
    asyncio.run(main(args.out, args.limit, args.config))
