"""What a user meets first: a role in a file beside them imported by the console script (or from
--app-dir), progress fit for a terminal or a log, run.json's config holding only what each role
uses, every case field open to the roles given the case, `prompts render` finding a file's role
from its content, option errors blamed on the option, and `rewards export` guarding its output.
None of these starts a model: the roles are written in Python."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from esc_agents.cli import build_parser, options
from esc_agents.config import RunConfig, build_config
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case
from esc_agents.datasets import load_cases
from esc_agents.engine import Engine
from esc_agents.roles.known_answer import KnownAnswerCritic
from esc_agents.roles.render import render_messages, role_of
from esc_agents.simulate import simulate
from tests.conftest import PLUMBING_ENV, REWARD_FIXTURE, read_jsonl
from tests.fakes import ScriptedChatModel
from training.futures.export import export
from training.reward_model.data import load_splits

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).parent / "rlff-esc"
PLUGIN = '''
from esc_agents.core.types import CriticScore, Message
from esc_agents.roles.plugins import PythonRole


class EmpathyCritic(PythonRole):
    """The seeker feels better when the last reply names a feeling."""

    score_range = (-1.0, 1.0)

    async def judge(self, case, history, samples):
        replies = [m.content for m in history if m.speaker == "supporter"]
        score = 1.0 if replies and "feel" in replies[-1] else -1.0
        return CriticScore(samples=[score] * samples, verdicts=[str(score)] * samples, mean=score)


class KindSupporter(PythonRole):
    async def reply(self, case, history):
        return Message(speaker="supporter", content="That sounds hard. How do you feel about it now?")
'''
RUN = ["simulate", "--config", "roles.yaml", "--seeker", "known-answer-seeker", "--critic", "my_critics:EmpathyCritic",
       "--limit", "2", "--max-turns", "2", "--critic-samples", "2"]
CASE = Case(id="c1", situation="I feel anxious about my exams.", emotion="anxiety", problem="exams")


@pytest.fixture
def plugin_dir(tmp_path) -> Path:
    """A working directory as the README has it: my_critics.py, and a config binding its supporter."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "my_critics.py").write_text(PLUGIN)
    (folder / "roles.yaml").write_text('supporter: {factory: "my_critics:KindSupporter"}\n')
    return folder


def console(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it: unlike `python -m`, it puts nothing of the
    working directory on the import path itself. stderr is a pipe, as in a log; its text is kept
    as written (text mode would turn a bar's carriage returns into newlines)."""
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no console script at {CONSOLE_SCRIPT}")
    inherited = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "TQDM_DISABLE")}
    result = subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=cwd, capture_output=True, timeout=300,
                            env={**inherited, **PLUMBING_ENV, **(env or {})})
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def test_a_role_in_the_working_directory_runs_as_the_readme_shows(plugin_dir):
    result = console(*RUN, "--out", "run", cwd=plugin_dir)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(plugin_dir / "run" / "trajectories.jsonl")) == 2
    record = json.loads((plugin_dir / "run" / "run.json").read_text())
    assert record["fingerprint"]["roles"]["critic"]["plugin"] == "my_critics:EmpathyCritic"


def test_app_dir_names_the_folder_before_or_after_the_command_and_the_error_says_so(plugin_dir):
    elsewhere = plugin_dir.parent / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(plugin_dir / "roles.yaml", elsewhere)
    missing = console(*RUN, "--out", "run", cwd=elsewhere)
    assert missing.returncode == 2
    line = missing.stderr.strip().splitlines()[-1]
    assert "No module named 'my_critics'" in line and "working directory" in line and "--app-dir DIR" in line
    before = console("--app-dir", str(plugin_dir), *RUN, "--out", "a", cwd=elsewhere)
    assert before.returncode == 0, before.stderr
    after = console(*RUN, "--app-dir", "../work", "--out", "b", cwd=elsewhere)
    assert after.returncode == 0, after.stderr


def test_a_log_gets_one_line_per_stage_and_a_terminal_bar_only_when_asked(plugin_dir):
    def run(*args: str) -> subprocess.CompletedProcess:
        return console(*args, cwd=plugin_dir, env={"PYTHONPATH": str(plugin_dir)})

    logged = run(*RUN, "--out", "auto")
    assert logged.returncode == 0 and "\r" not in logged.stderr, logged.stderr
    stages = [line for line in logged.stderr.splitlines() if line.startswith("episodes")]
    assert len(stages) == 1 and re.match(r"episodes: 2/2 in \d+s \(ok=2 failed=0 ", stages[0]), logged.stderr
    forced = run("--progress", "on", *RUN, "--out", "on")
    assert forced.returncode == 0 and "\r" in forced.stderr
    quiet = run(*RUN, "--progress", "off", "--out", "off")
    assert quiet.returncode == 0 and "episodes" not in quiet.stderr and "\r" not in quiet.stderr
    # A library's own bars (the datasets writer's here) follow the same rule.
    exported = run("rewards", "export", str(REWARD_FIXTURE), "--out", "hf")
    assert exported.returncode == 0 and "\r" not in exported.stderr, exported.stderr


def test_the_python_api_example_runs_on_a_run_config(plugin_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(ROOT)])}
    config = tmp_path / "all-python.yaml"
    config.write_text('supporter: {factory: "my_critics:KindSupporter"}\n'
                      'user_simulator: {factory: known-answer-seeker}\n')
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "python_api.py"), "--config", str(config),
                             "--out", str(tmp_path / "api"), "--limit", "2"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 episodes run" in result.stdout and "SR " in result.stdout
    roles = json.loads((tmp_path / "api" / "run.json").read_text())["fingerprint"]["roles"]
    assert roles["supporter"]["plugin"] == "my_critics:KindSupporter"


def simulate_scripted(config, out: Path, roles=None) -> dict:
    model = ScriptedChatModel(script={"supporter": ["How do you feel?"], "user_simulator": ["Yes."]})
    engine = Engine(config, use_cache=False, chat_models={"local": model}, roles=roles)
    asyncio.run(simulate(config, [CASE], out, dataset="inline", engine=engine, progress=False))
    return json.loads((out / "run.json").read_text())


def test_run_json_keeps_only_the_factory_and_args_of_a_python_role(tmp_path):
    episode = {"max_turns": 1, "critic_samples": 2}
    record = simulate_scripted(build_config(None, {"critic": {"factory": "known-answer-critic", "args": {"noise": 0.2}},
                                                   "episode": episode}), tmp_path / "factory")
    assert record["config"]["critic"] == {"factory": "known-answer-critic", "args": {"noise": 0.2}}
    assert record["config"]["supporter"]["temperature"] == 0.7  # an LLM role keeps its sampling settings
    # `rewards merge` reads it back
    assert RunConfig.model_validate(record["config"]).critic.factory == "known-answer-critic"
    injected = simulate_scripted(build_config(None, {"episode": episode}), tmp_path / "object",
                                 roles={"critic": KnownAnswerCritic(noise=0.1)})
    assert injected["config"]["critic"] == {"factory": "esc_agents.roles.known_answer:KnownAnswerCritic",
                                            "args": {"noise": 0.1}}


def test_a_run_folder_written_before_still_resumes(tmp_path):
    """Older run.json files keep the LLM settings beside a factory binding: the resume compares
    fingerprints, which never held them, so it goes on and adds the new case."""
    config = build_config(None, {"critic": {"factory": "known-answer-critic"},
                                 "episode": {"max_turns": 1, "critic_samples": 2}})
    out = tmp_path / "run"
    record = simulate_scripted(config, out)
    record["config"]["critic"] = {"endpoint": "local", "prompt": None, "factory": "known-answer-critic", "args": {},
                                  "temperature": 1.1, "max_tokens": 24, "context_window": None}
    (out / "run.json").write_text(json.dumps(record))
    model = ScriptedChatModel(script={"supporter": ["How do you feel?"], "user_simulator": ["Yes."]})
    engine = Engine(config, use_cache=False, chat_models={"local": model})
    second = CASE.model_copy(update={"id": "c2"})
    result = asyncio.run(simulate(config, [CASE, second], out, dataset="inline", engine=engine, progress=False))
    assert (result.completed, result.skipped) == (1, 1)
    assert json.loads((out / "run.json").read_text())["cases"] == ["c1", "c2"]


def prompt_file(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


VERDICTS = """verdicts:
  - {label: worse, score: -1.0, patterns: [worse]}
  - {label: better, score: 1.0, patterns: [better]}
"""
# Every variable TEMPLATE_VARIABLES allows each role, in each template it allows them in.
EVERY_VARIABLE = {
    "supporter": "system: 'Strategies: {strategies}'\n",
    "user_simulator": "system: 'You feel {emotion} about {problem}: {situation}'\n",
    "critic": "system: 'The seeker felt {emotion} about {problem}: {situation}'\n"
              "user: '{conversation} Seeker: {situation} ({emotion}, {problem}). Worse or better?'\n" + VERDICTS,
    "judge": "system: 'Judge on {criteria}; the seeker said: {situation}'\n"
             "user: '{situation} A: {conversation_a} B: {conversation_b} ({criteria})'\ncriteria: [empathy]\n",
}


@pytest.mark.parametrize("role", EVERY_VARIABLE)
def test_every_variable_a_role_may_use_is_one_its_code_passes(tmp_path, role):
    """The critic may use the situation like the user simulator; whatever a template may name, the
    role's own message builder fills (a KeyError here would stop a run at its first call)."""
    case = load_cases("esconv:ppdpp_test")[0]
    path = prompt_file(tmp_path / "drafts", f"{role}.yaml", EVERY_VARIABLE[role])
    text = "\n".join(message["content"] for message in render_messages(str(path), role, case))
    if role != "supporter":
        assert case.situation in text and "{" not in text


def test_prompts_render_finds_the_role_a_file_is_for_from_its_content(tmp_path):
    drafts = tmp_path / "drafts"
    for role, name in (("critic", "default"), ("judge", "default"), ("user_simulator", "resistant"),
                       ("supporter", "think"), ("supporter", "vanilla")):
        copied = prompt_file(drafts, f"{role}-{name}.yaml", (ROOT / "prompts" / role / f"{name}.yaml").read_text())
        assert role_of(str(copied), None) == role, name
    for role, text in EVERY_VARIABLE.items():
        assert role_of(str(prompt_file(drafts, f"every-{role}.yaml", text)), None) == role
    typo = prompt_file(drafts, "typo.yaml", "system: 'Judge.'\nuser: '{conversaton}'\n" + VERDICTS)
    assert role_of(str(typo), None) == "critic"  # verdicts: a critic's checks say what is wrong
    with pytest.raises(UserError, match=r"unknown template variable \{conversaton\}"):
        render_messages(str(typo), "critic", load_cases("esconv:ppdpp_test")[0])
    persona = prompt_file(drafts, "persona.yaml", "system: 'You are {situaton}. {situation}'\n")
    assert role_of(str(persona), None) == "user_simulator"  # it requires {situation}
    assert role_of(str(prompt_file(drafts / "critic", "mine.yaml", "system: x\n")), None) == "critic"  # the folder
    assert role_of("think", None) == "supporter"
    with pytest.raises(UserError, match="built-in prompts of critic, judge have that name; give --role"):
        role_of("default", None)
    with pytest.raises(UserError, match="its content shows none; give --role"):
        role_of(str(prompt_file(drafts, "odd.yaml", "system: 'You are {emotion}.'\n")), None)


def test_an_unknown_endpoint_profile_is_blamed_on_the_option_that_named_it(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("endpoints:\n  gpu: {base_url: 'http://gpu:8000/v1', model: m}\n")

    def load(*argv):
        args = build_parser().parse_args(["simulate", "--out", "o", "--config", str(config), *argv])
        return options.config_from(args)

    with pytest.raises(UserError) as error:
        load("--endpoint", "nope")
    assert str(error.value).startswith("--endpoint: supporter.endpoint: unknown endpoint profile 'nope' (known: gpu,")
    with pytest.raises(UserError, match=r"^--critic-endpoint: critic\.endpoint: unknown endpoint profile 'nope'"):
        load("--user-endpoint", "gpu", "--critic-endpoint", "nope")
    assert load("--endpoint", "gpu").critic.endpoint == "gpu"
    config.write_text("critic: {endpoint: gone, prompt: default}\n")
    with pytest.raises(UserError, match=r"^\S*c\.yaml: \(top level\): Value error, critic\.endpoint: unknown"):
        load("--user-endpoint", "vllm")  # the file's own name, not the option given beside it


def test_serve_blames_an_unknown_profile_on_its_option(tmp_path):
    result = console("serve", "--profile", "nope", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rlff-esc: error: --profile: unknown endpoint profile 'nope' (known: local, openai, vllm)"]


def test_rewards_help_shows_out_as_required():
    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    rewards = commands.choices["rewards"]
    usage = rewards.format_usage()
    assert re.search(r"(?<!\[)--out DIR(?!\])", usage) and "{relabel,merge,stats,export} ..." in usage, usage


def single_class(tmp_path: Path) -> Path:
    folder = tmp_path / "dr"
    shutil.copytree(REWARD_FIXTURE, folder)
    records = read_jsonl(folder / "records.jsonl")
    (folder / "records.jsonl").write_text("".join(json.dumps({**record, "label": 1}) + "\n" for record in records))
    return folder


def test_rewards_export_warns_of_one_class_and_replaces_an_export_only_when_told(tmp_path, capsys):
    out = tmp_path / "export"
    export(single_class(tmp_path), out, fmt="jsonl", valid=0.1, test=0.1, seed=0)
    assert "every exported label is 1" in capsys.readouterr().err
    with pytest.raises(UserError, match="holds an export already .*pass --overwrite"):
        export(REWARD_FIXTURE, out, fmt="hf", valid=0.1, test=0.1, seed=0)
    assert (out / "train.jsonl").exists()  # the refused export changed nothing
    export(REWARD_FIXTURE, out, fmt="hf", valid=0.0, test=0.2, seed=0, overwrite=True)
    assert "every exported label" not in capsys.readouterr().err
    assert not list(out.glob("*.jsonl")) and set(load_splits(out)) == {"train", "test"}  # no stale valid split
    assert build_parser().parse_args(["rewards", "export", "d", "--out", "o", "--overwrite"]).overwrite
