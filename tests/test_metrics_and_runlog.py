import json

import pytest

from esc_agents.core.runlog import RunLog
from esc_agents.jobs import FAILURES, append_failure, outstanding_failures
from esc_agents.evaluation.metrics import summarize


def trajectory(case_id, success, turns, final, emotion="sadness"):
    score = {"samples": [final], "verdicts": ["x"], "invalid": [], "mean": final}
    return {"case_id": case_id, "success": success, "turns": turns, "final_score": final,
            "emotion": emotion, "problem": "work", "scores": [score]}


def test_sr_at_and_success_by_turn():
    runs = [trajectory("a", True, 1, 1.0), trajectory("b", True, 3, 0.75),
            trajectory("c", False, 4, -0.5, emotion="anger"), trajectory("d", False, 2, 0.0)]
    summary = summarize(runs, max_turns=4)
    assert summary["success_rate"] == 0.5
    assert summary["average_turns"] == (1 + 3 + 4 + 4) / 4  # failures count T, even if stopped early
    assert summary["mean_final_score"] == pytest.approx(0.3125) and summary["final_score_cases"] == 4
    assert summary["intervals"]["success_rate"] == "wilson"
    no_verdict = {**trajectory("e", False, 0, None), "status": "no_reply"}  # no reply at its first turn
    assert summarize([*runs, no_verdict], max_turns=4)["final_score_cases"] == 4
    assert summary["success_by_turn"] == {"1": 0.25, "2": 0.25, "3": 0.5, "4": 0.5}
    # Wilson at z = 1.96 for 2 of 4: centre (p + z²/2n) / (1 + z²/n) = 0.5, half-width 0.349964
    assert summary["success_rate_ci95"] == pytest.approx([0.150036, 0.849964], abs=1e-6)
    assert summary["by_emotion"]["anger"] == {"cases": 1, "success_rate": 0.0, "average_turns": 4.0}


def test_runlog_resumes_and_repairs_a_torn_line(tmp_path):
    path = tmp_path / "t.jsonl"
    with RunLog(path, key="id") as log:
        log.append({"id": "a"})
        log.append({"id": "b"})
    with path.open("a") as handle:
        handle.write('{"id": "c", "trunc')  # killed mid-write
    with RunLog(path, key="id") as log:
        assert log.done == {"a", "b"}
        log.append({"id": "c"})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_a_failure_appended_after_a_torn_line_stays_readable(tmp_path):
    """A kill mid-write leaves half a failure line; the next failure must not be glued to it."""
    path = tmp_path / FAILURES
    path.write_text(json.dumps({"case_id": "a", "error": "x"}) + "\n" + '{"case_id": "b", "err')
    append_failure(path, {"case_id": "c", "error": "timeout"})
    assert outstanding_failures(tmp_path, "case_id", set()) == [{"case_id": "a", "error": "x"},
                                                                {"case_id": "c", "error": "timeout"}]
