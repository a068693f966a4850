"""The training commands of `rlff-esc` (`train-rm`, `score`): argument parsing and one call
each into `training/`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import get_args

from esc_agents.cli.values import COUNT, POSITIVE, SEED, SHARE, WEIGHT
from esc_agents.core.errors import UserError
from esc_agents.datasets import DEFAULT_EVAL_SPLIT
from training.grpo.config import RewardMode


def add_held_out_options(parser: argparse.ArgumentParser) -> None:
    """Training on dialogues of the split a policy is evaluated on inflates its SR without an error."""
    parser.add_argument("--eval-split", default=DEFAULT_EVAL_SPLIT, metavar="SPEC",
                        help="refuse training dialogues that are also in this evaluation split ('none': no check; "
                        "default: %(default)s)")
    parser.add_argument("--allow-eval-overlap", action="store_true",
                        help="go on despite such dialogues, with a warning and a record in the provenance")


def held_out_options(args: argparse.Namespace) -> dict:
    return {"eval_split": None if args.eval_split == "none" else args.eval_split,
            "allow_eval_overlap": args.allow_eval_overlap}


def _add_reward_model_options(parser: argparse.ArgumentParser, *, objective: bool) -> None:
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="`rewards export` folder (any format) or a `rewards` run folder (split here by dialogue)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="run folder (created, or resumed after a kill)")
    parser.add_argument("--config", metavar="FILE", help="YAML with any RewardModelConfig field")
    if objective:
        parser.add_argument("--objective", choices=["classification", "ranking", "regression"],
                            help="training objective (default classification, the paper's)")
    parser.add_argument("--backbone", help="'embedded' (default), a model folder, or a cached hub id")
    parser.add_argument("--max-steps", type=COUNT, metavar="N", help="optimizer steps (overrides --epochs)")
    parser.add_argument("--epochs", type=POSITIVE, metavar="E", help="passes over the training split (default 1)")
    parser.add_argument("--batch-size", type=COUNT, metavar="B")
    parser.add_argument("--learning-rate", type=POSITIVE, metavar="LR")
    parser.add_argument("--max-length", type=COUNT, metavar="TOKENS", help="context is cut from the left to fit")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (merged into the saved model)")
    parser.add_argument("--report-to", metavar="TRACKER", help="tensorboard, wandb, ... (default none)")
    parser.add_argument("--seed", type=SEED)
    add_held_out_options(parser)


def _reward_model_config(args: argparse.Namespace):
    from training.reward_model.config import load_reward_model_config

    if args.data is None or args.out is None:
        raise UserError("train-rm needs --data DIR and --out DIR")
    return load_reward_model_config(
        args.config, objective=getattr(args, "objective", None), backbone=args.backbone, max_steps=args.max_steps,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_length=args.max_length, lora={} if args.lora else None, seed=args.seed,
        report_to=[args.report_to] if args.report_to else None,
    )


def cmd_train_rm(args: argparse.Namespace) -> int:
    from training.reward_model.train import format_metrics_table, train_reward_model

    config = _reward_model_config(args)
    metrics = train_reward_model(config, args.data, args.out, **held_out_options(args))
    print(format_metrics_table({config.objective: metrics}))
    print(f"wrote {args.out / 'model'}, metrics.json, predictions.jsonl, loss_curves.png")
    return 0


def cmd_train_rm_ablate(args: argparse.Namespace) -> int:
    from training.reward_model.train import ablate, format_metrics_table

    results = ablate(_reward_model_config(args), args.data, args.out, **held_out_options(args))
    print(format_metrics_table(results))
    print(f"wrote {args.out / 'ablation.json'} and one folder per objective")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from esc_agents.core.runlog import read_jsonl
    from training.reward_model.scorer import RewardScorer
    from training.reward_model.train import evaluate_scores

    if not args.pairs.exists():
        raise UserError(f"file not found: {args.pairs}")
    rows = list(read_jsonl(args.pairs))
    for index, row in enumerate(rows):
        if not isinstance(row.get("context"), list) or not isinstance(row.get("reply"), str):
            raise UserError(f"{args.pairs}: row {index} needs `context` (list of {{speaker, content}}) and `reply`")
    scorer = RewardScorer.load(args.reward_model, batch_size=args.batch_size)
    scores = scorer.score([row["context"] for row in rows], [row["reply"] for row in rows])
    out = args.out or args.pairs.with_name(args.pairs.stem + ".scored.jsonl")
    out.write_text("".join(json.dumps({**row, "score": score}, ensure_ascii=False) + "\n"
                           for row, score in zip(rows, scores)))
    print(f"scored {len(rows)} pairs with {args.reward_model} ({scorer.objective}); mean score "
          f"{sum(scores) / max(len(scores), 1):.3f} -> {out}")
    if rows and all("r_fut" in row and "label" in row for row in rows):
        metrics = evaluate_scores(scores, rows, scorer.objective)
        print("  " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)))
    return 0


def cmd_train_grpo(args: argparse.Namespace) -> int:
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
    metrics = train_grpo(config, args.out, **held_out_options(args))
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


def _warmup_workdir(args: argparse.Namespace) -> Path:
    """The folder warm-up locks: DIR itself is replaced whole at the end, so its work folder beside it."""
    return args.out.with_name(args.out.name + ".checkpoints")


def cmd_warmup_format(args: argparse.Namespace) -> int:
    from training.grpo.warmup import warm_up_format

    folder = warm_up_format(args.out, policy=args.policy, dataset=args.dataset, prompt=args.prompt,
                            steps=args.steps, contexts=args.contexts, learning_rate=args.learning_rate, seed=args.seed,
                            context_window=args.context_window)
    print(f"format warm-up done -> {folder}; start GRPO from it with `rlff-esc train-grpo --policy {folder} ...`")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.grpo.export import export_policy

    folder = export_policy(args.adapter, args.out)
    print(f"merged policy -> {folder}; evaluate it with `rlff-esc simulate --supporter-model {folder} "
          "--supporter-prompt think ...`")
    return 0


def add_training_parsers(commands) -> None:
    train_rm = commands.add_parser(
        "train-rm", help="train the reward model on D_r (stage 2)",
        description="Train a reward model on D_r, split by dialogue, with the classification (default), "
        "ranking or regression objective; write the model, metrics.json, predictions and loss curves.",
    )
    _add_reward_model_options(train_rm, objective=True)
    train_rm.set_defaults(func=cmd_train_rm, writes="out")
    actions = train_rm.add_subparsers(dest="train_rm_command", metavar="ACTION")
    ablate = actions.add_parser("ablate", help="train all three objectives on the same split; print one table",
                                description="Train classification, ranking and regression into DIR/<objective> "
                                "with the same data, split and backbone, and compare them.")
    _add_reward_model_options(ablate, objective=False)
    ablate.set_defaults(func=cmd_train_rm_ablate, writes="out")

    score = commands.add_parser(
        "score", help="score (context, reply) pairs with a trained reward model",
        description="Read JSONL rows with `context` and `reply`, write them back with `score`; with `r_fut` "
        "and `label` present, also print the reward model's metrics on them.",
    )
    score.add_argument("pairs", type=Path, metavar="FILE.jsonl")
    score.add_argument("--reward-model", required=True, metavar="DIR|random",
                       help="a `train-rm` folder, or 'random' for an untrained head")
    score.add_argument("--out", type=Path, metavar="FILE", help="default: FILE.scored.jsonl")
    score.add_argument("--batch-size", type=COUNT, default=16)
    score.set_defaults(func=cmd_score)

    grpo = commands.add_parser(
        "train-grpo", help="train the supporter policy with GRPO + LoRA (stage 3)",
        description="GRPO on TRL with a LoRA adapter: G samples per training context with the think-format "
        "prompt, rewarded by R_fut + alpha * R_fmt. R_fut comes from the reward model on the response "
        "(--reward model, the paper's), from simulating each response's future with the run config's user "
        "simulator and critic (--reward simulated), or from the reward model with a random share also "
        "simulated and the two compared in the logs (--reward hybrid). Writes the adapter, curves.png and "
        "metrics.json (simulated futures to futures.jsonl); a rerun resumes from the last checkpoint. Every "
        "setting is a GrpoRunConfig field (--config FILE); the flags below override the file.",
    )
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
    add_held_out_options(grpo)
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
    grpo.set_defaults(func=cmd_train_grpo, writes="out")

    warmup = commands.add_parser(
        "warmup-format", help="a few supervised steps on think-format demonstrations (cold start for tiny policies)",
        description="Fine-tune a LoRA on ESConv demonstrations written in the think format (a one-line reading "
        "of the seeker, then the reference reply), merge it and save a model folder for `train-grpo --policy`. "
        "Needed when the policy never writes the format, so R_fmt would give GRPO no signal.",
    )
    warmup.add_argument("--out", type=Path, required=True, metavar="DIR")
    warmup.add_argument("--policy", default="embedded", help="default: %(default)s")
    warmup.add_argument("--dataset", default="esconv:ppdpp_train", help="default: %(default)s")
    warmup.add_argument("--prompt", default="think", help="think-format supporter prompt (default: %(default)s)")
    warmup.add_argument("--steps", type=COUNT, default=20, help="default: %(default)s")
    warmup.add_argument("--contexts", type=COUNT, default=200, help="demonstrations (default: %(default)s)")
    warmup.add_argument("--context-window", type=COUNT, metavar="N",
                        help="the latest N messages of a context in the prompt (default: all, as in train-grpo)")
    warmup.add_argument("--learning-rate", type=POSITIVE, default=2e-4, help="default: %(default)s")
    warmup.add_argument("--seed", type=SEED, default=0)
    warmup.set_defaults(func=cmd_warmup_format, writes=_warmup_workdir)

    export = commands.add_parser(
        "export", help="merge a GRPO adapter into a model folder the local server can serve",
        description="Merge DIR/adapter into its base model and save a full model folder; "
        "`simulate --supporter-model OUT` then serves and evaluates it.",
    )
    export.add_argument("--adapter", type=Path, required=True, metavar="DIR", help="a train-grpo folder")
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    export.set_defaults(func=cmd_export, writes=None)
