"""Trackers beyond training: `--report-to tensorboard` on the commands that run episodes logs the
running success rate, requests, tokens and failures as jobs finish, into TensorBoard event files a
reader can open; a tracker whose package is missing is refused before any call."""

import json

import pytest
import yaml

from esc_agents.core import tracking
from tests.conftest import read_jsonl, rlff_esc
from tests.seeded_server import SeededServer

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator


def answer(messages, seed) -> str:
    """Solved or worse by the seed, so the running success rate moves; the other roles speak."""
    if "How does the help-seeker feel now?" in messages[-1]["content"]:
        return ["D) The seeker's issue is solved.", "A) The seeker feels worse."][seed % 2]
    return "I see. Tell me more about it."


def fake_config(tmp_path, server) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "endpoints": {"fake": {"base_url": server.base_url, "model": server.model, "honours_seed": True,
                               "supports_n": False}},
        **{role: {"endpoint": "fake"} for role in ("supporter", "user_simulator", "critic")}}))
    return str(path)


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_simulate_reports_its_running_numbers_to_tensorboard(tmp_path):
    out = tmp_path / "run"
    with SeededServer(answer) as server:
        result = rlff_esc("simulate", "--config", fake_config(tmp_path, server), "--limit", "4", "--max-turns", "1",
                          "--critic-samples", "1", "--no-cache", "--report-to", "tensorboard", "--out", str(out),
                          timeout=300)
    assert result.returncode in (0, 3), result.stderr[-2000:]
    logged = scalars(out / "tensorboard")
    trajectories = read_jsonl(out / "trajectories.jsonl")
    assert [step for step, _ in logged["episodes/completed"]] == [1, 2, 3, 4]
    assert logged["episodes/completed"][-1][1] == 4 and logged["episodes/failed"][-1][1] == 0
    assert logged["episodes/success_rate_running"][-1][1] == pytest.approx(
        sum(t["success"] for t in trajectories) / len(trajectories))
    assert logged["cost/requests"][-1][1] == len(server.seeds)  # every request the server got
    assert {"cost/supporter/completion_tokens", "cost/critic/completion_tokens"} <= logged.keys()


def test_rewards_and_compare_report_each_run_on_its_own(tmp_path):
    with SeededServer(answer) as server:
        config = fake_config(tmp_path, server)
        rewards = rlff_esc("rewards", "--config", config, "--contexts", "1", "--candidates", "2", "--max-turns", "1",
                           "--critic-samples", "1", "--no-cache", "--eval-split", "none", "--report-to", "tensorboard",
                           "--out", str(tmp_path / "dr"), timeout=300)
        compare = rlff_esc("compare", "--config", config, "--supporters", "vanilla,think", "--limit", "2",
                           "--max-turns", "1", "--critic-samples", "1", "--no-cache", "--report-to", "tensorboard",
                           "--out", str(tmp_path / "cmp"), timeout=300)
    assert rewards.returncode in (0, 3), rewards.stderr[-2000:]
    assert scalars(tmp_path / "dr" / "tensorboard")["futures/completed"][-1][1] == 2
    assert compare.returncode in (0, 3), compare.stderr[-2000:]
    for label in ("vanilla", "think"):
        assert scalars(tmp_path / "cmp" / label / "tensorboard")["episodes/completed"][-1][1] == 2


@pytest.mark.parametrize("tracker", ["wandb", "trackio"])
def test_a_tracker_whose_package_is_missing_is_refused_before_anything(tmp_path, tracker, monkeypatch):
    if tracking.importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed here")
    result = rlff_esc("simulate", "--limit", "1", "--report-to", tracker, "--out", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert result.stderr.strip().splitlines() == [f"rlff-esc: error: --report-to {tracker} needs the {tracker} package: "
                                                  f"pip install {tracker}"]


def test_a_refused_rerun_leaves_no_tracker_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"fingerprint": {"dataset": "extes:test"}}))
    result = rlff_esc("simulate", "--limit", "1", "--offline", "--report-to", "tensorboard", "--out", str(out),
                      timeout=120)
    assert result.returncode == 2 and not (out / "tensorboard").exists()
