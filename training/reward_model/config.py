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
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"


class RewardModelConfig(Strict):
    objective: Objective = "classification"
    # "embedded" (the SmolLM2 folder converted from the bundled GGUF), a local model folder,
    # or a hub id already in the local Hugging Face cache; decoder or encoder.
    backbone: str = "embedded"
    max_length: int = Field(384, ge=16)  # tokens of context + reply; the context is cut from the left
    lora: LoraSettings | None = None  # None: train every weight
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    logging_steps: int = Field(5, ge=1)
    eval_steps: int = Field(25, ge=1)
    save_steps: int = Field(25, ge=1)
    ranking_margin: bool = False  # Bradley-Terry with the R_fut gap as margin
    dtype: Literal["float32", "bfloat16"] = "float32"
    report_to: list[str] = Field(default_factory=lambda: ["none"])  # e.g. ["tensorboard"], ["wandb"]
    # Used only when --data is a `rewards` run folder rather than an export.
    valid: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)
    seed: int = 0


def load_reward_model_config(path: str | Path | None, **overrides) -> RewardModelConfig:
    return load_typed(RewardModelConfig, path, overrides)
