"""Online future rewards in GRPO: `--reward simulated` and `--reward hybrid` run real GRPO steps
against the real local server; a future that fails after its retries gives no reward and is
counted; the pieces (checked share, agreement window, the R_fut/R_fmt hand-over) on their own."""

import asyncio
import json
import random

import pytest
from scipy import stats

from esc_agents.config import build_config
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case, Message
from tests.conftest import read_jsonl, rlff_esc
from tests.fakes import ScriptedChatModel
from tests.fault_proxy import FaultProxy
from training.contexts import Context
from training.futures.formulas import FutureOutcome, get_formula
from training.grpo.config import load_grpo_config
from training.grpo.format_reward import FormatReward, FormatSpec
from training.grpo.futures_simulator import FutureSimulator, simulation_run_config
from training.grpo.reward_terms import (
    AgreementWindow,
    HybridFutureReward,
    SimulatedFutureReward,
    UnscoredCompletions,
    WithheldWhereFutureFailed,
    checked_share,
)
from training.grpo.records import FUTURES, read_futures

ONE_STEP = ["--contexts", "4", "--max-completion-length", "24", "--batch-size", "4",
            "--future-turns", "1", "--critic-samples", "1"]


def proxied_simulation(tmp_path, proxy, model: str) -> str:
    """A run config whose every role goes through the fault proxy, one attempt per request, no cache."""
    path = tmp_path / "simulation.yaml"
    path.write_text(
        "endpoints:\n"
        f"  proxied: {{base_url: '{proxy.base_url}', model: '{model}', max_attempts: 1, supports_n: false}}\n"
        "supporter: {endpoint: proxied}\nuser_simulator: {endpoint: proxied}\ncritic: {endpoint: proxied}\n")
    grpo = tmp_path / "grpo.yaml"
    grpo.write_text("simulation: {cache: false}\n")
    return str(path), str(grpo)


@pytest.mark.server
@pytest.mark.training
def test_one_simulated_grpo_step_with_a_failed_future(local_server, tiny_policy, tmp_path):
    out = tmp_path / "policy"
    # The second request of the step (a user-simulator or critic call) fails: one future is lost.
    with FaultProxy("http://127.0.0.1:8765", lambda i, body: "500" if i == 1 else "ok") as proxy:
        simulation, grpo = proxied_simulation(tmp_path, proxy, local_server)
        result = rlff_esc("train-grpo", "--reward", "simulated", "--simulation-config", simulation,
                          "--config", grpo, "--max-steps", "1", "--policy", str(tiny_policy), "--out", str(out),
                          *ONE_STEP)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gave no reward" in result.stderr
    assert "All reward functions returned None" not in result.stderr  # counted in one line, not a row dump
    metrics = json.loads((out / "metrics.json").read_text())
    simulation_summary = metrics["simulation"]
    assert simulation_summary["max_turns"] == 1 and simulation_summary["critic_samples"] == 1
    assert simulation_summary["usage"]["user_simulator"]["calls"] >= 3
    futures = read_futures(out / FUTURES)
    assert len(futures) == 4 and {f.step for f in futures} == {0}
    assert sum("HTTP 500" in (f.error or "") for f in futures) == 1  # the one failed request, no other
    scored = [f for f in futures if f.r_fut is not None]
    assert scored, "every future failed: the step trained on nothing"
    assert all(f.error == "no parsable critic verdict" for f in futures if f.r_fut is None and "HTTP" not in f.error)
    formula = get_formula("terminal_efficiency")
    for future in scored:
        assert future.K == 1 and len(future.future) == 1 and future.error is None
        expected = formula(FutureOutcome(future.turn_scores, future.K, 1, future.success), formula.params())
        assert future.r_fut == expected
    assert simulation_summary["futures"] == 4 and simulation_summary["failed"] == 4 - len(scored)
    (entry,) = metrics["history"]
    assert entry["futures/simulated"] == 4 and entry["futures/failed"] == 4 - len(scored)
    for role, counts in simulation_summary["usage"].items():  # one step: its cost is the run's
        assert entry[f"cost/{role}/calls"] == counts["calls"]
        assert entry[f"cost/{role}/prompt_tokens"] == counts["prompt_tokens"]
    assert entry["cost/endpoint_wait_s"] > 0
    card = json.loads((out / "grpo.json").read_text())
    assert card["reward"] == "simulated" and card["reward_model"] is None


@pytest.mark.server
@pytest.mark.training
def test_hybrid_grpo_logs_the_agreement_of_the_reward_model_with_simulation(local_server, trained_reward_model,
                                                                             tiny_policy, tmp_path):
    out = tmp_path / "policy"
    # l = 3: with one sample the 135M critic leaves a future without a parsable verdict too often.
    result = rlff_esc("train-grpo", "--reward", "hybrid", "--check-fraction", "0.5", "--reward-model",
                      str(trained_reward_model), "--max-steps", "2", "--policy", str(tiny_policy),
                      "--out", str(out), *ONE_STEP,
                      "--critic-samples", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history) == 2
    futures = read_futures(out / FUTURES)
    assert [f.step for f in futures] == [0, 0, 1, 1] and metrics["simulation"]["futures"] == 4
    assert all(f.reward_used == "reward_model" and 0.0 <= f.reward_model_score <= 1.0 for f in futures)
    assert any(f.r_fut is not None for f in futures), "every future failed: nothing was compared"
    delta = simulation_run_config(load_grpo_config(None)).rewards.delta
    for step, entry in enumerate(history):
        assert 0.0 <= entry["rewards/r_fut/mean"] <= 1.0  # the reward model's P(label 1) is the reward
        assert entry["futures/simulated"] == 2  # half of the 4 completions
        assert entry["hybrid/checked"] == 2 - entry["futures/failed"]
        # The window (64) holds every scored check so far, each with the score it was compared on.
        compared = [(f.reward_model_score, f.r_fut) for f in futures if f.step <= step and f.r_fut is not None]
        if not compared:
            assert "hybrid/spearman" not in entry and "hybrid/label_accuracy" not in entry
            continue
        # TRL averages logged metrics through float32 tensors, hence approx
        accuracy = sum((s > 0.5) == (r > delta) for s, r in compared) / len(compared)
        assert entry["hybrid/label_accuracy"] == pytest.approx(accuracy, rel=1e-6)
        scores, simulated = zip(*compared)
        ranked = len(compared) >= 3 and len(set(scores)) > 1 and len(set(simulated)) > 1  # Spearman defined
        assert ("hybrid/spearman" in entry) == ranked
        if ranked:
            assert entry["hybrid/spearman"] == pytest.approx(stats.spearmanr(scores, simulated).statistic, rel=1e-6)


def test_reward_modes_and_their_inputs_are_checked_before_any_model_loads(tmp_path):
    result = rlff_esc("train-grpo", "--reward", "hybrid", "--out", str(tmp_path / "p"), timeout=120)
    assert result.returncode == 2 and "--reward hybrid needs --reward-model" in result.stderr.strip().splitlines()[-1]
    dead = tmp_path / "dead.yaml"
    dead.write_text("endpoints:\n  dead: {base_url: 'http://127.0.0.1:9/v1', model: m}\n"
                    "supporter: {endpoint: dead}\nuser_simulator: {endpoint: dead}\ncritic: {endpoint: dead}\n")
    result = rlff_esc("train-grpo", "--reward", "simulated", "--simulation-config", str(dead),
                      "--out", str(tmp_path / "q"), timeout=120)
    assert result.returncode == 2
    assert "endpoint 'dead' at http://127.0.0.1:9/v1 is unreachable" in result.stderr.strip().splitlines()[-1]
    assert "Loading weights" not in result.stderr


def test_the_simulation_run_config_takes_T_l_and_the_formula_from_the_grpo_config():
    config = load_grpo_config(None, reward="simulated", simulation={"max_turns": 2, "critic_samples": 3,
                                                                     "formula": "discounted"})
    run_config = simulation_run_config(config)
    assert (run_config.episode.max_turns, run_config.episode.critic_samples) == (2, 3)
    assert run_config.rewards.formula == "discounted"
    with pytest.raises(UserError, match="unknown reward formula 'nope'"):
        simulation_run_config(load_grpo_config(None, simulation={"formula": "nope"}))


def test_the_checked_share_is_the_fraction_on_average_and_exact_when_it_divides():
    indices = list(range(4))
    assert len(checked_share(indices, 0.5, random.Random(0))) == 2
    assert checked_share(indices, 0.0, random.Random(0)) == []
    assert checked_share(indices, 1.0, random.Random(0)) == indices
    sizes = [len(checked_share(indices, 0.1, random.Random(seed))) for seed in range(2000)]
    assert set(sizes) == {0, 1}
    assert sum(sizes) / len(sizes) == pytest.approx(0.4, abs=0.05)
    assert checked_share(indices, 0.5, random.Random("0:3")) == checked_share(indices, 0.5, random.Random("0:3"))


def test_agreement_is_spearman_and_label_accuracy_over_the_last_checked_completions():
    window = AgreementWindow(4, "classification", delta=0.5)
    window.add([0.9, 0.2], [1.2, -1.0])
    assert "spearman" not in window.metrics()  # two points say nothing yet
    assert window.metrics()["label_accuracy"] == 1.0
    window.add([0.6, 0.4], [0.0, 1.0])  # both labels wrong; ranks: 0.6 > 0.4 but 0.0 < 1.0
    metrics = window.metrics()
    assert metrics["label_accuracy"] == 0.5
    # ranks 4,1,3,2 against 4,1,2,3: sum d^2 = 2, rho = 1 - 6*2/(4*15)
    assert metrics["spearman"] == pytest.approx(0.8)
    window.add([0.1, 0.8], [-1.0, 1.0])  # the first two pairs leave the window
    assert window.metrics()["label_accuracy"] == 0.5
    ranking = AgreementWindow(8, "ranking", delta=0.5)
    ranking.add([3.0, 1.0, 2.0], [1.0, -1.0, 0.0])
    assert ranking.metrics() == {"spearman": pytest.approx(1.0)}


def test_a_resumed_hybrid_run_starts_its_agreement_window_with_the_checks_before_its_checkpoint(tmp_path):
    """The window of a run resumed at step 2 holds what the unbroken run's did: the scored checks
    of steps 0 and 1, in order; the re-run step's and the unscored ones are not in it."""
    rows = [{"step": 0, "context_key": "a", "reply": "r", "r_fut": 0.9, "error": None, "reward_model_score": 0.8},
            {"step": 0, "context_key": "b", "reply": "r", "r_fut": None, "error": "x", "reward_model_score": 0.3},
            {"step": 1, "context_key": "a", "reply": "r", "r_fut": -0.2, "error": None, "reward_model_score": 0.4},
            {"step": 1, "context_key": "b", "reply": "r", "r_fut": 0.5, "error": None},  # a simulated run's row
            {"step": 2, "context_key": "a", "reply": "r", "r_fut": 0.1, "error": None, "reward_model_score": 0.6}]
    log = tmp_path / "futures.jsonl"
    log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = build_config(None, {})
    simulator = FutureSimulator(config, [], log, use_cache=False, chat_models={"local": ScriptedChatModel(script={})})
    simulator.resume_at(2, None)
    scorer = type("Scorer", (), {"objective": "classification"})()
    hybrid = HybridFutureReward(scorer, simulator, FormatSpec(), fraction=0.5, use_simulated=False, window=8, seed=0)
    assert list(hybrid.agreement.pairs) == [(0.8, 0.9), (0.4, -0.2)]
    assert [row["step"] for row in read_jsonl(log)] == [0, 0, 1, 1]
    fresh = FutureSimulator(config, [], tmp_path / "none.jsonl", use_cache=False,
                            chat_models={"local": ScriptedChatModel(script={})})
    assert not HybridFutureReward(scorer, fresh, FormatSpec(), fraction=0.5, use_simulated=False, window=8,
                                  seed=0).agreement.pairs


@pytest.mark.parametrize("format_first", [True, False])
def test_a_completion_whose_future_failed_gets_no_format_reward_either(format_first):
    spec = FormatSpec()
    unscored = UnscoredCompletions()
    format_reward = WithheldWhereFutureFailed(FormatReward(spec), unscored)
    completions = ["<think>a</think><response>b</response>", "<think>a</think><response>c</response>", "plain"]

    async def both():
        async def future_reward():
            await asyncio.sleep(0.01)
            unscored.publish(completions, {1})

        results = await asyncio.gather(format_reward([], completions), future_reward()) if format_first else \
            (await asyncio.gather(future_reward(), format_reward([], completions)))[::-1]
        return results[0]

    assert asyncio.run(both()) == [1.0, None, 0.0]
    assert not unscored._calls  # nothing left behind between steps


def test_simulated_rewards_follow_the_formula_and_withhold_both_rewards_of_an_unscored_future(tmp_path):
    """Graph logic with a scripted model; the real server runs the same path above."""
    case = Case(id="c1", situation="I lost my job.", dialog=[Message(speaker="seeker", content="I lost my job."),
                                                             Message(speaker="supporter", content="I'm sorry.")])
    context = Context(case, position=1)
    critic = lambda messages: "nonsense" if "BAD" in messages[-1].content else "D) The seeker's issue is solved."
    model = ScriptedChatModel(script={"supporter": ["How are you?"], "user_simulator": ["Thanks, I feel better."],
                                      "critic": critic})
    config = build_config(None, {"episode": {"max_turns": 2, "critic_samples": 2}})
    spec = FormatSpec()
    unscored = UnscoredCompletions()
    completions = ["<think>x</think><response>That must hurt.</response>", "<think>unfinished",
                   "<think>x</think><response>BAD</response>"]
    logged = {}

    async def step():
        with FutureSimulator(config, [context], tmp_path / "futures.jsonl", use_cache=False,
                             chat_models={"local": model}) as simulator:
            return await asyncio.gather(
                SimulatedFutureReward(simulator, spec, unscored)([], completions, context_key=[context.key] * 3,
                                                                 log_metric=logged.__setitem__),
                WithheldWhereFutureFailed(FormatReward(spec), unscored)([], completions))

    r_fut, r_fmt = asyncio.run(step())
    # Goal reached at K = 1 of T = 2: s_K + lambda * (T - K) / T = 1 + 0.5 * 1/2.
    # The completion with no reply gets the formula's minimum (-1 on the default critic's scale).
    assert r_fut == [1.25, -1.0, None]
    assert r_fmt == [1.0, 0.0, None]
    assert logged["futures/simulated"] == 2 and logged["futures/failed"] == 1  # the empty reply is not simulated
    # The good future stops at turn 1; the unscored one runs to T = 2 (one future-supporter reply).
    assert logged["cost/user_simulator/calls"] == 3 and logged["cost/supporter/calls"] == 1
    # l = 2 per turn; each unparsable sample is asked again critic_retries = 2 times.
    assert logged["cost/critic/calls"] == 2 + 2 * (2 + 2 * 2)
    futures = read_jsonl(tmp_path / "futures.jsonl")
    assert [f["reply"] for f in futures] == ["That must hurt.", "BAD"]
    assert futures[1]["error"] == "no parsable critic verdict" and futures[0]["K"] == 1


def test_a_future_a_simulated_role_cut_short_gets_no_reward_and_says_why(tmp_path):
    """The future supporter gives no usable reply after the first turn: the future ends at K = 1
    of T = 2 without the goal, and its one verdict is no outcome to reward the candidate by."""
    case = Case(id="c1", situation="I lost my job.", dialog=[Message(speaker="seeker", content="I lost my job."),
                                                             Message(speaker="supporter", content="I'm sorry.")])
    context = Context(case, position=1)
    model = ScriptedChatModel(script={"supporter": [""], "user_simulator": ["I am still sad."],
                                      "critic": ["B) The seeker feels the same."]})
    config = build_config(None, {"episode": {"max_turns": 2, "critic_samples": 1}})
    unscored = UnscoredCompletions()

    async def step():
        with FutureSimulator(config, [context], tmp_path / "futures.jsonl", use_cache=False,
                             chat_models={"local": model}) as simulator:
            return await SimulatedFutureReward(simulator, FormatSpec(), unscored)(
                [], ["<think>x</think><response>That must hurt.</response>"], context_key=[context.key])

    assert asyncio.run(step()) == [None]
    (future,) = read_jsonl(tmp_path / "futures.jsonl")
    assert future["K"] == 1 and future["success"] is False and len(future["turn_scores"]) == 1
    assert future["r_fut"] is None and future["error"] == "cut short: the future supporter gave no usable reply"
