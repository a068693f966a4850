"""bias: persona files are labelled by their stem, and each condition's SR carries a Wilson
interval that stays open at SR = 1 on few cases, in bias.json, the printed table and the report."""

import json

import pytest

from esc_agents.evaluation.bias import Condition, bias_report, format_bias
from tests.conftest import rlff_esc
from tests.test_viewer import episode, score, simulate_folder


def test_persona_files_are_named_by_their_stem():
    assert Condition("my/personas/angry.yaml", None, None, 0).label == "angry_seed0"
    assert Condition("resistant", "vllm", "openai", 1).label == "resistant_user-vllm_critic-openai_seed1"


def test_each_condition_has_a_wilson_interval_that_stays_open_at_sr_one(tmp_path):
    cases = [f"c{i}" for i in range(10)]
    conditions = {Condition("cooperative", None, None, 0): [True] * 10,
                  Condition("persona/resistant.yaml", None, None, 0): [True] * 4 + [False] * 6}
    runs = {}
    for condition, outcomes in conditions.items():
        runs[condition] = simulate_folder(tmp_path / "bias" / condition.label, [
            episode(case, [score([1.0] if won else [-1.0])], won) for case, won in zip(cases, outcomes)])
    report = bias_report(runs, tmp_path / "bias")
    saved = json.loads((tmp_path / "bias" / "bias.json").read_text())["conditions"]
    assert list(saved) == ["cooperative_seed0", "resistant_seed0"]
    low, high = saved["cooperative_seed0"]["success_rate_wilson95"]
    assert saved["cooperative_seed0"]["success_rate"] == 1.0 and high == 1.0 and low == pytest.approx(0.7225, abs=1e-3)
    assert saved["resistant_seed0"]["success_rate_wilson95"] == pytest.approx([0.1682, 0.6873], abs=1e-3)
    assert "[0.72, 1.00]" in format_bias(report)
    out = tmp_path / "report.html"
    assert rlff_esc("report", str(tmp_path / "bias"), "--out", str(out), timeout=120).returncode == 0
    html = out.read_text()
    assert "<td>[0.722, 1.000]</td>" in html and '"kind":"bias"' in html
