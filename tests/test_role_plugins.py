"""Roles written in Python: factory bindings, entry points, fingerprints, formulas by dotted path,
the known-answer environment, and a role object passed in through the Python API."""

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from esc_agents.config import build_config
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case, Message
from esc_agents.engine import Engine
from esc_agents.datasets import load_cases
from esc_agents.roles.known_answer import (
    KnownAnswerCritic,
    asks_open_question,
    credits,
    reflects_feeling,
    seeker_state,
    turn_effect,
)
from esc_agents.simulate import simulate
from graphs.episode import run_episode
from tests.conftest import REWARD_FIXTURE, read_jsonl, rlff_esc
from tests.fakes import ScriptedChatModel
from training.futures.formulas import checked_formula
from training.futures.generate import relabel

PLUGINS = Path(__file__).parent / "plugin_package"
CASE = Case(id="c1", situation="I feel anxious about my exams. I cannot sleep.", emotion="anxiety", problem="exams")
GOOD = "That sounds exhausting. What worries you most about the exams?"
BAD = "You should just study more."


def with_plugins() -> dict:
    """A process in which the test plugin package is installed: PYTHONPATH is read when Python
    starts, so it is a child of its own."""
    return {"env": {**os.environ, "PYTHONPATH": f"{PLUGINS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
            "separate_process": True}


def test_known_answer_preferences_are_what_its_docstring_says():
    assert turn_effect(GOOD, CASE, asked_before=False) == 1.0
    assert turn_effect(BAD, CASE, asked_before=False) == -0.75  # a lecture before any question
    assert turn_effect("Okay.", CASE, asked_before=True) == -0.75  # too short to be support
    assert turn_effect("How long has this been going on?", CASE, asked_before=False) == 0.5
    history = [Message(speaker="seeker", content=CASE.situation), Message(speaker="supporter", content=BAD),
               Message(speaker="seeker", content="I guess."), Message(speaker="supporter", content=GOOD),
               Message(speaker="seeker", content="Yes."), Message(speaker="supporter", content=GOOD)]
    assert seeker_state(CASE, history[:2]) == -1.0
    assert seeker_state(CASE, history[:4]) == -0.75
    assert seeker_state(CASE, history) == 1.0  # only the last two supporter turns count


STUFFED = ["You feel... what... ?", "anxiety anxiety anxiety what?", "anxiety. anxiety. anxiety. what?",
           "that's hard hard hard what?", "you you you you feel anxious, what?"]
WELL_FORMED = [GOOD, "That's hard. What happened?", "You feel anxious. What happened?", "Why are you feeling anxious?",
               "How are you feeling? How are you feeling?"]  # a sentence said twice adds nothing and costs nothing


def test_cue_words_without_a_sentence_earn_nothing_and_sentences_keep_their_credit():
    for reply in STUFFED:
        assert reflects_feeling(reply, CASE) and asks_open_question(reply)  # the detectors alone would credit both
        assert turn_effect(reply, CASE, asked_before=False) == 0.0, reply
    for reply in WELL_FORMED:
        assert turn_effect(reply, CASE, asked_before=False) == 1.0, reply
    # a stuffed question does not excuse the advice that follows it
    history = [Message(speaker="seeker", content=CASE.situation), Message(speaker="supporter", content=STUFFED[0]),
               Message(speaker="seeker", content="Okay."), Message(speaker="supporter", content=BAD)]
    assert seeker_state(CASE, history) == -1.0


def test_human_supporter_turns_keep_the_credits_their_cues_earn():
    """The rule takes credit only from replies that are cues without a sentence: on every ESConv
    supporter turn of four words or more, it credits what the detectors find."""
    turns = [(case, message.content) for split in ("train", "valid", "test") for case in load_cases(f"esconv:{split}")
             for message in case.dialog if message.speaker == "supporter" and len(message.content.split()) >= 4]
    assert len(turns) > 10_000
    for case, reply in turns:
        assert credits(reply, case) == (reflects_feeling(reply, case), asks_open_question(reply)), reply


def run_known_answer(replies, tmp_path, roles=None, **overrides):
    config = build_config(None, {"user_simulator": {"factory": "known-answer-seeker"},
                                 "critic": {"factory": "known-answer-critic"},
                                 "episode": {"max_turns": 3, "critic_samples": 5}, **overrides})
    model = ScriptedChatModel(script={"supporter": replies})

    async def go():
        async with Engine(config, use_cache=False, chat_models={"local": model}, roles=roles) as engine:
            return await run_episode(engine.episode_context(CASE)), engine

    return asyncio.run(go())


def test_a_supporter_that_reflects_and_asks_succeeds_and_one_that_lectures_does_not(tmp_path):
    good, engine = run_known_answer([GOOD], tmp_path)
    assert good.success and good.turns == 2
    assert good.messages[2].content.startswith(("Yes", "Thank", "I think"))  # the seeker opened up
    bad, _ = run_known_answer([BAD], tmp_path)
    assert not bad.success and bad.final_score < -0.5 and bad.messages[2].content in (
        "I don't know.", "Maybe. I don't really want to talk about it.", "I guess.", "Okay.")
    assert set(engine.endpoints) == {"local"}  # only the supporter is an LLM
    again, _ = run_known_answer([GOOD], tmp_path)
    assert again.scores == good.scores  # the critic's noise is seeded: runs replay exactly


def test_a_role_object_passed_in_is_recorded_by_its_fingerprint_not_as_the_llm_role_it_replaced(tmp_path):
    config = build_config(None, {"episode": {"max_turns": 1, "critic_samples": 2}})
    model = ScriptedChatModel(script={"supporter": [GOOD], "user_simulator": ["Yes."]})
    engine = Engine(config, cache_path=tmp_path / "c.sqlite", chat_models={"local": model},
                    roles={"critic": KnownAnswerCritic(noise=0.1)})
    asyncio.run(simulate(config, [CASE], tmp_path / "run", dataset="inline", engine=engine, progress=False))
    roles = json.loads((tmp_path / "run" / "run.json").read_text())["fingerprint"]["roles"]
    assert roles["critic"]["class"] == "esc_agents.roles.known_answer:KnownAnswerCritic"
    assert roles["critic"]["args"] == {"noise": 0.1} and "prompt" not in roles["critic"]
    assert roles["supporter"]["prompt"] == "vanilla"
    with pytest.raises(UserError, match="roles= names no role of this run: judge"):
        Engine(config, roles={"judge": KnownAnswerCritic()})


def test_factory_bindings_are_checked_before_any_call():
    with pytest.raises(UserError, match="give a role either a prompt .* or a factory"):
        build_config(None, {"user_simulator": {"factory": "known-answer-seeker", "prompt": "resistant"}})
    with pytest.raises(UserError, match="unknown role factory 'nope'"):
        Engine(build_config(None, {"critic": {"factory": "nope"}}))
    with pytest.raises(UserError, match="made a KnownAnswerSeeker, which lacks what a critic needs"):
        Engine(build_config(None, {"critic": {"factory": "esc_agents.roles.known_answer:KnownAnswerSeeker"}}))
    with pytest.raises(UserError, match="does not take args"):
        Engine(build_config(None, {"critic": {"factory": "known-answer-critic", "args": {"volume": 11}}}))
    with pytest.raises(UserError, match=r"critic 'known-answer-critic' scores verdicts in \[-1, 1\]"):
        Engine(build_config(None, {"critic": {"factory": "known-answer-critic"}, "episode": {"success_threshold": 1}}))


def test_a_formula_given_as_a_dotted_path_relabels_a_reward_dataset(tmp_path):
    folder = tmp_path / "dr"
    shutil.copytree(REWARD_FIXTURE, folder)
    report = relabel(folder, "training.futures.formulas:terminal", 0.0)
    records = read_jsonl(folder / "records.jsonl")
    assert report["records"] == len(records)
    for record in records:
        final = record["turn_scores"][-1]
        assert record["r_fut"] == final and record["label"] == (None if final is None else int(final > 0.0))
        assert record["formula"] == "training.futures.formulas:terminal"
    with pytest.raises(UserError, match="cannot be loaded"):
        checked_formula("no_such_module:f", None, 0.0, 2)


@pytest.mark.server
def test_an_installed_plugin_runs_in_simulate_and_rewards_and_a_resume_with_other_args_is_refused(local_server,
                                                                                                  tmp_path):
    listing = rlff_esc("roles", timeout=60, **with_plugins())
    assert "length-critic" in listing.stdout and "rlff_test_plugins:LengthCritic" in listing.stdout
    out = tmp_path / "sim"
    common = ["--limit", "2", "--max-turns", "2", "--critic-samples", "3", "--seeker", "echo-seeker",
              "--cache", str(tmp_path / "cache.sqlite")]
    result = rlff_esc("simulate", "--critic", "length-critic", *common, "--out", str(out), **with_plugins())
    assert result.returncode == 0, result.stderr[-2000:]
    trajectories = read_jsonl(out / "trajectories.jsonl")
    assert len(trajectories) == 2
    for trajectory in trajectories:
        for score in trajectory["scores"]:
            assert set(score["verdicts"]) <= {"long", "short"} and len(score["samples"]) == 3
        seeker_turns = [m["content"] for m in trajectory["messages"][2::2]]
        assert seeker_turns and all(turn.endswith(".") and len(turn.split()) <= 8 for turn in seeker_turns)
    roles = json.loads((out / "run.json").read_text())["fingerprint"]["roles"]
    assert roles["critic"] == {"plugin": "length-critic", "class": "rlff_test_plugins:LengthCritic", "version": "1",
                               "args": {"long_words": 8}}
    config = tmp_path / "other.yaml"
    config.write_text("critic: {factory: length-critic, args: {long_words: 3}}\n")
    refused = rlff_esc("simulate", "--config", str(config), *common, "--out", str(out), **with_plugins())
    assert refused.returncode == 2 and "roles.critic.args.long_words" in refused.stderr
    dr = tmp_path / "dr"
    rewards = rlff_esc("rewards", "--critic", "length-critic", "--dataset", "esconv:ppdpp_train", "--contexts", "1",
                       "--candidates", "2", "--max-turns", "1", "--critic-samples", "3", "--seeker", "echo-seeker",
                       "--formula", "halved", "--delta", "0", "--cache", str(tmp_path / "cache.sqlite"),
                       "--out", str(dr), **with_plugins())
    assert rewards.returncode == 0, rewards.stderr[-2000:]
    records = read_jsonl(dr / "records.jsonl")
    assert len(records) == 2
    for record in records:
        assert record["r_fut"] == record["turn_scores"][-1] / 2 and record["formula"] == "halved"


def test_online_futures_run_with_plugin_roles_and_rank_the_known_answer(tmp_path):
    from training.contexts import Context
    from training.grpo.config import load_grpo_config
    from training.grpo.futures_simulator import FutureSimulator, simulation_run_config

    simulation = tmp_path / "known_answer.yaml"
    simulation.write_text("user_simulator: {factory: known-answer-seeker}\ncritic: {factory: known-answer-critic}\n")
    run_config = simulation_run_config(load_grpo_config(None, reward="simulated", simulation={
        "config": str(simulation), "max_turns": 2, "critic_samples": 5}))
    dialog = [Message(speaker="seeker", content=CASE.situation), Message(speaker="supporter", content="Hello.")]
    context = Context(CASE.model_copy(update={"dialog": dialog}), position=1)
    model = ScriptedChatModel(script={"supporter": [GOOD]})

    async def step():
        with FutureSimulator(run_config, [context], tmp_path / "futures.jsonl", use_cache=False,
                             chat_models={"local": model}) as simulator:
            return await simulator.rewards([(context.key, GOOD), (context.key, BAD)], step=0,
                                           log_metric=lambda *a: None)

    good, bad = asyncio.run(step())
    assert good > bad and bad < 0


@pytest.mark.server
def test_the_python_api_example_runs_and_records_its_injected_critic(local_server, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "api"
    result = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "docs" / "python_api.py"),
                             "--out", str(out), "--limit", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 episodes run" in result.stdout and "SR " in result.stdout
    critic = json.loads((out / "run.json").read_text())["fingerprint"]["roles"]["critic"]
    assert critic["plugin"] == "__main__:QuestionCritic" and "model" not in critic
    assert len(read_jsonl(out / "trajectories.jsonl")) == 2
