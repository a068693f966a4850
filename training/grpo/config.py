"""Every setting of a GRPO run, typed, loadable from YAML (`--config`), overridable from the
command line, and saved with the adapter. Defaults are the paper's preset (G = 4, tau = 1.1,
alpha = 0.5, LoRA on attention and MLP projections); the policy defaults to the embedded model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, FiniteFloat, field_validator, model_validator

from esc_agents.config import ContextSampling, Strict, load_typed
from training.reward_model.config import LoraSettings
from training.trainer_settings import check_passthrough

# A finished run folder holds the LoRA adapter and its run card.
ADAPTER = "adapter"
RUN_CARD = "grpo.json"
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RewardMode = Literal["model", "simulated", "hybrid"]
# The GRPOConfig fields this run's own settings decide, {GRPOConfig field: the setting}; `trl:` may
# set every other GRPOConfig field and is refused these, so that no value is set two ways.
TRL_DECIDED = {
    "output_dir": "run folder (--out)", "reward_weights": "alpha and rewards", "bf16": "dtype",
    "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "gradient_accumulation",
    "lr_scheduler_type": "lr_scheduler", "activation_checkpointing": "gradient_checkpointing",  # its new name
    **{name: name for name in ("num_generations", "temperature", "max_completion_length", "learning_rate", "beta",
                               "max_steps", "logging_steps", "save_steps", "report_to", "seed",
                               "gradient_checkpointing", "use_vllm", "vllm_mode", "vllm_server_base_url")},
}


class FutureSimulation(Strict):
    """Where simulated futures come from (`reward: simulated` or `hybrid`): a run config (the one
    `simulate` and `rewards` read: endpoints, user simulator, critic, future supporter, formula,
    delta), with T, l and the formula overridable here."""

    config: str | None = Field(None, description="run config for simulated futures (endpoints, user simulator, "
                               "critic, future supporter, formula, delta); unset: the embedded default")
    max_turns: int | None = Field(None, ge=1, description="turns T of each simulated future; unset: the run "
                                  "config's episode.max_turns")
    critic_samples: int | None = Field(None, ge=1, description="critic samples l per future turn; unset: the run "
                                       "config's episode.critic_samples")
    formula: str | None = Field(None, description="R_fut formula of simulated futures (an entry of the formula "
                                "registry); unset: the run config's rewards.formula")
    cache: bool = Field(True, description="replay and record completions in the completion cache")
    fresh_per_step: bool = Field(True, description="each step's futures are new samples (the step and completion "
                                 "enter the cache key); off: replay the future of a (context, reply) pair seen "
                                 "before, in any step or in stage 1's shared cache")
    # A critic prompt that never yields a parsable verdict leaves every future unscored, and GRPO
    # would train on R_fmt alone for the whole run.
    max_unscorable_steps: int = Field(3, ge=1, description="stop after this many steps in a row whose futures "
                                      "all went unscored")


# The rubric's own terms, always first: R_fut (weight 1) and R_fmt (weight alpha); a user's term
# may not take their names, nor those TRL logs the total and its spread under.
BUILT_IN_TERMS = ("r_fut", "r_fmt")
RESERVED_TERM_NAMES = (*BUILT_IN_TERMS, "reward", "reward_std")
TERM_NAME = r"[A-Za-z_][\w.-]*"


class RewardTermSetting(Strict):
    """A term a user adds to the rubric: a function with TRL's reward-function signature, and its
    weight in the total (`training/grpo/rubric.py` says what it is called with)."""

    fn: str = Field(min_length=1, description="package.module:function (importable from the working directory or "
                    "an installed package), or the name of an rlff_esc.rewards entry point")
    weight: FiniteFloat = Field(description="the term's weight in the total reward (negative: a penalty)")
    name: str | None = Field(None, pattern=rf"^{TERM_NAME}$", description="logged as rewards/<name>/mean; unset: "
                             "the function's __name__")


class GrpoRunConfig(Strict):
    policy: str = Field("embedded", description="the policy to train: 'embedded', a model folder, or a hub id "
                        "already in the local Hugging Face cache")
    reward_model: str | None = Field(None, description="a train-rm folder, or 'random' (an untrained head); "
                                     "for reward model and hybrid")
    reward: RewardMode = Field("model", description="where R_fut comes from: the reward model, a simulated future "
                               "per completion, or both (hybrid: the model's score is the reward, and a random "
                               "check_fraction is also simulated to watch the model)")
    check_fraction: float = Field(0.25, ge=0, le=1, description="hybrid: the share of completions also simulated")
    hybrid_use_simulated: bool = Field(False, description="hybrid: reward the checked completions with their "
                                       "simulated R_fut")
    agreement_window: int = Field(64, ge=3, description="hybrid: Spearman and accuracy over the last N checked "
                                  "completions")
    simulation: FutureSimulation = Field(FutureSimulation(), description="where simulated futures come from")
    alpha: float = Field(0.5, ge=0, description="weight of R_fmt: R = R_fut + alpha * R_fmt")
    rewards: list[RewardTermSetting] = Field(default_factory=list, description="terms added to R_fut and R_fmt, "
                                             "each a function (package.module:function or an rlff_esc.rewards "
                                             "entry point) and its weight, {fn, weight, name} in a config file, "
                                             "NAME:WEIGHT as an option (repeatable); each logged on its own")
    dataset: str = Field("esconv:ppdpp_train", description="training dialogues: a registered NAME:SPLIT "
                         "(esconv:<split>, extes:<split>, or a package's), a JSONL file, or a loader of yours, "
                         "package.module:function[@SPLIT]")
    sampling: ContextSampling = Field(ContextSampling(positions="random", per_dialogue=2),
                                      description="which dialogue prefixes become training contexts")
    prompt: str = Field("think", description="supporter prompt; its think and response tags are the format "
                        "reward's")
    context_window: int | None = Field(None, ge=1, description="the latest N messages of a context in the prompt; "
                                       "unset: all. The supporter's view: must be the reward model's (checked), "
                                       "and is the simulated futures' supporter's")
    num_generations: int = Field(4, ge=1, description="group size G: completions per context, compared within "
                                 "the group; at least 2")
    temperature: float = Field(1.1, gt=0, description="sampling temperature")
    max_completion_length: int = Field(96, ge=8, description="tokens of one completion at most")
    batch_size: int = Field(4, ge=1, description="completions per device per step; a multiple of G")
    gradient_accumulation: int = Field(1, ge=1, description="steps whose gradients add up before an update")
    learning_rate: float = Field(5e-5, gt=0, description="learning rate of the LoRA weights")
    lr_scheduler: Literal["linear", "constant", "cosine"] = Field("linear", description="learning-rate schedule")
    beta: float = Field(0.04, ge=0, description="KL coefficient; 0 skips the reference model")
    max_steps: int = Field(100, ge=1, description="optimizer steps")
    lora: LoraSettings = Field(LoraSettings(target_modules=PROJECTIONS), description="the LoRA adapter")
    scorer_batch_size: int = Field(16, ge=1, description="completions per forward pass of the reward model")
    logging_steps: int = Field(1, ge=1, description="log every N steps")
    save_steps: int = Field(25, ge=1, description="checkpoint every N steps (a rerun resumes from the last)")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="weights' dtype")
    gradient_checkpointing: bool = Field(False, description="saves GPU memory on large policies; slower")
    report_to: list[str] = Field(default_factory=lambda: ["none"], description="trackers: tensorboard, wandb, ... "
                                 "(repeat the option for several); none: no tracker")
    use_vllm: bool = Field(False, description="generate with vLLM (GPU only: pip install 'rlff-esc[gpu]')")
    vllm_mode: Literal["colocate", "server"] = Field("colocate", description="vLLM in the training process or "
                                                     "as a server")
    vllm_server_base_url: str | None = Field(None, description="vLLM server mode: its URL")
    seed: int = Field(0, description="seed of context sampling, generation and training")
    trl: dict[str, Any] = Field(default_factory=dict, description="any other field of TRL's GRPOConfig (loss_type, "
                                "scale_rewards, num_iterations, epsilon, top_p, ...), checked against its name and "
                                "type; not those the settings above set")

    @field_validator("trl")
    @classmethod
    def _trl_fields(cls, settings: dict[str, Any]) -> dict[str, Any]:
        if not settings:
            return settings
        from trl import GRPOConfig

        return check_passthrough(settings, GRPOConfig, TRL_DECIDED)

    @field_validator("rewards")
    @classmethod
    def _term_names(cls, terms: list[RewardTermSetting]) -> list[RewardTermSetting]:
        names = [term.name for term in terms if term.name is not None]
        for name in names:
            if name in RESERVED_TERM_NAMES:
                raise ValueError(f"a reward term may not be named {name!r} ({', '.join(RESERVED_TERM_NAMES)} are "
                                 "the run's own)")
        if len(set(names)) < len(names):
            raise ValueError(f"two reward terms are named {next(n for n in names if names.count(n) > 1)!r}")
        return terms

    def claimed(self) -> dict[str, Any]:
        """The settings a run folder is claimed with: an empty rubric is left out, so that the
        folder of a run from before `rewards` existed (whose saved config has none) resumes."""
        return self.model_dump(exclude=set() if self.rewards else {"rewards"})

    def reward_weights(self) -> list[float]:
        """The rubric's weights in its order: R_fut, R_fmt, then the user's terms."""
        return [1.0, self.alpha, *(term.weight for term in self.rewards)]

    @model_validator(mode="after")
    def _group_fits(self) -> GrpoRunConfig:
        if self.num_generations < 2:
            raise ValueError("num_generations (G) must be at least 2: GRPO compares samples within a group")
        if (self.batch_size * self.gradient_accumulation) % self.num_generations:
            raise ValueError("batch_size x gradient_accumulation must be a multiple of num_generations (G)")
        return self


class FormatWarmupConfig(Strict):
    """`warmup-format`: a few supervised steps on think-format demonstrations before GRPO, for
    policies that never write the format (training/grpo/warmup.py says why)."""

    policy: str = Field("embedded", description="the policy to warm up: a backbone name or a model folder")
    dataset: str = Field("esconv:ppdpp_train", description="dataset whose supporter turns are the demonstrations")
    prompt: str = Field("think", description="think-format supporter prompt")
    steps: int = Field(20, ge=1, description="supervised steps (a killed run may be rerun with more)")
    save_steps: int | None = Field(None, ge=1, description="steps between checkpoints in DIR.checkpoints/, where "
                                   "a killed run resumes; unset: a quarter of steps")
    contexts: int = Field(200, ge=1, description="contexts sampled as demonstrations (those whose reply is long "
                          "are left out)")
    context_window: int | None = Field(None, ge=1, description="the latest N messages of a context in the prompt; "
                                       "unset: all. Give it the window the reward data and GRPO use")
    learning_rate: float = Field(2e-4, gt=0, description="learning rate of the LoRA")
    seed: int = Field(0, description="seed of the demonstration sample and of training")


def load_grpo_config(path: str | Path | None, **overrides) -> GrpoRunConfig:
    return load_typed(GrpoRunConfig, path, overrides)
