"""Graph logic with a scripted model: when episodes stop, how the critic is parsed, what each
role sees. The same code paths run against the real local server in test_local_server.py."""

import asyncio

import pytest
import yaml
from langchain_core.messages import SystemMessage

from esc_agents.config import RunConfig
from esc_agents.core.types import Case, Message
from esc_agents.engine import Engine
from esc_agents.prompts import load_prompt
from graphs.episode import EPISODE_GRAPH, run_episode
from tests.fakes import ScriptedChatModel, role_of

CASE = Case(id="c1", situation="I lost my job last week.", emotion="anxiety", problem="job crisis")
SUPPORTER = ["That sounds really hard. How are you holding up?"]
SEEKER = ["I am scared about paying rent."]


def run(script, tmp_path, *, max_turns=3, samples=2, history=None, honour_n=False, prompts=None, **overrides):
    config = RunConfig.model_validate({"episode": {"max_turns": max_turns, "critic_samples": samples}, **overrides})
    model = ScriptedChatModel(script=script, honour_n=honour_n, prompts=prompts or {})

    async def go():
        async with Engine(config, cache_path=tmp_path / "cache.sqlite", chat_models={"local": model}) as engine:
            return await run_episode(engine.episode_context(CASE), history), engine

    trajectory, engine = asyncio.run(go())
    return trajectory, model, engine


def test_stops_when_critic_mean_exceeds_threshold(tmp_path):
    critic = ["C) The seeker feels better.", "C", "D) The seeker's issue is solved.", "D"]
    trajectory, model, _ = run({"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": critic}, tmp_path)
    assert trajectory.status == "success" and trajectory.success
    assert trajectory.turns == 2  # turn 1 mean 0.5 is not > 0.5; turn 2 mean 1.0 is
    assert [s.mean for s in trajectory.scores] == [0.5, 1.0]
    assert [m.speaker for m in trajectory.messages] == ["seeker", "supporter", "seeker", "supporter", "seeker"]
    assert model.calls("critic") == 4


def test_stops_at_turn_cap(tmp_path):
    trajectory, _, _ = run(
        {"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": ["B) The seeker feels the same."]},
        tmp_path, max_turns=3,
    )
    assert trajectory.status == "max_turns" and not trajectory.success
    assert trajectory.turns == 3
    assert len(trajectory.messages) == 1 + 2 * 3
    assert trajectory.final_score == -0.5


def test_unparsable_critic_output_is_retried_then_recorded_invalid(tmp_path):
    # sample 0 parses at once; sample 1 is garbage, re-asked twice, still garbage
    critic = ["A) The seeker feels worse.", "I like turtles", "no idea", "maybe?"]
    trajectory, model, _ = run(
        {"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": critic}, tmp_path, max_turns=1
    )
    score = trajectory.scores[0]
    assert score.samples == [-1.0]
    assert score.invalid == ["maybe?"]
    assert score.mean == -1.0
    assert model.calls("critic") == 4  # 2 samples + 2 retries of the unparsable one


def test_all_invalid_verdicts_give_no_score_and_no_success(tmp_path):
    trajectory, _, _ = run(
        {"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": ["The seeker feels better, or maybe feels worse"]},
        tmp_path, max_turns=2,
    )
    assert all(score.mean is None for score in trajectory.scores)
    assert trajectory.status == "max_turns" and trajectory.final_score is None


def test_empty_reply_after_cleaning_is_regenerated(tmp_path):
    supporter = ["Seeker: I feel awful.", "I'm here for you. What happened?"]
    trajectory, model, _ = run(
        {"supporter": supporter, "user_simulator": SEEKER, "critic": ["D"]}, tmp_path, max_turns=1
    )
    assert trajectory.messages[1].content == "I'm here for you. What happened?"
    assert model.calls("supporter") == 2


def test_future_starts_with_the_user_simulator(tmp_path):
    history = [Message(speaker="seeker", content="I failed my exam."),
               Message(speaker="supporter", content="That must be disappointing.")]
    trajectory, model, _ = run(
        {"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": ["D"]}, tmp_path, history=history
    )
    assert [m.speaker for m in trajectory.messages] == ["seeker", "supporter", "seeker"]
    assert model.calls("supporter") == 0 and trajectory.turns == 1


def test_think_blocks_are_hidden_from_user_simulator_and_critic(tmp_path):
    supporter = ["<think>They sound anxious; validate first.</think><response>That sounds stressful.</response>"]
    trajectory, model, _ = run(
        {"supporter": supporter, "user_simulator": SEEKER, "critic": ["D"]}, tmp_path, max_turns=1,
        supporter={"prompt": "think"},
    )
    assert trajectory.messages[1].content == "That sounds stressful."
    assert "<think>" in trajectory.messages[1].raw
    seen = [str(m.content) for r in model.requests if r["role"] != "supporter" for m in r["messages"]]
    assert not any("validate first" in text for text in seen)


def test_user_simulator_sees_roles_swapped(tmp_path):
    _, model, _ = run({"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": ["D"]}, tmp_path, max_turns=1)
    request = next(r for r in model.requests if r["role"] == "user_simulator")
    kinds = [type(m).__name__ for m in request["messages"]]
    assert kinds == ["SystemMessage", "AIMessage", "HumanMessage"]  # its own situation, then the supporter


def test_replay_from_cache_makes_no_call(tmp_path):
    script = {"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": ["B", "C", "A"]}
    first, _, _ = run(script, tmp_path, max_turns=2, samples=3)
    replay, model, engine = run({"supporter": ["x"], "user_simulator": ["y"], "critic": ["D"]}, tmp_path,
                                max_turns=2, samples=3)
    assert model.requests == []
    assert replay == first
    assert engine.meter.as_dict()["critic"]["cached"] == 6


@pytest.mark.parametrize("honour_n, expected_requests", [(True, 1), (False, 4)])
def test_critic_uses_n_when_honoured_else_one_request_per_sample(tmp_path, honour_n, expected_requests):
    trajectory, model, engine = run(
        {"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": ["C) feels better"]},
        tmp_path, max_turns=1, samples=4, honour_n=honour_n,
        endpoints={"local": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "supports_n": None}},
    )
    assert len(trajectory.scores[0].samples) == 4
    assert engine.meter.as_dict()["critic"]["calls"] == expected_requests
    assert engine.endpoints["local"].supports_n is honour_n


def test_the_graph_is_the_protocol_its_module_docstring_draws():
    # `rlff-esc graph` draws these same nodes and edges as a Mermaid diagram
    graph = EPISODE_GRAPH.get_graph()
    assert set(graph.nodes) == {"__start__", "supporter", "user_simulator", "critic", "__end__"}
    assert {(edge.source, edge.target, edge.data, edge.conditional) for edge in graph.edges} == {
        ("__start__", "supporter", "episode", True),  # the seeker spoke last
        ("__start__", "user_simulator", "future", True),  # a candidate reply opens a future
        ("supporter", "user_simulator", "replied", True),
        ("supporter", "__end__", "finished", True),  # no usable reply
        ("user_simulator", "critic", None, False),  # every seeker turn is scored
        ("critic", "supporter", "next_turn", True),
        ("critic", "__end__", "finished", True),  # goal reached or turn == T
    }


def test_the_scripted_model_knows_a_role_by_its_prompt_template_not_by_its_wording(tmp_path):
    reworded = yaml.safe_load(load_prompt("critic", "default").text)
    reworded["system"] = "Entirely new words: rate how a person with {emotion} about {problem} feels."
    path = tmp_path / "critic.yaml"
    path.write_text(yaml.safe_dump(reworded))
    trajectory, model, _ = run({"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": ["D"]}, tmp_path,
                               max_turns=1, critic={"prompt": str(path)}, prompts={"critic": str(path)})
    assert trajectory.success and model.calls("critic") == 2
    unbound = [SystemMessage(reworded["system"].format(emotion="anxiety", problem="job crisis"))]
    with pytest.raises(AssertionError, match="which role sent this"):
        role_of(unbound, {"supporter": SUPPORTER, "critic": ["D"]})
    assert role_of(unbound, {"critic": ["D"]}) == "critic"  # a one-role script answers whatever asks
