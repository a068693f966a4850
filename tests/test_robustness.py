"""Long unattended runs: one writer per run folder, readers that never count a case twice, every
input checked before any work, bad values refused in one line."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REWARD_FIXTURE, SHORT_REPLIES, read_jsonl, rlff_esc
from tests.test_compare import fake_run

LOCK = ".writer.lock"


def wait_for(ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def error_line(result) -> str:
    """The one line a refused command prints: no traceback, nothing else."""
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("rlff-esc: error:"), lines[0]
    return lines[0]


@pytest.mark.server
def test_a_second_writer_is_refused_at_once_and_a_killed_writers_lock_is_taken_over(local_server, tmp_path):
    run = tmp_path / "run"
    args = ["simulate", "--limit", "2", "--max-turns", "2", "--critic-samples", "1", *SHORT_REPLIES, "--no-cache",
            "--out", str(run)]
    first = subprocess.Popen([sys.executable, "-m", "esc_agents.cli", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (run / LOCK).exists() and (run / LOCK).read_text())
        started = time.monotonic()
        second = rlff_esc(*args, timeout=120)
        assert second.returncode == 2 and time.monotonic() - started < 60
        line = error_line(second)
        assert f"is being written by pid {first.pid} on " in line and "rlff-esc simulate" in line
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    cases = [t["case_id"] for t in read_jsonl(run / "trajectories.jsonl")] if (run / "trajectories.jsonl").exists() else []
    assert len(cases) == len(set(cases))
    # The killed writer's lock file is still there; the next writer takes it over and says so.
    assert str(first.pid) in (run / LOCK).read_text()
    third = rlff_esc(*args[:-3], "--offline", "--cache", str(tmp_path / "empty.sqlite"), "--out", str(run),
                     timeout=120)
    assert f"taking over {run}'s lock from pid {first.pid}" in third.stderr
    assert "is being written by" not in third.stderr and not (run / LOCK).exists()


def test_a_writer_releases_the_folder_and_takes_over_a_dead_writers_lock(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(REWARD_FIXTURE, data)
    (data / LOCK).write_text(json.dumps({"pid": 999999999, "host": "elsewhere", "started": "then",
                                         "command": "rlff-esc rewards"}))
    result = rlff_esc("rewards", "relabel", str(data), "--formula", "terminal", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "taking over" in result.stderr and "pid 999999999 on elsewhere" in result.stderr
    assert not (data / LOCK).exists()


def test_readers_refuse_a_folder_that_holds_a_key_twice(tmp_path):
    run = fake_run(tmp_path / "a", 2, ["c1", "c2"])
    other = fake_run(tmp_path / "b", 2, ["c1", "c2"])
    lines = (run / "trajectories.jsonl").read_text().splitlines(keepends=True)
    (run / "trajectories.jsonl").write_text("".join(lines + lines[:1]))
    for result in (rlff_esc("evaluate", str(run), timeout=120),
                   rlff_esc("compare", "--runs", str(run), str(other), "--out", str(tmp_path / "cmp"), timeout=120)):
        assert result.returncode == 2
        assert "trajectories.jsonl holds 1 case_ids more than once: c1" in error_line(result)
    data = tmp_path / "data"
    shutil.copytree(REWARD_FIXTURE, data)
    records = (data / "records.jsonl").read_text().splitlines(keepends=True)
    (data / "records.jsonl").write_text("".join(records + records[-1:]))
    key = json.loads(records[-1])["key"]
    result = rlff_esc("rewards", "stats", str(data), timeout=120)
    assert result.returncode == 2 and f"holds 1 keys more than once: {key}" in error_line(result)


@pytest.mark.parametrize("args, message", [
    (["compare", "--supporters", "vanilla,no_such_supporter"], "unknown supporter prompt 'no_such_supporter'"),
    (["compare", "--supporters", "vanilla,vanilla"], "vanilla named more than once"),
    (["bias", "--personas", "cooperative,no_such_persona"], "unknown user_simulator prompt 'no_such_persona'"),
    (["bias", "--critic-models", "local,nowhere"], "unknown endpoint profile 'nowhere'"),
])
def test_multi_run_commands_check_every_part_before_running_the_first(tmp_path, args, message):
    # Offline from an empty cache: the first part, if it ran, would stop at its first completion.
    out = tmp_path / "study"
    result = rlff_esc(*args, "--limit", "1", "--offline", "--cache", str(tmp_path / "empty.sqlite"),
                      "--out", str(out), timeout=120)
    assert result.returncode == 2 and message in error_line(result)
    assert not out.exists()


def test_an_unreachable_endpoint_leaves_nothing_behind(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("endpoints:\n  dead: {base_url: 'http://127.0.0.1:9/v1', model: m}\n")
    runs = [str(fake_run(tmp_path / name, 2, ["c1"])) for name in ("a", "b")]
    for args in (["judge", "--runs", *runs, "--judge-endpoint", "dead"],
                 ["rewards", "--limit", "1", "--contexts", "1", "--endpoint", "dead", "--eval-split", "none"],
                 ["simulate", "--limit", "1", "--endpoint", "dead"]):
        out = tmp_path / args[0]
        result = rlff_esc(*args, "--config", str(config), "--out", str(out), timeout=120)
        assert result.returncode == 2 and "is unreachable" in result.stderr.strip().splitlines()[-1], result.stderr
        assert not out.exists(), sorted(path.name for path in out.iterdir())


# Values an option may legitimately take among the swept ones: seeds are any whole number,
# thresholds live on a prompt's own scale (checked against it later), weights and shares may be 0.
ACCEPTED = {"--seed": {"0", "-1"}, "--success-threshold": {"0", "-1"}, "--delta": {"0", "-1"}, "--alpha": {"0"},
            "--max-invalid-rate": {"0"}, "--check-fraction": {"0"}, "--valid": {"0"}, "--test": {"0"}}


def numeric_options(parser, path=()):
    """(command path, option) for every option of every command that takes a number."""
    import argparse

    from esc_agents.cli.values import OUT_FILE, OUT_FOLDER

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from numeric_options(sub, (*path, name))
        elif action.option_strings and action.type is not None and action.type not in (str, Path, OUT_FILE, OUT_FOLDER):
            yield path, action.option_strings[0]


def test_every_numeric_option_refuses_zero_negative_and_non_numeric_values_in_one_line(capsys):
    from esc_agents.cli import build_parser

    options = list(numeric_options(build_parser()))
    assert len(options) > 40 and (("simulate",), "--concurrency") in options
    for path, option in options:
        for value in ("0", "-1", "1e999", "many"):
            if value in ACCEPTED.get(option, ()):
                continue
            with pytest.raises(SystemExit) as exit_:
                build_parser().parse_args([*path, option, value])
            assert exit_.value.code == 2, (path, option, value)
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("rlff-esc: error:") and option in lines[0], lines


@pytest.mark.parametrize("args", [["simulate", "--limit", "1"], ["judge", "--runs", "a", "b"]])
def test_concurrency_zero_is_refused_instead_of_waiting_forever(tmp_path, args):
    result = rlff_esc(*args, "--concurrency", "0", "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2 and "argument --concurrency: must be at least 1" in error_line(result)


def test_a_config_of_random_bytes_a_broken_yaml_and_an_output_that_is_a_file(tmp_path):
    noise = tmp_path / "noise.yaml"
    noise.write_bytes(bytes(range(128, 256)) * 3)
    broken = tmp_path / "broken.yaml"
    broken.write_text("episode:\n  max_turns: 3\n bad: [\n")
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    for args, message in ((["--config", str(noise)], "noise.yaml: not a text file"),
                          (["--config", str(broken)], "broken.yaml: not valid YAML at line 3, column 2"),
                          (["--out", str(a_file)], "argument --out: " + str(a_file) + " is a file, not a folder")):
        result = rlff_esc("simulate", "--limit", "1", "--offline", "--cache", str(tmp_path / "c.sqlite"),
                          "--out", str(tmp_path / "run"), *args, timeout=120)
        assert result.returncode == 2 and message in error_line(result)
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize("args,option,problem", [
    (["report", "DIR", "--out", ""], "--out", "is empty"),
    (["report", "DIR", "--out", "DIR"], "--out", "is a folder; name the file"),
    (["report", "DIR", "--out", "FILE/report.html"], "--out", "is a file, so"),
    (["report", "DIR", "--out", "DIR/r.html", "--latex", "FILE"], "--latex", "is a file, not a folder"),
    (["report", "DIR", "--out", "DIR/r.html", "--latex", ""], "--latex", "is empty"),
    (["view", "DIR", "--out", "DIR"], "--out", "is a folder; name the file"),
    (["rewards", "relabel", "DIR", "--formula", "terminal", "--out", ""], "--out", "is empty"),
    (["rewards", "export", "DIR", "--out", "FILE"], "--out", "is a file, not a folder"),
    (["score", "FILE", "--reward-model", "DIR", "--out", "DIR"], "--out", "is a folder; name the file"),
    (["train-rm", "--data", "DIR", "--out", "FILE/sub"], "--out", "is a file, so"),
    (["warmup-format", "--out", ""], "--out", "is empty"),
    (["export", "--adapter", "DIR", "--out", "FILE"], "--out", "is a file, not a folder"),
])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(tmp_path, args, option, problem):
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    args = [arg.replace("DIR", str(tmp_path)).replace("FILE", str(a_file)) for arg in args]
    result = rlff_esc(*args, timeout=60)
    line = error_line(result)
    assert result.returncode == 2 and f"argument {option}: " in line and problem in line, line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["taken"] and a_file.read_text() == "keep me"


@pytest.mark.parametrize("command", ["graph", "prompts"])
def test_a_reader_that_goes_away_ends_the_output_quietly(command):
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has its lines
    result = subprocess.run([sys.executable, "-m", "esc_agents.cli", command], stdout=write_end,
                            stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_every_option_and_argument_has_help_and_every_command_a_description():
    import argparse

    from esc_agents.cli import build_parser

    missing = []

    def walk(parser, path=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if not sub.description:
                        missing.append(" ".join((*path, name)) + ": no description")
                    walk(sub, (*path, name))
            elif action.help is None and not isinstance(action, argparse._HelpAction):
                missing.append(" ".join((*path, action.option_strings[0] if action.option_strings else action.dest)))

    walk(build_parser())
    assert not missing, missing


def test_help_shows_percent_signs_once():
    for command in ("compare", "judge"):
        text = rlff_esc(command, "--help", timeout=60).stdout
        assert "95%" in text and "%%" not in text


CRITIC = """system: You judge the seeker.
user: |-
  {conversation}
  Answer {answer_format}: {{"verdict": "better"}}
verdicts:
  - {label: worse, score: -1.0, patterns: ["worse"]}
  - {label: better, score: 1.0, patterns: ["better", "(unclosed"]}
  - {label: better, score: 0.5, patterns: ["a bit better"]}
"""


@pytest.mark.parametrize("option, text, messages", [
    ("--critic-prompt", CRITIC.replace(', "(unclosed"', ""),
     ["unknown template variable {answer_format}", "verdict label 'better' appears more than once"]),
    ("--critic-prompt", CRITIC, ["invalid regular expression '(unclosed'"]),
    ("--critic-prompt", CRITIC.replace("{{", "{").replace("}}", "}").replace(', "(unclosed"', ""),
     ['unknown template variable {"verdict"}', "write {{ and }} for literal braces"]),
    ("--persona", "system: You feel {emotion}. {situation}\nuser: '{conversation}'\n",
     ["user: not used by a user_simulator prompt"]),
    ("--persona", "system: |\n  You feel {emotion}.\n  - {situation}\n axes: {}\n", ["not valid YAML at line 4, column 2"]),
])
def test_a_hand_written_prompt_file_gets_every_problem_in_one_line(tmp_path, option, text, messages):
    prompt = tmp_path / "mine.yaml"
    prompt.write_text(text)
    result = rlff_esc("simulate", "--limit", "1", option, str(prompt), "--offline", "--cache",
                      str(tmp_path / "c.sqlite"), "--out", str(tmp_path / "run"), timeout=120)
    line = error_line(result)
    assert result.returncode == 2 and "mine.yaml" in line and "more)" not in line
    for message in messages:
        assert message in line


def test_prompts_render_prints_the_messages_a_role_sends_for_a_case(tmp_path):
    from esc_agents.datasets import load_cases

    case = load_cases("esconv:ppdpp_test")[3]
    persona = tmp_path / "user_simulator" / "calm.yaml"
    persona.parent.mkdir()
    persona.write_text("system: 'You feel {emotion} about {problem}. Situation: {situation}'\n")
    result = rlff_esc("prompts", "render", str(persona), "--case", case.id, timeout=120)
    assert result.returncode == 0, result.stderr
    messages = json.loads(result.stdout)
    assert messages[0] == {"role": "system",
                           "content": f"You feel {case.emotion} about {case.problem}. Situation: {case.situation}"}
    # The seeker's side: its own opening is `assistant`, the supporter is `user`.
    assert [m["role"] for m in messages[1:]] == ["assistant", "user"] and messages[1]["content"] == case.situation
    supporter = json.loads(rlff_esc("prompts", "render", "think", "--role", "supporter", "--case", case.id).stdout)
    assert supporter[-1] == {"role": "user", "content": case.situation}
    missing = rlff_esc("prompts", "render", "think", "--role", "supporter", "--case", "nope", timeout=120)
    assert missing.returncode == 2 and "esconv:ppdpp_test has no case 'nope'" in error_line(missing)


def test_judge_import_reads_blank_cells_as_not_rated(tmp_path):
    from esc_agents.evaluation.annotation import KEY, export_pairs

    criteria = ["empathy", "overall"]
    runs = [str(fake_run(tmp_path / name, 2, ["c1", "c2", "c3"])) for name in ("a", "b")]
    sheet = export_pairs({Path(run).name: Path(run) for run in runs}, tmp_path / "sheet", criteria, seed=1)
    with sheet.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    # Row 1 rated in full, row 2 only on empathy, row 3 not at all.
    for row, marks in zip(rows, [["1", "1"], ["tie", ""], ["", ""]]):
        row.update(zip(criteria, marks))
    filled = tmp_path / "ann.csv"
    with filled.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)
    result = rlff_esc("judge", "import", str(tmp_path / "sheet" / KEY), str(filled), timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "sheet" / KEY).parent.joinpath("agreement.json").read_text())
    empathy, overall = report["criteria"]["empathy"], report["criteria"]["overall"]
    assert empathy["win"] + empathy["tie"] + empathy["loss"] == 2
    assert overall["win"] + overall["tie"] + overall["loss"] == 1


def test_grpo_stops_after_consecutive_steps_whose_futures_all_gave_no_reward(tmp_path):
    import asyncio

    from esc_agents.config import build_config
    from esc_agents.core.errors import UserError
    from esc_agents.core.types import Case, Message
    from tests.fakes import ScriptedChatModel
    from training.contexts import Context
    from training.grpo.futures_simulator import FutureSimulator

    case = Case(id="c1", situation="I lost my job.", dialog=[Message(speaker="seeker", content="I lost my job."),
                                                             Message(speaker="supporter", content="I'm sorry.")])
    context = Context(case, position=1)
    # The critic answers off the scale unless the reply says GOOD.
    critic = lambda messages: "D) solved." if "GOOD" in messages[-1].content else "no idea"
    model = ScriptedChatModel(script={"supporter": ["How are you?"], "user_simulator": ["Thanks."], "critic": critic})
    config = build_config(None, {"episode": {"max_turns": 1, "critic_samples": 1, "critic_retries": 0}})

    async def steps(replies):
        with FutureSimulator(config, [context], tmp_path / "futures.jsonl", use_cache=False,
                             chat_models={"local": model}, max_unscorable_steps=2) as simulator:
            for step, reply in enumerate(replies):
                await simulator.rewards([(context.key, reply)], step=step, log_metric=lambda *_: None)

    asyncio.run(steps(["bad", "GOOD", "bad", "GOOD"]))  # never two unscored steps in a row
    with pytest.raises(UserError, match="no simulated future gave a reward in 2 steps in a row .*no parsable critic"):
        asyncio.run(steps(["GOOD", "bad", "bad", "GOOD"]))


def test_rewards_takes_formula_parameters(tmp_path):
    args = ["rewards", "--limit", "2", "--contexts", "1", "--candidates", "2", "--eval-split", "none", "--offline",
            "--cache", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "r")]
    bad = rlff_esc(*args, "--param", "nosuch=1", timeout=120)
    assert bad.returncode == 2 and "has no parameter 'nosuch' (parameters: lambda)" in error_line(bad)
    # An offline replay from an empty cache records the run, then stops at its first completion.
    rlff_esc(*args, "--param", "lambda=0.25", timeout=120)
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["fingerprint"]["rewards"]["formula_params"] == {"lambda": 0.25}


def test_warmup_format_holds_its_work_folder_since_its_output_is_replaced_whole(tmp_path):
    from esc_agents.core.runlock import run_lock

    out = tmp_path / "warm"
    with run_lock(tmp_path / "warm.checkpoints"):
        result = rlff_esc("warmup-format", "--out", str(out), "--steps", "1", timeout=120)
    assert result.returncode == 2 and f"warm.checkpoints is being written by pid {os.getpid()}" in error_line(result)
    assert not out.exists() and not (tmp_path / "warm.checkpoints").exists()
