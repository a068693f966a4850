"""`rlff-esc train-grpo` (stage 3): the supporter policy trained with GRPO + LoRA."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from esc_agents.cli import options
from esc_agents.cli.config_flags import ConfigFlags, Flag, option
from esc_agents.cli.outcome import usage_columns
from esc_agents.cli.values import OUT_FOLDER
from esc_agents.core.errors import UserError
from training.grpo.config import GrpoRunConfig


def reward_term(text: str) -> dict[str, Any]:
    """`--reward-fn NAME:WEIGHT`: a reward function (package.module:function or an entry point's
    name) and its weight, split at the last colon; whether NAME loads is checked before training."""
    name, _, weight = text.rpartition(":")
    try:
        value = float(weight)
    except ValueError:
        value = None
    if not name or value is None or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:WEIGHT (a package.module:function or an "
                                         "rlff_esc.rewards entry point, then a finite weight: "
                                         "mypkg.terms:length_penalty:-0.1)")
    return {"fn": name, "weight": value}


# The GrpoRunConfig fields the command line sets; name, type, bounds, help and default come from the field.
FLAGS = ConfigFlags(GrpoRunConfig, [
    # where R_fut comes from
    "reward", Flag("reward_model", metavar="DIR|random"), Flag("check_fraction", metavar="P"),
    Flag("hybrid_use_simulated", "--use-simulated"),
    # simulated futures (--reward simulated or hybrid)
    Flag("simulation.config", "--simulation-config", metavar="FILE"),
    Flag("simulation.max_turns", "--future-turns", metavar="T"),
    Flag("simulation.critic_samples", "--critic-samples", metavar="L"),
    Flag("simulation.formula", "--formula", metavar="NAME"),
    # the training contexts and the policy
    Flag("dataset", metavar="SPEC"), Flag("sampling.contexts", "--contexts"), "context_window",
    Flag("policy", metavar="NAME|DIR"),
    # the optimisation
    "max_steps", "alpha", "num_generations", "temperature", "learning_rate", "batch_size", "max_completion_length",
    "report_to", "seed",
    # terms added to the rubric (R_fut, R_fmt), e.g. --reward-fn mypkg.terms:length_penalty:0.1
    Flag("rewards", "--reward-fn", metavar="NAME:WEIGHT", parse=reward_term),
    # any other field of TRL's GRPOConfig, e.g. --trl loss_type=dr_grpo --trl scale_rewards=none
    Flag("trl", metavar="KEY=VALUE"),
])

HELP = "train the supporter policy with GRPO + LoRA (stage 3)"
DESCRIPTION = """GRPO on TRL with a LoRA adapter: G samples per training context with the think-format
prompt, rewarded by R_fut + alpha * R_fmt. R_fut comes from the reward model on the response (--reward
model, the paper's), from simulating each response's future with the run config's user simulator and
critic (--reward simulated), or from the reward model with a random share also simulated and the two
compared in the logs (--reward hybrid). Any other weighted term is added with --reward-fn
package.module:function:WEIGHT (repeatable) or rewards: in the file, each logged on its own. Writes
the adapter, curves.png and metrics.json (simulated futures to futures.jsonl); a rerun resumes from
the last checkpoint. Every setting is a GrpoRunConfig field (--config FILE); the flags below override
the file. Any other field of TRL's GRPOConfig is set with trl: in the file or --trl KEY=VALUE
(repeatable), checked before any weight loads."""


class TrainGrpoOptions(options.HeldOutOptions):
    """The command's own options, beside the GrpoRunConfig fields."""

    out: Path | None = option(None, "run folder (created, or resumed from its last checkpoint)", parse=OUT_FOLDER,
                              metavar="DIR", needed="required")
    config: str | None = option(None, "YAML with any GrpoRunConfig field", metavar="FILE",
                                unset="none, the defaults")


def add_parser(commands) -> None:
    grpo = commands.add_parser("train-grpo", help=HELP, description=DESCRIPTION)
    ConfigFlags(TrainGrpoOptions, ["out", "config", "eval_split", "allow_eval_overlap"]).add_to(grpo)
    FLAGS.add_to(grpo)
    grpo.set_defaults(func=run, writes=held_folder)


def launched_rank() -> int:
    """This process's rank among those a launcher started (`accelerate launch`, torchrun, mpirun),
    from the environment it set, before any process group is up; 0 for a run in one process."""
    from accelerate.utils import get_cpu_distributed_information

    return get_cpu_distributed_information().rank


def held_folder(args: argparse.Namespace) -> Path | None:
    """The run folder this process holds for its run (see runlock): one writer per folder, so of
    several launched processes the main one holds it for all."""
    return args.out if launched_rank() == 0 else None


def run(args: argparse.Namespace) -> int:
    from training.grpo.trainer import train_grpo

    if args.out is None:
        raise UserError("train-grpo needs --out DIR")
    config = FLAGS.load(args, args.config)
    metrics = train_grpo(config, args.out, **options.held_out_options(args))
    if launched_rank() != 0:
        return 0  # the run's numbers are the same on every process; the main one reports them
    print(f"{metrics['steps']} GRPO steps in {metrics['train_seconds']:.0f} s "
          f"({metrics['train_seconds'] / max(metrics['steps'], 1):.1f} s/step) on {metrics['prompts']} prompts")
    for name in ("reward", "r_fut", "r_fmt", "kl", "spearman"):
        first, last = metrics[f"{name}_first"], metrics[f"{name}_last"]
        if first is not None:
            print(f"  {name:8s} first {first:7.3f}   last {last:7.3f}")
    for name, term in list(metrics.get("rewards", {}).items())[2:]:  # the user's terms, after R_fut and R_fmt
        if term["first"] is not None:
            print(f"  {name:8s} first {term['first']:7.3f}   last {term['last']:7.3f}   (weight {term['weight']:g})")
    if simulation := metrics.get("simulation"):
        steps = max(metrics["steps"], 1)
        print(f"  futures  {simulation['futures']} simulated, {simulation['failed']} gave no reward; "
              f"{simulation['endpoint_wait_seconds'] / steps:.1f} s/step waiting on endpoints")
        for role, usage in simulation["usage"].items():
            print(f"  {role:16s} {usage_columns(usage, per=steps)} per step")
    for signal in metrics.get("warnings", []):
        print(f"warning: {signal}")
    print(f"wrote {args.out / 'adapter'}, curves.png, metrics.json; `rlff-esc export --adapter {args.out}` "
          "merges it for serving")
    return 0
