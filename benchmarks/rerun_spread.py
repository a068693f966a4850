"""How far apart are two runs of the same `compare` with the completion cache off? On a server
that honours request seeds (vLLM, OpenAI) they are the same run; the embedded server's continuous
batching shares one random stream across the requests in flight, so the same seed samples other
replies there, and this measures by how much the results move.

Runs `rlff-esc compare --no-cache` --reruns times with the same arguments (the known-answer
environment of docs/known-answer/ by default, where the critic and the seeker are rules and only
the supporter samples), each into OUT/rerun<i>, and prints each rerun's SR and mean final critic
score per supporter, their spread (max - min), and the share of cases whose outcome was the same in
every rerun (where SR is near 0 or 1, the score shows the spread that SR cannot). The last line is
`<supporter>_sr=<min>..<max> <supporter>_score=<min>..<max> ... same_outcome=<share>`. Reruns resume: a finished rerun
folder is read, not run again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from esc_agents.runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]


def compare(out: Path, args: list[str]) -> float:
    """One rerun, unless its compare.json is already there; the seconds it took (0 if read)."""
    if (out / "compare.json").exists():
        return 0.0
    command = [sys.executable, "-m", "esc_agents.cli", "compare", *args, "--no-cache", "--out", str(out)]
    print("$ " + shlex.join(["rlff-esc", *command[3:]]), file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode not in (0, 3):  # 3: finished, a trust check to read in the output
        sys.exit(f"rerun_spread: compare exited {result.returncode}")
    return time.perf_counter() - started


def outcomes(run: Path) -> dict[str, bool]:
    """Each case's success in one supporter's run folder."""
    return {row["case_id"]: row["success"] for row in RunFolder.open(run, "simulate").trajectories()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/rerun-spread"))
    parser.add_argument("--reruns", type=int, default=3, help="runs of the same compare (default: %(default)s)")
    parser.add_argument("--cases", type=int, default=60, help="PPDPP test cases (default: %(default)s)")
    parser.add_argument("--config", default="docs/known-answer/env.yaml",
                        help="compare's --config (default: %(default)s)")
    parser.add_argument("--supporters", default="vanilla,think", help="compare's --supporters (default: %(default)s)")
    args = parser.parse_args()
    if args.reruns < 2:
        parser.error("--reruns must be at least 2")
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    shared = ["--config", args.config, "--supporters", args.supporters, "--limit", str(args.cases),
              "--concurrency", "16"]
    success_rates, final_scores, seen = [], [], []
    for index in range(1, args.reruns + 1):
        folder = out / f"rerun{index}"
        seconds = compare(folder, shared)
        report = json.loads((folder / "compare.json").read_text())
        summaries = report["summaries"]
        success_rates.append({label: summary["success_rate"] for label, summary in summaries.items()})
        final_scores.append({label: summary["mean_final_score"] for label, summary in summaries.items()})
        seen.append({label: outcomes(folder / label) for label in summaries})
        print(f"rerun {index}: " + "  ".join(f"{label} SR={sr:.3f}" for label, sr in success_rates[-1].items())
              + (f"  ({seconds:.0f} s)" if seconds else "  (read)"), flush=True)
    labels = list(success_rates[0])
    same = total = 0
    for label in labels:
        for case in seen[0][label]:
            total += 1
            same += len({run[label].get(case) for run in seen}) == 1
    print("| supporter | measure | " + " | ".join(f"rerun {i}" for i in range(1, len(success_rates) + 1)) + " | spread |")
    print("|---|---|" + "---|" * (len(success_rates) + 1))
    ranges = []
    for label in labels:
        for measure, table in (("sr", success_rates), ("score", final_scores)):
            values = [row[label] for row in table]
            print(f"| {label} | {measure} | " + " | ".join(f"{v:.3f}" for v in values)
                  + f" | {max(values) - min(values):.3f} |")
            ranges.append(f"{label}_{measure}={min(values):.3f}..{max(values):.3f}")
    print(" ".join(ranges) + f" same_outcome={same / total:.3f}")


if __name__ == "__main__":
    main()
