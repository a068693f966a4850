"""The training commands' options are derived from their pydantic configs: each exposed field has
an option whose help shows the config's default and whose value lands on that field; a bad value is
one line naming the option and exit code 2. Also the CLI's own pieces: bias conditions as run
options, a train-grpo folder as a supporter, every command's --help."""

from __future__ import annotations

import argparse
import json
import re

import pytest
from pydantic import BaseModel, Field

from esc_agents.cli import build_parser, options, train_grpo, train_rm
from esc_agents.cli.bias import condition_options
from esc_agents.cli.config_flags import ConfigFlags, Flag
from esc_agents.core.errors import UserError
from esc_agents.evaluation.bias import Condition
from tests.conftest import rlff_esc
from training.grpo.config import TRL_DECIDED as GRPO_DECIDED
from training.grpo.config import GrpoRunConfig
from training.reward_model.config import LoraSettings

COMMANDS = [(("train-grpo",), train_grpo.FLAGS, ()), (("train-rm",), train_rm.FLAGS, ()),
            (("train-rm", "ablate"), train_rm.FLAGS, ("objective",))]
BASE = {"train-grpo": ["--out", "o"], "train-rm": ["--data", "d", "--out", "o"]}


def subparser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def config_default(model: type[BaseModel], field: str):
    value = model()
    for part in field.split("."):
        value = getattr(value, part)
    return value


def as_help(default) -> str:
    """How the help must show a config default."""
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, list):
        return ", ".join(default) or "none"
    if default == {}:
        return "none"
    return str(default)


@pytest.mark.parametrize("path, flags, excluded", COMMANDS, ids=lambda value: " ".join(value)
                         if isinstance(value, tuple) and value and isinstance(value[0], str) else None)
def test_every_exposed_field_has_an_option_whose_help_shows_the_config_default(path, flags, excluded):
    parser = subparser(path)
    by_option = {action.option_strings[0]: action for action in parser._actions if action.option_strings}
    text = " ".join(parser.format_help().split())
    exposed = [flag for flag in flags.flags if flag.field not in excluded]
    assert len(exposed) >= 9
    for flag in exposed:
        action = by_option[flag.name]
        default = config_default(flags.model, flag.field)
        assert action.help.endswith(f"(default: {as_help(default)})"), (flag.name, action.help)
        # the help as printed (wrapped lines joined) says it too, and the field's description
        description = " ".join(_field_info(flags.model, flag.field).description.split())
        assert f"{description} (default: {as_help(default)})" in text, flag.name
    if flags is train_rm.FLAGS:
        assert ("--objective" in by_option) == ("objective" not in excluded)


def _field_info(model, field):
    *parents, leaf = field.split(".")
    for part in parents:
        model = type(getattr(model(), part))
    return model.model_fields[leaf]


@pytest.mark.parametrize("path, flags", [(("train-grpo",), train_grpo.FLAGS), (("train-rm",), train_rm.FLAGS)])
def test_each_option_given_its_default_lands_on_its_field(path, flags):
    for flag in flags.flags:
        default = config_default(flags.model, flag.field)
        if default is None or isinstance(default, (bool, dict)) or default == []:  # nothing to give
            continue
        values = default if isinstance(default, list) else [default]
        argv = [*path, *BASE[path[0]]] + [part for value in values for part in (flag.name, str(value))]
        args = build_parser().parse_args(argv)
        assert flags.given(args) == {flag.field: flag.name}
        loaded = flags.load(args, None)
        assert config_default(type(loaded), flag.field) == default, flag.name
        assert loaded == flags.model()


def test_values_reach_nested_fields_and_switches_turn_sub_settings_on(tmp_path):
    args = build_parser().parse_args(["train-grpo", "--out", "o", "--future-turns", "2", "--contexts", "5",
                                      "--use-simulated", "--report-to", "wandb", "--report-to", "tensorboard"])
    config = train_grpo.FLAGS.load(args, None)
    assert config.simulation.max_turns == 2 and config.simulation.critic_samples is None
    assert config.sampling.contexts == 5 and config.sampling.per_dialogue == 2  # the rest of sampling stays
    assert config.hybrid_use_simulated is True and config.report_to == ["wandb", "tensorboard"]

    rm = ["train-rm", "--data", "d", "--out", "o"]
    assert train_rm.FLAGS.load(build_parser().parse_args(rm), None).lora is None
    assert train_rm.FLAGS.load(build_parser().parse_args([*rm, "--lora"]), None).lora == LoraSettings()
    own = tmp_path / "rm.yaml"
    own.write_text("lora: {r: 4}\nlearning_rate: 0.001\n")
    config = train_rm.FLAGS.load(build_parser().parse_args([*rm, "--lora", "--learning-rate", "0.01"]), own)
    assert config.lora.r == 4 and config.learning_rate == 0.01  # the file's LoRA settings, the option's rate


@pytest.mark.parametrize("args, message", [
    (["train-grpo", "--temperature", "0"], "argument --temperature: must be above 0, got 0"),
    (["train-grpo", "--max-completion-length", "7"], "argument --max-completion-length: must be at least 8, got 7"),
    (["train-grpo", "--reward", "oracle"], "argument --reward: invalid choice: 'oracle'"),
    (["train-rm", "--max-length", "15"], "argument --max-length: must be at least 16, got 15"),
    (["train-rm", "--epochs", "many"], "argument --epochs: 'many' is not a number"),
])
def test_a_value_outside_the_fields_bounds_is_refused_when_parsed(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(args)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_a_rule_of_the_whole_config_names_the_options_given_and_otherwise_the_file(tmp_path):
    def load(*argv, path=None):
        return train_grpo.FLAGS.load(build_parser().parse_args(["train-grpo", "--out", "o", *argv]), path)

    with pytest.raises(UserError) as error:
        load("--num-generations", "3")
    assert str(error.value) == ("--num-generations: batch_size x gradient_accumulation must be a multiple of "
                                "num_generations (G)")
    with pytest.raises(UserError, match=r"^--batch-size, --num-generations: batch_size x"):
        load("--batch-size", "6", "--num-generations", "4")
    assert load("--batch-size", "6", "--num-generations", "3").batch_size == 6
    config = tmp_path / "grpo.yaml"
    config.write_text("batch_size: 6\n")
    with pytest.raises(UserError, match=r"grpo\.yaml: \(top level\): Value error, batch_size x"):
        load(path=config)  # nothing given on the command line: the file is named, as before
    assert load("--num-generations", "3", path=config).num_generations == 3  # the option mends the file


@pytest.mark.parametrize("args, message", [
    (["--num-generations", "3"], "--num-generations: batch_size x gradient_accumulation must be a multiple"),
    (["--num-generations", "1"], "--num-generations: num_generations (G) must be at least 2"),
    (["--learning-rate", "-1"], "argument --learning-rate: must be above 0, got -1"),
    (["--trl", "scale_reward=none"],
     "--trl: trl.scale_reward is not a field of GRPOConfig (did you mean scale_rewards?)"),
    (["--trl", "num_iterations=two"], "--trl: trl.num_iterations: input should be a valid integer, got 'two'"),
    (["--learning-rate", "0.001", "--trl", "learning_rate=0.002"],
     "--trl: trl.learning_rate is set by the run's own learning_rate; set it there, not in trl"),
    (["--trl", "loss_type"], "argument --trl: 'loss_type' is not KEY=VALUE"),
])
def test_a_bad_derived_option_is_one_line_naming_it_and_exit_2(tmp_path, args, message):
    result = rlff_esc("train-grpo", "--reward-model", "random", *args, "--out", str(tmp_path / "policy"), timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlff-esc: error:") and message in lines[0], result.stderr
    assert not (tmp_path / "policy").exists()


def test_any_trl_setting_reaches_the_trainer_config_and_the_file_and_options_merge(tmp_path):
    from trl import GRPOConfig

    from training.grpo.trainer import grpo_arguments

    own = tmp_path / "grpo.yaml"
    own.write_text("learning_rate: 1.0e-4\ntrl: {loss_type: bnpo, num_iterations: 2, top_p: 0.9, min_p: 0.05}\n")
    options = ["scale_rewards=none", "loss_type=dr_grpo", "epsilon=1", "mask_truncated_completions=true",
               "min_p=null"]  # null is a value: it unsets the file's min_p, it is not an option left out
    args = build_parser().parse_args(["train-grpo", "--out", "o", *(part for kv in options for part in ("--trl", kv))])
    config = train_grpo.FLAGS.load(args, own)
    assert config.trl == {"loss_type": "dr_grpo", "num_iterations": 2, "top_p": 0.9, "scale_rewards": "none",
                          "epsilon": 1.0, "mask_truncated_completions": True,
                          "min_p": None}  # an option wins, key by key
    trained = grpo_arguments(config, tmp_path / "checkpoints")
    assert (trained.loss_type, trained.scale_rewards, trained.num_iterations, trained.top_p, trained.epsilon) == \
        ("dr_grpo", "none", 2, 0.9, 1.0)
    assert trained.mask_truncated_completions is True and trained.learning_rate == 1e-4 and trained.min_p is None
    assert trained.reward_weights == [1.0, config.alpha] and trained.save_total_limit == 2
    for trl_field, setting in GRPO_DECIDED.items():  # every field the run decides is a GRPOConfig field it sets
        assert trl_field in GRPOConfig.__dataclass_fields__, trl_field
        if setting in GrpoRunConfig.model_fields and setting not in ("alpha", "dtype", "report_to"):
            assert getattr(trained, trl_field) == getattr(config, setting), trl_field


def test_trl_settings_in_a_file_are_checked_and_both_ways_names_both(tmp_path):
    own = tmp_path / "grpo.yaml"
    own.write_text("trl: {learning_rate: 1.0e-4, beta_2: 0.1, epsilon: 1e-4}\n")
    with pytest.raises(UserError) as error:
        train_grpo.FLAGS.load(build_parser().parse_args(["train-grpo", "--out", "o"]), own)
    message = str(error.value)
    assert message.startswith(f"{own}: trl: ") and "\n" not in message
    assert "trl.learning_rate is set by the run's own learning_rate" in message
    assert "trl.beta_2 is not a field of GRPOConfig" in message
    assert "trl.epsilon: input should be a valid number, got '1e-4' (YAML reads a number without a dot" in message


def test_train_rm_trl_settings_are_checked_against_the_objectives_trainer_config(tmp_path):
    def load(*argv):
        return train_rm.FLAGS.load(build_parser().parse_args(["train-rm", "--data", "d", "--out", "o", *argv]), None)

    assert load("--trl", "lr_scheduler_type=cosine").trl == {"lr_scheduler_type": "cosine"}
    assert load("--objective", "ranking", "--trl", "center_rewards_coefficient=0.01").trl == \
        {"center_rewards_coefficient": 0.01}
    with pytest.raises(UserError, match="trl.center_rewards_coefficient is not a field of TrainingArguments"):
        load("--trl", "center_rewards_coefficient=0.01")  # a ranking (RewardConfig) setting; classification's has none
    with pytest.raises(UserError, match="trl.per_device_train_batch_size is set by the run's own batch_size"):
        load("--trl", "per_device_train_batch_size=2")
    from trl import RewardConfig

    from training.reward_model.config import TRL_DECIDED as RM_DECIDED
    from training.reward_model.train import ablate

    assert set(RM_DECIDED) <= set(RewardConfig.__dataclass_fields__)  # each a field of the class, or its superclass
    config = load("--objective", "ranking", "--trl", "center_rewards_coefficient=0.01")
    with pytest.raises(UserError, match="ablate trains classification too: trl.center_rewards_coefficient"):
        ablate(config, tmp_path / "data", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_field_the_command_line_cannot_show_or_check_is_refused_when_declared():
    class Undescribed(BaseModel):
        steps: int = 1

    class Unchecked(BaseModel):
        steps: int = Field(2, multiple_of=2, description="steps")

    with pytest.raises(TypeError, match="steps has no description"):
        ConfigFlags(Undescribed, ["steps"]).add_to(argparse.ArgumentParser())
    with pytest.raises(TypeError, match="cannot check MultipleOf"):
        ConfigFlags(Unchecked, ["steps"]).add_to(argparse.ArgumentParser())
    with pytest.raises(TypeError, match="has no field simulation.turns"):
        ConfigFlags(GrpoRunConfig, [Flag("simulation.turns")])


def test_a_bias_condition_sets_run_options_that_exist():
    run_options = vars(build_parser().parse_args(["bias", "--out", "o"]))
    chosen = condition_options(Condition("resistant", "vllm", None, 3))
    assert set(chosen) <= set(run_options)
    config = options.config_from(argparse.Namespace(**{**run_options, **chosen}))
    assert config.user_simulator.prompt == "resistant" and config.user_simulator.endpoint == "vllm"
    assert config.critic.endpoint == "local" and config.seed == 3


def test_a_bias_condition_that_does_not_vary_a_model_keeps_the_endpoint_options():
    args = build_parser().parse_args(["bias", "--out", "o", "--user-endpoint", "vllm", "--critic-endpoint", "openai"])
    chosen = condition_options(Condition("resistant", None, None, 0), args)
    config = options.config_from(argparse.Namespace(**{**vars(args), **chosen}))
    assert (config.user_simulator.endpoint, config.critic.endpoint) == ("vllm", "openai")
    varied = options.config_from(argparse.Namespace(**{**vars(args), **condition_options(
        Condition("resistant", "local", None, 0), args)}))
    assert (varied.user_simulator.endpoint, varied.critic.endpoint) == ("local", "openai")


def test_a_compared_prompt_runs_on_the_endpoint_options_and_options_a_spec_would_override_are_refused(tmp_path):
    args = build_parser().parse_args(["compare", "--out", "o", "--endpoint", "vllm", "--supporters", "a,b"])
    assert options.config_from(args, supporter_spec="think").supporter.endpoint == "vllm"
    assert options.config_from(args, supporter_spec="think@openai").supporter.endpoint == "openai"
    args.supporter_endpoint = "local"
    assert options.config_from(args, supporter_spec="think").supporter.endpoint == "local"
    for extra, message in ((["--supporter-prompt", "think"], "--supporter-prompt cannot go with --supporters"),
                           (["--runs", str(tmp_path), str(tmp_path)], "not both")):
        result = rlff_esc("compare", "--supporters", "vanilla,think", *extra, "--out", str(tmp_path / "c"), timeout=60)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    result = rlff_esc("bias", "--persona", "resistant", "--out", str(tmp_path / "b"), timeout=60)
    assert result.returncode == 2 and "--personas A,B" in result.stderr, result.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "b").exists()


def test_a_train_grpo_folder_is_served_from_its_merged_folder_under_its_own_name(tmp_path):
    run = tmp_path / "grpo-hybrid"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    merged = run / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    (merged / "policy.json").write_text(json.dumps({"id": "abc", "prompt": "think", "max_completion_length": 128}))
    label, binding = options.supporter(str(run))
    assert label == "grpo-hybrid"
    assert binding["endpoints"]["policy"]["model_path"] == str(merged.resolve())
    assert binding["supporter"] == {"endpoint": "policy", "prompt": "think", "max_tokens": 128}
    assert options.supporter("think@vllm") == ("think-vllm", {"supporter": {"prompt": "think", "endpoint": "vllm"}})


def commands(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name)
                yield from commands(sub, (*path, name))


def test_every_command_has_a_help_that_prints(capsys):
    found = list(commands(build_parser()))
    assert len(found) >= 26 and ("rewards", "relabel") in found and ("train-rm", "ablate") in found
    for path in found:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*path, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: rlff-esc {' '.join(path)}") and "%" not in re.sub(r"\d+%", "", text), path
