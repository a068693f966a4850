"""SR / AT accounting that cannot silently drop or inflate cases: a supporter with no usable
reply is a failed episode; a case that never ran keeps the run incomplete; a trained policy gets
the token budget it was trained with; JSON outputs hold no NaN."""

import json

import pytest

from esc_agents.cli import build_parser
from esc_agents.cli.options import config_from as _config_from
from esc_agents.evaluation.compare import supporter_binding
from esc_agents.evaluation.metrics import evaluate_run
from tests.conftest import SHORT_REPLIES, read_jsonl, rlff_esc
from tests.fault_proxy import FaultProxy
from tests.test_graph_logic import SEEKER, run


def test_a_supporter_with_no_usable_reply_ends_a_failed_episode(tmp_path):
    forged = ["Seeker: I feel awful."]  # opens as the other role: empty after cleaning, every time
    trajectory, model, _ = run({"supporter": forged, "user_simulator": SEEKER, "critic": ["D"]}, tmp_path)
    assert trajectory.status == "no_reply" and not trajectory.success
    assert [m.speaker for m in trajectory.messages] == ["seeker"] and trajectory.scores == []
    assert model.calls("supporter") == 3 and model.calls("critic") == 0  # 1 + 2 regenerations


def fake_run(folder, trajectories, *, cases, failures=()):
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({
        "fingerprint": {"dataset": "d", "episode": {"max_turns": 4}}, "cases": cases}))
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trajectories))
    (folder / "failures.jsonl").write_text("".join(json.dumps({"case_id": c, "error": "HTTP 500"}) + "\n"
                                                   for c in failures))
    return folder


def episode(case_id, status, turns):
    return {"case_id": case_id, "emotion": "e", "problem": "p", "messages": [], "turns": turns,
            "success": status == "success", "final_score": None, "status": status,
            "scores": [{"samples": [], "verdicts": [], "invalid": [], "mean": None}] * turns}


def test_no_reply_counts_as_a_failure_and_a_case_that_never_ran_keeps_the_run_incomplete(tmp_path):
    run_folder = fake_run(tmp_path / "run", [episode("a", "success", 1), episode("b", "no_reply", 0)],
                          cases=["a", "b", "c", "d"], failures=["c"])
    summary = evaluate_run(run_folder)
    assert summary["cases"] == 2 and summary["success_rate"] == 0.5 and summary["no_reply"] == 1
    assert summary["average_turns"] == (1 + 4) / 2  # the failure counts T turns
    assert summary["failed_cases"] == ["c"] and summary["missing_cases"] == ["d"]
    assert summary["complete"] is False
    result = rlff_esc("evaluate", str(run_folder), timeout=120)
    assert result.returncode == 2 and "incomplete (2 cases did not run)" in result.stderr
    assert "INCOMPLETE" in result.stdout


def test_json_outputs_hold_null_never_nan(tmp_path):
    run_folder = fake_run(tmp_path / "run", [episode("a", "max_turns", 4)], cases=["a"])
    evaluate_run(run_folder)
    text = (run_folder / "summary.json").read_text()
    assert "NaN" not in text
    summary = json.loads(text)
    assert summary["mean_final_score"] is None and summary["mean_final_score_ci95"] == [None, None]
    assert summary["complete"] is True


def policy_folder(tmp_path, card):
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "policy.json").write_text(json.dumps({"id": "abc", "prompt": "think", **card}))
    return folder


def test_a_trained_policy_gets_at_least_its_training_token_budget(tmp_path):
    folder = policy_folder(tmp_path, {"max_completion_length": 200})
    assert supporter_binding(str(folder))[1]["supporter"]["max_tokens"] == 200
    args = build_parser().parse_args(["simulate", "--supporter-model", str(folder), "--out", str(tmp_path / "o")])
    assert _config_from(args).supporter.max_tokens == 200
    args = build_parser().parse_args(["simulate", "--supporter-model", str(folder), "--supporter-max-tokens", "64",
                                      "--out", str(tmp_path / "o")])
    assert _config_from(args).supporter.max_tokens == 64  # the user's word wins
    # A folder exported before cards held the budget: read from the train-grpo folder it came from.
    source = tmp_path / "grpo_run"
    source.mkdir()
    (source / "grpo.json").write_text(json.dumps({"config": {"max_completion_length": 160}}))
    older = tmp_path / "older"
    older.mkdir()
    (older / "config.json").write_text("{}")
    (older / "policy.json").write_text(json.dumps({"id": "x", "prompt": "think", "source": str(source)}))
    assert supporter_binding(str(older))[1]["supporter"]["max_tokens"] == 160


@pytest.mark.server
def test_a_case_lost_to_the_endpoint_keeps_the_run_incomplete_until_a_rerun_finishes_it(local_server, tmp_path):
    out = tmp_path / "run"

    def simulate_through(plan):
        with FaultProxy("http://127.0.0.1:8765", plan) as proxy:
            config = tmp_path / "proxied.yaml"
            config.write_text(
                "endpoints:\n"
                f"  proxied: {{base_url: '{proxy.base_url}', model: '{local_server}', max_attempts: 1, "
                "supports_n: false}\n"
                "supporter: {endpoint: proxied}\nuser_simulator: {endpoint: proxied}\ncritic: {endpoint: proxied}\n")
            # Each proxy listens on a port of its own: the same server behind another base URL.
            return rlff_esc("simulate", "--config", str(config), "--limit", "2", "--max-turns", "1", *SHORT_REPLIES,
                            "--critic-samples", "2", "--no-cache", "--max-invalid-rate", "1", "--same-model",
                            "--out", str(out))

    first = simulate_through(lambda i, body: "500" if i == 0 else "ok")  # one case's first request fails
    assert first.returncode == 2 and "1 episodes failed" in first.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 1 and summary["complete"] is False and len(summary["failed_cases"]) == 1
    assert rlff_esc("evaluate", str(out), "--max-invalid-rate", "1").returncode == 2
    second = simulate_through(lambda i, body: "ok")
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 2 and summary["complete"] is True and summary["failed_cases"] == []
    assert len(read_jsonl(out / "trajectories.jsonl")) == 2


@pytest.mark.server
def test_a_critic_whose_answers_never_parse_makes_simulate_exit_3(local_server, tmp_path):
    critic = tmp_path / "never.yaml"
    critic.write_text(
        "system: You review a conversation.\n"
        "user: \"{conversation}\\nHow does the seeker feel now?\"\n"
        "verdicts:\n"
        "  - {label: worse, score: -1, patterns: ['^zzz-never$']}\n"
        "  - {label: better, score: 1, patterns: ['^yyy-never$']}\n")
    result = rlff_esc("simulate", "--critic-prompt", str(critic), "--limit", "1", "--max-turns", "1", *SHORT_REPLIES,
                      "--critic-samples", "2", "--no-cache", "--max-invalid-rate", "0.2", "--out", str(tmp_path / "run"))
    assert result.returncode == 3, result.stderr[-2000:]
    assert "100.0% of run's critic answers matched no verdict" in result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["invalid_critic_rate"] == 1.0 and summary["mean_final_score"] is None
