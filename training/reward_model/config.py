"""Every setting of a reward-model run, typed, loadable from YAML (`--config`), overridable
from the command line, and saved with the model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from esc_agents.config import Strict, load_typed

Objective = Literal["classification", "ranking", "regression"]
OBJECTIVES: tuple[str, ...] = ("classification", "ranking", "regression")


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


def load_reward_model_config(path: str | Path | None, **overrides) -> RewardModelConfig:
    return load_typed(RewardModelConfig, path, overrides)
