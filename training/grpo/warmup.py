"""A short supervised cold start on the think format, for policies too small to produce it at all.

GRPO learns only from differences within a group: if no sample of a group is well-formed,
R_fmt is 0 for all and gives no gradient. SmolLM2-135M writes the format in 0 of hundreds of
samples, so the CPU recipe first fine-tunes a LoRA for a few steps on demonstrations built from
ESConv training dialogues (a one-line reading of the seeker inside the think tags, the reference
supporter reply inside the response tags), merges it, and starts GRPO from the merged folder.
Larger backbones follow the prompt and skip this.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from esc_agents.config import ContextSampling
from esc_agents.core.errors import UserError
from esc_agents.roles.llm import supporter_messages
from training.backbones import backbone_record, resolve_backbone
from training.contexts import sample_contexts
from training.grpo.config import PROJECTIONS, FormatWarmupConfig
from training.grpo.export import save_servable
from training.grpo.trainer import think_prompt
from training.run_folder import CHECKPOINTS, RUN_SETTINGS, claim, last_checkpoint

READING = "They feel {emotion} about {problem}."
MAX_REPLY_WORDS = 30  # short demonstrations keep well-formed answers within a small completion budget


def demonstrations(dataset: str, prompt_name: str, contexts: int, context_window: int | None,
                   seed: int) -> list[dict[str, Any]]:
    from esc_agents.datasets import load_cases

    prompt = think_prompt(prompt_name)
    think, response = prompt.spec.think_tag, prompt.spec.response_tag
    chosen = sample_contexts(load_cases(dataset), ContextSampling(contexts=contexts), seed)
    rows = []
    for context in chosen:
        case = context.case
        reply = case.dialog[context.position].content
        if len(reply.split()) > MAX_REPLY_WORDS:
            continue
        reading = READING.format(emotion=case.emotion or "upset", problem=case.problem or "what is happening")
        rows.append({
            "prompt": supporter_messages(prompt, context.history, context_window),
            "completion": [{"role": "assistant", "content": f"<{think}>{reading}</{think}><{response}>{reply}</{response}>"}],
        })
    if not rows:
        raise UserError(f"{dataset} gave no demonstration")
    return rows


def work_folder(out: Path) -> Path:
    """Where a warm-up into `out` keeps its settings and checkpoints: beside `out`, which is
    replaced whole at the end. A killed warm-up resumes from its last checkpoint there; a finished
    one leaves nothing in it."""
    return out.with_name(out.name + ".checkpoints")


def warm_up_format(out: Path, config: FormatWarmupConfig | None = None) -> Path:
    """Fine-tune, merge and save the warmed-up policy into `out`; resumes a killed run."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    config = config or FormatWarmupConfig()
    steps = config.steps
    rows = demonstrations(config.dataset, config.prompt, config.contexts, config.context_window, config.seed)
    base = resolve_backbone(config.policy)
    work = work_folder(out)
    # How often to checkpoint does not change the result: a rerun may change it.
    claim(work, config.model_dump(exclude={"save_steps"}), may_grow=("steps",))
    tokenizer = AutoTokenizer.from_pretrained(base)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
        args=SFTConfig(output_dir=str(work / CHECKPOINTS), max_steps=steps,
                       per_device_train_batch_size=4, learning_rate=config.learning_rate, logging_steps=5,
                       save_steps=config.save_steps or max(1, steps // 4), save_total_limit=2, report_to=[],
                       seed=config.seed,
                       use_cpu=not torch.cuda.is_available()),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=PROJECTIONS),
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(work))
    folder = save_servable(trainer.model.merge_and_unload(), tokenizer, out, {
        "base": backbone_record(config.policy, base, out),
        "warmup": {"steps": steps, "contexts": config.contexts, "dataset": config.dataset, "prompt": config.prompt},
    })
    shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)  # done: a rerun starts afresh, with any settings
    (work / RUN_SETTINGS).unlink(missing_ok=True)
    if not any(work.iterdir()):  # the command line's lock, when it holds one, removes the folder itself
        work.rmdir()
    return folder
