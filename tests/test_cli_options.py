"""One CLI mechanism: every option of every command comes from a field of a pydantic model (a
config's, or a command's `Options` model), so its name, type, bounds, help and shown default are the
field's. An option that sets a run's configuration says which RunConfig field (`sets`), shows that
field's default, and lands on it; nothing in the tree declares an option by hand."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path
from typing import Literal, get_args

import pytest
from pydantic import BaseModel

from esc_agents.cli import build_parser, options
from esc_agents.cli import judge as judge_command
from esc_agents.cli import rewards as rewards_command
from esc_agents.cli.config_flags import Cli, ConfigFlags, Options, option, shown
from esc_agents.cli.values import OUT_FOLDER, named_number
from esc_agents.config import RunConfig, build_config
from esc_agents.core.errors import UserError

CLI = Path(__file__).resolve().parents[1] / "esc_agents" / "cli"


def actions(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, action) for every argument of every command, the root's included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from actions(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def name(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else action.dest


def cli_of(action: argparse.Action) -> Cli:
    info = action.model.model_fields[action.field]
    return next((item for item in info.metadata if isinstance(item, Cli)), Cli())


def config_default(path: str):
    """A RunConfig field's default, None under a section that is unset by default."""
    value = RunConfig()
    for part in path.split("."):
        value = getattr(value, part) if isinstance(value, BaseModel) else None
    return value


def test_no_option_is_declared_by_hand():
    found = list(actions(build_parser()))
    assert len(found) > 300
    by_hand = [f"{' '.join(path)} {name(action)}" for path, action in found
               if not hasattr(action, "field") and not isinstance(action, argparse._VersionAction)]
    assert not by_hand, by_hand
    # and a read of the tree: the one add_argument call outside config_flags.py is --version
    calls = []
    for module in sorted(CLI.glob("*.py")):
        if module.name == "config_flags.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                calls.append((module.name, ast.literal_eval(node.args[0]) if node.args else None))
    assert calls == [("main.py", "--version")], calls


def test_every_option_of_the_run_commands_sets_a_runconfig_field_or_is_plumbing():
    """simulate, rewards, compare, bias and judge: each option either overrides RunConfig fields
    that exist (`sets`) or is plumbing of the command (cases, folders, cache, concurrency)."""
    plumbing = {"config", "dataset", "limit", "concurrency", "supporter_model", "cache", "no_cache", "offline",
                "same_model", "max_invalid_rate", "out", "supporters", "runs", "allow_mismatch", "labels",
                "personas", "user_models", "critic_models", "seeds", "shard", "eval_split", "allow_eval_overlap",
                "app_dir", "progress", "report_to"}
    for path, action in actions(build_parser()):
        if len(path) != 1 or path[0] not in ("simulate", "rewards", "compare", "bias", "judge"):
            continue
        sets = cli_of(action).sets
        assert sets or action.dest in plumbing, (path, name(action))
        for target in sets:
            *parents, leaf = target.split(".")
            model = RunConfig
            for part in parents:  # through `X | None` to X
                model = next(kind for kind in (model.model_fields[part].annotation,
                                               *get_args(model.model_fields[part].annotation))
                             if isinstance(kind, type) and issubclass(kind, BaseModel))
            assert leaf in model.model_fields, target


def test_every_option_shows_the_default_of_its_model():
    checked = 0
    for path, action in actions(build_parser()):
        if isinstance(action, argparse._VersionAction):
            continue
        text = action.help.replace("%%", "%")
        assert "%(default)" not in text and not re.search(r"\(default [^:]", text), (path, name(action), text)
        info = action.model.model_fields[action.field.partition(".")[0]]
        if not issubclass(action.model, Options):  # a config's: tests/test_cli_config_flags.py
            assert text.endswith(")") and "(default: " in text, (path, name(action))
            continue
        cli = cli_of(action)
        if cli.needed:
            assert text.endswith(f"({cli.needed})")
            continue
        if info.is_required():
            assert "(default" not in text, (path, name(action))
            continue
        default = info.get_default(call_default_factory=True)
        if default is None and cli.sets:
            default = config_default(cli.sets[0])
        expected = cli.unset if default is None and cli.unset else shown(default)
        assert text.endswith(f" (default: {expected})"), (path, name(action), text)
        assert text.startswith(info.description), (path, name(action))
        checked += 1
    assert checked > 150


def help_of(*path: str) -> dict[str, str]:
    parser = build_parser()
    for part in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[part]
    return {name(action): " ".join(action.help.split()) for action in parser._actions if action.help}


def test_the_run_options_show_the_runconfig_defaults():
    config = RunConfig()
    simulate = help_of("simulate")
    for option_name, value in (("--max-turns", config.episode.max_turns),
                               ("--critic-samples", config.episode.critic_samples),
                               ("--success-threshold", config.episode.success_threshold), ("--seed", config.seed),
                               ("--supporter-prompt", config.supporter.prompt),
                               ("--persona", config.user_simulator.prompt), ("--critic-prompt", config.critic.prompt),
                               ("--endpoint", config.supporter.endpoint),
                               ("--critic-endpoint", config.critic.endpoint),
                               ("--supporter-max-tokens", config.supporter.max_tokens),
                               ("--user-max-tokens", config.user_simulator.max_tokens)):
        assert simulate[option_name].endswith(f"(default: {value})"), option_name
    rewards = help_of("rewards")
    for option_name, value in (("--candidates", config.rewards.candidates), ("--delta", config.rewards.delta),
                               ("--formula", config.rewards.formula),
                               ("--positions", config.rewards.sampling.positions),
                               ("--per-dialogue", config.rewards.sampling.per_dialogue),
                               ("--min-history", config.rewards.sampling.min_history),
                               ("--dataset", "esconv:ppdpp_train"), ("--param", "none")):
        assert rewards[option_name].endswith(f"(default: {value})"), option_name
    assert rewards["--future-supporter-endpoint"].endswith("(default: the proposer's)")
    assert help_of("judge")["--judge-prompt"].endswith("(default: default)")
    assert help_of("rewards", "export")["--valid"].endswith("(default: 0.1)")


# A value for each option that sets config fields, unlike the field's default.
VALUES = {"--max-turns": 3, "--critic-samples": 2, "--success-threshold": 0.25, "--seed": 7,
          "--supporter-prompt": "think", "--persona": "resistant", "--critic-prompt": "mine.yaml",
          "--critic": "known-answer-critic", "--seeker": "known-answer-seeker", "--endpoint": "vllm",
          "--supporter-endpoint": "openai", "--user-endpoint": "openai", "--critic-endpoint": "openai",
          "--context-window": 6, "--supporter-max-tokens": 64, "--user-max-tokens": 32, "--limit": 5, "--contexts": 9, "--candidates": 3,
          "--positions": "all", "--per-dialogue": 2, "--min-history": 3, "--formula": "terminal", "--delta": 0.25,
          "--param": "lambda=0.5", "--future-supporter-prompt": "think", "--future-supporter-endpoint": "vllm",
          "--judge-prompt": "strict.yaml", "--judge-endpoint": "vllm"}


@pytest.mark.parametrize("command", ["simulate", "rewards", "compare", "bias", "judge"])
def test_each_run_option_lands_on_the_fields_it_sets(command):
    def config(*argv: str):
        args = build_parser().parse_args([command, "--out", "o", *argv])
        if command == "judge":
            return build_config(None, judge_command.FLAGS.overrides(args))
        return options.config_from(args, flags=rewards_command.FLAGS if command == "rewards" else options.RUN)

    def at(config, target):
        value = config
        for part in target.split("."):
            value = getattr(value, part, None)
        return value

    base = config()
    tried = 0
    for path, action in actions(build_parser()):
        if path != (command,) or not cli_of(action).sets:
            continue
        given = VALUES[action.option_strings[0]]
        changed = config(action.option_strings[0], str(given))
        expected = dict([named_number(given)]) if action.dest == "param" else given
        for target in cli_of(action).sets:
            assert at(changed, target) == expected != at(base, target), (command, target)
        tried += 1
    assert tried >= (2 if command == "judge" else 15)


def test_the_endpoint_of_a_role_wins_over_endpoint_and_each_is_blamed_for_its_own():
    args = build_parser().parse_args(["simulate", "--out", "o", "--endpoint", "vllm", "--critic-endpoint", "openai"])
    config = options.config_from(args)
    assert (config.supporter.endpoint, config.user_simulator.endpoint, config.critic.endpoint) == \
        ("vllm", "vllm", "openai")
    assert options.RUN.given(args) == {"supporter.endpoint": "--endpoint", "user_simulator.endpoint": "--endpoint",
                                       "critic.endpoint": "--critic-endpoint"}
    with pytest.raises(UserError, match=r"^--future-supporter-endpoint: future_supporter\.endpoint: unknown endpoint"):
        options.config_from(build_parser().parse_args(["rewards", "--out", "o", "--future-supporter-endpoint", "nope"]),
                            flags=rewards_command.FLAGS)


def test_judge_binds_its_default_judge_unless_told():
    args = build_parser().parse_args(["judge", "--runs", "a", "b", "--out", "o"])
    assert args.judge_prompt is None and judge_command.FLAGS.given(args) == {}  # not given: nothing to blame
    judge = build_config(None, judge_command.FLAGS.overrides(args)).judge
    assert (judge.endpoint, judge.prompt) == ("local", "default")
    sheet = build_parser().parse_args(["judge", "export", "--runs", "a", "b", "--out", "o"])
    assert (sheet.judge_prompt, sheet.seed) == ("default", 0)  # an action's own options: their defaults


def test_formula_parameters_are_name_number_pairs_the_last_winning(capsys):
    args = build_parser().parse_args(["rewards", "relabel", "d", "--formula", "terminal", "--param", "lambda=0.5",
                                      "--param", "gamma=2", "--param", "lambda=0.25"])
    assert args.param == {"lambda": 0.25, "gamma": 2.0} and args.delta == 0.5 and args.out is None
    assert build_parser().parse_args(["rewards", "relabel", "d", "--formula", "terminal"]).param == {}
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["rewards", "--out", "o", "--param", "lambda=high"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "rlff-esc: error: rewards: argument --param: takes NAME=NUMBER, got 'lambda=high'"


def test_the_max_invalid_rate_default_comes_from_the_environment_when_the_parser_is_built(monkeypatch):
    monkeypatch.setenv(options.MAX_INVALID_RATE_ENV, "0.5")
    assert build_parser().parse_args(["evaluate", "d"]).max_invalid_rate == 0.5
    assert help_of("simulate")["--max-invalid-rate"].endswith("(default: 0.5)")
    monkeypatch.setenv(options.MAX_INVALID_RATE_ENV, "2")
    with pytest.raises(UserError, match=r"^\$RLFF_ESC_MAX_INVALID_RATE: must be at most 1, got 2$"):
        build_parser()
    monkeypatch.delenv(options.MAX_INVALID_RATE_ENV)
    assert build_parser().parse_args(["evaluate", "d"]).max_invalid_rate == options.MAX_INVALID_RATE


def test_process_options_go_before_or_after_the_command():
    assert build_parser().parse_args(["graph"]).progress == "auto"
    assert build_parser().parse_args(["--progress", "off", "graph"]).progress == "off"
    assert build_parser().parse_args(["--progress", "off", "graph", "--progress", "on"]).progress == "on"
    assert build_parser().parse_args(["roles", "--app-dir", "x"]).app_dir == "x"


class Toy(Options):
    target = RunConfig

    folders: list[Path] = option(..., "folders", positional=True, nargs="+", metavar="DIR")
    out: Path = option(..., "output", parse=OUT_FOLDER, metavar="DIR")
    turns: int | None = option(None, "turn cap", ge=1, metavar="T", sets="episode.max_turns")
    mode: Literal["a", "b"] = option("a", "a mode")
    pairs: dict[str, object] = option({}, "settings")
    tags: list[str] = option([], "tags")
    quiet: bool = option(False, "say less")
    where: str | None = option(None, "somewhere", unset="nowhere")


def test_an_options_model_gives_positional_required_repeated_and_config_setting_options(capsys):
    parser = argparse.ArgumentParser()
    flags = ConfigFlags(Toy)
    flags.add_to(parser)
    args = parser.parse_args(["a", "b", "--out", "o", "--pairs", "k=1", "--pairs", "j=x", "--tags", "t",
                              "--tags", "u", "--turns", "3"])
    assert args.folders == [Path("a"), Path("b")] and args.out == Path("o") and args.mode == "a"
    assert args.pairs == {"k": 1, "j": "x"} and args.tags == ["t", "u"] and args.quiet is False
    assert flags.overrides(args) == {"episode": {"max_turns": 3}}
    assert flags.given(args) == {"episode.max_turns": "--turns"}
    text = {name(action): action.help for action in parser._actions}
    assert text["--turns"] == "turn cap (default: 8)" and text["--where"] == "somewhere (default: nowhere)"
    assert text["--out"] == "output" and text["--mode"] == "a mode (default: a)"
    assert flags.overrides(parser.parse_args(["a", "--out", "o"])) == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["a"])  # --out is required
    assert "required: --out" in capsys.readouterr().err


def test_an_options_model_that_sets_what_its_config_lacks_is_refused_when_declared():
    class Untargeted(Options):
        turns: int | None = option(None, "turn cap", sets="episode.max_turns")

    class Misnamed(Options):
        target = RunConfig
        turns: int | None = option(None, "turn cap", sets="episode.turns")

    with pytest.raises(TypeError, match="sets episode.max_turns, but the model has no target"):
        ConfigFlags(Untargeted)
    with pytest.raises(TypeError, match="RunConfig has no field episode.turns"):
        ConfigFlags(Misnamed)
