"""`rlff-esc train-grpo` with the real small policy and a real trained reward model: a killed
run resumes, the adapter is written, both reward components are logged; `export` merges it."""

import json

import pytest

from tests.conftest import kill_when, read_jsonl, rlff_esc

pytestmark = pytest.mark.training

QUICK_GRPO = ["--contexts", "4", "--max-steps", "2", "--max-completion-length", "24", "--batch-size", "4"]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, trained_reward_model):
    folder = tmp_path_factory.mktemp("grpo")
    # Each context at its first supporter turn: the reward model sees the whole history, and a short
    # one keeps a step of the 135M policy cheap.
    (folder / "c.yaml").write_text("save_steps: 1\nsampling:\n  positions: first\n")
    out = folder / "policy"
    args = ["train-grpo", "--reward-model", str(trained_reward_model), "--out", str(out),
            "--config", str(folder / "c.yaml"), *QUICK_GRPO]
    kill_when(args, lambda: (out / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists())
    assert not (out / "metrics.json").exists()
    result = rlff_esc(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_a_killed_run_resumes_and_writes_the_adapter(grpo_run):
    out, result = grpo_run
    assert "resuming from" in result.stderr and "checkpoint-1" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert (out / "adapter" / "adapter_config.json").exists()
    assert any((out / "adapter").glob("*.safetensors"))
    assert (out / "curves.png").stat().st_size > 0
    card = json.loads((out / "grpo.json").read_text())
    assert card["config"]["num_generations"] == 4 and card["config"]["alpha"] == 0.5


def test_both_reward_components_are_logged_and_sum_to_the_total(grpo_run):
    out, _ = grpo_run
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history
    for entry in history:
        r_fut, r_fmt = entry["rewards/r_fut/mean"], entry["rewards/r_fmt/mean"]
        assert 0.0 <= r_fut <= 1.0 and 0.0 <= r_fmt <= 1.0  # the scorer gives P(label 1)
        assert entry["reward"] == pytest.approx(r_fut + 0.5 * r_fmt, abs=1e-4)
        assert "kl" in entry and "completions/mean_length" in entry


@pytest.fixture(scope="module")
def exported(grpo_run, tmp_path_factory):
    out, _ = grpo_run
    merged = tmp_path_factory.mktemp("export") / "merged"
    return merged, rlff_esc("export", "--adapter", str(out), "--out", str(merged))


def test_export_merges_the_adapter_into_a_servable_folder(exported):
    merged, result = exported
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert json.loads((merged / "generation_config.json").read_text())["do_sample"] is True
    card = json.loads((merged / "policy.json").read_text())
    assert card["prompt"] == "think" and len(card["id"]) == 12


@pytest.mark.server
def test_the_exported_policy_is_evaluated_through_the_rollout_engine(exported, local_server, tmp_path):
    merged, made = exported
    assert made.returncode == 0, made.stderr[-2000:]
    run = tmp_path / "sim"
    result = rlff_esc("simulate", "--supporter-model", str(merged), "--supporter-prompt", "think",
                      "--limit", "1", "--max-turns", "1", "--critic-samples", "1", "--out", str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    (episode,) = read_jsonl(run / "trajectories.jsonl")
    assert episode["messages"][1]["speaker"] == "supporter"
    fingerprint = json.loads((run / "run.json").read_text())["fingerprint"]
    assert fingerprint["roles"]["supporter"]["model"].startswith("policy-")
    assert fingerprint["roles"]["critic"]["model"] == "smollm2-135m-instruct"


def test_the_failure_signals_the_method_names_show_when_the_history_has_them():
    from training.grpo.signals import failure_signals

    def history(r_fmt, r_fut):
        return [{"rewards/r_fmt/mean": a, "rewards/r_fut/mean": b, "reward": a + b} for a, b in zip(r_fmt, r_fut)]

    steady = [0.2, 0.3] * 10
    assert failure_signals(history([0.1 + i / 40 for i in range(30)], steady * 2)) == []  # R_fmt climbs
    assert failure_signals(history([0.95] * 30, steady * 2)) == []  # flat, but the format is learnt
    assert failure_signals(history([0.3] * 19, steady)) == []  # too short to call flat
    (flat,) = failure_signals(history([0.3, 0.31] * 15, steady + steady[:10]))
    assert flat.startswith("format reward flat: R_fmt 0.30 over the first 10 logged steps and 0.30 over the last 10")
    falling = [0.5 - i / 40 for i in range(20)] + [0.5] * 10  # the early span falls, then recovers
    (signal,) = failure_signals(history([0.1 + i / 40 for i in range(30)], falling))
    assert signal.startswith("R_fut falling early: Spearman rho -1.00") and "0.50 to 0.03" in signal
    assert failure_signals(history([0.5] * 12, [0.5 + i / 40 for i in range(12)])) == []
    with_nan = history([0.3, 0.31] * 15, falling)  # a step whose completions all went unscored logs NaN
    with_nan[3].update({"rewards/r_fmt/mean": float("nan"), "rewards/r_fut/mean": float("nan")})
    assert [signal.split(":")[0] for signal in failure_signals(with_nan)] == ["format reward flat",
                                                                             "R_fut falling early"]


def test_trl_settings_reach_the_trainer_are_recorded_and_must_match_on_resume(tiny_policy, tmp_path):
    out = tmp_path / "policy"
    tiny = ["train-grpo", "--reward-model", "random", "--policy", str(tiny_policy), "--out", str(out),
            "--contexts", "2", "--batch-size", "2",
            "--num-generations", "2", "--max-completion-length", "8", "--max-steps", "1"]
    result = rlff_esc(*tiny, "--trl", "scale_rewards=none", "--trl", "loss_type=dr_grpo")
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((out / "grpo.json").read_text())
    assert card["config"]["trl"] == {"scale_rewards": "none", "loss_type": "dr_grpo"}
    trained = card["grpo_config"]
    assert trained["class"] == "trl.trainer.grpo_config.GRPOConfig"
    assert {"scale_rewards": "none", "loss_type": "dr_grpo", "num_generations": 2, "max_steps": 1}.items() \
        <= trained["non_default"].items()
    assert trained["fields"]["epsilon"] == 0.2 and "epsilon" not in trained["non_default"]  # every field, as JSON
    adapter = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    changed = rlff_esc(*tiny, "--trl", "scale_rewards=batch", "--trl", "loss_type=dr_grpo", timeout=300)
    assert changed.returncode == 2
    line = changed.stderr.strip().splitlines()[-1]  # after the libraries' warnings
    assert line.startswith("rlff-esc: error:") and "other settings (config.trl.scale_rewards)" in line, line
    dropped = rlff_esc(*tiny, "--trl", "loss_type=dr_grpo", timeout=300)  # a setting left out differs too
    assert dropped.returncode == 2 and "config.trl.scale_rewards" in dropped.stderr
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
