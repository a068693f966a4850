"""Bad input: one clear line on stderr, exit code 2, before any model is started."""

import json

import pytest

from tests.conftest import rlff_esc


@pytest.mark.parametrize("args, message", [
    (["--dataset", "missing.jsonl"], "dataset not found: missing.jsonl"),
    (["--persona", "grumpy"], "unknown user_simulator prompt 'grumpy'"),
    (["--critic-prompt", "nowhere/critic.yaml"], "critic prompt file not found"),
    (["--endpoint", "nowhere"], "unknown endpoint profile 'nowhere'"),
    (["--max-turns", "0"], "argument --max-turns: must be at least 1, got 0"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = rlff_esc("simulate", "--limit", "1", "--out", str(tmp_path / "run"), *args, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlff-esc: error:") and message in lines[0], result.stderr


def test_unreachable_endpoint(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("endpoints:\n  dead: {base_url: 'http://127.0.0.1:9/v1', model: m}\n")
    result = rlff_esc("simulate", "--limit", "1", "--endpoint", "dead", "--config", str(config),
                      "--out", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2
    assert "endpoint 'dead' at http://127.0.0.1:9/v1 is unreachable" in result.stderr.strip().splitlines()[-1]
    # Nothing is written before the endpoints answered, so the corrected rerun is not refused.
    assert not (tmp_path / "run").exists()


def test_resuming_with_other_settings_is_refused(tmp_path):
    # An offline replay from an empty cache records the run, then stops at its first completion.
    base = ["simulate", "--limit", "1", "--offline", "--cache", str(tmp_path / "empty.sqlite"),
            "--out", str(tmp_path / "run")]
    assert rlff_esc(*base, timeout=120).returncode == 2 and (tmp_path / "run" / "run.json").exists()
    result = rlff_esc(*base, "--max-turns", "3", timeout=120)
    assert result.returncode == 2 and "other settings (episode.max_turns)" in result.stderr


def test_help_lists_the_commands():
    result = rlff_esc("--help", timeout=60)
    for command in ("simulate", "evaluate", "serve", "graph", "prompts"):
        assert command in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--formula", "terminal", "--delta", "2"], "delta 2.0 is outside the range"),
    (["--min-history", "500"], "no eligible context"),
    (["--formula", "magic"], "unknown reward formula 'magic'"),
    (["--shard", "2/2"], "need 0 <= i < N"),
])
def test_rewards_bad_input(tmp_path, args, message):
    result = rlff_esc("rewards", "--limit", "3", "--out", str(tmp_path / "r"), *args, timeout=120)
    assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr


def single_class_export(folder):
    folder.mkdir()
    (folder / "export.json").write_text(json.dumps({"run": {"dataset": "esconv:ppdpp_train"}}))
    rows = [{"context_key": f"c{r_fut}", "dialogue_id": "d", "context": [], "reply": "r", "r_fut": r_fut, "label": 1}
            for r_fut in (0.9, 0.8)]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


@pytest.mark.parametrize("args, message", [
    (["--data", "nowhere"], "reward data folder not found: nowhere"),
    (["--data", "{single}"], "every training label is 1; classification needs both classes"),
    (["--data", "{single}", "--objective", "ranking"], "ranking needs m >= 2 candidates per context"),
    (["--data", "{single}", "--objective", "regression", "--backbone", "{empty}"], "has no config.json"),
    (["--data", "{single}", "--config", "{bad}"], "learning_rate: Input should be greater than 0"),
])
def test_train_rm_refuses_bad_input_before_loading_a_model(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.yaml").write_text("learning_rate: -1\n")
    places = {"single": single_class_export(tmp_path / "single"), "empty": tmp_path / "empty",
              "bad": tmp_path / "bad.yaml"}
    args = [arg.format(**places) for arg in args]
    result = rlff_esc("train-rm", *args, "--out", str(tmp_path / "rm"), timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize("args, message", [
    ([], "train-grpo --reward model needs --reward-model DIR"),
    (["--reward-model", "nowhere"], "nowhere is not a reward model folder"),
    (["--reward-model", "random", "--alpha", "-1"], "argument --alpha: must be at least 0, got -1"),
    (["--reward-model", "random", "--num-generations", "1"], "num_generations (G) must be at least 2"),
    (["--reward-model", "random", "--dataset", "{empty}"], "no eligible context"),
])
def test_train_grpo_refuses_bad_input_before_loading_a_model(tmp_path, args, message):
    (tmp_path / "empty.jsonl").write_text("")
    args = [arg.format(empty=tmp_path / "empty.jsonl") for arg in args]
    result = rlff_esc("train-grpo", *args, "--out", str(tmp_path / "policy"), timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
