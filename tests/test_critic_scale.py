"""A critic's own scale decides what eta and delta may be, checked before any model call; run.json
keeps the prompts' full texts."""

import json

import pytest

from esc_agents.config import build_config
from esc_agents.core.errors import UserError
from esc_agents.prompts import load_prompt
from esc_agents.runs import RunRecord, record_run
from tests.conftest import rlff_esc
from training.futures.formulas import checked_formula

FIVE_POINT_CRITIC = """\
description: rates the seeker's state from 1 (much worse) to 5 (resolved)
system: You rate conversations.
user: "{conversation}\\nRate 1-5:"
verdicts:
  - {label: "1", score: 1, patterns: ["^\\\\W*1"]}
  - {label: "2", score: 2, patterns: ["^\\\\W*2"]}
  - {label: "3", score: 3, patterns: ["^\\\\W*3"]}
  - {label: "4", score: 4, patterns: ["^\\\\W*4"]}
  - {label: "5", score: 5, patterns: ["^\\\\W*5"]}
"""


@pytest.fixture
def five_point_critic(tmp_path):
    path = tmp_path / "five.yaml"
    path.write_text(FIVE_POINT_CRITIC)
    return path


def test_a_critic_whose_scores_all_lie_above_eta_is_refused_before_any_call(five_point_critic, tmp_path):
    out = tmp_path / "run"
    result = rlff_esc("simulate", "--critic-prompt", str(five_point_critic), "--limit", "1", "--out", str(out),
                      timeout=120)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "scores verdicts in [1, 5]" in line and "eta = 0.5" in line
    assert not out.exists()  # nothing written, no server started


def test_eta_inside_the_critics_range_is_accepted(five_point_critic):
    critic = load_prompt("critic", str(five_point_critic))
    assert critic.score_range == (1.0, 5.0)
    critic.check_success_threshold(3.5)
    with pytest.raises(UserError, match=r"must lie in \[1, 5\)"):
        critic.check_success_threshold(5.0)  # a mean above 5 never happens: no episode could succeed
    load_prompt("critic", "default").check_success_threshold(0.5)


def test_delta_must_fit_the_formula_on_the_critics_scale(five_point_critic, tmp_path):
    with pytest.raises(UserError, match=r"range \[1, 5\) of formula 'terminal' with critic scores in \[1, 5\]"):
        checked_formula("terminal", None, 0.5, 8, (1.0, 5.0))
    _, params = checked_formula("terminal_efficiency", None, 5.2, 8, (1.0, 5.0))  # up to 5 + lambda (T-1)/T
    result = rlff_esc("rewards", "--critic-prompt", str(five_point_critic), "--success-threshold", "3",
                      "--contexts", "1", "--out", str(tmp_path / "dr"), timeout=120)
    assert result.returncode == 2 and "delta 0.5 is outside the range [1, 5.4375)" in result.stderr


def test_run_json_keeps_the_prompts_full_texts(five_point_critic, tmp_path):
    config = build_config(None, {"critic": {"prompt": str(five_point_critic)}, "episode": {"success_threshold": 3}})
    prompts = {"supporter": load_prompt("supporter", "vanilla"), "user_simulator": load_prompt("user_simulator",
               "cooperative"), "critic": load_prompt("critic", str(five_point_critic))}
    record_run(tmp_path / "run", RunRecord.new(config, prompts, "esconv:ppdpp_test", cases=["a"]))
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["prompt_texts"]["critic"] == FIVE_POINT_CRITIC
    assert record["prompt_texts"]["supporter"] == prompts["supporter"].path.read_text()
    assert record["critic_range"] == [1.0, 5.0] and record["cases"] == ["a"]
    record_run(tmp_path / "run", RunRecord.new(config, prompts, "esconv:ppdpp_test", cases=["a", "b"]))  # a resume with more
    assert json.loads((tmp_path / "run" / "run.json").read_text())["cases"] == ["a", "b"]
