"""`compare`: paired tests on hand-computed tables, refusal of runs that differ, and two prompt
baselines run on the same cases against the real local server."""

import json
from pathlib import Path

import pytest

from esc_agents.core.errors import UserError
from esc_agents.evaluation.compare import compare_runs, format_comparison, supporter_binding
from esc_agents.evaluation.intervals import wilson_interval
from esc_agents.evaluation.paired import mcnemar, paired_bootstrap
from tests.conftest import read_jsonl, rlff_esc


def test_mcnemar_counts_only_discordant_cases():
    a = [True, True, True, True, True, False, False]
    b = [True, False, False, False, False, False, True]
    result = mcnemar(a, b)
    assert (result["a_only"], result["b_only"]) == (4, 1)
    # exact two-sided binomial, 4 of 5 at p = 1/2: (1 + 5 + 5 + 1) / 32
    assert result["p_value"] == pytest.approx(12 / 32)
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0


@pytest.mark.parametrize("wins", [4, 5, 8, 15])
def test_the_paired_p_value_on_success_outcomes_is_exact_mcnemar_not_the_bootstraps(wins):
    """130 cases, A alone succeeds on `wins` of them: a bootstrap read as a test said p = 0.04 for
    4 wins, where the exact test says 0.125."""
    a = [True] * wins + [False] * (130 - wins)
    b = [False] * 130
    assert paired_bootstrap(a, b)["p_value"] == pytest.approx(mcnemar(a, b)["p_value"])
    mixed = [False] * wins + [True] * 3 + [False] * (127 - wins)  # discordant both ways, up to 18 of them
    assert paired_bootstrap(a, mixed)["p_value"] == pytest.approx(mcnemar(a, mixed)["p_value"])


def test_paired_bootstrap_centres_on_the_mean_difference():
    result = paired_bootstrap([3, 4, 5, 6], [2, 3, 4, 5])
    # Four cases, all one way: the exact sign-flip test gives 2 / 2^4, however narrow the interval.
    assert result["mean_difference"] == 1.0 and result["ci95"] == [1.0, 1.0] and result["p_value"] == 0.125
    noisy = paired_bootstrap([1, 3, 2, 4, 2], [2, 2, 3, 3, 2])
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and noisy["p_value"] > 0.5


def test_supporter_specs_name_a_prompt_an_endpoint_or_a_model_folder(tmp_path):
    assert supporter_binding("think") == ("think", {"supporter": {"prompt": "think"}})
    assert supporter_binding("vanilla@openai")[1] == {"supporter": {"prompt": "vanilla", "endpoint": "openai"}}
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "config.json").write_text("{}")
    label, overrides = supporter_binding(str(tmp_path / "policy"))
    assert label == "policy" and overrides["supporter"] == {"endpoint": "policy", "prompt": "think"}
    assert overrides["endpoints"]["policy"]["embedded"] is True


def fake_run(folder, max_turns, cases, critic="default"):
    folder.mkdir()
    fingerprint = {"dataset": "esconv:ppdpp_test", "seed": 0, "episode": {"max_turns": max_turns},
                   "roles": {"supporter": {"prompt": folder.name}, "user_simulator": {"prompt": "cooperative"},
                             "critic": {"prompt": critic}}}
    (folder / "run.json").write_text(json.dumps({"fingerprint": fingerprint}))
    (folder / "trajectories.jsonl").write_text("".join(json.dumps({
        "case_id": case, "success": case.endswith("1"), "turns": 1, "final_score": 1.0, "scores": [],
        "emotion": "sad", "problem": "job",
        "messages": [{"speaker": "seeker", "content": f"situation of {case}"},
                     {"speaker": "supporter", "content": f"{folder.name} replies to {case}"}]}) + "\n"
        for case in cases))
    return folder


PROMPTS = Path(__file__).resolve().parents[1] / "prompts" / "supporter"


def format_run(folder, prompt_text, episodes):
    """A run whose supporter prompt text is recorded as simulate records it; `episodes`: case id ->
    (emotion, problem, success, raw supporter outputs, one per turn)."""
    folder.mkdir()
    fingerprint = {"dataset": "esconv:ppdpp_test", "seed": 0, "episode": {"max_turns": 3},
                   "roles": {"supporter": {"prompt": folder.name}, "user_simulator": {"prompt": "cooperative"},
                             "critic": {"prompt": "default"}}}
    (folder / "run.json").write_text(json.dumps({"fingerprint": fingerprint, "prompt_texts": {"supporter": prompt_text}}))
    lines = []
    for case, (emotion, problem, success, raws) in episodes.items():
        messages = [{"speaker": "seeker", "content": f"situation of {case}", "raw": None}]
        for raw in raws:
            messages += [{"speaker": "supporter", "content": "a reply", "raw": raw},
                         {"speaker": "seeker", "content": "an answer", "raw": "an answer"}]
        lines.append(json.dumps({"case_id": case, "emotion": emotion, "problem": problem, "success": success,
                                 "turns": len(raws), "final_score": 0.0, "scores": [], "messages": messages}))
    (folder / "trajectories.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_compare_reports_format_compliance_groups_and_open_sr_intervals(tmp_path):
    cases = {"c1": ("Sadness ", "job crisis"), "c2": ("sadness", "breakup"), "c3": ("anger", "job crisis"),
             "c4": ("anger", "job crisis")}
    think = format_run(tmp_path / "think", (PROMPTS / "think.yaml").read_text(), {
        "c1": (*cases["c1"], True, ["<think>she lost her job</think><response>That sounds hard.</response>"]),
        "c2": (*cases["c2"], False, ["<think>plan</think> a reply with no response block",
                                     # the chat template pre-filled <think>: the output starts inside it
                                     "a breakup hurts</think>\n<response>I am here.</response>", "no tags at all"]),
        "c3": (*cases["c3"], False, ["<think></think><response>empty reasoning</response>"]),
        "c4": (*cases["c4"], False, ["<think>a</think><response>b</response><think>again</think>"])})
    strategy = format_run(tmp_path / "strategy", (PROMPTS / "strategy.yaml").read_text(), {
        "c1": (*cases["c1"], False, ["[Question] How long have you worked there?"]),
        "c2": (*cases["c2"], False, ["[reflection of feelings] You feel let down.", "[Cheering up] Smile!"]),
        "c3": (*cases["c3"], False, ["I see."]),
        "c4": (*cases["c4"], False, ["(Strategy: Providing Suggestions) Try a walk."])})
    tagged = ("reply_format: think\nthink_tag: reasoning\nresponse_tag: answer\nsystem: |-\n  Reason, then answer.\n")
    custom = format_run(tmp_path / "custom", tagged, {
        case: (*cases[case], True, ["<reasoning>r</reasoning><answer>a</answer>", "<think>t</think><response>r</response>"])
        for case in cases})
    vanilla = format_run(tmp_path / "vanilla", (PROMPTS / "vanilla.yaml").read_text(),
                         {case: (*cases[case], False, ["Hello."]) for case in cases})
    report = compare_runs({"think": think, "strategy": strategy, "custom": custom, "vanilla": vanilla}, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["format_compliance"] == report["format_compliance"]
    compliance = saved["format_compliance"]
    assert {k: (c["format"], c["followed"], c["replies"]) for k, c in compliance.items() if k != "vanilla"} == {
        "think": ("think", 2, 6), "strategy": ("strategy", 3, 5), "custom": ("think", 4, 8)}
    assert compliance["think"]["rate"] == pytest.approx(2 / 6)
    assert compliance["think"]["rate_ci95"] == pytest.approx(wilson_interval(2, 6))
    assert compliance["vanilla"]["format"] == "plain" and compliance["vanilla"]["rate"] is None
    assert compliance["think"]["episodes_without_reply"] == 0

    # emotions and problems are grouped case-insensitively over the common cases
    assert set(saved["by_emotion"]) == {"sadness", "anger"} and set(saved["by_problem"]) == {"job crisis", "breakup"}
    sadness = saved["by_emotion"]["sadness"]
    assert sadness["cases"] == 2 and sadness["supporters"]["think"]["success_rate"] == 0.5
    assert sadness["supporters"]["think"]["average_turns"] == (1 + 3) / 2  # the failure counts T = 3
    assert saved["by_problem"]["job crisis"]["supporters"]["custom"]["success_rate_ci95"] == pytest.approx(
        wilson_interval(3, 3))

    # SR 0 of 4 and 4 of 4: Wilson intervals, open at the edge (a bootstrap gives [0, 0] and [1, 1])
    low, high = saved["summaries"]["vanilla"]["success_rate_ci95"]
    assert saved["summaries"]["vanilla"]["success_rate"] == 0.0 and low == 0.0 and high == pytest.approx(0.49, abs=0.01)
    low, high = saved["summaries"]["custom"]["success_rate_ci95"]
    assert high == 1.0 and low == pytest.approx(0.51, abs=0.01)
    assert saved["intervals"]["success_rate"] == "wilson"
    printed = format_comparison(report)
    assert "[0.00, 0.49]" in printed and "think: 2 of 6 replies followed the think format" in printed


def test_runs_with_other_settings_or_cases_are_refused_unless_allowed(tmp_path):
    a = fake_run(tmp_path / "a", 2, ["c1", "c2"])
    b = fake_run(tmp_path / "b", 3, ["c1", "c2"], critic="strict")
    c = fake_run(tmp_path / "c", 2, ["c1"])
    with pytest.raises(UserError, match=r"b differs from a in episode.max_turns, roles.critic.prompt"):
        compare_runs({"a": a, "b": b}, tmp_path / "out")
    with pytest.raises(UserError, match="c differs from a in cases"):
        compare_runs({"a": a, "c": c}, tmp_path / "out")
    report = compare_runs({"a": a, "c": c}, tmp_path / "out", allow_mismatch=True)
    assert report["cases"] == 1 and report["warnings"] == ["c differs from a in cases"]


@pytest.fixture(scope="module")
def compared(local_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    result = rlff_esc("compare", "--supporters", "vanilla,think", "--limit", "2", "--max-turns", "1",
                      "--critic-samples", "1", "--concurrency", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out, result


@pytest.mark.server
def test_compare_runs_two_prompt_baselines_on_the_same_cases(compared):
    out, result = compared
    cases = {name: {t["case_id"] for t in read_jsonl(out / name / "trajectories.jsonl")} for name in ("vanilla", "think")}
    assert cases["vanilla"] == cases["think"] and len(cases["think"]) == 2
    report = json.loads((out / "compare.json").read_text())
    assert set(report["summaries"]) == {"vanilla", "think"}
    assert set(report["pairs"]["vanilla vs think"]) == {"supporters", "success", "turns"}
    assert (out / "success_by_turn.png").stat().st_size > 0
    assert "McNemar" in result.stdout


@pytest.mark.server
def test_bias_runs_each_persona_and_reports_the_shift(local_server, tmp_path):
    out = tmp_path / "bias"
    result = rlff_esc("bias", "--personas", "cooperative,guarded", "--limit", "2", "--max-turns", "1",
                      "--critic-samples", "1", "--concurrency", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "bias.json").read_text())
    assert list(report["conditions"]) == ["cooperative_seed0", "guarded_seed0"]
    reference, other = report["conditions"].values()
    assert reference["sr_shift"] == 0.0 and reference["wasserstein"] == 0.0
    assert other["sr_shift"] == pytest.approx(other["success_rate"] - reference["success_rate"])
    assert 0.0 <= other["ks_p_value"] <= 1.0
    fingerprint = json.loads((out / "guarded_seed0" / "run.json").read_text())["fingerprint"]
    assert fingerprint["roles"]["user_simulator"]["prompt"] == "guarded"


@pytest.mark.server
def test_judge_compares_both_orders_with_the_real_server(compared, tmp_path):
    out, _ = compared
    # The 135M judge often misses a criterion line: exit 3 says so unless the limit allows it.
    result = rlff_esc("judge", "--runs", str(out / "vanilla"), str(out / "think"), "--out", str(tmp_path / "j"),
                      "--max-invalid-rate", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    judgments = read_jsonl(tmp_path / "j" / "judgments.jsonl")
    assert {j["case_id"] for j in judgments} <= {t["case_id"] for t in read_jsonl(out / "think" / "trajectories.jsonl")}
    summary = json.loads((tmp_path / "j" / "judge.json").read_text())
    assert set(summary["criteria"]) == {"fluency", "empathy", "identification", "suggestion", "overall"}
    strict = rlff_esc("judge", "--runs", str(out / "vanilla"), str(out / "think"), "--out", str(tmp_path / "j"),
                      "--max-invalid-rate", "0")  # a rerun resumes: nothing is judged again
    assert strict.returncode == (3 if summary["unparsable"] else 0), strict.stderr[-2000:]
    for judgment in judgments:
        assert set(judgment) >= {"first_order", "second_order", "outcome"}
