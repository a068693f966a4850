"""Every setting of a GRPO run, typed, loadable from YAML (`--config`), overridable from the
command line, and saved with the adapter. Defaults are the paper's preset (G = 4, tau = 1.1,
alpha = 0.5, LoRA on attention and MLP projections); the policy defaults to the embedded model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from esc_agents.config import ContextSampling, Strict, load_typed
from training.reward_model.config import LoraSettings

# A finished run folder holds the LoRA adapter and its run card.
ADAPTER = "adapter"
RUN_CARD = "grpo.json"
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RewardMode = Literal["model", "simulated", "hybrid"]


class FutureSimulation(Strict):
    """Where simulated futures come from (`reward: simulated` or `hybrid`): a run config (the one
    `simulate` and `rewards` read: endpoints, user simulator, critic, future supporter, formula,
    delta), with T, l and the formula overridable here."""

    config: str | None = None  # run-config YAML; None: the embedded default
    max_turns: int | None = Field(None, ge=1)  # T of each future; None: the run config's
    critic_samples: int | None = Field(None, ge=1)  # l; None: the run config's
    formula: str | None = None  # R_fut formula (reward_formulas registry); None: the run config's
    cache: bool = True  # replay and record completions in the completion cache
    # Each step's futures are new samples (the step and completion enter the cache key); False replays
    # the future of a (context, reply) pair seen before, in any step or in stage 1's shared cache.
    fresh_per_step: bool = True
    # A critic prompt that never yields a parsable verdict leaves every future unscored, and GRPO
    # would train on R_fmt alone for the whole run: stop after this many such steps in a row.
    max_unscorable_steps: int = Field(3, ge=1)


class GrpoRunConfig(Strict):
    policy: str = "embedded"  # "embedded", a model folder, or a cached hub id
    reward_model: str | None = None  # a `train-rm` folder, or "random" (untrained head)
    # R_fut from the reward model, from a simulated future per completion, or both (the model's
    # score is the reward; a random `check_fraction` is also simulated to watch the model).
    reward: RewardMode = "model"
    check_fraction: float = Field(0.25, ge=0, le=1)  # hybrid only
    hybrid_use_simulated: bool = False  # hybrid: reward checked completions with the simulated R_fut
    agreement_window: int = Field(64, ge=3)  # hybrid: Spearman/accuracy over the last N checked completions
    simulation: FutureSimulation = FutureSimulation()
    alpha: float = Field(0.5, ge=0)  # R = R_fut + alpha * R_fmt
    dataset: str = "esconv:ppdpp_train"
    sampling: ContextSampling = ContextSampling(positions="random", per_dialogue=2)
    prompt: str = "think"  # supporter prompt; its think/response tags are the format reward's
    # The latest N messages of the context in the prompt (None: all): the supporter's view, which
    # must be the reward model's (checked) and is the simulated futures' supporter's.
    context_window: int | None = Field(None, ge=1)
    num_generations: int = 4  # G
    temperature: float = Field(1.1, gt=0)
    max_completion_length: int = Field(96, ge=8)
    batch_size: int = Field(4, ge=1)  # completions per device per step; a multiple of G
    gradient_accumulation: int = Field(1, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    lr_scheduler: Literal["linear", "constant", "cosine"] = "linear"
    beta: float = Field(0.04, ge=0)  # KL coefficient; 0 skips the reference model
    max_steps: int = Field(100, ge=1)
    lora: LoraSettings = LoraSettings(target_modules=PROJECTIONS)
    scorer_batch_size: int = Field(16, ge=1)
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(25, ge=1)
    dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = False  # saves GPU memory on large policies; slower
    report_to: list[str] = Field(default_factory=lambda: ["none"])
    use_vllm: bool = False  # GPU only: pip install 'rlff-esc[gpu]'
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_base_url: str | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _group_fits(self) -> GrpoRunConfig:
        if self.num_generations < 2:
            raise ValueError("num_generations (G) must be at least 2: GRPO compares samples within a group")
        if (self.batch_size * self.gradient_accumulation) % self.num_generations:
            raise ValueError("batch_size x gradient_accumulation must be a multiple of num_generations (G)")
        return self


def load_grpo_config(path: str | Path | None, **overrides) -> GrpoRunConfig:
    return load_typed(GrpoRunConfig, path, overrides)
