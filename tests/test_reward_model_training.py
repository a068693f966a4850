"""`rlff-esc train-rm` on a D_r made by `rlff-esc rewards` (tests/fixtures/reward_data): the three
objectives train on CPU, the metrics file is complete, the scorer agrees with the trainer's
predictions, loss falls on a learnable signal, and a killed run resumes."""

import json

import pytest

from esc_agents.core.runlog import read_jsonl
from tests.conftest import QUICK_RM, REWARD_FIXTURE, kill_when, rlff_esc
from training.reward_model.config import load_reward_model_config
from training.reward_model.data import load_splits
from training.reward_model.scorer import RewardScorer
from training.reward_model.train import train_reward_model

pytestmark = pytest.mark.training

EVERY_OBJECTIVE = {"objective", "split", "rows", "train_rows", "steps", "pairwise_accuracy", "pairs", "spearman",
                   "auc", "data_hash", "config", "versions"}
CLASSIFICATION = {"accuracy", "f1", "calibration_error"}


def test_ablate_trains_all_three_and_the_scorer_agrees_with_the_trainer(tiny_policy, tmp_path):
    result = rlff_esc("train-rm", "ablate", "--data", str(REWARD_FIXTURE), "--out", str(tmp_path),
                      "--backbone", str(tiny_policy), *QUICK_RM)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("objective"))
    assert [line.split()[0] for line in lines[header + 1:header + 4]] == ["classification", "ranking", "regression"]
    rows = load_splits(REWARD_FIXTURE)["test"]
    for objective in ("classification", "ranking", "regression"):
        folder = tmp_path / objective
        metrics = json.loads((folder / "metrics.json").read_text())
        expected = EVERY_OBJECTIVE | (CLASSIFICATION if objective == "classification" else set())
        assert expected <= set(metrics), expected - set(metrics)
        assert metrics["objective"] == objective and metrics["steps"] == 2 and metrics["split"] == "test"
        assert (folder / "loss_curves.png").stat().st_size > 0
        trainer_scores = [p["score"] for p in read_jsonl(folder / "predictions.jsonl")]
        scorer_scores = RewardScorer.load(folder, batch_size=3).score([r["context"] for r in rows],
                                                                      [r["reply"] for r in rows])
        assert scorer_scores == pytest.approx(trainer_scores, abs=1e-4)
    ablation = json.loads((tmp_path / "ablation.json").read_text())
    assert set(ablation) == {"classification", "ranking", "regression"}


WARM = "That sounds really painful. I am here with you; what has been hardest about it?"
COLD = "ok."


def test_classification_loss_falls_on_a_learnable_signal(tmp_path):
    """The fixture's contexts with replies that carry the label: warm when R_fut is high, curt when low."""
    data = tmp_path / "signal"
    data.mkdir()
    (data / "export.json").write_text(json.dumps({"run": {"dataset": "esconv:ppdpp_train"}}))
    for name, rows in load_splits(REWARD_FIXTURE).items():
        with (data / f"{name}.jsonl").open("w") as handle:
            for row in rows:
                handle.write(json.dumps({**row, "reply": WARM if row["label"] else COLD}) + "\n")
    config = load_reward_model_config(None, max_steps=12, batch_size=8, max_length=128, learning_rate=5e-5,
                                      logging_steps=2, eval_steps=100, save_steps=100)
    metrics = train_reward_model(config, data, tmp_path / "rm")
    history = json.loads(next((tmp_path / "rm" / "checkpoints").glob("checkpoint-*/trainer_state.json"))
                         .read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses[-1] < losses[0] / 2, losses
    assert metrics["accuracy"] == 1.0 and metrics["auc"] == 1.0


def test_a_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    out = tmp_path / "rm"
    args = ["train-rm", "--data", str(REWARD_FIXTURE), "--out", str(out), "--objective", "regression",
            "--max-steps", "4", "--batch-size", "4", "--max-length", "128", "--config", str(tmp_path / "c.yaml")]
    (tmp_path / "c.yaml").write_text("save_steps: 2\neval_steps: 100\n")
    kill_when(args, lambda: (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists())
    assert not (out / "metrics.json").exists()
    result = rlff_esc(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from" in result.stderr and "checkpoint-2" in result.stderr
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4


def test_a_rerun_with_other_settings_is_refused(trained_reward_model):
    result = rlff_esc("train-rm", "--data", str(REWARD_FIXTURE), "--out", str(trained_reward_model),
                      "--max-steps", "3", "--batch-size", "4", "--max-length", "192")
    assert result.returncode == 2
    assert "config.max_steps" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_trl_settings_reach_the_ranking_trainer_are_recorded_and_must_match_on_rerun(tiny_policy, tmp_path):
    out = tmp_path / "rm"
    args = ["train-rm", "--data", str(REWARD_FIXTURE), "--out", str(out), "--objective", "ranking",
            "--backbone", str(tiny_policy), *QUICK_RM]
    result = rlff_esc(*args, "--trl", "center_rewards_coefficient=0.01", "--trl", "lr_scheduler_type=cosine")
    assert result.returncode == 0, result.stderr[-2000:]
    trained = json.loads((out / "metrics.json").read_text())["trainer_config"]
    assert trained["class"] == "trl.trainer.reward_config.RewardConfig"
    assert {"center_rewards_coefficient": 0.01, "lr_scheduler_type": "cosine", "max_steps": 2}.items() \
        <= trained["non_default"].items()
    rerun = rlff_esc(*args, "--trl", "center_rewards_coefficient=0.1", "--trl", "lr_scheduler_type=cosine")
    assert rerun.returncode == 2
    assert "other settings (config.trl.center_rewards_coefficient)" in rerun.stderr.strip().splitlines()[-1]
