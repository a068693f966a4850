"""GRPO seconds per step: `train-grpo` against a bare TRL GRPOTrainer built from the same model,
prompts, GRPOConfig, LoRA config and reward functions, in one run. Each side runs in its own
child process so each peak RSS is its own.

Prints seconds per step and peak memory per side, and as its last line `ours/trl=<x>`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from training.grpo_config import load_grpo_config


def bench_config(args: argparse.Namespace):
    return load_grpo_config(None, reward_model=args.reward_model, max_steps=args.steps, batch_size=args.batch_size,
                            max_completion_length=args.max_completion_length, sampling={"contexts": 16},
                            max_history=2, save_steps=10_000)


def run_ours(config, out: Path) -> float:
    from training.grpo import train_grpo

    return train_grpo(config, out)["train_seconds"]


def run_bare_trl(config, out: Path) -> float:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from training.backbones import resolve_backbone
    from training.grpo import format_spec, grpo_arguments, lora_config, prompt_rows, reward_functions, think_prompt

    prompt = think_prompt(config.prompt)
    rows = prompt_rows(config, prompt)
    policy = resolve_backbone(config.policy)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy, dtype=getattr(torch, config.dtype)),
        reward_funcs=reward_functions(config, format_spec(prompt, tokenizer, rows)),
        args=grpo_arguments(config, out), train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=lora_config(config),
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    config = bench_config(args)
    with tempfile.TemporaryDirectory() as scratch:
        seconds = (run_ours if args.side == "ours" else run_bare_trl)(config, Path(scratch) / "run")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"seconds_per_step": seconds / args.steps, "peak_rss_mib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=24)
    parser.add_argument("--reward-model", default="random", help="a train-rm folder, or 'random' (default)")
    parser.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)
    results = {}
    for side in ("trl", "ours"):
        command = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--batch-size",
                   str(args.batch_size), "--max-completion-length", str(args.max_completion_length),
                   "--reward-model", args.reward_model]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[side] = json.loads(output.split("RESULT ", 1)[1])
        print(f"{side:5s} {results[side]['seconds_per_step']:6.2f} s/step   peak RSS "
              f"{results[side]['peak_rss_mib']:6.0f} MiB", flush=True)
    print(f"G=4, batch {args.batch_size}, {args.max_completion_length} new tokens, {args.steps} steps each")
    print(f"ours/trl={results['ours']['seconds_per_step'] / results['trl']['seconds_per_step']:.2f}")


if __name__ == "__main__":
    main()
