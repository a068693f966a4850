"""`train-grpo` launched with two processes (`accelerate launch`, CPU, gloo): futures.jsonl holds
both processes' futures, written once, and metrics.json, the checkpoint's totals and the per-step
logged numbers are the whole run's. What is checked is the counting, not the model: the policy is
one layer of random weights, and the futures run on a loopback server whose critic answers by the
request's seed, sometimes unparsably."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.conftest import PLUMBING_ENV, read_jsonl
from tests.seeded_server import SeededServer

pytestmark = pytest.mark.training

DDP_RECIPE = Path(__file__).resolve().parents[1] / "docs" / "accelerate" / "ddp.yaml"
PROCESSES = 2
STEPS = 2
PER_PROCESS = 2  # completions per process per step: one group of G = 2
TINY_GRPO = ["--contexts", "2", "--batch-size", str(PER_PROCESS), "--num-generations", "2",
             "--max-completion-length", "8", "--max-steps", str(STEPS), "--future-turns", "1", "--critic-samples", "1"]


def answer(messages, seed) -> str:
    """The critic's verdict by the seed, one in three off the scale (that future gives no reward);
    the seeker says one line."""
    if "How does the help-seeker feel now?" in messages[-1]["content"]:
        return ["nonsense", "B) The seeker feels the same.", "C) The seeker feels better."][seed % 3]
    return "I am not sure."


@pytest.fixture(scope="module")
def seeded_endpoints(tmp_path_factory, tiny_policy):
    """The tiny policy, a simulation config whose roles all call the seeded server, one critic call
    per verdict (no retries), and a GRPO config with the completion cache off, no reference model
    (beta 0) and a checkpoint at the end."""
    folder = tmp_path_factory.mktemp("multiprocess")
    with SeededServer(answer) as server:
        simulation = folder / "simulation.yaml"
        simulation.write_text(yaml.safe_dump({
            "endpoints": {"seeded": {"base_url": server.base_url, "model": server.model, "honours_seed": True,
                                     "supports_n": False}},
            **{role: {"endpoint": "seeded"} for role in ("supporter", "user_simulator", "critic")},
            "episode": {"critic_retries": 0}}))
        grpo = folder / "grpo.yaml"
        grpo.write_text(yaml.safe_dump({"simulation": {"cache": False}, "save_steps": STEPS, "beta": 0.0}))
        yield folder, ["--policy", str(tiny_policy), "--simulation-config", str(simulation), "--config", str(grpo)]


def launch_train_grpo(*args: str) -> subprocess.CompletedProcess:
    """train-grpo launched as the README launches it on GPUs, with the shipped data-parallel recipe,
    here on two CPU processes (no GPU visible: the trainer takes the CPU, the processes gloo)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_RECIPE),
               "--num_processes", str(PROCESSES), "--mixed_precision", "no", "--main_process_port", "0",
               "-m", "esc_agents.cli", "train-grpo", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **PLUMBING_ENV, "CUDA_VISIBLE_DEVICES": ""})


def check_run_totals(out, result, rows_per_process_step: int) -> tuple[dict, list[dict]]:
    """The totals of metrics.json, the checkpoint and the log history against futures.jsonl."""
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    text = (out / "futures.jsonl").read_text()
    assert text.endswith("\n")
    rows = read_jsonl(out / "futures.jsonl")  # every line whole: a torn one would not parse
    assert Counter(row["step"] for row in rows) == {step: rows_per_process_step * PROCESSES for step in range(STEPS)}
    failed = sum(row["r_fut"] is None for row in rows)
    simulation = metrics["simulation"]
    assert (simulation["futures"], simulation["failed"]) == (len(rows), failed)
    # One future turn, one critic sample and no retry: one call of each role per future.
    assert simulation["usage"]["user_simulator"]["calls"] == simulation["usage"]["critic"]["calls"] == len(rows)
    history = metrics["history"]
    assert len(history) == STEPS
    assert sum(entry["futures/simulated"] for entry in history) == len(rows)
    assert sum(entry["futures/failed"] for entry in history) == failed
    assert sum(entry["cost/critic/calls"] for entry in history) == len(rows)
    saved = json.loads((out / "checkpoints" / f"checkpoint-{STEPS}" / "run_totals.json").read_text())["simulation"]
    assert (saved["futures"], saved["failed"], saved["usage"]) == (len(rows), failed, simulation["usage"])
    for step in range(STEPS):  # warned once, by the main process
        assert result.stderr.count(f"futures at step {step} gave no reward") <= 1
    return metrics, rows


def test_two_simulating_processes_write_every_future_once_and_log_the_run_totals(seeded_endpoints):
    folder, endpoints = seeded_endpoints
    out = folder / "simulated"
    result = launch_train_grpo("--reward", "simulated", "--out", str(out), *endpoints, *TINY_GRPO)
    check_run_totals(out, result, rows_per_process_step=PER_PROCESS)


def test_two_hybrid_processes_write_every_check_once_and_log_the_run_totals(seeded_endpoints):
    folder, endpoints = seeded_endpoints
    out = folder / "hybrid"
    result = launch_train_grpo("--reward", "hybrid", "--reward-model", "random", "--check-fraction", "0.5",
                               "--out", str(out), *endpoints, *TINY_GRPO)
    metrics, rows = check_run_totals(out, result, rows_per_process_step=PER_PROCESS // 2)
    assert all(row["reward_used"] == "reward_model" and row["reward_model_score"] is not None for row in rows)
    assert sum(entry["hybrid/checked"] for entry in metrics["history"]) == sum(row["r_fut"] is not None for row in rows)
