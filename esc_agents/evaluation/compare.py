"""`compare`: supporters side by side on the same cases, user simulator and critic.

A supporter is named by a spec, so adding one is a prompt file or a model folder, not code:
  vanilla | think | strategy | path/to/prompt.yaml   a supporter prompt on the default endpoint
  PROMPT@PROFILE                                    that prompt on another endpoint profile
  path/to/model-folder                              a trained policy (`rlff-esc export`), served locally
  path/to/train-grpo-folder                         the same, merged on first use into <folder>/merged
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from esc_agents.core.errors import UserError
from esc_agents.evaluation.metrics import format_interval, plot_success_by_turn, summarize
from esc_agents.evaluation.paired import mcnemar, paired_bootstrap
from esc_agents.provenance import differing_fields
from esc_agents.core.runlog import read_unique
from esc_agents.core.jsonfile import write_json

# What must be equal for two runs to be compared: everything but the supporter.
SHARED_FIELDS = ("dataset", "episode", "seed", "roles.user_simulator", "roles.critic")


def supporter_binding(spec: str) -> tuple[str, dict[str, Any]]:
    """(label, config overrides) for one supporter spec."""
    folder = Path(spec)
    if folder.is_dir():
        from training.grpo.export import POLICY_CARD, export_policy, policy_profile, trained_completion_length

        label = folder.name
        if (folder / "adapter" / "adapter_config.json").exists():  # a train-grpo folder
            merged = folder / "merged"
            folder = merged if (merged / POLICY_CARD).exists() else export_policy(folder, merged)
        card = json.loads((folder / POLICY_CARD).read_text()) if (folder / POLICY_CARD).exists() else {}
        supporter = {"endpoint": "policy", "prompt": card.get("prompt", "think")}
        # A policy trained to write up to N tokens (think block first) is cut off with fewer.
        if (budget := trained_completion_length(card)) is not None:
            supporter["max_tokens"] = budget
        return label, {"endpoints": {"policy": policy_profile(folder)}, "supporter": supporter}
    prompt, _, profile = spec.partition("@")
    label = spec.replace("@", "-").replace("/", "_").removesuffix(".yaml")
    return label, {"supporter": {"prompt": prompt, **({"endpoint": profile} if profile else {})}}


def _shared(fingerprint: dict[str, Any]) -> dict[str, Any]:
    picked = {}
    for field in SHARED_FIELDS:
        value: Any = fingerprint
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        picked[field] = value
    return picked


@dataclass
class LoadedRuns:
    trajectories: dict[str, dict[str, dict]]  # label -> case id -> trajectory
    common: list[str]  # case ids every run finished, sorted
    max_turns: int  # T of the first run
    warnings: list[str]


def load_runs(runs: dict[str, Path], allow_mismatch: bool) -> LoadedRuns:
    """Trajectories per label, keyed by case id; refuses runs whose cases or settings differ,
    and runs that share no finished case."""
    fingerprints = {}
    for label, folder in runs.items():
        if not (folder / "run.json").exists():
            raise UserError(f"{folder} is not a simulate run (no run.json)")
        fingerprints[label] = json.loads((folder / "run.json").read_text())["fingerprint"]
    trajectories = {label: {t["case_id"]: t for t in read_unique(folder / "trajectories.jsonl", "case_id")}
                    for label, folder in runs.items()}
    warnings = []
    first = next(iter(runs))
    for label in runs:
        differ = differing_fields(_shared(fingerprints[first]), _shared(fingerprints[label]))
        if set(trajectories[label]) != set(trajectories[first]):
            differ.append("cases")
        if differ:
            message = f"{label} differs from {first} in {', '.join(differ)}"
            if not allow_mismatch:
                raise UserError(f"runs are not comparable: {message} (--allow-mismatch compares them anyway)")
            warnings.append(message)
    common = sorted(set.intersection(*(set(t) for t in trajectories.values())))
    if not common:
        raise UserError("the runs share no finished case")
    return LoadedRuns(trajectories, common, fingerprints[first]["episode"]["max_turns"], warnings)


def compare_runs(runs: dict[str, Path], out: Path, *, allow_mismatch: bool = False) -> dict[str, Any]:
    """Summaries per supporter and paired tests per pair on their common cases; writes
    `compare.json` and one SR-by-turn plot."""
    loaded = load_runs(runs, allow_mismatch)
    trajectories, common, max_turns = loaded.trajectories, loaded.common, loaded.max_turns
    summaries = {label: summarize([by_case[c] for c in common], max_turns) for label, by_case in trajectories.items()}

    def outcomes(label: str) -> tuple[np.ndarray, np.ndarray]:
        episodes = [trajectories[label][c] for c in common]
        return (np.array([t["success"] for t in episodes]),
                np.array([t["turns"] if t["success"] else max_turns for t in episodes], dtype=float))

    pairs = {}
    for a, b in combinations(runs, 2):
        (a_success, a_turns), (b_success, b_turns) = outcomes(a), outcomes(b)
        pairs[f"{a} vs {b}"] = {"success": mcnemar(a_success, b_success),
                                "turns": paired_bootstrap(a_turns, b_turns)}
    out.mkdir(parents=True, exist_ok=True)
    report = {"cases": len(common), "max_turns": max_turns, "runs": {k: str(v) for k, v in runs.items()},
              "summaries": summaries, "pairs": pairs, "warnings": loaded.warnings}
    write_json(out / "compare.json", report)
    plot_success_by_turn({label: s["success_by_turn"] for label, s in summaries.items()},
                         out / "success_by_turn.png")
    return report


def format_comparison(report: dict[str, Any]) -> str:
    lines = [f"{report['cases']} cases, T = {report['max_turns']}",
             f"{'supporter':22s} {'SR':>6s} {'95% CI':>15s} {'AT':>6s} {'95% CI':>15s} {'final':>7s}"]
    for label, s in report["summaries"].items():
        final = "-" if s["mean_final_score"] is None else f"{s['mean_final_score']:.3f}"
        lines.append(f"{label:22s} {s['success_rate']:6.3f} {format_interval(s['success_rate_ci95']):>15s} "
                     f"{s['average_turns']:6.2f} {format_interval(s['average_turns_ci95']):>15s} {final:>7s}")
    for pair, tests in report["pairs"].items():
        success, turns = tests["success"], tests["turns"]
        lines.append(f"{pair}: McNemar {success['a_only']}/{success['b_only']} discordant, p = {success['p_value']:.3f}; "
                     f"turns difference {turns['mean_difference']:+.2f} {format_interval(turns['ci95'])}, "
                     f"p = {turns['p_value']:.3f}")
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)
