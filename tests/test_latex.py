"""LaTeX tables: booktabs tables whose numbers are compare.json's, bias.json's and summary.json's,
rounded as printed, with labels escaped."""

import json
import re

import pytest

from esc_agents.core.errors import UserError
from esc_agents.evaluation.bias import bias_report
from esc_agents.evaluation.compare import compare_runs
from esc_agents.evaluation.latex import escape, write_latex
from esc_agents.evaluation.metrics import run_summary
from tests.test_bias_report import persona_study
from tests.conftest import rlff_esc
from tests.test_compare import PROMPTS, format_run
from tests.test_viewer import episode, score, simulate_folder


def rows(tex: str) -> list[list[str]]:
    """The body rows of a booktabs table, cell by cell."""
    body = tex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    return [[cell.strip().replace("$-$", "-") for cell in line.removesuffix(" \\\\").split(" & ")]
            for line in body.strip().splitlines()]


def well_formed(tex: str) -> None:
    for command in ("\\begin{table}", "\\toprule", "\\midrule", "\\bottomrule", "\\end{tabular}", "\\end{table}"):
        assert tex.count(command) == 1, command
    columns = re.search(r"\\begin\{tabular\}\{(lr*)\}", tex).group(1)
    header = tex.split("\\toprule\n", 1)[1].split("\n", 1)[0]
    assert all(len(row) == len(columns) for row in rows(tex) + [header.removesuffix(" \\\\").split(" & ")])
    unescaped = re.sub(r"\\[A-Za-z]+|\\[&%$#_{}]|\{|\}|\$<\$", "", tex.split("\\toprule", 1)[1])
    assert not re.search(r"[_%#]", unescaped), "an unescaped special character"


def interval(bounds, digits=3):
    return f"[{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def test_compare_tables_carry_compare_json_numbers(tmp_path):
    cases = [f"c{i}" for i in range(10)]
    think = format_run(tmp_path / "think_v2", (PROMPTS / "think.yaml").read_text(), {
        case: ("sadness", "job", i < 3, ["<think>t</think><response>r</response>"] if i < 3 else ["x", "y", "z"])
        for i, case in enumerate(cases)})
    vanilla = format_run(tmp_path / "vanilla", (PROMPTS / "vanilla.yaml").read_text(),
                         {case: ("sadness", "job", False, ["a", "b", "c"]) for case in cases})
    compare_runs({"think_v2": think, "vanilla": vanilla}, tmp_path / "cmp 100%")
    saved = json.loads((tmp_path / "cmp 100%" / "compare.json").read_text())
    written = write_latex([tmp_path / "cmp 100%"], tmp_path / "tex")
    assert sorted(p.name for p in written) == ["cmp 100%-format.tex", "cmp 100%-pairs.tex", "cmp 100%-sr-at.tex"]
    for path in written:
        well_formed(path.read_text())

    sr_at = (tmp_path / "tex" / "cmp 100%-sr-at.tex").read_text()
    assert "\\label{tab:cmp-100-sr-at}" in sr_at and "Wilson" in sr_at
    table = {row[0]: row[1:] for row in rows(sr_at)}
    assert set(table) == {"think\\_v2", "vanilla"}  # the label escaped
    for label, summary in saved["summaries"].items():
        assert table[escape(label)] == [f"{summary['success_rate']:.3f}", interval(summary["success_rate_ci95"]),
                                        f"{summary['average_turns']:.2f}", interval(summary["average_turns_ci95"], 2),
                                        f"{summary['mean_final_score']:.3f}", str(summary["final_score_cases"]),
                                        str(summary["no_reply"]), f"{summary['distinct_bigrams']['share']:.3f}"]
    # SR 0 of 10: the Wilson interval, not [0.000, 0.000]
    assert table["vanilla"][:2] == ["0.000", "[0.000, 0.278]"]
    assert "think\\_v2 & 0.300" in sr_at

    pair = saved["pairs"]["think_v2 vs vanilla"]
    assert rows((tmp_path / "tex" / "cmp 100%-pairs.tex").read_text()) == [[
        "think\\_v2 vs vanilla", "3", "0", f"{pair['success']['p_value']:.3f}",
        f"{pair['turns']['mean_difference']:+.2f}", interval(pair["turns"]["ci95"], 2),
        f"{pair['turns']['p_value']:.3f}"]]
    compliance = saved["format_compliance"]["think_v2"]
    assert rows((tmp_path / "tex" / "cmp 100%-format.tex").read_text()) == [[
        "think\\_v2", "think", "24", "3", f"{compliance['rate']:.3f}", interval(compliance["rate_ci95"])]]


def test_bias_tables_carry_bias_json_numbers_and_a_run_its_summary(tmp_path):
    good, bad = [True] * 8 + [False] * 2, [True] * 2 + [False] * 8
    runs = persona_study(tmp_path / "bias", {("cooperative", None, 0): good, ("cooperative", None, 1): good,
                                             ("personas/resistant.yaml", None, 0): bad,
                                             ("personas/resistant.yaml", None, 1): [False] * 10})
    bias_report(runs, tmp_path / "bias")
    saved = json.loads((tmp_path / "bias" / "bias.json").read_text())
    run = next(iter(runs.values()))
    (run / "summary.json").write_text(json.dumps({
        "cases": 10, "max_turns": 2, "success_rate": 1.0, "success_rate_ci95": [0.7225, 1.0], "average_turns": 1.0,
        "average_turns_ci95": [1.0, 1.0], "mean_final_score": None, "mean_final_score_ci95": [None, None]}))
    written = write_latex([tmp_path / "bias", run], tmp_path / "tex")
    assert [p.name for p in written] == ["bias-conditions.tex", "bias-persona.tex", "cooperative_seed0-sr-at.tex"]
    for path in written:
        well_formed(path.read_text())
    conditions = rows((tmp_path / "tex" / "bias-conditions.tex").read_text())
    assert [row[0] for row in conditions] == [escape(label) for label in saved["conditions"]]
    for row, condition in zip(conditions, saved["conditions"].values()):
        assert row[1:] == [f"{condition['success_rate']:.3f}", interval(condition["success_rate_wilson95"]),
                           f"{condition['average_turns']:.2f}", f"{condition['sr_shift']:+.3f}",
                           interval(condition["sr_shift_ci95"]), str(condition["final_score_cases"]),
                           str(condition["no_reply"])]
    persona = rows((tmp_path / "tex" / "bias-persona.tex").read_text())
    levels = saved["factors"]["persona"]["levels"]
    assert persona[0] == ["cooperative", "2", "0.800", interval(levels["cooperative"]["success_rate_wilson95"]),
                          f"{levels['cooperative']['average_turns']:.2f}", "0", "reference", "--", "--"]
    resistant = levels["resistant"]
    p_text = "$<$0.001" if resistant["sr_shift_p"] < 0.001 else f"{resistant['sr_shift_p']:.3f}"
    assert persona[1] == ["resistant", "2", f"{resistant['success_rate']:.3f}",
                          interval(resistant["success_rate_wilson95"]), f"{resistant['average_turns']:.2f}", "0",
                          f"{resistant['sr_shift']:+.3f}", interval(resistant["sr_shift_ci95"]), p_text]
    # The run's summary.json above is stale (written before its last episodes, say): the table
    # follows the trajectories as they are.
    now = run_summary(run)
    assert rows((tmp_path / "tex" / "cooperative_seed0-sr-at.tex").read_text()) == [
        ["cooperative\\_seed0", "10", f"{now['success_rate']:.3f}", interval(now["success_rate_ci95"]),
         f"{now['average_turns']:.2f}", interval(now["average_turns_ci95"], 2), f"{now['mean_final_score']:.3f}",
         str(now["final_score_cases"]), str(now["no_reply"])]]
    assert now["success_rate"] == 0.8


def test_an_incomplete_run_says_so_in_its_latex_caption_and_its_report(tmp_path):
    run = simulate_folder(tmp_path / "run", [episode(f"c{i}", [score([1.0])], True) for i in range(3)])
    (run / "failures.jsonl").write_text(json.dumps({"case_id": "c9", "error": "timeout"}) + "\n")
    (run / "summary.json").write_text("{}")
    text = write_latex([run], tmp_path / "tex")[0].read_text()
    assert "Incomplete run: of its cases, 1 failed; these numbers leave them out" in text
    out = tmp_path / "report.html"
    assert rlff_esc("report", str(run), "--out", str(out), timeout=120).returncode == 0
    assert "warning: incomplete run: of its cases, 1 failed" in out.read_text()


def test_a_folder_without_results_is_refused(tmp_path):
    with pytest.raises(UserError, match="no compare.json, bias.json or summary.json"):
        write_latex([tmp_path], tmp_path / "tex")


def test_folders_without_tables_are_passed_over_when_asked(tmp_path):
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "metrics.json").write_text("{}")
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({
        "cases": 4, "max_turns": 3, "success_rate": 0.0, "success_rate_ci95": [0.0, 0.49], "average_turns": 3.0,
        "average_turns_ci95": [3.0, 3.0], "mean_final_score": -0.5, "mean_final_score_ci95": [-0.6, -0.4]}))
    written = write_latex([tmp_path / "rm", run], tmp_path / "tex", skip_others=True)
    assert [p.name for p in written] == ["run-sr-at.tex"]
    # a summary.json older than its counts: shown as missing, not as 0
    assert rows(written[0].read_text()) == [["run", "4", "0.000", "[0.000, 0.490]", "3.00", "[3.00, 3.00]", "-0.500",
                                             "--", "--"]]
    with pytest.raises(UserError, match="none of the folders"):
        write_latex([tmp_path / "rm"], tmp_path / "tex", skip_others=True)


def test_report_latex_writes_the_tables_beside_the_html(tmp_path):
    cases = [f"c{i}" for i in range(4)]
    think = format_run(tmp_path / "think", (PROMPTS / "think.yaml").read_text(),
                       {case: ("sadness", "job", case == "c0", ["<think>t</think><response>r</response>"])
                        for case in cases})
    vanilla = format_run(tmp_path / "vanilla", (PROMPTS / "vanilla.yaml").read_text(),
                         {case: ("sadness", "job", False, ["a"]) for case in cases})
    compare_runs({"think": think, "vanilla": vanilla}, tmp_path / "cmp")
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "metrics.json").write_text(json.dumps({"objective": "classification", "auc": 0.71}))
    result = rlff_esc("report", str(tmp_path / "cmp"), str(tmp_path / "rm"), "--out", str(tmp_path / "r.html"),
                      "--latex", str(tmp_path / "tex"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote 3 LaTeX tables" in result.stdout and (tmp_path / "r.html").exists()
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())["summaries"]["think"]
    think_row = rows((tmp_path / "tex" / "cmp-sr-at.tex").read_text())[0]
    assert think_row[:3] == ["think", f"{summary['success_rate']:.3f}", interval(summary["success_rate_ci95"])]
