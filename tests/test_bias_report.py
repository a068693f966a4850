"""bias: persona files are labelled by their stem, and each condition's SR carries a Wilson
interval that stays open at SR = 1 on few cases, in bias.json, the printed table and the report."""

import json

import pytest

from esc_agents.evaluation.bias import Condition, bias_report, format_bias
from esc_agents.evaluation.intervals import wilson_interval
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


def persona_study(root, outcomes):
    """Bias folders for {(persona, user model, seed): [success per case]}, each run recording its
    persona prompt text as simulate does."""
    cases = [f"c{i}" for i in range(len(next(iter(outcomes.values()))))]
    runs = {}
    for (persona, user_model, seed), wins in outcomes.items():
        condition = Condition(persona, user_model, None, seed)
        folder = simulate_folder(root / condition.label, [
            episode(case, [score([1.0] if won else [-1.0])], won) for case, won in zip(cases, wins)])
        run = json.loads((folder / "run.json").read_text())
        trust = "low" if "resistant" in persona else "high"
        run["prompt_texts"] = {"user_simulator": f"description: a {trust}-trust seeker\naxes:\n  trust: {trust}\n"
                                                 f"  emotional_activation: medium\nsystem: You feel {{emotion}}.\n"}
        (folder / "run.json").write_text(json.dumps(run))
        runs[condition] = folder
    return runs


def test_persona_and_user_model_effects_pooled_over_seeds_in_bias_json_and_the_report(tmp_path):
    good, bad = [True] * 8 + [False] * 2, [True] * 2 + [False] * 8
    runs = persona_study(tmp_path / "bias", {
        ("cooperative", None, 0): good, ("cooperative", None, 1): [True] * 7 + [False] * 3,
        ("cooperative", "vllm", 0): good, ("cooperative", "vllm", 1): good,
        ("study/personas/resistant.yaml", None, 0): bad, ("study/personas/resistant.yaml", None, 1): [False] * 10,
        ("study/personas/resistant.yaml", "vllm", 0): bad, ("study/personas/resistant.yaml", "vllm", 1): bad})
    report = bias_report(runs, tmp_path / "bias")
    saved = json.loads((tmp_path / "bias" / "bias.json").read_text())
    assert set(saved["factors"]) == {"persona", "user_model"}  # the critic model does not vary
    persona = saved["factors"]["persona"]
    assert persona["reference"] == "cooperative" and list(persona["levels"]) == ["cooperative", "resistant"]
    resistant = persona["levels"]["resistant"]
    assert resistant["runs"] == 4 and resistant["episodes"] == 40
    assert resistant["success_rate"] == pytest.approx(6 / 40)
    # Over the 10 cases (each case's rate over its 4 runs), not 40 episodes as if independent.
    assert resistant["success_rate_wilson95"] == pytest.approx(wilson_interval(6 / 4, 10))
    assert resistant["success_rate_wilson95"][1] - resistant["success_rate_wilson95"][0] > \
        wilson_interval(6, 40)[1] - wilson_interval(6, 40)[0]
    cooperative_rate = (8 + 7 + 8 + 8) / 40
    assert resistant["sr_shift"] == pytest.approx(6 / 40 - cooperative_rate)
    low, high = resistant["sr_shift_ci95"]
    assert low < resistant["sr_shift"] < high < 0 and resistant["sr_shift_p"] < 0.05
    assert list(saved["factors"]["user_model"]["levels"]) == ["default", "vllm"]

    spread = saved["seed_spread"]["cooperative|default|default"]
    assert spread["sr_by_seed"] == {"0": 0.8, "1": 0.7} and (spread["sr_min"], spread["sr_max"]) == (0.7, 0.8)
    assert spread["sr_std"] == pytest.approx(0.0707, abs=1e-3)
    assert saved["personas"]["resistant"] == {"given": "study/personas/resistant.yaml",
                                              "description": "a low-trust seeker",
                                              "axes": {"trust": "low", "emotional_activation": "medium"}}
    # one dialogue per persona, on the first case whose outcome differs between them (c2)
    examples = saved["examples"]
    assert set(examples) == {"cooperative", "resistant"}
    assert {e["case_id"] for e in examples.values()} == {"c2"}
    assert examples["cooperative"]["success"] and not examples["resistant"]["success"]
    assert examples["resistant"]["messages"][0] == {"speaker": "seeker", "content": "situation of c2"}
    printed = format_bias(report)
    assert "resistant" in printed and "study/personas" not in printed

    out = tmp_path / "report.html"
    result = rlff_esc("report", str(tmp_path / "bias"), "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    # The persona table pools over seeds and user models too, and its heading says so.
    section = html.split("<h4>persona effect, pooled over seeds and user models</h4>", 1)[1].split("</table>", 1)[0]
    assert (f"<tr><td>resistant</td><td>4</td><td>40</td><td>0.150</td><td>[{wilson_interval(6 / 4, 10)[0]:.3f}, "
            f"{wilson_interval(6 / 4, 10)[1]:.3f}]</td>") in section
    p_text = "&lt; 0.001" if resistant["sr_shift_p"] < 0.001 else f"{resistant['sr_shift_p']:.3f}"
    assert (f"<td>{resistant['sr_shift']:.3f}</td><td>[{low:.3f}, {high:.3f}]</td><td>{p_text}</td></tr>"
            in section)
    assert "<tr><td>cooperative</td><td>4</td><td>40</td><td>0.775</td>" in section and "<td>reference</td>" in section
    assert "<h4>user model effect, pooled over seeds and personas</h4>" in html
    spread_table = html.split("<h4>spread over seeds</h4>", 1)[1].split("</table>", 1)[0]
    assert "<tr><td>cooperative</td><td>default</td><td>default</td><td>2</td><td>0: 0.800, 1: 0.700</td>" in spread_table
    personas = html.split("<h4>personas</h4>", 1)[1].split("</table>", 1)[0]
    assert "<th>emotional activation</th><th>trust</th>" in personas
    assert "<tr><td>resistant</td><td>medium</td><td>low</td>" in personas
    dialogues = html.split("<h4>one dialogue per persona</h4>", 1)[1].split("</section>", 1)[0]
    assert dialogues.count('<details class="bias-example" open>') == 2
    assert "<summary>resistant</summary>" in dialogues and "situation of c2" in dialogues


def test_a_case_one_condition_did_not_finish_is_left_out_of_all_and_said_so(tmp_path):
    runs = persona_study(tmp_path / "bias", {("cooperative", None, 0): [True] * 6,
                                             ("resistant", None, 0): [True, False, True, False, True, True]})
    resistant = runs[Condition("resistant", None, None, 0)] / "trajectories.jsonl"
    lines = resistant.read_text().splitlines(keepends=True)
    resistant.write_text("".join(lines[:4]))  # c4 and c5 failed under resistant
    for folder in runs.values():  # and c6 under both: no condition finished it, so only run.json names it
        run = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**run, "cases": [f"c{i}" for i in range(7)]}))
    report = bias_report(runs, tmp_path / "bias")
    assert report["cases"] == 4 and report["left_out_cases"] == ["c4", "c5", "c6"]
    assert report["conditions"]["cooperative_seed0"]["success_rate"] == 1.0
    assert report["conditions"]["resistant_seed0"]["success_rate"] == 0.5
    assert report["warnings"] == [
        "c6 did not finish under cooperative_seed0: left out of every condition (rerun the same command to retry them)",
        "c4, c5, c6 did not finish under resistant_seed0: left out of every condition (rerun the same command to "
        "retry them)"]
    assert json.loads((tmp_path / "bias" / "bias.json").read_text())["warnings"] == report["warnings"]
    assert format_bias(report).startswith("warning: c6 did not finish under cooperative_seed0")
    out = tmp_path / "report.html"
    assert rlff_esc("report", str(tmp_path / "bias"), "--out", str(out), timeout=120).returncode == 0
    assert "warning: c4, c5, c6 did not finish under resistant_seed0" in out.read_text()
