"""GRPO seconds per step, one comparison per run; each side runs in its own child process so
each peak RSS is its own.

    --compare engine   `train-grpo` against a bare TRL GRPOTrainer built from the same model,
                       prompts, GRPOConfig, LoRA config and reward functions (last line `ours/trl=<x>`)
    --compare rewards  `train-grpo --reward simulated` (futures on the embedded server, cache off)
                       against `--reward model` at the same G and batch (last line `simulated/rm=<x>`)
    --calls-table      LLM calls per GRPO step of `--reward simulated` for each T and l given,
                       measured, next to the count for futures that run all T turns with no retry
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

from training.grpo.config import load_grpo_config

SIDES = {"engine": ("trl", "ours"), "rewards": ("rm", "simulated")}
LAST_LINE = {"engine": "ours/trl", "rewards": "simulated/rm"}


def bench_config(args: argparse.Namespace, reward: str = "model"):
    return load_grpo_config(None, reward=reward, reward_model=args.reward_model, max_steps=args.steps,
                            batch_size=args.batch_size, max_completion_length=args.max_completion_length,
                            sampling={"contexts": 16}, context_window=2, save_steps=10_000,
                            simulation={"max_turns": args.future_turns, "critic_samples": args.critic_samples,
                                        "cache": False})


def run_ours(config, out: Path) -> dict:
    from training.grpo.trainer import train_grpo

    metrics = train_grpo(config, out)
    return {"seconds": metrics["train_seconds"], "simulation": metrics.get("simulation")}


def run_bare_trl(config, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from training.backbones import resolve_backbone
    from training.grpo.trainer import (
        format_spec,
        grpo_arguments,
        lora_config,
        prompt_rows,
        reward_functions,
        think_prompt,
        training_contexts,
    )

    prompt = think_prompt(config.prompt)
    rows = prompt_rows(config, prompt, training_contexts(config))
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
    return {"seconds": time.perf_counter() - start}


def child(args: argparse.Namespace) -> None:
    config = bench_config(args, reward="simulated" if args.side == "simulated" else "model")
    with tempfile.TemporaryDirectory() as scratch:
        result = (run_bare_trl if args.side == "trl" else run_ours)(config, Path(scratch) / "run")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({**result, "seconds_per_step": result["seconds"] / args.steps, "peak_rss_mib": peak}))


def run_side(args: argparse.Namespace, side: str, **overrides) -> dict:
    settings = {**vars(args), **overrides}
    command = [sys.executable, __file__, "--side", side]
    for name in ("steps", "batch_size", "max_completion_length", "reward_model", "future_turns", "critic_samples"):
        command += ["--" + name.replace("_", "-"), str(settings[name])]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.split("RESULT ", 1)[1])


def calls_without_retries(batch: int, turns: int, samples: int, honours_n: bool) -> int:
    """Per step, when every completion's future runs all T turns (no early goal) and nothing is
    asked again: T user-simulator replies, T critic rounds (l requests each, or one where the
    endpoint honours n) and T - 1 supporter replies. Unparsable critic samples are asked again
    (`critic_retries`, 2) and empty replies regenerated, so measured counts can exceed it."""
    return batch * (turns + turns * (1 if honours_n else samples) + turns - 1)


def calls_table(args: argparse.Namespace) -> None:
    print("| T | l | calls/step measured (user, critic, supporter) | full T, no retries: n ignored | "
          "n honoured | s/step |")
    print("|---|---|---|---|---|---|")
    for turns in args.turns:
        for samples in args.samples:
            result = run_side(args, "simulated", future_turns=turns, critic_samples=samples)
            usage = result["simulation"]["usage"]
            per_step = {role: usage.get(role, {}).get("calls", 0) / args.steps
                        for role in ("user_simulator", "critic", "supporter")}
            print(f"| {turns} | {samples} | {sum(per_step.values()):.1f} ({per_step['user_simulator']:.1f}, "
                  f"{per_step['critic']:.1f}, {per_step['supporter']:.1f}) | "
                  f"{calls_without_retries(args.batch_size, turns, samples, False)} | "
                  f"{calls_without_retries(args.batch_size, turns, samples, True)} | {result['seconds_per_step']:.1f} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", choices=sorted(SIDES), default="engine")
    parser.add_argument("--calls-table", action="store_true")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=24)
    parser.add_argument("--reward-model", default="random", help="a train-rm folder, or 'random' (default)")
    parser.add_argument("--future-turns", type=int, default=2, help="T of simulated futures (default 2)")
    parser.add_argument("--critic-samples", type=int, default=3, help="l of simulated futures (default 3)")
    parser.add_argument("--turns", type=int, nargs="+", default=[1, 2, 4], help="calls table: T values")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 3], help="calls table: l values")
    parser.add_argument("--side", choices=["ours", "trl", "rm", "simulated"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)
    if args.calls_table:
        return calls_table(args)
    results = {}
    for side in SIDES[args.compare]:
        results[side] = run_side(args, side)
        extra = ""
        if simulation := results[side].get("simulation"):
            calls = sum(usage["calls"] for usage in simulation["usage"].values()) / args.steps
            extra = f"   {calls:.1f} LLM calls/step, {simulation['endpoint_wait_seconds'] / args.steps:.1f} s/step on endpoints"
        print(f"{side:9s} {results[side]['seconds_per_step']:6.2f} s/step   peak RSS "
              f"{results[side]['peak_rss_mib']:6.0f} MiB{extra}", flush=True)
    futures = f", futures T={args.future_turns} l={args.critic_samples}" if args.compare == "rewards" else ""
    print(f"G=4, batch {args.batch_size}, {args.max_completion_length} new tokens, {args.steps} steps each{futures}")
    slow, fast = SIDES[args.compare][1], SIDES[args.compare][0]
    print(f"{LAST_LINE[args.compare]}={results[slow]['seconds_per_step'] / results[fast]['seconds_per_step']:.2f}")


if __name__ == "__main__":
    main()
