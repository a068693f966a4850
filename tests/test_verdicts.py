"""A critic's answer read right: option marks only where they are marks, denied and hypothetical
verdicts never taken as asserted, two verdicts invalid; for every shipped critic prompt, for
prompts written with the old bare-letter patterns, for a numbered scale, and through a whole run."""

import json
import time
from pathlib import Path

import pytest
import yaml

from esc_agents.prompts import available, load_prompt
from tests.conftest import read_jsonl, rlff_esc
from tests.test_critic_scale import FIVE_POINT_CRITIC
from tests.seeded_server import SeededServer

FIXTURE = Path(__file__).parent / "fixtures" / "critic_answers.jsonl"
ANSWERS = read_jsonl(FIXTURE)
MISREAD_BEFORE = {  # the issue's three answers, and what they were read as
    "No, the issue has not been solved.": "issue solved",
    "The seeker does not feel better.": "feels better",
    "A bit better, but not solved.": "feels worse",
}


def test_the_fixture_covers_every_kind_of_answer():
    kinds = {row["kind"] for row in ANSWERS}
    assert len(ANSWERS) >= 80
    assert {"option form", "negation", "hedge", "two verdicts", "recorded: embedded SmolLM2-135M critic"} <= kinds
    assert sum(row["kind"].startswith("recorded") for row in ANSWERS) >= 30
    assert {row["verdict"] for row in ANSWERS} == {None, "feels worse", "feels the same", "feels better", "issue solved"}


@pytest.mark.parametrize("name", available("critic"))
def test_every_shipped_critic_prompt_reads_the_fixture_as_a_person_would(name):
    critic = load_prompt("critic", name)
    wrong = [(row["answer"], row["verdict"], critic.read(row["answer"])) for row in ANSWERS
             if critic.read(row["answer"]).label != row["verdict"]]
    assert wrong == []


def test_the_shipped_critic_no_longer_misreads_the_issues_answers():
    critic = load_prompt("critic", "default")
    for answer, misread in MISREAD_BEFORE.items():
        assert critic.classify(answer) is None or critic.classify(answer).label != misread, answer


OLD_STYLE = """\
system: You review conversations.
user: |-
  {conversation}
  How does the help-seeker feel now? Answer with exactly one of:
  A) The seeker feels worse.
  B) The seeker feels the same.
  C) The seeker feels better.
  D) The seeker's issue is solved.
verdicts:
  - {label: feels worse, score: -1.0, patterns: ["feels worse", "feel worse", "^\\\\W*a\\\\b"]}
  - {label: feels the same, score: -0.5, patterns: ["feels the same", "feel the same", "^\\\\W*b\\\\b"]}
  - {label: feels better, score: 0.5, patterns: ["feels better", "feel better", "^\\\\W*c\\\\b"]}
  - {label: issue solved, score: 1.0, patterns: ["issue is solved", "issue solved", "been solved", "^\\\\W*d\\\\b"]}
"""


def test_a_prompt_with_bare_letter_patterns_gets_the_same_rules(tmp_path):
    """A user's prompt written as the old default was: its letter patterns become option marks, so
    "A bit better" is not option A, and its phrases are read with negation."""
    path = tmp_path / "old.yaml"
    path.write_text(OLD_STYLE)
    critic = load_prompt("critic", str(path))
    assert [(option.mark, option.sentence) for option in critic.reader.options] == [
        ("A", "The seeker feels worse."), ("B", "The seeker feels the same."), ("C", "The seeker feels better."),
        ("D", "The seeker's issue is solved.")]
    for answer, misread in MISREAD_BEFORE.items():
        assert critic.read(answer).label != misread, answer
    assert critic.read("a").label == "feels worse" and critic.read("D) The seeker's issue is solved.").label == "issue solved"
    assert critic.read("The issue has been solved.").label == "issue solved"
    assert critic.read("The issue has never been solved.").label is None
    for row in ANSWERS:
        if row["kind"] in ("option form", "two verdicts", "negation"):
            assert critic.read(row["answer"]).label in (row["verdict"], None), row["answer"]


# The numbered critic of test_critic_scale, with a phrase for 4 ("four").
FIVE_POINT = FIVE_POINT_CRITIC.replace('patterns: ["^\\\\W*4"]', 'patterns: ["^\\\\W*4", "\\\\bfour\\\\b"]')
assert FIVE_POINT != FIVE_POINT_CRITIC


@pytest.mark.parametrize("answer, expected", [
    ("4", "4"), ("4.", "4"), ("(4)", "4"), ("4/5", "4"), ("4 out of 5", "4"), ("Rating: 4", "4"), ("**4**", "4"),
    ("I'd say four.", "4"), ("Not four.", None), ("4 or 5", None), ("3-4", None), ("4.5", None), ("45 minutes", None),
    ("The seeker feels better.", None),
])
def test_a_numbered_scale_is_read_by_the_same_rules(tmp_path, answer, expected):
    path = tmp_path / "five.yaml"
    path.write_text(FIVE_POINT)
    assert load_prompt("critic", str(path)).read(answer).label == expected


def test_prompts_check_prints_each_reading_and_fails_on_an_unexpected_one(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text("\n".join(json.dumps(row) for row in [
        {"answer": "No, the issue has not been solved.", "verdict": None},
        {"answer": "C) The seeker feels better.", "verdict": "feels better"},
        {"answer": "A bit better, but not solved.", "verdict": "feels worse"},  # the old misreading, expected
    ]))
    result = rlff_esc("prompts", "check", "default", "--answers", str(answers), timeout=120)
    assert result.returncode == 1, result.stderr
    header = [line for line in result.stdout.splitlines() if line.startswith("# ")]
    assert header[0] == "# feels worse: option A (The seeker feels worse.), 3 phrase(s)" and len(header) == 4
    lines = [line for line in result.stdout.splitlines() if not line.startswith("# ")]
    assert lines[0].startswith("ok invalid") and "denies 'issue solved'" in lines[0]
    assert lines[1].startswith("ok feels better") and "option C" in lines[1]
    assert lines[2].startswith("XX feels better")
    assert lines[-1] == "3 answers: 1 invalid (33.3%); 1 read otherwise than expected"
    plain = tmp_path / "answers.txt"
    plain.write_text("D\nThe seeker would feel better.\n")
    result = rlff_esc("prompts", "check", "default", "--answers", str(plain), timeout=120)
    assert result.returncode == 0 and "issue solved" in result.stdout.splitlines()[4]
    (tmp_path / "binary.txt").write_bytes(bytes(range(128, 256)))
    result = rlff_esc("prompts", "check", "default", "--answers", str(tmp_path / "binary.txt"), timeout=120)
    assert result.returncode == 2 and result.stderr.strip().endswith("binary.txt: not UTF-8 text; give one answer a "
                                                                     "line, or JSONL")
    (tmp_path / "bad.jsonl").write_text('{"text": "C"}\n')
    result = rlff_esc("prompts", "check", "default", "--answers", str(tmp_path / "bad.jsonl"), timeout=120)
    assert result.returncode == 2 and result.stderr.strip().endswith('bad.jsonl:1: not a JSON object with an "answer"')


def negating_critic(messages, seed) -> str:
    """A critic that answers in sentences the old patterns read as verdicts they deny."""
    if "How does the help-seeker feel now?" in messages[-1]["content"]:
        return ["No, the issue has not been solved.", "The seeker does not feel better."][seed % 2]
    return "I see. Tell me more."


def test_a_run_against_a_critic_that_denies_every_verdict_has_no_success(tmp_path):
    with SeededServer(negating_critic) as server:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({
            "endpoints": {"fake": {"base_url": server.base_url, "model": server.model, "honours_seed": True,
                                   "supports_n": False}},
            **{role: {"endpoint": "fake"} for role in ("supporter", "user_simulator", "critic")}}))
        result = rlff_esc("simulate", "--config", str(config), "--limit", "3", "--max-turns", "2",
                          "--critic-samples", "4", "--no-cache", "--out", str(tmp_path / "run"), timeout=300)
    assert result.returncode in (0, 3), result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["success_rate"] == 0.0 and summary["invalid_critic_rate"] == 1.0  # was SR 1.0
    trajectories = read_jsonl(tmp_path / "run" / "trajectories.jsonl")
    assert len(trajectories) == 3 and all(t["final_score"] is None for t in trajectories)


INSTRUCTED = """\
system: You review conversations.
user: |-
  {conversation}
  1. Decide whether the seeker feels better or worse.
  2. Check whether the seeker feels worse than before.
  Then answer with one of:
  A) The seeker feels worse.
  B) The seeker feels the same.
  C) The seeker feels better.
  D) The seeker's issue is solved.
verdicts:
  - {label: worse, score: -1.0, patterns: ["feels worse"]}
  - {label: same, score: -0.5, patterns: ["feels the same"]}
  - {label: better, score: 0.5, patterns: ["feels better"]}
  - {label: solved, score: 1.0, patterns: ["issue is solved"]}
"""

YES_NO = """\
system: You review conversations.
user: |-
  {conversation}
  Is the seeker's issue resolved?
  A) Yes
  B) No
verdicts:
  - {label: "yes", score: 1.0, patterns: ["^\\\\W*yes\\\\W*$"]}
  - {label: "no", score: -1.0, patterns: ["^\\\\W*no\\\\W*$"]}
"""


def test_option_marks_come_from_the_options_block_not_from_numbered_instructions(tmp_path):
    path = tmp_path / "instructed.yaml"
    path.write_text(INSTRUCTED)
    critic = load_prompt("critic", str(path))
    assert [option.mark for option in critic.reader.options] == ["A", "B", "C", "D"]
    assert [critic.read(mark).label for mark in "ABCD"] == ["worse", "same", "better", "solved"]


def test_one_word_option_sentences_are_read_only_as_options(tmp_path):
    path = tmp_path / "yes_no.yaml"
    path.write_text(YES_NO)
    critic = load_prompt("critic", str(path))
    assert critic.read("A) Yes").label == "yes" and critic.read("Yes").label == "yes" and critic.read("B").label == "no"
    assert critic.read("Hard to say; the seeker only said yes to trying therapy.").label is None


def test_list_numbering_is_not_a_rating(tmp_path):
    path = tmp_path / "five.yaml"
    path.write_text(FIVE_POINT)
    critic = load_prompt("critic", str(path))
    assert critic.read("1. The seeker opened up.\n2. The supporter validated her.\nOverall: 4").label is None
    assert critic.read("1. The seeker was anxious. 2. Now calmer.").label is None


def test_long_adversarial_answers_are_read_in_linear_time():
    critic = load_prompt("critic", "default")
    for answer in ("C\n" + "!\n" * 4000, "<" * 4000, "*" * 4000, "not " * 1000 + "solved"):
        started = time.perf_counter()
        critic.read(answer)
        assert time.perf_counter() - started < 2.0, answer[:20]
