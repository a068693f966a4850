"""What the evaluation tables say about their own numbers: intervals that depend on the cases
alone, sign-flip p-values that say how they were computed, the counts each row rests on, who won
the discordant cases, display names for rows, what a bias table pools over, usage one unit a
column, and the share of distinct bigrams that shows a supporter collapsing onto a template."""

import itertools
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from esc_agents.cli.outcome import print_usage
from esc_agents.evaluation.bias import bias_report, format_bias
from esc_agents.evaluation.compare import compare_runs, format_comparison
from esc_agents.evaluation.judge import summarize_judgments
from esc_agents.evaluation.latex import write_latex
from esc_agents.evaluation.metrics import bootstrap_ci, format_p, run_summary
from esc_agents.evaluation.paired import SIGN_FLIPS, paired_bootstrap
from esc_agents.evaluation.viewer import load_folder
from esc_agents.models.completion import Completion
from esc_agents.models.metering import UsageMeter
from tests.conftest import REWARD_FIXTURE, rlff_esc
from tests.test_bias_report import persona_study
from training.futures.export import format_stats, stats

T = 8


def episode(case: str, *, success: bool, turns: int, final: float | None, replies: list[str] | None = None,
            status: str | None = None) -> dict:
    """A trajectory as simulate writes it; `replies`: the supporter's turns (default: one per turn)."""
    replies = [f"reply {i} to {case}" for i in range(turns)] if replies is None else replies
    messages = [{"speaker": "seeker", "content": f"situation of {case}"}]
    for reply in replies:
        messages += [{"speaker": "supporter", "content": reply, "raw": reply},
                     {"speaker": "seeker", "content": "an answer", "raw": "an answer"}]
    scores = [] if final is None else [{"samples": [final], "verdicts": ["feels better"], "invalid": [],
                                        "mean": final}]
    return {"case_id": case, "emotion": "sadness", "problem": "job", "success": success, "turns": turns,
            "final_score": final, "scores": scores, "messages": messages,
            "status": status or ("success" if success else "max_turns")}


def run_folder(folder: Path, episodes: list[dict], config: dict | None = None) -> Path:
    """A simulate run folder holding `episodes` in the order given (the order they finished)."""
    folder.mkdir(parents=True)
    fingerprint = {"dataset": "esconv:ppdpp_test", "seed": 0, "episode": {"max_turns": T},
                   "roles": {"supporter": {"prompt": folder.name}, "user_simulator": {"prompt": "cooperative"},
                             "critic": {"prompt": "default"}}}
    (folder / "run.json").write_text(json.dumps({"fingerprint": fingerprint, **({"config": config} if config else {}),
                                                 "cases": [e["case_id"] for e in episodes]}))
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    return folder


def varied(prefix: str = "", n: int = 40, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [episode(f"c{i:02d}", success=(won := rng.random() < 0.5), turns=rng.randint(1, T) if won else T,
                    final=round(rng.uniform(-1, 1), 2)) for i in range(n)]


# 1. Intervals depend on the cases, not on the order their episodes finished.

def test_intervals_are_the_same_whatever_order_the_episodes_finished_in(tmp_path):
    episodes = varied()
    shuffled = episodes[:]
    random.Random(7).shuffle(shuffled)
    # The fixture can tell: resampled in file order, the same turns give another interval.
    turns = [e["turns"] for e in episodes]
    assert bootstrap_ci(np.array(turns, float)) != bootstrap_ci(np.array([e["turns"] for e in shuffled], float))

    first, second = run_folder(tmp_path / "a" / "think", episodes), run_folder(tmp_path / "b" / "think", shuffled)
    for key in ("average_turns_ci95", "mean_final_score_ci95", "success_rate_ci95"):
        assert run_summary(first)[key] == run_summary(second)[key], key

    other = [{**e, "turns": T + 0, "success": False} if i % 3 == 0 else e for i, e in enumerate(varied(seed=2))]
    vanilla_a, vanilla_b = run_folder(tmp_path / "a" / "vanilla", other), run_folder(tmp_path / "b" / "vanilla",
                                                                                      other[::-1])
    a = compare_runs({"think": first, "vanilla": vanilla_a}, tmp_path / "cmp-a")
    b = compare_runs({"think": second, "vanilla": vanilla_b}, tmp_path / "cmp-b")
    assert a["summaries"]["think"]["average_turns_ci95"] == b["summaries"]["think"]["average_turns_ci95"]
    assert a["pairs"] == b["pairs"]

    # The judge's win-rate interval too.
    judgments = [{"case_id": e["case_id"], "a": "think", "b": "vanilla", "first_order": {}, "second_order": {},
                  "outcome": {"overall": ["win", "tie", "loss"][i % 3 if i % 5 else 0]}} for i, e in enumerate(episodes)]
    intervals = []
    for name, order in (("j1", judgments), ("j2", judgments[::-1])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "judgments.jsonl").write_text("".join(json.dumps(j) + "\n" for j in order))
        intervals.append(summarize_judgments(tmp_path / name, ["overall"])["criteria"]["overall"]["win_rate_ci95"])
    assert intervals[0] == intervals[1]


# 2. The sign-flip test: exact where the sign patterns can be weighed, else with its resolution.

def brute_force_p(differences: np.ndarray) -> float:
    """Every sign pattern of the nonzero differences, one by one."""
    nonzero = differences[differences != 0]
    patterns = np.array(list(itertools.product([-1.0, 1.0], repeat=len(nonzero))))
    return float(np.mean(np.abs(patterns @ np.abs(nonzero)) >= abs(nonzero.sum()) - 1e-12))


def test_the_sign_flip_test_is_exact_on_up_to_twenty_nonzero_differences():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.4, 1.0, 16), rng.normal(0.0, 1.0, 16)  # 16 distinct real differences: 65,536 patterns
    result = paired_bootstrap(a, b)
    assert result["p_method"] == "exact" and result["p_flips"] is None
    assert result["p_value"] == pytest.approx(brute_force_p(a - b), rel=1e-9)


def test_turn_differences_on_many_cases_are_exact_too():
    """130 cases whose turns differ by 2 in 25 of them: far beyond 2^20 patterns, yet the sums take
    few values, and the exact test is the binomial one."""
    a = np.full(130, 4.0)
    b = a.copy()
    b[:18] += 2
    b[18:25] -= 2
    result = paired_bootstrap(a, b)
    assert result["p_method"] == "exact"
    assert result["p_value"] == pytest.approx(scipy_stats.binomtest(18, 25, 0.5).pvalue, rel=1e-9)


def test_a_monte_carlo_p_value_says_so_and_is_never_printed_below_its_resolution():
    differences = np.random.default_rng(5).uniform(0.5, 1.5, 30)  # all one way, 30 distinct values
    coarse = paired_bootstrap(differences, np.zeros(30), flips=1000)
    assert coarse["p_method"] == "monte carlo, 1000 flips, resolution 1/1000" and coarse["p_flips"] == 1000
    assert coarse["p_value"] == pytest.approx(1 / 1001)  # no flip as extreme: the observed one counts
    assert format_p(coarse["p_value"], coarse["p_flips"]) == "≤ 0.001"
    assert "< 0.001" not in format_p(coarse["p_value"], coarse["p_flips"], method=True)
    assert format_p(coarse["p_value"], coarse["p_flips"], method=True).endswith(
        "(monte carlo, 1000 flips, resolution 1/1000)")
    fine = paired_bootstrap(differences, np.zeros(30))
    assert fine["p_flips"] == SIGN_FLIPS and format_p(fine["p_value"], fine["p_flips"]) == "< 0.001"
    assert format_p(0.0004) == "< 0.001" and format_p(0.2, None, method=True) == "= 0.200 (exact)"


# 3. and 4. The counts each row rests on, and who won the discordant cases.

def silent_study(tmp_path: Path) -> dict[str, Path]:
    """30 cases: `think` gave no usable reply in 8 (at its first turn: no verdict, no final score) and
    scored 1.0 elsewhere; `vanilla` replied every time. Of the discordant cases think won 5, vanilla 4."""
    think, vanilla = [], []
    for i in range(30):
        case = f"c{i:02d}"
        if i < 8:
            think.append(episode(case, success=False, turns=1, final=None, replies=[], status="no_reply"))
        else:
            think.append(episode(case, success=8 <= i < 13 or i >= 20, turns=2 if (8 <= i < 13 or i >= 20) else T,
                                 final=1.0))
        vanilla_won = 13 <= i < 17 or i >= 20
        vanilla.append(episode(case, success=vanilla_won, turns=3 if vanilla_won else T, final=0.2))
    return {"think": run_folder(tmp_path / "think", think), "vanilla": run_folder(tmp_path / "vanilla", vanilla)}


def test_each_row_shows_its_no_reply_count_and_final_n_and_a_difference_is_warned_of(tmp_path):
    runs = silent_study(tmp_path)
    report = compare_runs(runs, tmp_path / "cmp")
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    think, vanilla = saved["summaries"]["think"], saved["summaries"]["vanilla"]
    assert (think["no_reply"], think["final_score_cases"]) == (8, 22)
    assert (vanilla["no_reply"], vanilla["final_score_cases"]) == (0, 30)
    assert think["mean_final_score"] == 1.0  # over 22 episodes, not 30: the warning says so
    assert any("no usable reply" in w and "think 8" in w and "vanilla 0" in w for w in saved["warnings"])
    assert any("n of the mean final score" in w and "think 22" in w and "vanilla 30" in w for w in saved["warnings"])
    printed = format_comparison(report)
    header, think_row = printed.splitlines()[1], next(line for line in printed.splitlines() if line.startswith("think "))
    assert "n final" in header and "no reply" in header
    assert think_row.split()[8:10] == ["22", "8"]  # after SR, its interval, AT, its interval, final
    assert "warning: episodes with a verdict (the n of the mean final score) differ between rows" in printed

    html_out = tmp_path / "report.html"
    result = rlff_esc("report", str(tmp_path / "cmp"), "--out", str(html_out), "--latex", str(tmp_path / "tex"),
                      timeout=120)
    assert result.returncode == 0, result.stderr
    html = html_out.read_text()
    assert "<th>episodes with a verdict</th><th>no reply</th>" in html
    assert "<td>1.000</td><td>22</td><td>8</td>" in html
    assert "warning: episodes ended by a supporter with no usable reply (each a failure) differ" in html
    caption = (tmp_path / "tex" / "cmp-sr-at.tex").read_text().split("\\caption{", 1)[1]
    assert "Warning: episodes with a verdict (the n of the mean final score) differ between rows: think 22" in caption


def test_rows_of_an_older_compare_json_get_the_warning_in_the_report(tmp_path):
    """A compare.json written before the counts were warned of still reads, and warns."""
    compare_runs(silent_study(tmp_path), tmp_path / "cmp")
    path = tmp_path / "cmp" / "compare.json"
    old = json.loads(path.read_text())
    old["warnings"] = []
    for tests in old["pairs"].values():
        del tests["supporters"], tests["success"]["won"], tests["turns"]["p_method"], tests["turns"]["p_flips"]
    for summary in old["summaries"].values():
        del summary["distinct_bigrams"]
    path.write_text(json.dumps(old))
    assert "McNemar: think won 5, vanilla won 4" in format_comparison(old)
    result = rlff_esc("report", str(tmp_path / "cmp"), "--out", str(tmp_path / "r.html"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "differ between rows: think 8, vanilla 0" in (tmp_path / "r.html").read_text()


def test_mcnemar_says_which_supporter_won_which_discordant_cases(tmp_path):
    report = compare_runs(silent_study(tmp_path), tmp_path / "cmp")
    pair = json.loads((tmp_path / "cmp" / "compare.json").read_text())["pairs"]["think vs vanilla"]
    assert pair["supporters"] == ["think", "vanilla"] and pair["success"]["won"] == {"think": 5, "vanilla": 4}
    printed = format_comparison(report)
    assert "think vs vanilla: McNemar: think won 5, vanilla won 4 of the discordant cases" in printed
    assert f"sign-flip p {format_p(pair['turns']['p_value'])} (exact)" in printed


# 5. Display names for rows.

def test_labels_name_the_rows_of_compare_and_report_and_the_folders_keep_theirs(tmp_path):
    runs = silent_study(tmp_path)
    report = compare_runs({"warm.yaml-alt": runs["think"], "vanilla": runs["vanilla"]}, tmp_path / "cmp",
                          labels={"warm.yaml-alt": "Warm"})
    assert list(report["summaries"]) == ["Warm", "vanilla"] and list(report["pairs"]) == ["Warm vs vanilla"]
    assert report["runs"]["Warm"] == str(runs["think"])
    assert report["pairs"]["Warm vs vanilla"]["success"]["won"] == {"Warm": 5, "vanilla": 4}
    assert set(report["by_emotion"]["sadness"]["supporters"]) == {"Warm", "vanilla"}
    assert any("Warm 8" in w for w in report["warnings"]) and "warm.yaml-alt" not in format_comparison(report)

    out = tmp_path / "r.html"
    result = rlff_esc("report", str(tmp_path / "cmp"), "--out", str(out), "--latex", str(tmp_path / "tex"),
                      "--labels", "vanilla=Vanilla,cmp=Main comparison", timeout=120)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "<h2>Main comparison</h2>" in html and "<td>Vanilla</td>" in html and "<td>vanilla</td>" not in html
    assert "Warm vs Vanilla" in (tmp_path / "tex" / "cmp-pairs.tex").read_text()


def test_an_unknown_label_is_one_line_and_exit_2_before_any_work(tmp_path):
    runs = silent_study(tmp_path)
    result = rlff_esc("compare", "--runs", str(runs["think"]), str(runs["vanilla"]), "--out", str(tmp_path / "cmp"),
                      "--labels", "thinkk=Think", timeout=120)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "--labels: thinkk names no row" in result.stderr and not (tmp_path / "cmp").exists()
    # Supporters to run: refused before any run folder is made (no model is called offline either).
    result = rlff_esc("compare", "--supporters", "vanilla,think", "--offline", "--cache", str(tmp_path / "c.sqlite"),
                      "--out", str(tmp_path / "new"), "--labels", "strategy=S", timeout=120)
    assert result.returncode == 2 and "--labels: strategy names no row" in result.stderr, result.stderr
    assert not (tmp_path / "new" / "vanilla").exists()
    result = rlff_esc("bias", "--personas", "cooperative,guarded", "--offline", "--cache", str(tmp_path / "c.sqlite"),
                      "--out", str(tmp_path / "bias"), "--labels", "resistant=R", timeout=120)
    assert result.returncode == 2 and "--labels: resistant names no row" in result.stderr, result.stderr
    assert not (tmp_path / "bias" / "cooperative_seed0").exists()
    result = rlff_esc("report", str(runs["think"]), "--out", str(tmp_path / "r.html"), "--labels", "x=y", timeout=120)
    assert result.returncode == 2 and "--labels: x names no row" in result.stderr
    assert not (tmp_path / "r.html").exists()
    result = rlff_esc("report", str(runs["think"]), "--out", str(tmp_path / "r.html"), "--labels", "think", timeout=120)
    assert result.returncode == 2 and "'think' is not ROW=NAME" in result.stderr


def test_bias_labels_name_conditions_and_levels(tmp_path):
    runs = persona_study(tmp_path / "bias", {("cooperative", None, 0): [True] * 6,
                                             ("my/personas/warm.yaml", None, 0): [True, False] * 3})
    report = bias_report(runs, tmp_path / "bias", labels={"warm": "Warm", "cooperative_seed0": "Cooperative (seed 0)"})
    assert list(report["conditions"]) == ["Cooperative (seed 0)", "warm_seed0"]
    assert report["reference"] == "Cooperative (seed 0)"
    assert list(report["factors"]["persona"]["levels"]) == ["cooperative", "Warm"]
    assert set(report["examples"]) == {"cooperative", "Warm"}
    assert "Warm|" in next(key for key in report["seed_spread"] if key.startswith("Warm"))
    # The renamed conditions' folders are still found, by the viewer too.
    assert report["runs"]["Cooperative (seed 0)"] == str(tmp_path / "bias" / "cooperative_seed0")
    assert len(load_folder(tmp_path / "bias")["columns"]) == 2


# 6. What a bias table pools over, and one name for each model.

def test_bias_names_the_critic_model_used_alike_everywhere_and_says_what_it_pools_over(tmp_path):
    runs = persona_study(tmp_path / "bias", {
        ("cooperative", None, 0): [True] * 8 + [False] * 2, ("cooperative", None, 1): [True] * 7 + [False] * 3,
        ("cooperative", "vllm", 0): [True] * 8 + [False] * 2, ("cooperative", "vllm", 1): [True] * 8 + [False] * 2,
        ("resistant", None, 0): [True] * 2 + [False] * 8, ("resistant", None, 1): [False] * 10,
        ("resistant", "vllm", 0): [True] * 2 + [False] * 8, ("resistant", "vllm", 1): [True] * 2 + [False] * 8})
    for condition, folder in runs.items():  # as simulate records it: the resolved config, endpoints named
        run = json.loads((folder / "run.json").read_text())
        run["config"] = {"user_simulator": {"endpoint": condition.user_model or "local", "prompt": condition.persona},
                         "critic": {"endpoint": "openai", "prompt": "default"}}
        (folder / "run.json").write_text(json.dumps(run))
    report = bias_report(runs, tmp_path / "bias")
    row = report["conditions"]["cooperative_seed0"]
    assert (row["user_model"], row["critic_model"]) == ("local", "openai")
    assert "cooperative|local|openai" in report["seed_spread"] and "cooperative|openai" in report[
        "pooled_over_user_models"]
    assert list(report["factors"]["user_model"]["levels"]) == ["local", "vllm"]
    assert report["factors"]["persona"]["pooled_over"] == ["seeds", "user models"]
    printed = format_bias(report)
    assert "persona effect, pooled over seeds and user models (shift against cooperative" in printed
    assert "user model effect, pooled over seeds and personas" in printed
    assert "pooled over user models and seeds cooperative|openai" in printed
    assert "pooled over seeds and the other factors" not in printed
    written = write_latex([tmp_path / "bias"], tmp_path / "tex")
    assert "The persona effect, pooled over seeds and user models:" in (tmp_path / "tex" / "bias-persona.tex").read_text()
    assert len(written) == 3


# 7. Usage: one unit per column.

def test_usage_counts_requests_and_samples_apart(capsys):
    meter = UsageMeter()
    meter.record("critic", [Completion(str(i), 10, 2) for i in range(10)], 1)  # one request, n = 10
    meter.record("critic", [Completion("x", cached=True), Completion("y", cached=True)], 0)  # the cache, whole
    meter.record("critic", [Completion("z", cached=True), Completion("w", 10, 2)], 1)  # half from the cache
    usage = meter.as_dict()["critic"]
    assert (usage["calls"], usage["samples"], usage["cached"], usage["cached_calls"]) == (2, 11, 3, 1)
    print_usage(meter)
    line = capsys.readouterr().out
    assert "requests      2" in line and "samples     11 fresh      3 cached" in line and "calls" not in line


def test_rewards_stats_give_llm_calls_per_record_with_and_without_cache_hits(tmp_path):
    folder = tmp_path / "dr"
    shutil.copytree(REWARD_FIXTURE, folder)
    records = sum(1 for line in (folder / "records.jsonl").read_text().splitlines() if line.strip())
    usage = {"critic": {"calls": 3 * records, "cached": 40, "samples": 30 * records, "cached_calls": records,
                        "prompt_tokens": 1, "completion_tokens": 1},
             "user_simulator": {"calls": records, "cached": 0, "samples": records, "cached_calls": 0,
                                "prompt_tokens": 1, "completion_tokens": 1}}
    (folder / "usage.jsonl").write_text(json.dumps(usage) + "\n")
    summary = stats(folder)
    assert summary["llm_calls_per_record"] == 4.0 and summary["llm_calls_per_record_with_cache"] == 5.0
    assert "LLM calls/record 4.0 sent, 5.0 counting cache hits" in format_stats(summary)
    # usage from before calls answered by the cache were counted: that figure is unknown, not 4.0
    del usage["critic"]["cached_calls"]
    (folder / "usage.jsonl").write_text(json.dumps(usage) + "\n")
    assert stats(folder)["llm_calls_per_record_with_cache"] is None


# 8. The share of distinct bigrams.

def test_every_comparison_reports_the_share_of_distinct_bigrams_of_each_supporters_replies(tmp_path):
    cases = [f"c{i}" for i in range(6)]
    template = "I hear you. That sounds really hard."
    stuck = run_folder(tmp_path / "stuck", [episode(c, success=False, turns=2, final=0.0, replies=[template] * 2)
                                            for c in cases])
    lively = run_folder(tmp_path / "lively", [  # no bigram twice
        episode(c, success=False, turns=2, final=0.0, replies=[f"so {c} then {c}x", f"and {c}y more {c}z"])
        for c in cases])
    report = compare_runs({"stuck": stuck, "lively": lively}, tmp_path / "cmp")
    shares = {label: s["distinct_bigrams"] for label, s in report["summaries"].items()}
    # "i hear you that sounds really hard": 6 bigrams, the same 6 in all 12 replies
    assert shares["stuck"] == {"distinct": 6, "total": 72, "share": 6 / 72}
    assert shares["lively"] == {"distinct": 36, "total": 36, "share": 1.0}
    printed = format_comparison(report)
    assert "dist-2" in printed.splitlines()[1]
    assert printed.splitlines()[1].split()[-2:] == ["dist-2", "forged"]
    assert next(line for line in printed.splitlines() if line.startswith("stuck ")).split()[-2:] == [f"{6 / 72:.3f}", "0"]
    out = tmp_path / "r.html"
    assert rlff_esc("report", str(tmp_path / "cmp"), "--out", str(out), timeout=120).returncode == 0
    assert "<th>distinct bigrams</th>" in out.read_text() and f"<td>{6 / 72:.3f}</td>" in out.read_text()
