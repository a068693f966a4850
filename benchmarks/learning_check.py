"""Does the training loop learn? GRPO in the known-answer environment (docs/known-answer/), where
the right behaviour is stated in advance, on the embedded CPU default, through the real command
line; every command is printed before it runs and logged to OUT/commands.txt.

    (default)  reduced check, about 14 min alone on 2 cores: GRPO with --reward simulated, then the
               untrained and the trained policy compared on --cases PPDPP test cases
    --full     the whole study: D_r, the reward model, GRPO with --reward model, simulated and a
               random-reward control, all compared with the untrained policy on --cases cases

The last line is `base_sr=<x> trained_sr=<y> mcnemar_p=<z>` (the simulated-reward policy
against the untrained one). Reruns resume: every stage keeps its run folder under OUT, and a finished training stage is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from esc_agents.core.errors import UserError
from esc_agents.runs import RunFolder
from training.grpo.config import load_grpo_config

ROOT = Path(__file__).resolve().parents[1]
ENV = Path("docs/known-answer/env.yaml")
GRPO = Path("docs/known-answer/grpo.yaml")
WINDOW = "2"  # the supporter's context window in every stage (grpo.yaml says the same)
DELTA = -0.6  # label threshold: about a third of one-turn futures above it (the default 0.5 left 3%)


def rlff_esc(out: Path, *args: str) -> None:
    command = ["rlff-esc", *args]
    line = shlex.join(command)
    print(f"$ {line}", file=sys.stderr, flush=True)
    with (out / "commands.txt").open("a") as log:
        log.write(line + "\n")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "esc_agents.cli", *args])
    seconds = time.perf_counter() - started
    with (out / "timings.jsonl").open("a") as log:
        log.write(json.dumps({"command": line, "seconds": round(seconds, 1), "exit": result.returncode}) + "\n")
    if result.returncode not in (0, 3):  # 3: finished, a trust check to read in the output
        sys.exit(f"learning_check: `{line}` exited {result.returncode}")


def records(folder: Path) -> int:
    path = folder / "records.jsonl"
    return sum(1 for line in path.open() if line.strip()) if path.exists() else 0


def grpo(out: Path, name: str, steps: int, seed: int, config: Path, *reward: str) -> str:
    folder = out / name
    if (folder / "metrics.json").exists():  # finished in an earlier run of this script
        return str(folder)
    rlff_esc(out, "train-grpo", "--config", str(config), "--max-steps", str(steps), "--seed", str(seed), *reward,
             "--out", str(folder))
    return str(folder)


def results_table(out: Path, report: dict, base: str) -> str:
    """SR with its interval and McNemar against the untrained policy, and each run's rewards."""
    rows = ["| supporter | SR | 95% CI | AT | McNemar p vs untrained | R_fut first → last 10 steps |",
            "|---|---|---|---|---|---|"]
    for label, summary in report["summaries"].items():
        pair = report["pairs"].get(f"{base} vs {label}", {}).get("success")
        rewards = "-"
        metrics = out / label / "metrics.json"
        if metrics.exists():
            history = [entry["rewards/r_fut/mean"] for entry in json.loads(metrics.read_text())["history"]]
            rewards = f"{sum(history[:10]) / 10:.3f} → {sum(history[-10:]) / 10:.3f}" if len(history) >= 10 else "-"
        low, high = summary["success_rate_ci95"]
        p_value = "-" if pair is None else f"{pair['p_value']:.4f}"
        rows.append(f"| {label} | {summary['success_rate']:.3f} | [{low:.3f}, {high:.3f}] | "
                    f"{summary['average_turns']:.2f} | {p_value} | {rewards} |")
    return "\n".join(rows)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/known-answer"))
    parser.add_argument("--full", action="store_true", help="the whole study (see above)")
    parser.add_argument("--steps", type=positive, default=40, help="GRPO steps per policy (default: %(default)s)")
    parser.add_argument("--cases", type=positive, default=60, help="PPDPP test cases compared (default: %(default)s)")
    parser.add_argument("--contexts", type=positive, default=160, help="--full: D_r contexts (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed of every policy; OUT gets a folder of its own per seed (default: %(default)s)")
    parser.add_argument("--grpo-config", type=Path, default=GRPO,
                        help="train-grpo --config of every policy, for trying another recipe (default: %(default)s)")
    parser.add_argument("--critic-samples", type=positive, default=5,
                        help="critic samples l of each training future (default: %(default)s)")
    args = parser.parse_args()
    os.chdir(ROOT)  # every path below, and in the logged commands, is relative to the repository root
    try:  # checked before OUT is made: a bad recipe leaves nothing behind
        recipe = load_grpo_config(args.grpo_config)
    except UserError as exc:
        parser.error(f"--grpo-config: {exc}")
    out = args.out / f"seed{args.seed}" if args.seed else args.out  # seed 0 keeps the folders of earlier runs
    out.mkdir(parents=True, exist_ok=True)
    # the policies' max_completion_length, also the reward data's and the untrained policy's budget
    completion = str(recipe.max_completion_length)
    simulation = ["--simulation-config", str(ENV), "--future-turns", "1", "--critic-samples", str(args.critic_samples)]
    policies = {"simulated": grpo(out, "grpo-simulated", args.steps, args.seed, args.grpo_config, "--reward", "simulated",
                                  *simulation)}
    if args.full:
        dr = out / "dr"
        if records(dr) < args.contexts * 4:
            rlff_esc(out, "rewards", "--config", str(ENV), "--supporter-prompt", "think", "--supporter-max-tokens",
                     completion, "--context-window", WINDOW, "--dataset", "esconv:ppdpp_train", "--contexts",
                     str(args.contexts), "--candidates", "4", "--max-turns", "1", "--concurrency", "16",
                     "--out", str(dr))
        if RunFolder.open(dr, "rewards").record.labelling()["delta"] != DELTA:  # as relabelled, where it was
            rlff_esc(out, "rewards", "relabel", str(dr), "--formula", "terminal_efficiency", "--delta", str(DELTA))
        if not (out / "rm" / "reward_model.json").exists():
            rlff_esc(out, "train-rm", "--data", str(out / "dr"), "--out", str(out / "rm"), "--max-steps", "60",
                     "--batch-size", "8", "--learning-rate", "1e-4")
        policies["model"] = grpo(out, "grpo-model", args.steps, args.seed, args.grpo_config, "--reward", "model",
                                 "--reward-model", str(out / "rm"))
        policies["random"] = grpo(out, "grpo-random", args.steps, args.seed, args.grpo_config, "--reward", "model",
                                  "--reward-model", "random")
    rlff_esc(out, "compare", "--config", str(ENV), "--supporters", ",".join(["think", *policies.values()]),
             "--supporter-max-tokens", completion, "--context-window", WINDOW, "--limit", str(args.cases), "--concurrency", "16",
             "--out", str(out / "compare"))
    report = json.loads((out / "compare" / "compare.json").read_text())
    base, trained = "think", Path(policies["simulated"]).name
    test = report["pairs"][f"{base} vs {trained}"]["success"]
    print(results_table(out, report, base))
    print(f"base_sr={report['summaries'][base]['success_rate']:.3f} "
          f"trained_sr={report['summaries'][trained]['success_rate']:.3f} mcnemar_p={test['p_value']:.4f}")


if __name__ == "__main__":
    main()
