"""Reward formulas, context sampling, sharding and merge checks, without a model."""

import json
import shutil

import pytest

from esc_agents.config import ContextSampling
from esc_agents.core.errors import UserError
from esc_agents.datasets import load_cases
from tests.conftest import REWARD_FIXTURE
from training.contexts import eligible_positions, sample_contexts, shard
from training.futures.formulas import FutureOutcome, check_threshold, get_formula
from training.futures.generate import merge
from training.futures.records import RECORDS, jsonl, read_records


def test_terminal_efficiency_rewards_early_success():
    formula = get_formula("terminal_efficiency")
    params = formula.params()
    assert formula(FutureOutcome([0.0, 1.0], 2, 8, True), params) == 1.0 + 0.5 * 6 / 8
    assert formula(FutureOutcome([0.0, 0.5], 8, 8, False), params) == 0.5
    assert formula(FutureOutcome([None], 1, 8, False), params) is None


def test_terminal_and_discounted():
    outcome = FutureOutcome([-1.0, None, 0.5], 3, 3, False)
    assert get_formula("terminal")(outcome, {}) == 0.5
    gamma = 0.5
    expected = (gamma**2 * -1.0 + 1 * 0.5) / (gamma**2 + 1)
    assert get_formula("discounted")(outcome, {"gamma": gamma}) == pytest.approx(expected)


def halved(outcome, params):
    """A formula as a plugin writes it, knowing nothing of futures cut short."""
    return outcome.final_score / 2


def test_a_future_cut_short_by_a_missing_reply_gets_no_r_fut_under_any_formula():
    """A future ends before T without the goal only when the future supporter gave no usable reply;
    its last verdict is no outcome, so no formula (a plugin's included) may score it."""
    cut = FutureOutcome([0.5], 1, 8, False)
    assert cut.cut_short and not FutureOutcome([0.5], 8, 8, False).cut_short
    assert not FutureOutcome([1.0], 1, 8, True).cut_short
    for name in ("terminal_efficiency", "terminal", "discounted", "tests.test_reward_units:halved"):
        formula = get_formula(name)
        assert formula(cut, formula.params()) is None
        assert formula(FutureOutcome([0.5], 1, 1, False), formula.params()) is not None


def test_threshold_outside_the_formula_range_is_refused():
    formula = get_formula("terminal")
    with pytest.raises(UserError, match="outside the range"):
        check_threshold(formula, 1.0, 8, {})
    check_threshold(get_formula("terminal_efficiency"), 1.2, 8, {"lambda": 0.5})  # inside [−1, 1.4375)
    with pytest.raises(UserError, match="unknown reward formula"):
        get_formula("magic")
    with pytest.raises(UserError, match="no parameter 'beta'"):
        get_formula("discounted").params({"beta": 1})


def test_contexts_end_with_a_seeker_turn_followed_by_the_supporter():
    case = load_cases("esconv:ppdpp_train")[0]
    for position in eligible_positions(case, 1):
        assert case.dialog[position - 1].speaker == "seeker" and case.dialog[position].speaker == "supporter"


def test_sampling_is_seeded_and_configurable():
    cases = load_cases("esconv:ppdpp_train")[:20]
    pick = ContextSampling(contexts=10, positions="random", per_dialogue=2, min_history=3)
    first, again = sample_contexts(cases, pick, 7), sample_contexts(cases, pick, 7)
    assert [c.key for c in first] == [c.key for c in again] and len(first) == 10
    assert [c.key for c in sample_contexts(cases, pick, 8)] != [c.key for c in first]
    assert all(len(c.history) >= 3 for c in first)
    every = sample_contexts(cases[:3], ContextSampling(positions="all"), 0)
    assert len(every) == sum(len(eligible_positions(c, 1)) for c in cases[:3])
    with pytest.raises(UserError, match="no eligible context"):
        sample_contexts(cases[:2], ContextSampling(min_history=500), 0)


def test_shards_are_disjoint_and_cover_everything():
    contexts = sample_contexts(load_cases("esconv:ppdpp_train")[:30], ContextSampling(), 0)
    parts = [shard(contexts, f"{i}/3") for i in range(3)]
    keys = [c.key for part in parts for c in part]
    assert sorted(keys) == sorted(c.key for c in contexts) and len(set(keys)) == len(keys)
    with pytest.raises(UserError, match="i/N"):
        shard(contexts, "a/b")
    with pytest.raises(UserError, match="need 0 <= i < N"):
        shard(contexts, "3/3")


def fake_part(folder, fingerprint_changes, keys):
    folder.mkdir()
    config = {"episode": {"max_turns": 2}, "rewards": {"candidates": 2, "sampling": {"dialogues": 2}}}
    fingerprint = {"dataset": "esconv:ppdpp_train", "episode": {"max_turns": 2}, "seed": 0, "roles": {},
                   "rewards": {"candidates": 2, "sampling": {"dialogues": 2}}, "shard": None}
    fingerprint.update(fingerprint_changes)
    (folder / "run.json").write_text(json.dumps({"fingerprint": fingerprint, "config": config}))
    template = read_records(REWARD_FIXTURE / RECORDS)[0]
    records = [template.model_copy(update={"key": key, "context_key": key.rpartition("#")[0]}) for key in keys]
    (folder / RECORDS).write_text(jsonl(records))
    return folder


def test_merge_refuses_parts_made_with_other_settings(tmp_path):
    a = fake_part(tmp_path / "a", {"shard": "0/2"}, [])
    b = fake_part(tmp_path / "b", {"shard": "1/2", "episode": {"max_turns": 3}}, [])
    with pytest.raises(UserError, match="other settings than .*: episode.max_turns"):
        merge([a, b], tmp_path / "merged")


def test_merge_takes_parts_from_other_servers_only_with_same_model(tmp_path):
    """Shards made on two nodes' servers (or one part older, with no identity recorded) merge by
    their settings; a part whose critic ran on another server is refused unless --same-model."""
    here = {"identity": {"base_url": "http://node-a:8000/v1", "model": "qwen-72b"}}
    there = {"identity": {"base_url": "http://node-b:8000/v1", "model": "qwen-72b"}}
    a = fake_part(tmp_path / "a", {"shard": "0/3", "roles": {"critic": {"prompt": "default", **here}}}, [])
    b = fake_part(tmp_path / "b", {"shard": "1/3", "roles": {"critic": {"prompt": "default", **there}}}, [])
    old = fake_part(tmp_path / "old", {"shard": "2/3", "roles": {"critic": {"prompt": "default"}}}, [])
    with pytest.raises(UserError, match=r"ran the critic on another server .*node-b.*not http://node-a.*--same-model"):
        merge([a, b], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    merge([a, old], tmp_path / "with-old")
    merge([a, b, old], tmp_path / "moved", same_model=True)


def test_merge_reports_duplicates_and_missing(tmp_path):
    contexts = sample_contexts(load_cases("esconv:ppdpp_train")[:2], ContextSampling(), 0)
    keys = [f"{c.key}#{i}" for c in contexts for i in range(2)]
    a = fake_part(tmp_path / "a", {"shard": "0/2"}, keys[:2])
    b = fake_part(tmp_path / "b", {"shard": "1/2"}, keys[1:3])
    report = merge([a, b], tmp_path / "merged")
    assert report["records"] == 3 and report["duplicates"] == [keys[1]] and report["missing"] == [keys[3]]
    shutil.rmtree(tmp_path / "merged")
