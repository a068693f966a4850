"""Simulator-bias studies: one supporter on the same cases under several user-simulator personas,
user-simulator models, critic models and seeds, and how much the measured SR moves with them.

Each condition is an ordinary simulate run under `DIR/<condition>`; the first condition is the
reference the shifts are measured against.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from esc_agents.evaluation.compare import load_runs
from esc_agents.evaluation.intervals import wilson_interval
from esc_agents.evaluation.metrics import plot_success_by_turn, summarize
from esc_agents.evaluation.paired import paired_bootstrap
from esc_agents.core.jsonfile import write_json


@dataclass(frozen=True)
class Condition:
    persona: str
    user_model: str | None  # an endpoint profile; None: the config's
    critic_model: str | None
    seed: int

    @property
    def label(self) -> str:
        """A folder name: a persona given as a file is named by its stem, not its path."""
        persona = self.persona
        if persona.endswith((".yaml", ".yml")) or "/" in persona:
            persona = Path(persona).stem
        parts = [persona]
        if self.user_model:
            parts.append(f"user-{self.user_model}")
        if self.critic_model:
            parts.append(f"critic-{self.critic_model}")
        return "_".join(parts + [f"seed{self.seed}"])

    def options(self) -> dict[str, Any]:
        """The command-line options this condition sets on top of the shared ones."""
        return {"persona": self.persona, "user_endpoint": self.user_model, "critic_endpoint": self.critic_model,
                "seed": self.seed}


def conditions(personas: list[str], user_models: list[str | None], critic_models: list[str | None],
               seeds: int, first_seed: int = 0) -> list[Condition]:
    return [Condition(p, u, c, first_seed + s)
            for p, u, c, s in product(personas, user_models, critic_models, range(seeds))]


def bias_report(runs: dict[Condition, Path], out: Path) -> dict[str, Any]:
    """SR/AT per condition; SR shift (paired bootstrap on the same cases) and final-score
    distribution shift (Wasserstein, KS) against the first condition; SR spread over seeds; SR
    pooled over user-simulator models."""
    by_label = {condition.label: folder for condition, folder in runs.items()}
    loaded = load_runs(by_label, allow_mismatch=True)  # conditions differ on purpose
    common, max_turns = loaded.common, loaded.max_turns
    episodes = {label: [by_case[c] for c in common] for label, by_case in loaded.trajectories.items()}
    reference = next(iter(by_label))

    def finals(label: str) -> np.ndarray:
        return np.array([t["final_score"] for t in episodes[label] if t["final_score"] is not None], dtype=float)

    rows = {}
    for condition in runs:
        label = condition.label
        summary = summarize(episodes[label], max_turns)
        shift = paired_bootstrap([t["success"] for t in episodes[label]], [t["success"] for t in episodes[reference]])
        a, b = finals(label), finals(reference)
        rows[label] = {
            "persona": condition.persona, "user_model": condition.user_model, "critic_model": condition.critic_model,
            "seed": condition.seed, "success_rate": summary["success_rate"],
            "success_rate_ci95": summary["success_rate_ci95"],
            "success_rate_wilson95": wilson_interval(sum(t["success"] for t in episodes[label]), len(episodes[label])),
            "average_turns": summary["average_turns"],
            "sr_shift": shift["mean_difference"], "sr_shift_ci95": shift["ci95"],
            "wasserstein": float(stats.wasserstein_distance(a, b)) if len(a) and len(b) else None,
            "ks_p_value": float(stats.ks_2samp(a, b).pvalue) if len(a) and len(b) else None,
            "success_by_turn": summary["success_by_turn"],
        }
    seeds: dict[tuple, list[float]] = defaultdict(list)
    pooled: dict[tuple, list[float]] = defaultdict(list)
    for condition in runs:
        rate = rows[condition.label]["success_rate"]
        seeds[(condition.persona, condition.user_model, condition.critic_model)].append(rate)
        pooled[(condition.persona, condition.critic_model)].append(rate)
    report = {
        "cases": len(common), "max_turns": max_turns, "reference": reference, "conditions": rows,
        "seed_spread": {"|".join(map(str, key)): {"runs": len(v), "sr_mean": float(np.mean(v)),
                                                   "sr_std": float(np.std(v, ddof=1)) if len(v) > 1 else None}
                        for key, v in seeds.items()},
        "pooled_over_user_models": {"|".join(map(str, key)): float(np.mean(v)) for key, v in pooled.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bias.json", report)
    plot_success_by_turn({label: row["success_by_turn"] for label, row in rows.items()}, out / "success_by_turn.png")
    return report


def format_bias(report: dict[str, Any]) -> str:
    lines = [f"{report['cases']} cases, T = {report['max_turns']}; shifts against {report['reference']}",
             f"{'condition':34s} {'SR':>6s} {'Wilson 95%':>14s} {'AT':>6s} {'SR shift':>9s} {'95% CI':>15s} "
             f"{'W1':>6s} {'KS p':>6s}"]
    for label, row in report["conditions"].items():
        low, high = row["sr_shift_ci95"]
        wilson = row.get("success_rate_wilson95")
        wilson_text = f"[{wilson[0]:.2f}, {wilson[1]:.2f}]" if wilson else "-"
        w1 = "-" if row["wasserstein"] is None else f"{row['wasserstein']:.3f}"
        ks = "-" if row["ks_p_value"] is None else f"{row['ks_p_value']:.3f}"
        lines.append(f"{label:34s} {row['success_rate']:6.3f} {wilson_text:>14s} {row['average_turns']:6.2f} "
                     f"{row['sr_shift']:+9.3f} "
                     f"{f'[{low:+.2f}, {high:+.2f}]':>15s} {w1:>6s} {ks:>6s}")
    for key, spread in report["seed_spread"].items():
        if spread["sr_std"] is not None:
            lines.append(f"seed spread {key}: SR {spread['sr_mean']:.3f} ± {spread['sr_std']:.3f} over {spread['runs']} runs")
    for key, value in report["pooled_over_user_models"].items():
        lines.append(f"pooled over user models {key}: SR {value:.3f}")
    return "\n".join(lines)
