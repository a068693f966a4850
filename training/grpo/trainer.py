"""Stage 3: GRPO with a LoRA adapter on TRL's GRPOTrainer, R = R_fut + alpha * R_fmt + the
user's weighted terms (the rubric, `training/grpo/rubric.py`).

Prompts are training contexts rendered by the supporter's own message builder with the
think-format prompt. R_fut is computed on (context, the text inside the response block) by the
reward model, by simulating the reply's future, or both (`training/grpo/reward_terms.py`, the
futures by `futures_simulator.py`); R_fmt is `FormatSpec.reward`. Each term is logged on its own
by TRL (`rewards/r_fut/mean`, `rewards/r_fmt/mean`, `rewards/<name>/mean`), the total as `reward`.

Launched with several processes, every process trains and simulates its share, and holds the
run's totals (the simulator gathers them each step); the main process alone writes the run
folder's files (`training/run_folder.py`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.datasets import DEFAULT_EVAL_SPLIT, held_out_check, load_cases
from esc_agents.prompts import Prompt, load_prompt
from esc_agents.provenance import versions
from esc_agents.roles.llm import supporter_messages
from esc_agents.roles.replies import DEFAULT_GUARD, ReplyGuard
from training.backbones import backbone_record, resolve_backbone
from training.contexts import Context, sample_contexts
from training.grpo.config import ADAPTER, BUILT_IN_TERMS, RUN_CARD, TRL_DECIDED, GrpoRunConfig
from training.grpo.format_reward import FormatSpec, ends_with_open_tag
from training.grpo.futures_simulator import FutureSimulator, reply_guard, simulation_run_config
from training.grpo.records import FUTURES
from training.grpo.rubric import Rubric, UserTerm, rubric, user_terms
from training.grpo.signals import failure_signals
from training.reward_model.config import OBJECTIVES
from training.reward_model.scorer import RANDOM, read_model_card
from training.run_folder import (
    CHECKPOINTS,
    checkpoint_step,
    claim,
    is_main_process,
    last_checkpoint,
    main_process_first,
    plot_log_history,
)
from training.trainer_settings import effective, trainer_config

# Beside each checkpoint, what its trainer state does not hold: the training seconds and the
# simulated futures' totals up to it, so that a resumed or extended run's metrics cover all steps.
RUN_TOTALS = "run_totals.json"

CURVES = {
    "reward (total)": {"total": "reward"},
    "R_fut": {"R_fut": "rewards/r_fut/mean"},
    "R_fmt": {"R_fmt": "rewards/r_fmt/mean"},
    "KL": {"KL": "kl"},
    "completion length": {"tokens": "completions/mean_length"},
    "forged spans removed": {"spans": "hack/forged_spans"},  # another role's words or a verdict, cut
}


def think_prompt(name: str) -> Prompt:
    prompt = load_prompt("supporter", name)
    if prompt.spec.reply_format != "think":
        raise UserError(f"supporter prompt {name!r} is not think-format (reply_format: think); "
                        "the format reward needs its tags")
    return prompt


def training_contexts(config: GrpoRunConfig) -> list[Context]:
    return sample_contexts(load_cases(config.dataset), config.sampling, config.seed)


def prompt_rows(config: GrpoRunConfig, prompt: Prompt, contexts: list[Context]) -> list[dict[str, Any]]:
    rows = [{
        "prompt": supporter_messages(prompt, context.history, config.context_window),
        "context": [{"speaker": m.speaker, "content": m.content} for m in context.history],
        "context_key": context.key,
    } for context in contexts]
    if not rows:
        raise UserError(f"{config.dataset} gave no training prompt")
    return rows


def check_reward_model(config: GrpoRunConfig) -> dict[str, Any] | None:
    """The reward model is checked before any model loads: present, finished, a known objective."""
    if config.reward == "simulated":
        if config.reward_model is not None:
            print(f"rlff-esc: warning: --reward simulated does not use the reward model {config.reward_model}",
                  file=sys.stderr)
        return None
    if config.reward_model is None:
        raise UserError(f"train-grpo --reward {config.reward} needs --reward-model DIR (a train-rm folder) or "
                        "--reward-model random; --reward simulated needs none")
    if config.reward_model == RANDOM:
        return {"objective": "classification", "untrained": True}
    card = read_model_card(Path(config.reward_model))
    if card.get("objective") not in OBJECTIVES:
        raise UserError(f"{config.reward_model}: objective {card.get('objective')!r} is not one this version "
                        f"scores with ({', '.join(OBJECTIVES)})")
    if card.get("context_window") != config.context_window:
        raise UserError(f"the reward model {config.reward_model} judges replies seeing the "
                        f"{_window(card.get('context_window'))} but --context-window gives the policy the "
                        f"{_window(config.context_window)}; one window for all stages: set --context-window to the "
                        "reward model's, or make its reward data with the same --context-window")
    if config.reward == "hybrid" and config.hybrid_use_simulated and card["objective"] == "ranking":
        raise UserError(f"--use-simulated: the ranking reward model {config.reward_model} scores on no fixed scale, "
                        "so a simulated R_fut cannot replace its score; use a classification or regression model")
    return card


def _window(size: int | None) -> str:
    return "whole history" if size is None else f"latest {size} messages"


def check_generation_backend(config: GrpoRunConfig) -> None:
    if config.use_vllm and importlib.util.find_spec("vllm") is None:
        raise UserError("use_vllm needs vLLM: pip install 'rlff-esc[gpu]' on a GPU machine")


def future_simulator(config: GrpoRunConfig, contexts: list[Context], out: Path) -> FutureSimulator | None:
    """The simulator of `simulated` and `hybrid` runs (None for `model`); entering it opens and
    checks the endpoints, so do it before the policy loads."""
    if config.reward == "model":
        return None
    return FutureSimulator(simulation_run_config(config), contexts, out / FUTURES, use_cache=config.simulation.cache,
                           fresh_per_step=config.simulation.fresh_per_step,
                           max_unscorable_steps=config.simulation.max_unscorable_steps)


def reward_functions(config: GrpoRunConfig, spec: FormatSpec, simulator: FutureSimulator | None = None) -> list:
    """The rubric's functions, [R_fut, R_fmt, *the user's terms], weighted by `grpo_arguments`."""
    return rubric(config, spec, simulator).funcs


def grpo_arguments(config: GrpoRunConfig, output_dir: Path):
    """TRL's GRPOConfig: the fields the run's settings decide (`TRL_DECIDED`), `config.trl` for the rest."""
    from trl import GRPOConfig

    return trainer_config(GRPOConfig, config, TRL_DECIDED, converted={
        "output_dir": str(output_dir), "reward_weights": config.reward_weights(), "bf16": config.dtype == "bfloat16",
    }, defaults={"save_total_limit": 2, "use_cpu": not torch.cuda.is_available()})


def lora_config(config: GrpoRunConfig):
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", r=config.lora.r, lora_alpha=config.lora.alpha,
                      lora_dropout=config.lora.dropout, target_modules=config.lora.target_modules)


def format_spec(prompt: Prompt, tokenizer, rows: list[dict[str, Any]], guard: ReplyGuard = DEFAULT_GUARD) -> FormatSpec:
    """The prompt's tags, whether this tokenizer's chat template pre-fills the think tag, and the
    critic's verdict sentences no reply may carry (`reply_guard`)."""
    rendered = tokenizer.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=False)
    return FormatSpec(prompt.spec.think_tag, prompt.spec.response_tag,
                      prefilled=ends_with_open_tag(rendered, prompt.spec.think_tag), guard=guard)


def train_grpo(config: GrpoRunConfig, out: Path, *, eval_split: str | None = DEFAULT_EVAL_SPLIT,
               allow_eval_overlap: bool = False) -> dict[str, Any]:
    prompt = think_prompt(config.prompt)
    card = check_reward_model(config)
    terms = user_terms(config)  # a term that cannot load is refused here, before any weight loads
    check_generation_backend(config)
    arguments = grpo_arguments(config, out / CHECKPOINTS)
    contexts = training_contexts(config)
    held_out = held_out_check(list({c.case.id: c.case for c in contexts}.values()), eval_split, allow_eval_overlap,
                              "train-grpo")
    rows = prompt_rows(config, prompt, contexts)
    policy = resolve_backbone(config.policy)
    simulator = future_simulator(config, contexts, out)
    # A finished run extended with a larger max_steps continues from its last checkpoint.
    with main_process_first():  # the main process writes the settings; the others then find them the same
        claim(out, {"config": config.claimed(), "prompt": prompt.spec.model_dump()}, may_grow=("config.max_steps",))
    resume = last_checkpoint(out)
    totals = checkpoint_totals(resume)
    if simulator is not None:
        simulator.resume_at(checkpoint_step(resume), totals.get("simulation"))
    with simulator or contextlib.nullcontext():
        metrics = _train(config, arguments, out, prompt, rows, policy, simulator, card, resume,
                         totals.get("train_seconds", 0.0), terms)
    metrics["held_out"] = held_out
    if simulator is not None:
        metrics["simulation"] = simulator.summary()  # the whole run's, every process's futures and calls
    if is_main_process():
        write_json(out / "metrics.json", metrics)
    return metrics


def checkpoint_totals(checkpoint: str | None) -> dict[str, Any]:
    """The totals saved beside a checkpoint ({} without a checkpoint, or for one of an older version)."""
    path = Path(checkpoint) / RUN_TOTALS if checkpoint else None
    return json.loads(path.read_text()) if path is not None and path.exists() else {}


def totals_callback(simulator: FutureSimulator | None, prior_seconds: float):
    """A trainer callback that writes RUN_TOTALS into each checkpoint as it is saved, and warns of
    the run's failure signals as they show."""
    from transformers import TrainerCallback

    class RunTotals(TrainerCallback):
        def __init__(self):
            self.started = time.perf_counter()
            self.signalled: set[str] = set()

        def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
            self.started = time.perf_counter()
            if state.global_step:
                schedule_from_checkpoint(optimizer, lr_scheduler)

        def seconds(self) -> float:
            return prior_seconds + time.perf_counter() - self.started

        def on_log(self, args, state, control, **kwargs):
            if not is_main_process():
                return  # every process holds the same history; the main one warns
            # The failure signals as soon as the history shows them, each once.
            for signal in failure_signals(state.log_history):
                if signal.split(":")[0] not in self.signalled:
                    self.signalled.add(signal.split(":")[0])
                    print(f"rlff-esc: warning: step {state.global_step}: {signal}", file=sys.stderr)

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if is_main_process() and folder.is_dir():  # the totals are the same on every process
                write_json(folder / RUN_TOTALS, {
                    "step": state.global_step, "train_seconds": self.seconds(),
                    "simulation": simulator.checkpoint_state() if simulator is not None else None,
                })

    return RunTotals()


def schedule_from_checkpoint(optimizer, lr_scheduler) -> None:
    """A resumed optimizer holds the learning rate its checkpoint's schedule set for the next step;
    the schedule itself is rebuilt from this run's max_steps. When a finished run is extended they
    differ (a linear schedule had reached 0, and the first extended step would not move): the
    next step takes the rate of the schedule this run trains under."""
    scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate may wrap it
    if optimizer is None or not hasattr(scheduler, "lr_lambdas"):
        return
    for group, base, rate in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * rate(scheduler.last_epoch)


def _train(config: GrpoRunConfig, arguments, out: Path, prompt: Prompt, rows: list[dict[str, Any]], policy: Path,
           simulator: FutureSimulator | None, card: dict[str, Any] | None, resume: str | None,
           prior_seconds: float, terms: list[UserTerm]) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    spec = format_spec(prompt, tokenizer, rows, reply_guard(config))
    totals = totals_callback(simulator, prior_seconds)
    rewards = rubric(config, spec, simulator, terms)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy, dtype=getattr(torch, config.dtype)),
        reward_funcs=rewards.funcs,
        args=arguments,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[totals],
    )
    trainer.train(resume_from_checkpoint=resume)
    seconds = totals.seconds()  # of the whole run, resumed parts included

    trainer.save_model(str(out / ADAPTER))  # called by every process (a sharded model is gathered); one writes
    history = trainer.state.log_history  # the same on every process: TRL logs values gathered across them
    if is_main_process():
        tokenizer.save_pretrained(out / ADAPTER)
        write_json(out / RUN_CARD, {
            "policy": str(policy), "base": backbone_record(config.policy, policy, out), "prompt": config.prompt,
            "think_tag": spec.think_tag, "response_tag": spec.response_tag, "prefilled_think": spec.prefilled,
            "reward": config.reward, "reward_model": card, "rubric": rewards.records, "config": config.model_dump(),
            "grpo_config": effective(arguments),
        })
        plot_log_history(history, curves(config.reward, rewards), out / "curves.png")
    return {
        "steps": trainer.state.global_step, "train_seconds": round(seconds, 1), "reward": config.reward,
        "prompts": len(rows), "prefilled_think": spec.prefilled,
        **{f"{name}_first": _logged(history, key, 0) for name, key in _SUMMARY.items()},
        **{f"{name}_last": _logged(history, key, -1) for name, key in _SUMMARY.items()},
        "rewards": term_summaries(rewards, history),
        "history": [entry for entry in history if "reward" in entry],
        "warnings": failure_signals(history),
        "versions": versions(),
    }


def curves(reward: str, rewards: Rubric | None = None) -> dict[str, dict[str, str]]:
    """The panels of curves.png: the rewards, KL and length, a panel per user's term, and what the
    reward mode adds."""
    added = {f"{record['name']} (weight {record['weight']:g})": {record["name"]: term_key(record["name"])}
             for record in (rewards.records[len(BUILT_IN_TERMS):] if rewards is not None else [])}
    panels = {}
    for title, lines in CURVES.items():  # the user's terms beside R_fut and R_fmt
        panels[title] = lines
        if title == "R_fmt":
            panels.update(added)
    if reward != "model":
        panels["LLM calls per step"] = {role: f"cost/{role}/calls" for role in SIMULATION_ROLES}
    if reward == "hybrid":
        panels["reward model vs simulated"] = {"Spearman": "hybrid/spearman", "label accuracy": "hybrid/label_accuracy"}
    return panels


SIMULATION_ROLES = ("user_simulator", "critic", "supporter", "future_supporter")
_SUMMARY = {"reward": "reward", "r_fut": "rewards/r_fut/mean", "r_fmt": "rewards/r_fmt/mean", "kl": "kl",
            "spearman": "hybrid/spearman", "forged_spans": "hack/forged_spans"}


def term_key(name: str) -> str:
    """Where TRL logs a term's mean per step."""
    return f"rewards/{name}/mean"


def term_summaries(rewards: Rubric, history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each term of the rubric (the run's own and the user's): its weight, first and last logged mean."""
    return {record["name"]: {"weight": record["weight"], "first": _logged(history, term_key(record["name"]), 0),
                             "last": _logged(history, term_key(record["name"]), -1)} for record in rewards.records}


def _logged(history: list[dict[str, Any]], key: str, index: int) -> float | None:
    values = [entry[key] for entry in history if key in entry]
    return values[index] if values else None
