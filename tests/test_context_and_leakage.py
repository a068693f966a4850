"""One context window for every stage, and no training dialogue that is also an evaluation case."""

import json
import shutil

import pytest

from esc_agents.config import build_config
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case, Message
from esc_agents.datasets import held_out_check, load_cases
from tests.conftest import QUICK_RM, REWARD_FIXTURE, rlff_esc
from tests.test_graph_logic import SEEKER, SUPPORTER, run
from training.contexts import Context
from training.grpo.config import load_grpo_config
from training.grpo.futures_simulator import simulation_run_config
from training.grpo.trainer import check_reward_model, prompt_rows, think_prompt


def test_the_supporter_sees_only_its_context_window(tmp_path):
    history = [Message(speaker="seeker" if i % 2 == 0 else "supporter", content=f"m{i}") for i in range(5)]
    history.append(Message(speaker="supporter", content="How does that feel?"))
    _, model, _ = run({"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": ["B"]}, tmp_path, max_turns=2,
                      history=history, supporter={"prompt": "vanilla", "context_window": 3})
    (request,) = [r for r in model.requests if r["role"] == "supporter"]
    assert len(request["messages"]) == 1 + 3  # system + the latest three messages
    assert request["messages"][-1].content == SEEKER[0]
    with pytest.raises(UserError, match="critic.context_window: only a supporter's view is windowed"):
        build_config(None, {"critic": {"context_window": 2}})


def test_grpo_prompts_simulated_futures_and_the_reward_model_share_one_window(tmp_path):
    config = load_grpo_config(None, reward="simulated", context_window=2)
    case = Case(id="d", situation="s", dialog=[Message(speaker="seeker" if i % 2 == 0 else "supporter",
                                                       content=f"m{i}") for i in range(6)])
    (row,) = prompt_rows(config, think_prompt("think"), [Context(case, position=5)])
    assert [m["content"] for m in row["prompt"][1:]] == ["m3", "m4"]
    assert len(row["context"]) == 5  # the full context is kept; the scorer windows it as trained
    assert simulation_run_config(config).supporter.context_window == 2
    folder = tmp_path / "rm"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{}")
    (folder / "reward_model.json").write_text(json.dumps({"objective": "classification", "max_length": 64,
                                                         "context_window": None}))
    with pytest.raises(UserError, match="seeing the whole history but --context-window gives the policy the "
                                        "latest 2 messages"):
        check_reward_model(load_grpo_config(None, reward_model=str(folder), context_window=2))
    check_reward_model(load_grpo_config(None, reward_model=str(folder)))


@pytest.mark.training
def test_the_reward_model_trains_and_scores_with_the_window_of_its_data(tiny_policy, tmp_path):
    from training.reward_model.data import encode
    from training.reward_model.scorer import RewardScorer

    data = tmp_path / "dr"
    shutil.copytree(REWARD_FIXTURE, data)
    run_file = data / "run.json"
    run_record = json.loads(run_file.read_text())
    run_record["fingerprint"]["roles"]["supporter"]["context_window"] = 1
    run_file.write_text(json.dumps(run_record))
    out = tmp_path / "rm"
    result = rlff_esc("train-rm", "--data", str(data), "--out", str(out), "--backbone", str(tiny_policy), *QUICK_RM)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "reward_model.json").read_text())["context_window"] == 1
    scorer = RewardScorer.load(out)
    context = [{"speaker": "seeker", "content": "first"}, {"speaker": "supporter", "content": "second"},
               {"speaker": "seeker", "content": "I cannot sleep."}]
    assert scorer.encode(context, "That sounds hard.") == encode(scorer.tokenizer, context[-1:], "That sounds hard.",
                                                                 scorer.max_length)
    assert scorer.score([context], ["That sounds hard."]) == scorer.score([context[-1:]], ["That sounds hard."])


def test_training_dialogues_that_are_evaluation_cases_are_refused_or_recorded(capsys):
    leaking = load_cases("esconv:test")[:40]  # half of esconv:test is in ppdpp_test
    with pytest.raises(UserError, match=r"training dialogues \(.*\) are also in the evaluation split esconv:ppdpp_test"):
        held_out_check(leaking, "esconv:ppdpp_test", False, "rewards")
    report = held_out_check(leaking, "esconv:ppdpp_test", True, "rewards")
    assert report["eval_overlap"] and set(report["eval_overlap"]) <= {case.id for case in leaking}
    assert "WARNING" in capsys.readouterr().err
    assert held_out_check(load_cases("esconv:ppdpp_train"), "esconv:ppdpp_test", False, "x")["eval_overlap"] == []


def test_rewards_and_train_grpo_refuse_evaluation_dialogues_before_any_model(tmp_path):
    result = rlff_esc("rewards", "--dataset", "esconv:valid", "--contexts", "40", "--out", str(tmp_path / "dr"),
                      timeout=120)
    assert result.returncode == 2 and "also in the evaluation split esconv:ppdpp_test" in result.stderr
    assert not (tmp_path / "dr").exists()
    result = rlff_esc("train-grpo", "--dataset", "esconv:valid", "--reward-model", "random",
                      "--out", str(tmp_path / "p"), timeout=120)
    assert result.returncode == 2 and "train-grpo:" in result.stderr and "Loading weights" not in result.stderr


@pytest.mark.training
def test_train_rm_checks_the_dialogues_its_reward_data_came_from(tiny_policy, tmp_path):
    out = tmp_path / "rm"
    refused = rlff_esc("train-rm", "--data", str(REWARD_FIXTURE), "--out", str(out), "--eval-split", "esconv:train",
                       *QUICK_RM, timeout=120)
    assert refused.returncode == 2 and "ppdpp_train-148" in refused.stderr and not (out / "model").exists()
    allowed = rlff_esc("train-rm", "--data", str(REWARD_FIXTURE), "--out", str(out), "--eval-split", "esconv:train",
                       "--allow-eval-overlap", "--backbone", str(tiny_policy), *QUICK_RM)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    card = json.loads((out / "reward_model.json").read_text())
    assert card["held_out"]["eval_split"] == "esconv:train" and "ppdpp_train-148" in card["held_out"]["eval_overlap"]
