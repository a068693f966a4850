"""`rlff-esc train-grpo` (stage 3): the supporter policy trained with GRPO + LoRA."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from esc_agents.cli import options
from esc_agents.cli.values import COUNT, POSITIVE, SEED, SHARE, WEIGHT
from esc_agents.core.errors import UserError
from training.grpo.config import RewardMode

HELP = "train the supporter policy with GRPO + LoRA (stage 3)"
DESCRIPTION = """GRPO on TRL with a LoRA adapter: G samples per training context with the think-format
prompt, rewarded by R_fut + alpha * R_fmt. R_fut comes from the reward model on the response (--reward
model, the paper's), from simulating each response's future with the run config's user simulator and
critic (--reward simulated), or from the reward model with a random share also simulated and the two
compared in the logs (--reward hybrid). Writes the adapter, curves.png and metrics.json (simulated
futures to futures.jsonl); a rerun resumes from the last checkpoint. Every setting is a GrpoRunConfig
field (--config FILE); the flags below override the file."""


def add_parser(commands) -> None:
    grpo = commands.add_parser("train-grpo", help=HELP, description=DESCRIPTION)
    grpo.add_argument("--reward", choices=get_args(RewardMode), help="where R_fut comes from (default model)")
    grpo.add_argument("--reward-model", metavar="DIR|random",
                      help="a train-rm folder, or 'random' (untrained head); for --reward model and hybrid")
    grpo.add_argument("--check-fraction", type=SHARE, metavar="P",
                      help="hybrid: share of completions also simulated (default 0.25)")
    grpo.add_argument("--use-simulated", action="store_true",
                      help="hybrid: reward the simulated completions with their simulated R_fut")
    grpo.add_argument("--simulation-config", metavar="FILE",
                      help="run config for simulated futures (endpoints, user simulator, critic, formula, delta); "
                      "default: the embedded model")
    grpo.add_argument("--future-turns", type=COUNT, metavar="T", help="turns per simulated future (default: the run config's, 8)")
    grpo.add_argument("--critic-samples", type=COUNT, metavar="L", help="critic samples per future turn (default: the run config's, 10)")
    grpo.add_argument("--formula", help="R_fut formula of simulated futures (default: the run config's, terminal_efficiency)")
    grpo.add_argument("--out", type=Path, metavar="DIR")
    grpo.add_argument("--config", metavar="FILE", help="YAML with any GrpoRunConfig field")
    grpo.add_argument("--dataset", help="training dialogues (default esconv:ppdpp_train)")
    grpo.add_argument("--contexts", type=COUNT, metavar="N", help="training contexts to sample (default all)")
    grpo.add_argument("--context-window", type=COUNT, metavar="N",
                      help="the latest N messages of a context in the prompt (default: all); must be the reward "
                      "model's, and is the simulated futures' supporter's")
    options.add_held_out_options(grpo)
    grpo.add_argument("--policy", help="'embedded' (default), a model folder, or a cached hub id")
    grpo.add_argument("--max-steps", type=COUNT, metavar="N", help="default 100")
    grpo.add_argument("--alpha", type=WEIGHT, help="weight of R_fmt (default 0.5)")
    grpo.add_argument("--num-generations", type=COUNT, metavar="G", help="group size (default 4)")
    grpo.add_argument("--temperature", type=POSITIVE, help="sampling temperature (default 1.1)")
    grpo.add_argument("--learning-rate", type=POSITIVE, metavar="LR")
    grpo.add_argument("--batch-size", type=COUNT, metavar="B", help="completions per device per step (multiple of G)")
    grpo.add_argument("--max-completion-length", type=COUNT, metavar="TOKENS")
    grpo.add_argument("--report-to", metavar="TRACKER", help="tensorboard, wandb, ... (default none)")
    grpo.add_argument("--seed", type=SEED)
    grpo.set_defaults(func=run, writes="out")


def run(args: argparse.Namespace) -> int:
    from training.grpo.config import load_grpo_config
    from training.grpo.trainer import train_grpo

    if args.out is None:
        raise UserError("train-grpo needs --out DIR")
    config = load_grpo_config(
        args.config, reward=args.reward, reward_model=args.reward_model, check_fraction=args.check_fraction,
        hybrid_use_simulated=args.use_simulated or None,
        simulation={"config": args.simulation_config, "max_turns": args.future_turns,
                    "critic_samples": args.critic_samples, "formula": args.formula},
        policy=args.policy, dataset=args.dataset,
        max_steps=args.max_steps, alpha=args.alpha, num_generations=args.num_generations,
        learning_rate=args.learning_rate, temperature=args.temperature, seed=args.seed,
        max_completion_length=args.max_completion_length, batch_size=args.batch_size,
        report_to=[args.report_to] if args.report_to else None,
        sampling={"contexts": args.contexts}, context_window=args.context_window,
    )
    metrics = train_grpo(config, args.out, **options.held_out_options(args))
    print(f"{metrics['steps']} GRPO steps in {metrics['train_seconds']:.0f} s "
          f"({metrics['train_seconds'] / max(metrics['steps'], 1):.1f} s/step) on {metrics['prompts']} prompts")
    for name in ("reward", "r_fut", "r_fmt", "kl", "spearman"):
        first, last = metrics[f"{name}_first"], metrics[f"{name}_last"]
        if first is not None:
            print(f"  {name:8s} first {first:7.3f}   last {last:7.3f}")
    if simulation := metrics.get("simulation"):
        steps = max(metrics["steps"], 1)
        print(f"  futures  {simulation['futures']} simulated, {simulation['failed']} gave no reward; "
              f"{simulation['endpoint_wait_seconds'] / steps:.1f} s/step waiting on endpoints")
        for role, usage in simulation["usage"].items():
            print(f"  {role:16s} {usage['calls'] / steps:6.1f} calls/step ({usage['cached'] / steps:.1f} cached)  tokens in "
                  f"{usage['prompt_tokens'] / steps:7.0f} out {usage['completion_tokens'] / steps:6.0f} per step")
    print(f"wrote {args.out / 'adapter'}, curves.png, metrics.json; `rlff-esc export --adapter {args.out}` "
          "merges it for serving")
    return 0
