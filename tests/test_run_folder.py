"""The typed run folder (`esc_agents.runs`): every run.json written so far loads and is written
back as it was, a new run's run.json is what the writer before it wrote, a folder of the wrong
kind is one line, the prompts resolve one way, and AT counts a failure as T everywhere."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest

from esc_agents.config import build_config
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case, Trajectory, counted_turns
from esc_agents.engine import Engine
from esc_agents.provenance import fingerprint, prompt_record, versions
from esc_agents.roles.known_answer import KnownAnswerCritic
from esc_agents.runs import RUN_JSON, Fingerprint, RunFolder, RunRecord, check_run, record_run
from esc_agents.simulate import simulate
from tests.conftest import REWARD_FIXTURE
from tests.fakes import ScriptedChatModel

ROOT = Path(__file__).resolve().parents[1]
CASES = [Case(id=f"c{i}", situation="I feel anxious about my exams.", emotion="anxiety", problem="exams")
         for i in (1, 2)]


def write_run(folder: Path, record: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_JSON).write_text(json.dumps(record))
    return folder


def same_order(a, b) -> bool:
    """Equal, and every object's keys in the same order (json.dumps keeps the order)."""
    return json.dumps(a) == json.dumps(b)


def simulate_scripted(config, out: Path, cases=CASES, roles=None) -> RunFolder:
    model = ScriptedChatModel(script={"supporter": ["How do you feel?"], "user_simulator": ["Yes."],
                                      "critic": ["feels better"]})
    engine = Engine(config, use_cache=False, chat_models={"local": model}, roles=roles)
    asyncio.run(simulate(config, cases, out, dataset="inline", engine=engine, progress=False))
    return RunFolder.open(out)


# Records as older versions and hand-written test folders have them: each loads and is written back as it was.
OLDER_RECORDS = [
    {"fingerprint": {"roles": {"critic": {"prompt": "default", "prompt_sha256": "0" * 64}}}},
    {"fingerprint": {"dataset": "d", "episode": {"max_turns": 4}}, "cases": ["c1", "c2"]},
    {"fingerprint": {"seed": 0, "dataset": "esconv:ppdpp_test", "episode": {"max_turns": 2}, "roles": {},
                     "rewards": {"candidates": 2, "sampling": {"dialogues": 2}}, "shard": None},
     "config": {"episode": {"max_turns": 2}}},
    {"fingerprint": {"dataset": "d", "roles": {"critic": {"plugin": "x:Y", "class": "Y", "version": None, "args": {}}},
                     "episode": {}, "seed": 3, "a_setting_of_a_newer_version": [1, 2.0]},
     "prompts": {"supporter": "/old/path/vanilla.yaml"}, "critic_range": [-1, 1], "something_newer": {"k": True},
     "created": "2024-01-01T00:00:00+00:00", "versions": {"rlff-esc": "0.1"}},
]


@pytest.mark.parametrize("record", [json.loads((REWARD_FIXTURE / RUN_JSON).read_text()), *OLDER_RECORDS])
def test_every_run_json_loads_and_is_written_back_as_it_was(tmp_path, record):
    folder = write_run(tmp_path / "run", record)
    run = RunFolder.find(folder)
    assert same_order(run.record.as_json(), record)
    run.save()
    assert same_order(json.loads((folder / RUN_JSON).read_text()), record)


def test_a_new_runs_record_is_what_the_writer_before_it_wrote(tmp_path):
    """The record as `provenance.write_run_record` built it, key by key and in its order."""
    config = build_config(None, {"episode": {"max_turns": 1, "critic_samples": 2}})
    run = simulate_scripted(config, tmp_path / "sim")
    prompts = Engine(config).prompts
    written = json.loads((tmp_path / "sim" / RUN_JSON).read_text())
    before = {
        "fingerprint": fingerprint(config, prompts, "inline", {}, None),
        "config": config.model_dump(mode="json"),
        "prompts": {role: prompt_record(prompt) for role, prompt in prompts.items()},
        "prompt_texts": {role: prompt.text for role, prompt in prompts.items()},
        "critic_range": list(prompts["critic"].score_range),
        "cases": ["c1", "c2"],
        "versions": versions(),
        "created": written["created"],
    }
    assert same_order(written, before)
    assert run.record.as_json() == written and run.kind == "simulate" and run.cases() == ["c1", "c2"]

    # a rewards record: held-out check, its context order beside the fingerprint, its settings inside it
    held_out = {"eval_split": "esconv:ppdpp_test", "overlap": []}
    planned = RunRecord.new(config, prompts, "esconv:ppdpp_train", held_out=held_out, critic_range=(-1.0, 1.0),
                            extra={"context_order": "prefix"}, rewards=config.rewards.model_dump(), shard="0/2")
    before = {"fingerprint": fingerprint(config, prompts, "esconv:ppdpp_train", None, None,
                                         rewards=config.rewards.model_dump(), shard="0/2"),
              "config": config.model_dump(mode="json"),
              "prompts": {role: prompt_record(prompt) for role, prompt in prompts.items()},
              "prompt_texts": {role: prompt.text for role, prompt in prompts.items()},
              "critic_range": [-1.0, 1.0], "held_out": held_out, "context_order": "prefix",
              "versions": versions(), "created": planned.created}
    created = RunFolder.create(tmp_path / "dr", planned)
    assert same_order(json.loads((tmp_path / "dr" / RUN_JSON).read_text()), before) and created.kind == "rewards"


def test_a_python_critics_run_records_it_as_its_factory_and_reads_back_typed(tmp_path):
    config = build_config(None, {"episode": {"max_turns": 1, "critic_samples": 2}})
    run = simulate_scripted(config, tmp_path / "run", roles={"critic": KnownAnswerCritic(noise=0.1)})
    assert run.record.config["critic"] == {"factory": "esc_agents.roles.known_answer:KnownAnswerCritic",
                                           "args": {"noise": 0.1}}
    assert run.fingerprint.role("critic")["plugin"] == "esc_agents.roles.known_answer:KnownAnswerCritic"
    assert run.max_turns == 1 and run.fingerprint.dataset == "inline" and len(run.trajectories()) == 2
    with pytest.raises(UserError, match="the critic of this run is not an LLM role with a prompt"):
        run.prompt("critic")
    assert run.prompt_file("critic").verdicts == []  # no prompt: the fields' defaults
    assert run.prompt("supporter").sha256 == run.fingerprint.role("supporter")["prompt_sha256"]
    assert run.prompt_file("supporter").reply_format == "plain"


def test_a_resume_adds_its_cases_and_keeps_the_files_order(tmp_path):
    config = build_config(None, {"episode": {"max_turns": 1, "critic_samples": 2}})
    out = tmp_path / "run"
    simulate_scripted(config, out, cases=CASES[:1])
    record = json.loads((out / RUN_JSON).read_text())
    shuffled = {key: record[key] for key in reversed(list(record))}  # another order, as an older version may have
    (out / RUN_JSON).write_text(json.dumps(shuffled))
    run = simulate_scripted(config, out)
    assert run.cases() == ["c1", "c2"] and len(run.trajectories()) == 2
    assert list(json.loads((out / RUN_JSON).read_text())) == list(shuffled)
    other = build_config(None, {"episode": {"max_turns": 2, "critic_samples": 2}})
    before = (out / RUN_JSON).read_bytes()
    with pytest.raises(UserError, match=r"holds a run with other settings \(episode.max_turns\)"):
        check_run(out, RunRecord.new(other, Engine(other).prompts, "inline", cases=["c1"]))
    with pytest.raises(UserError, match="other settings"):
        record_run(out, RunRecord.new(other, Engine(other).prompts, "inline", cases=["c1"]))
    assert (out / RUN_JSON).read_bytes() == before


def test_a_folder_of_another_kind_or_none_is_one_line(tmp_path):
    rewards = tmp_path / "dr"
    shutil.copytree(REWARD_FIXTURE, rewards)
    assert RunFolder.open(rewards, "rewards").kind == "rewards"
    with pytest.raises(UserError, match=r"dr holds a rewards run, not a simulate run"):
        RunFolder.open(rewards)
    simulated = write_run(tmp_path / "sim", {"fingerprint": {"dataset": "d", "episode": {"max_turns": 2}}})
    with pytest.raises(UserError, match=r"sim holds a simulate run, not a rewards run"):
        RunFolder.open(simulated, "rewards")
    assert RunFolder.open(write_run(tmp_path / "judged", {"fingerprint": {"dataset": "judge", "runs": {"a": "runs/a", "b": "runs/b"}}}), "judge").kind == "judge"
    with pytest.raises(UserError, match=r"empty is not a simulate folder \(no run.json\)"):
        RunFolder.open(tmp_path / "empty")
    assert RunFolder.find(tmp_path / "empty") is None
    (simulated / RUN_JSON).write_text('{"fingerprint": ')
    with pytest.raises(UserError, match=r"sim/run.json is not valid JSON"):
        RunFolder.find(simulated)
    (simulated / RUN_JSON).write_text('{"cases": []}')
    with pytest.raises(UserError, match=r"sim/run.json is not a run record \(fingerprint: Field required\)"):
        RunFolder.find(simulated)
    with pytest.raises(UserError, match="does not record its episodes' max_turns"):
        _ = RunFolder(simulated, RunRecord(fingerprint=Fingerprint())).max_turns


def test_a_prompt_file_reads_what_an_older_or_hand_written_record_keeps(tmp_path):
    text = "reply_format: think\nthink_tag: reasoning\nan_old_field: 1\nsystem: Reason, then answer.\n"
    run = RunFolder.find(write_run(tmp_path / "run", {
        "fingerprint": {"roles": {"user_simulator": {"prompt": "mine"}}},  # no supporter role, no hashes
        "prompt_texts": {"supporter": text, "user_simulator": "description: a persona\naxes: {trust: low}\n"
                                                               "system: You feel {emotion}.\n"}}))
    supporter = run.prompt_file("supporter")
    assert (supporter.reply_format, supporter.think_tag, supporter.response_tag) == ("think", "reasoning", "response")
    persona = run.prompt_file("user_simulator")
    assert (persona.description, persona.axes) == ("a persona", {"trust": "low"})
    with pytest.raises(UserError, match="situation"):  # validated as a file is: the persona needs {situation}
        run.prompt("user_simulator")
    assert run.prompt_file("critic").verdicts == [] and run.prompt_file("judge").reply_format == "plain"
    assert RunFolder.find(write_run(tmp_path / "named", {"fingerprint": {"roles": {"critic": {"prompt": "default"}}}})
                          ).prompt_file("critic").verdicts  # named only: the built-in of that name


def test_average_turns_count_a_failure_as_T_on_a_trajectory_or_its_line():
    line = {"case_id": "c", "emotion": "e", "problem": "p", "messages": [], "scores": [], "turns": 2,
            "final_score": None}
    assert counted_turns({**line, "success": True, "status": "success"}, 8) == 2
    assert counted_turns({**line, "success": False, "status": "max_turns"}, 8) == 8
    assert counted_turns({**line, "success": False, "status": "no_reply"}, 8) == 8  # ended early: still a failure
    trajectory = Trajectory.model_validate({**line, "success": False, "status": "no_reply"})
    assert trajectory.counted_turns(8) == counted_turns(trajectory, 8) == 8
    assert Trajectory.model_validate({**line, "success": True, "status": "success"}).counted_turns(8) == 2
    # one rule: no reader computes AT with its own
    sources = [path for folder in ("esc_agents", "training", "graphs") for path in (ROOT / folder).rglob("*.py")]
    assert not [str(path) for path in sources if re.search(r"if \w+\[\"success\"\] else max_turns", path.read_text())]


def test_only_the_run_folder_module_opens_run_json(tmp_path):
    """Readers go through `RunFolder`; the report shows the file as it is, and nothing else names it."""
    allowed = {"esc_agents/runs.py", "esc_agents/evaluation/report.py"}
    readers = [str(path.relative_to(ROOT)) for folder in ("esc_agents", "training", "graphs", "benchmarks")
               for path in (ROOT / folder).rglob("*.py")
               if re.search(r"""["']run\.json["']""", path.read_text())
               and str(path.relative_to(ROOT)) not in allowed]
    assert readers == []
    assert not [str(path) for folder in ("esc_agents", "training", "benchmarks") for path in (ROOT / folder).rglob("*.py")
                if re.search(r"""\w\[["']fingerprint["']\]""", path.read_text())  # a fingerprint read by hand
                and str(path.relative_to(ROOT)) not in allowed]


def test_the_readme_example_reads_a_run(tmp_path, capsys, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"A run folder reads back.*?```python\n(.*?)```", readme, re.S)[1]
    config = build_config(None, {"episode": {"max_turns": 1, "critic_samples": 2}})
    simulate_scripted(config, tmp_path / "runs" / "api")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "inline 1 ['c1', 'c2']" in printed and "plain" in printed and "c2 " in printed
