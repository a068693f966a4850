"""The shipped training configs and accelerate recipes load, so the README's commands stay true."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from training.grpo.config import load_grpo_config
from training.reward_model.config import load_reward_model_config

DOCS = Path(__file__).parent.parent / "docs"


def test_shipped_training_configs_validate():
    grpo = load_grpo_config(DOCS / "configs" / "grpo-qwen7b.yaml")
    assert grpo.use_vllm and grpo.num_generations == 4 and grpo.temperature == 1.1 and grpo.alpha == 0.5
    assert load_reward_model_config(DOCS / "configs" / "rm-llama-1b.yaml").objective == "classification"


def test_the_commented_trl_example_of_the_cpu_config_is_valid_when_uncommented(tmp_path):
    text = (DOCS / "configs" / "grpo-cpu.yaml").read_text()
    example = text[text.index("# trl:"):]
    uncommented = tmp_path / "grpo-cpu.yaml"
    uncommented.write_text(text + "\n".join(line.removeprefix("# ") for line in example.splitlines()) + "\n")
    assert load_grpo_config(DOCS / "configs" / "grpo-cpu.yaml").trl == {}
    assert load_grpo_config(uncommented).trl == {"loss_type": "dr_grpo", "scale_rewards": "none",
                                                 "mask_truncated_completions": True}


def test_the_known_answer_recipes_validate_and_change_only_what_they_are_named_for():
    base = load_grpo_config(DOCS / "known-answer" / "grpo.yaml").model_dump()
    changed = {"scale-none": {"trl": {"scale_rewards": "none"}}, "completion-96": {"max_completion_length": 96},
               "prompts-2": {"batch_size": 8}, "temperature-0.8": {"temperature": 0.8}, "beta-0": {"beta": 0.0}}
    recipes = sorted((DOCS / "known-answer" / "recipes").glob("*.yaml"))
    assert [path.stem for path in recipes] == sorted(changed)
    for path in recipes:
        recipe = load_grpo_config(path).model_dump()
        assert {key: value for key, value in recipe.items() if base[key] != value} == changed[path.stem], path.name


@pytest.mark.parametrize("args, message", [
    (["--grpo-config", "nowhere.yaml"], "--grpo-config: config file not found: nowhere.yaml"),
    (["--grpo-config", "README.md"], "--grpo-config: README.md: not valid YAML"),
    (["--critic-samples", "0"], "argument --critic-samples: must be at least 1, got 0"),
    (["--steps", "-1"], "argument --steps: must be at least 1, got -1"),
])
def test_the_learning_check_refuses_a_bad_recipe_before_it_writes_anything(args, message, tmp_path):
    script = DOCS.parent / "benchmarks" / "learning_check.py"
    result = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "out"), *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED"),
                                        ("fsdp", "FSDP")])
def test_accelerate_recipes_name_their_backend(name, kind):
    recipe = yaml.safe_load((DOCS / "accelerate" / f"{name}.yaml").read_text())
    assert recipe["distributed_type"] == kind and recipe["use_cpu"] is False
    if kind == "DEEPSPEED":
        assert recipe["deepspeed_config"]["zero_stage"] == int(name[-1])


def test_batch_must_hold_whole_groups():
    with pytest.raises(Exception, match="multiple of num_generations"):
        load_grpo_config(None, batch_size=6)
