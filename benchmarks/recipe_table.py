"""One row per `benchmarks/learning_check.py` run: the trained policy against the untrained one on
the same cases, for reading a recipe study. Each OUT folder is a learning check's (OUT/seedN/ as
it writes them; the recipe is named by OUT's folder name).

    python benchmarks/recipe_table.py runs/study/group-l5 runs/study/none-l20 ...

Columns: SR of both (cases solved), McNemar's exact p on success, the mean final critic score of
both, the paired mean difference of the final score (trained - untrained) with its bootstrap 95%
interval and sign-flip p (cases are the unit; exact wherever the signed sums stay few, as they do
for the known-answer critic's scores, which lie on a grid; else 100,000 random sign patterns, which
resolve nothing below 1e-05: see esc_agents.evaluation.paired.sign_flip), the trained replies'
share of distinct bigrams, and the training R_fut over its first and last 10 steps. A case either
policy lacks is refused, not dropped: both must hold the same cases.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from esc_agents.core.errors import UserError
from esc_agents.evaluation.paired import mcnemar, paired_bootstrap
from esc_agents.runs import RunFolder

BASE, TRAINED = "think", "grpo-simulated"


def outcomes(folder: Path) -> dict[str, dict]:
    """Each finished case's episode; a run that has not finished every case it planned is refused."""
    try:
        run = RunFolder.open(folder)
        episodes = {episode["case_id"]: episode for episode in run.trajectories()}  # a case held twice: refused
    except UserError as error:
        sys.exit(f"recipe_table: {error}")
    if set(episodes) != set(run.cases()):
        sys.exit(f"recipe_table: {folder} has not finished every case it planned")
    return episodes


def row(check: Path) -> str:
    compare = check / "compare"
    base, trained = outcomes(compare / BASE), outcomes(compare / TRAINED)
    if base.keys() != trained.keys():
        sys.exit(f"recipe_table: {compare}: the two policies ran different cases")
    cases = sorted(base)
    if any(base[c]["final_score"] is None or trained[c]["final_score"] is None for c in cases):
        sys.exit(f"recipe_table: {compare}: a case has no final critic score")
    test = mcnemar([trained[c]["success"] for c in cases], [base[c]["success"] for c in cases])
    final = paired_bootstrap([trained[c]["final_score"] for c in cases], [base[c]["final_score"] for c in cases])
    summary = json.loads((compare / "compare.json").read_text())["summaries"]
    history = [entry["rewards/r_fut/mean"] for entry in json.loads((check / TRAINED / "metrics.json").read_text())["history"]]
    solved = {name: sum(runs[c]["success"] for c in cases) for name, runs in ((BASE, base), (TRAINED, trained))}
    low, high = final["ci95"]
    return (f"| {check.parent.name} | {check.name.removeprefix('seed')} | {solved[BASE]}/{len(cases)} | "
            f"{solved[TRAINED]}/{len(cases)} | {test['p_value']:.3f} | "
            f"{summary[BASE]['mean_final_score']:.3f} | {summary[TRAINED]['mean_final_score']:.3f} | "
            f"{final['mean_difference']:+.3f} [{low:+.3f}, {high:+.3f}] | {final['p_value']:.2g} | "
            f"{summary[TRAINED]['distinct_bigrams']['share']:.3f} | "
            f"{sum(history[:10]) / 10:.3f} → {sum(history[-10:]) / 10:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outs", nargs="+", type=Path, metavar="OUT", help="learning_check --out folders")
    args = parser.parse_args()
    checks = [check for out in args.outs for check in sorted(out.glob("seed*")) if (check / "compare" / "compare.json").exists()]
    if not checks:
        sys.exit("recipe_table: no finished learning check under the folders given")
    print("| recipe | seed | untrained SR | trained SR | McNemar p | untrained final | trained final | "
          "paired difference [95% CI] | sign-flip p | trained dist-2 | training R_fut first → last 10 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for check in checks:
        print(row(check))


if __name__ == "__main__":
    main()
