"""GRPO's reward as a rubric: a user's term (the README's length penalty) added with
`--reward-fn`, `rewards:` in a config or an `rlff_esc.rewards` entry point, logged on its own and
recorded in grpo.json; a completion whose simulated future failed gets None from it as from R_fmt;
a term that cannot load is refused in one line before any weight loads; an old run folder (no
reward list in its saved config) still resumes."""

import asyncio
import json
import sys
import textwrap

import pytest
from trl.trainer.utils import is_async_callable

from esc_agents.cli import build_parser, train_grpo
from esc_agents.config import build_config
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case, Message
from tests.conftest import read_jsonl, rlff_esc
from tests.fakes import ScriptedChatModel
from tests.test_role_plugins import PLUGINS
from training.contexts import Context
from training.grpo.config import GrpoRunConfig, load_grpo_config
from training.grpo.format_reward import FormatSpec
from training.grpo.futures_simulator import FutureSimulator
from training.grpo.rubric import rubric, user_terms
from training.run_folder import claim

# The README's worked example, word for word.
TERMS = textwrap.dedent('''
    def length_penalty(prompts, completions, completion_ids, **kwargs):
        """Minus one per 100 tokens the policy wrote, thinking included."""
        return [-len(ids) / 100 for ids in completion_ids]


    async def judged_later(prompts, completions, replies, **kwargs):
        return [float(len(reply.split())) for reply in replies]


    def without_kwargs(prompts, completions):
        return [0.0] * len(completions)
''')
CASE = Case(id="c1", situation="I lost my job.", dialog=[Message(speaker="seeker", content="I lost my job."),
                                                         Message(speaker="supporter", content="I'm sorry.")])
CONTEXT = Context(CASE, position=1)
LONG = " ".join(["word"] * 60)


@pytest.fixture
def terms_module(tmp_path, monkeypatch):
    """A module of terms in a folder on sys.path, imported afresh by each test."""
    (tmp_path / "lp_terms.py").write_text(TERMS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("lp_terms", None)
    yield tmp_path
    sys.modules.pop("lp_terms", None)


def options(*argv: str) -> GrpoRunConfig:
    return train_grpo.FLAGS.load(build_parser().parse_args(["train-grpo", "--out", "o", *argv]), None)


def test_reward_fn_options_and_a_config_list_make_the_rubric_and_its_weights(terms_module):
    config = options("--reward-fn", "lp_terms:length_penalty:0.1", "--reward-fn", "lp_terms:judged_later:-2",
                     "--alpha", "0.3")
    assert [(term.fn, term.weight) for term in config.rewards] == [("lp_terms:length_penalty", 0.1),
                                                                  ("lp_terms:judged_later", -2.0)]
    assert config.reward_weights() == [1.0, 0.3, 0.1, -2.0]  # --alpha stays R_fmt's weight
    terms = user_terms(config)
    assert [term.record() for term in terms] == [
        {"name": "length_penalty", "weight": 0.1, "fn": "lp_terms:length_penalty", "source": "path",
         "target": "lp_terms:length_penalty", "file": str(terms_module / "lp_terms.py")},
        {"name": "judged_later", "weight": -2.0, "fn": "lp_terms:judged_later", "source": "path",
         "target": "lp_terms:judged_later", "file": str(terms_module / "lp_terms.py")}]
    own = terms_module / "grpo.yaml"
    own.write_text("rewards:\n  - {fn: 'lp_terms:length_penalty', weight: 0.1, name: brevity}\n")
    from_file = train_grpo.FLAGS.load(build_parser().parse_args(["train-grpo", "--out", "o"]), own)
    assert [term.name for term in user_terms(from_file)] == ["brevity"]
    # an option replaces the file's list, as every list option does
    replaced = train_grpo.FLAGS.load(build_parser().parse_args(
        ["train-grpo", "--out", "o", "--reward-fn", "lp_terms:judged_later:1"]), own)
    assert [term.fn for term in replaced.rewards] == ["lp_terms:judged_later"]


def test_an_entry_point_names_a_term(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    (term,) = user_terms(options("--reward-fn", "brevity:0.2"))
    assert term.record() == {"name": "brevity", "weight": 0.2, "fn": "brevity", "source": "entry point",
                             "target": "rlff_test_plugins:brevity", "file": str(PLUGINS / "rlff_test_plugins.py")}


@pytest.mark.parametrize("argv, message", [
    (["--reward-fn", "lp_terms:nope:1"], "reward term 'lp_terms:nope' cannot be loaded (AttributeError"),
    (["--reward-fn", "no_such_module:f:1"], "No module named 'no_such_module'); rlff-esc imports your own modules"),
    (["--reward-fn", "unknown:1"], "unknown reward term 'unknown' (known: "),
    (["--reward-fn", "lp_terms:without_kwargs:1"], "cannot be called as fn(prompts, completions, **kwargs)"),
    (["--reward-fn", "lp_terms:length_penalty:1", "--reward-fn", "lp_terms:length_penalty:2"],
     "its name 'length_penalty' is taken"),
])
def test_a_term_that_cannot_load_is_refused_naming_it(terms_module, argv, message):
    with pytest.raises(UserError) as error:
        user_terms(options(*argv))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_term_may_not_take_a_built_in_name(terms_module):
    own = terms_module / "grpo.yaml"
    own.write_text("rewards:\n  - {fn: 'lp_terms:length_penalty', weight: 1, name: r_fmt}\n")
    with pytest.raises(UserError, match="a reward term may not be named 'r_fmt'"):
        train_grpo.FLAGS.load(build_parser().parse_args(["train-grpo", "--out", "o"]), own)


def test_a_bad_reward_fn_is_refused_in_one_line_before_any_weight_loads(terms_module):
    for argv, message in ((["--reward-fn", "lp_terms"], "argument --reward-fn: 'lp_terms' is not NAME:WEIGHT"),
                          (["--reward-fn", "lp_terms:missing:0.1"], "reward term 'lp_terms:missing' cannot be loaded")):
        out = terms_module / "policy"
        result = rlff_esc("train-grpo", "--reward-model", "random", *argv, "--out", str(out), timeout=120,
                          cwd=terms_module)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
        assert not out.exists()


def test_a_run_folder_of_an_older_version_without_a_reward_list_resumes(tmp_path):
    old = GrpoRunConfig().model_dump()
    del old["rewards"]  # its saved config predates the rubric
    claim(tmp_path, {"config": old})
    claim(tmp_path, {"config": GrpoRunConfig().claimed()})  # the default rubric is the same run
    with_term = load_grpo_config(None, rewards=[{"fn": "lp_terms:length_penalty", "weight": 0.1}])
    with pytest.raises(UserError, match=r"other settings \(config.rewards\)"):
        claim(tmp_path, {"config": with_term.claimed()})


def test_a_completion_whose_future_failed_gets_no_reward_from_any_term(terms_module, tmp_path):
    """Called as TRL calls the rubric: every term of a `simulated` run gives None to the completion
    whose critic gave no parsable verdict, the user's (sync or async) as much as R_fmt."""
    critic = lambda messages: "nonsense" if "BAD" in messages[-1].content else "D) The seeker's issue is solved."
    model = ScriptedChatModel(script={"supporter": ["How are you?"], "user_simulator": ["Thanks, I feel better."],
                                      "critic": critic})
    run_config = build_config(None, {"episode": {"max_turns": 2, "critic_samples": 2}})
    config = options("--reward", "simulated", "--reward-fn", "lp_terms:length_penalty:0.1",
                     "--reward-fn", "lp_terms:judged_later:1")
    texts = [f"<think>x</think><response>{LONG}</response>", "<think>unfinished",
             "<think>x</think><response>BAD</response>"]
    completions = [[{"role": "assistant", "content": text}] for text in texts]
    logged = {}

    async def step():
        with FutureSimulator(run_config, [CONTEXT], tmp_path / "futures.jsonl", use_cache=False,
                             chat_models={"local": model}) as simulator:
            rewards = rubric(config, FormatSpec(), simulator)
            assert rewards.names == ["r_fut", "r_fmt", "length_penalty", "judged_later"]
            assert rewards.weights == [1.0, 0.5, 0.1, 1.0]
            assert all(is_async_callable(func) for func in rewards.funcs)  # TRL gathers them on its loop
            kwargs = {"prompts": [[]] * 3, "completions": completions, "completion_ids": [[1] * 60, [1] * 5, [1] * 10],
                      "context": [[]] * 3, "context_key": [CONTEXT.key] * 3, "trainer_state": None,
                      "log_extra": lambda *_: None, "log_metric": logged.__setitem__}
            values = await asyncio.gather(*(func(**kwargs) for func in rewards.funcs))
            assert not rewards.funcs[0].unscored._calls  # every term read the hand-over, nothing left behind
            return values

    r_fut, r_fmt, length_penalty, judged_later = asyncio.run(step())
    assert r_fut == [1.25, -1.0, None]
    assert r_fmt == [1.0, 0.0, None]
    assert length_penalty == [-0.6, -0.05, None]  # the failed future's completion gets none
    assert judged_later == [60.0, 0.0, None]  # the words of the reply the seeker sees; no reply, none
    assert logged["futures/failed"] == 1
    assert [future["reply"] for future in read_jsonl(tmp_path / "futures.jsonl")] == [LONG, "BAD"]


@pytest.mark.training
def test_a_users_term_trains_is_logged_plotted_and_recorded(tiny_policy, tmp_path):
    (tmp_path / "lp_terms.py").write_text(TERMS)
    out = tmp_path / "policy"
    result = rlff_esc("train-grpo", "--reward-model", "random", "--reward-fn", "lp_terms:length_penalty:0.1",
                      "--policy", str(tiny_policy), "--out", str(out), "--contexts", "2", "--batch-size", "2", "--num-generations", "2",
                      "--max-completion-length", "8", "--max-steps", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "length_penalty first" in result.stdout
    card = json.loads((out / "grpo.json").read_text())
    assert [(term["name"], term["weight"], term["source"]) for term in card["rubric"]] == [
        ("r_fut", 1.0, "built-in"), ("r_fmt", 0.5, "built-in"), ("length_penalty", 0.1, "path")]
    assert card["rubric"][0]["reward"] == "model" and card["rubric"][2]["fn"] == "lp_terms:length_penalty"
    assert card["rubric"][2]["file"] == str((tmp_path / "lp_terms.py").resolve())
    assert card["grpo_config"]["fields"]["reward_weights"] == [1.0, 0.5, 0.1]
    metrics = json.loads((out / "metrics.json").read_text())
    (entry,) = metrics["history"]
    penalty = entry["rewards/length_penalty/mean"]
    assert penalty == pytest.approx(-entry["completions/mean_length"] / 100, abs=1e-6)
    assert entry["reward"] == pytest.approx(entry["rewards/r_fut/mean"] + 0.5 * entry["rewards/r_fmt/mean"]
                                            + 0.1 * penalty, abs=1e-4)
    assert metrics["rewards"]["length_penalty"] == {"weight": 0.1, "first": penalty, "last": penalty}
    assert list(metrics["rewards"]) == ["r_fut", "r_fmt", "length_penalty"]
    assert (out / "curves.png").stat().st_size > 0
    rerun = rlff_esc("train-grpo", "--reward-model", "random", "--policy", str(tiny_policy), "--out", str(out),
                     "--contexts", "2",
                     "--batch-size", "2", "--num-generations", "2", "--max-completion-length", "8",
                     "--max-steps", "1", cwd=tmp_path, timeout=300)  # the term left out: another run
    assert rerun.returncode == 2 and "other settings (config.rewards)" in rerun.stderr.strip().splitlines()[-1]
