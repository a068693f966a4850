"""Every setting of a reward-model run, typed, loadable from YAML (`--config`), overridable
from the command line, and saved with the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from esc_agents.config import Strict, load_typed
from training.trainer_settings import check_passthrough

Objective = Literal["classification", "ranking", "regression"]
OBJECTIVES: tuple[str, ...] = ("classification", "ranking", "regression")
# The trainer-config fields this run's own settings decide, {field: the setting}; `trl:` may set every
# other field of the class the objective trains with (`trainer_class`), and is refused these.
TRL_DECIDED = {
    "output_dir": "run folder (--out)", "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "batch_size", "gradient_accumulation_steps": "gradient_accumulation",
    "num_train_epochs": "epochs", "warmup_steps": "warmup_ratio", "data_seed": "seed", "bf16": "dtype",
    "eval_strategy": "eval_steps and validation split", "max_length": "max_length",
    **{name: name for name in ("learning_rate", "max_steps", "weight_decay", "logging_steps", "eval_steps",
                               "save_steps", "report_to", "seed")},
}


def trainer_class(objective: str) -> type:
    """What the objective's trainer is configured with: TRL's RewardConfig for ranking (through
    RewardTrainer), transformers' TrainingArguments for the pointwise objectives."""
    if objective == "ranking":
        from trl import RewardConfig

        return RewardConfig
    from transformers import TrainingArguments

    return TrainingArguments


class LoraSettings(Strict):
    r: int = Field(16, ge=1, description="rank of the adapter")
    alpha: int = Field(32, ge=1, description="scaling numerator (alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: list[str] | str = Field("all-linear", description="the modules adapted")


class RewardModelConfig(Strict):
    objective: Objective = Field("classification", description="training objective: classification (the "
                                 "paper's), ranking or regression")
    backbone: str = Field("embedded", description="'embedded' (the SmolLM2 folder converted from the bundled "
                          "GGUF), a local model folder, or a hub id already in the local Hugging Face cache; "
                          "decoder or encoder")
    max_length: int = Field(384, ge=16, description="tokens of context + reply; the context is cut from the left "
                            "to fit")
    lora: LoraSettings | None = Field(None, description="train a LoRA adapter (merged into the saved model); "
                                      "unset: train every weight")
    learning_rate: float = Field(5e-5, gt=0, description="learning rate")
    batch_size: int = Field(8, ge=1, description="examples per device per step")
    gradient_accumulation: int = Field(1, ge=1, description="steps whose gradients add up before an update")
    epochs: float = Field(1.0, gt=0, description="passes over the training split")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs; unset: from epochs")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of the steps that warm the learning rate up")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")
    logging_steps: int = Field(5, ge=1, description="log every N steps")
    eval_steps: int = Field(25, ge=1, description="evaluate on the validation split every N steps")
    save_steps: int = Field(25, ge=1, description="checkpoint every N steps (a rerun resumes from the last)")
    ranking_margin: bool = Field(False, description="ranking: Bradley-Terry with the R_fut gap as margin")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="weights' dtype")
    report_to: list[str] = Field(default_factory=lambda: ["none"], description="trackers: tensorboard, wandb, ... "
                                 "(repeat the option for several); none: no tracker")
    valid: float = Field(0.15, ge=0, lt=1, description="share of dialogues for validation, when the data is a "
                         "rewards run folder split here rather than an export")
    test: float = Field(0.15, ge=0, lt=1, description="share of dialogues for test, likewise")
    seed: int = Field(0, description="seed of the split, the head's initialisation and training")
    trl: dict[str, Any] = Field(default_factory=dict, description="any other field of the trainer's config "
                                "(TRL's RewardConfig for ranking, transformers' TrainingArguments otherwise), checked "
                                "against its name and type; not those the settings above set")

    @field_validator("trl")
    @classmethod
    def _trl_fields(cls, settings: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if not settings or "objective" not in info.data:  # a bad objective is reported on its own
            return settings
        return check_passthrough(settings, trainer_class(info.data["objective"]), TRL_DECIDED)


def load_reward_model_config(path: str | Path | None, **overrides) -> RewardModelConfig:
    return load_typed(RewardModelConfig, path, overrides)
