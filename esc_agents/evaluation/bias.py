"""Simulator-bias studies: one supporter on the same cases under several user-simulator personas,
user-simulator models, critic models and seeds, and how much the measured SR moves with them.

Each condition is an ordinary simulate run under `DIR/<condition>`; the first condition is the
reference the shifts are measured against.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.core.types import counted_turns
from esc_agents.evaluation.compare import load_runs, mixed_servers
from esc_agents.evaluation.intervals import wilson_interval
from esc_agents.evaluation.labels import rename, rename_in_text, rename_keys
from esc_agents.evaluation.metrics import (count_text, count_warnings, format_interval, format_p, plot_success_by_turn,
                                           summarize, with_count_warnings)
from esc_agents.evaluation.paired import paired_bootstrap
from esc_agents.prompts import PromptFile
from esc_agents.runs import RunFolder


@dataclass(frozen=True)
class Condition:
    persona: str
    user_model: str | None  # an endpoint profile; None: the config's
    critic_model: str | None
    seed: int

    @property
    def persona_label(self) -> str:
        """A persona given as a file is named by its stem, not its path."""
        persona = self.persona
        if persona.endswith((".yaml", ".yml")) or "/" in persona:
            persona = Path(persona).stem
        return persona

    def level(self, factor: str) -> str:
        """This condition's level of one factor, as tables name it."""
        if factor == "persona":
            return self.persona_label
        return getattr(self, factor) or "default"

    def as_run(self, config: dict[str, Any] | None) -> Condition:
        """This condition with the user and critic models its run used where the study did not
        vary them (a run's resolved config, as run.json keeps it), so that every table names a
        model as the profile that served it, not as `default`."""
        used = profiles_used(config)
        return replace(self, user_model=self.user_model or used["user_model"],
                       critic_model=self.critic_model or used["critic_model"])

    @property
    def label(self) -> str:
        """A folder name: the persona's short label, the models, the seed."""
        parts = [self.persona_label]
        if self.user_model:
            parts.append(f"user-{self.user_model}")
        if self.critic_model:
            parts.append(f"critic-{self.critic_model}")
        return "_".join(parts + [f"seed{self.seed}"])


def profiles_used(config: dict[str, Any] | None) -> dict[str, str | None]:
    """The endpoint profile behind the user simulator and the critic in a resolved run config
    (a role written in Python by its factory); None where the config does not say."""
    used = {}
    for factor, role in (("user_model", "user_simulator"), ("critic_model", "critic")):
        binding = (config or {}).get(role) or {}
        used[factor] = binding.get("factory") or binding.get("endpoint")
    return used


def conditions(personas: list[str], user_models: list[str | None], critic_models: list[str | None],
               seeds: int, first_seed: int = 0) -> list[Condition]:
    return [Condition(p, u, c, first_seed + s)
            for p, u, c, s in product(personas, user_models, critic_models, range(seeds))]


def bias_report(runs: dict[Condition, Path], out: Path, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """SR/AT per condition; SR shift (paired bootstrap on the same cases) and final-score
    distribution shift (Wasserstein, KS) against the first condition; SR spread over seeds; SR
    pooled over user-simulator models and seeds. Models are named by the profile each run used.
    `labels`: display names for conditions and factor levels (folders keep theirs)."""
    by_label = {condition.label: folder for condition, folder in runs.items()}
    loaded = load_runs(by_label, allow_mismatch=True)  # conditions differ on purpose
    check_servers(runs, loaded.folders)
    common, max_turns = loaded.common, loaded.max_turns
    episodes = {label: [by_case[c] for c in common] for label, by_case in loaded.trajectories.items()}
    ran = {condition: condition.as_run(loaded.folders[condition.label].record.config) for condition in runs}
    # Every condition is compared on the cases all of them finished: a case one condition failed is
    # left out of all, and said so (a persona that makes hard cases fail would otherwise hide them).
    finished = set().union(*(set(by_case) for by_case in loaded.trajectories.values()))
    meant = finished | loaded.meant  # a case failed under every condition counts too
    left_out = {label: sorted(meant - set(by_case)) for label, by_case in loaded.trajectories.items()
                if meant - set(by_case)}
    warnings_ = [f"{', '.join(cases)} did not finish under {label}: left out of every condition (rerun the "
                 "same command to retry them)" for label, cases in left_out.items()]
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
            "persona": condition.persona, "user_model": ran[condition].level("user_model"),
            "critic_model": ran[condition].level("critic_model"),
            "seed": condition.seed, "success_rate": summary["success_rate"],
            "success_rate_ci95": summary["success_rate_ci95"],
            "success_rate_wilson95": wilson_interval(sum(t["success"] for t in episodes[label]), len(episodes[label])),
            "average_turns": summary["average_turns"],
            "no_reply": summary["no_reply"], "final_score_cases": summary["final_score_cases"],
            "sr_shift": shift["mean_difference"], "sr_shift_ci95": shift["ci95"],
            "wasserstein": float(stats.wasserstein_distance(a, b)) if len(a) and len(b) else None,
            "ks_p_value": float(stats.ks_2samp(a, b).pvalue) if len(a) and len(b) else None,
            "success_by_turn": summary["success_by_turn"],
        }
    seeds: dict[str, dict[str, float]] = defaultdict(dict)
    pooled: dict[str, list[float]] = defaultdict(list)
    for condition in runs:
        rate = rows[condition.label]["success_rate"]
        persona, user, critic = (ran[condition].level(factor) for factor in FACTORS)
        seeds[f"{persona}|{user}|{critic}"][str(condition.seed)] = rate
        pooled[f"{persona}|{critic}"].append(rate)
    report = {
        "cases": len(common), "max_turns": max_turns, "reference": reference,
        "runs": {label: str(folder) for label, folder in by_label.items()},  # a renamed row's folder
        "warnings": warnings_ + count_warnings(rows),
        "left_out_cases": sorted(meant - set(common)), "conditions": rows,
        "seed_spread": {key: {"runs": len(rates), "sr_mean": float(np.mean(list(rates.values()))),
                              "sr_std": float(np.std(list(rates.values()), ddof=1)) if len(rates) > 1 else None,
                              "sr_min": min(rates.values()), "sr_max": max(rates.values()), "sr_by_seed": rates}
                        for key, rates in seeds.items()},
        "pooled_over_user_models": {key: float(np.mean(v)) for key, v in pooled.items()},
        "factors": pooled_effects({ran[condition]: episodes[condition.label] for condition in runs}, max_turns),
        "personas": personas(runs),
        "examples": example_dialogues(list(runs), episodes, common),
    }
    report = relabel_bias(report, labels or {})
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bias.json", report)
    plot_success_by_turn({label: row["success_by_turn"] for label, row in report["conditions"].items()},
                         out / "success_by_turn.png")
    return report


def relabel_bias(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A bias.json's content with conditions and factor levels shown under `names` (see `labels`)."""
    if not names:
        return data

    factors = {factor: {**effect, "reference": rename(names, effect["reference"]),
                        "levels": rename_keys(effect["levels"], names)}
               for factor, effect in data.get("factors", {}).items()}
    examples = {persona: {**example, "condition": rename(names, example["condition"])}
                for persona, example in rename_keys(data.get("examples", {}), names).items()}
    return {**data, "reference": rename(names, data["reference"]), "conditions": rename_keys(data["conditions"], names),
            "seed_spread": rename_keys(data.get("seed_spread", {}), names, "|"),
            "pooled_over_user_models": rename_keys(data.get("pooled_over_user_models", {}), names, "|"),
            "factors": factors, "personas": rename_keys(data.get("personas", {}), names), "examples": examples,
            "runs": rename_keys(data.get("runs", {}), names),
            "warnings": [rename_in_text(warning, names) for warning in data.get("warnings", [])]}


def row_names(data: dict[str, Any]) -> list[list[str]]:
    """The rows of a bias.json's tables that `--labels` may rename: conditions, then each
    factor's levels (personas, user and critic models)."""
    return [list(data["conditions"])] + [list(effect["levels"]) for effect in data.get("factors", {}).values()]


FACTORS = ("persona", "user_model", "critic_model")
# The factor that puts each role on another endpoint; none moves the supporter.
SERVED_BY = {"supporter": None, "user_simulator": "user_model", "critic": "critic_model"}


def check_servers(runs: dict[Condition, Path], folders: dict[str, RunFolder]) -> None:
    """Conditions at one level of a role's factor (every condition, for the supporter) must have run
    that role on one server: a server that changed between them would be reported as their effect."""
    for role, factor in SERVED_BY.items():
        levels: dict[str, dict[str, RunFolder]] = {}
        for condition in runs:
            levels.setdefault(condition.level(factor) if factor else "", {})[condition.label] = folders[condition.label]
        for level in levels.values():
            if message := mixed_servers(level, role):
                raise UserError(f"conditions are not comparable: {message}, and the study does not vary it "
                                "between them; rerun one against the other's server")


# How a heading names what a factor's table pools over.
POOLED_NAMES = {"persona": "personas", "user_model": "user models", "critic_model": "critic models"}


def pooled_over(conditions_: list[Condition], factor: str) -> list[str]:
    """What a factor's levels pool over: seeds where there are several, and each other factor
    that varies (a heading that said `seeds` alone would hide that user models are pooled too)."""
    pooled = ["seeds"] if len({c.seed for c in conditions_}) > 1 else []
    return pooled + [POOLED_NAMES[other] for other in FACTORS
                     if other != factor and len({c.level(other) for c in conditions_}) > 1]


def pooled_heading(factor: str, effect: dict[str, Any]) -> str:
    """`persona effect, pooled over seeds and user models`; a bias.json written before it said
    what it pooled over, as it then said."""
    name = f"{factor.replace('_', ' ')} effect"
    if "pooled_over" not in effect:
        return f"{name}, pooled over seeds and the other factors"
    return f"{name}, pooled over {' and '.join(effect['pooled_over'])}" if effect["pooled_over"] else name


def pooled_effects(episodes: dict[Condition, list[dict]], max_turns: int) -> dict[str, dict[str, Any]]:
    """Each factor that varies (persona, user model, critic model), pooled over seeds and the
    other factors (`pooled_over` names them): per level its SR with a Wilson interval on the
    number of cases, AT, its no-reply episodes, and the SR shift against the first level with a
    paired bootstrap over cases (a case's success rate over the level's runs, so repeated runs of
    one case are not counted as independent) and its p-value; with three or more levels,
    Friedman's test on the same per-case rates. `episodes`: per condition as run (models named
    by the profile used), its episodes on the common cases in case-id order."""
    effects = {}
    for factor in FACTORS:
        levels: dict[str, list[Condition]] = {}
        for condition in episodes:
            levels.setdefault(condition.level(factor), []).append(condition)
        if len(levels) < 2:
            continue
        case_rates = {level: np.mean([[float(t["success"]) for t in episodes[c]] for c in members], axis=0)
                      for level, members in levels.items()}
        reference = next(iter(levels))
        table = {}
        for level, members in levels.items():
            pooled = [t for c in members for t in episodes[c]]
            wins = sum(bool(t["success"]) for t in pooled)
            shift = paired_bootstrap(case_rates[level], case_rates[reference])
            table[level] = {
                "runs": len(members), "episodes": len(pooled), "success_rate": wins / len(pooled),
                # n is the cases, not the episodes: k runs of one case are not k independent cases.
                "success_rate_wilson95": wilson_interval(float(case_rates[level].sum()), len(case_rates[level])),
                "average_turns": float(np.mean([counted_turns(t, max_turns) for t in pooled])),
                "no_reply": sum(t.get("status") == "no_reply" for t in pooled),
                "sr_shift": shift["mean_difference"], "sr_shift_ci95": shift["ci95"], "sr_shift_p": shift["p_value"],
                "sr_shift_p_method": shift["p_method"], "sr_shift_p_flips": shift["p_flips"]}
        friedman = None
        rates = list(case_rates.values())
        if len(rates) >= 3 and len(rates[0]) >= 2:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                p_value = stats.friedmanchisquare(*rates).pvalue
            friedman = 1.0 if np.isnan(p_value) else float(p_value)  # NaN: every level scored every case alike
        effects[factor] = {"reference": reference, "pooled_over": pooled_over(list(episodes), factor), "levels": table,
                           "friedman_p": friedman}
    return effects


def personas(runs: dict[Condition, Path]) -> dict[str, dict[str, Any]]:
    """Each persona by its short label: what was given (a name or a file), its description and
    its axes (e.g. trust: low), from the prompt text the run recorded."""
    table: dict[str, dict[str, Any]] = {}
    for condition, folder in runs.items():
        if condition.persona_label not in table:
            run = RunFolder.find(folder)
            spec = run.prompt_file("user_simulator") if run else PromptFile(system="")
            table[condition.persona_label] = {"given": condition.persona, "description": spec.description,
                                              "axes": {str(k): str(v) for k, v in spec.axes.items()}}
    return table


def example_dialogues(conditions_: list[Condition], episodes: dict[str, list[dict]],
                      common: list[str]) -> dict[str, dict[str, Any]]:
    """One dialogue per persona, all on the same case: the first case whose outcome differs
    between personas (else the first case), under each persona's first condition."""
    first = {}
    for condition in conditions_:
        first.setdefault(condition.persona_label, condition.label)
    outcomes = {persona: [bool(t["success"]) for t in episodes[label]] for persona, label in first.items()}
    index = next((i for i in range(len(common)) if len({o[i] for o in outcomes.values()}) > 1), 0)
    examples = {}
    for persona, label in first.items():
        episode = episodes[label][index]
        examples[persona] = {
            "condition": label, "case_id": common[index], "success": episode["success"], "turns": episode["turns"],
            "final_score": episode.get("final_score"),
            "critic_means": [score.get("mean") for score in episode.get("scores", [])],
            "messages": [{"speaker": m["speaker"], "content": m["content"]} for m in episode["messages"]]}
    return examples


def format_bias(report: dict[str, Any]) -> str:
    """The printed study: per condition its numbers with the counts they rest on (no-reply
    episodes, the final scores' n), each factor under a heading that says what it pools over."""
    lines = [f"warning: {warning}" for warning in with_count_warnings(report.get("warnings", []), report["conditions"])]
    lines += [f"{report['cases']} cases, T = {report['max_turns']}; shifts against {report['reference']}",
              f"{'condition':34s} {'SR':>6s} {'Wilson 95%':>14s} {'AT':>6s} {'SR shift':>9s} {'95% CI':>15s} "
              f"{'W1':>6s} {'KS p':>6s} {'n final':>7s} {'no reply':>8s}"]
    for label, row in report["conditions"].items():
        low, high = row["sr_shift_ci95"]
        wilson = row.get("success_rate_wilson95")
        wilson_text = f"[{wilson[0]:.2f}, {wilson[1]:.2f}]" if wilson else "-"
        w1 = "-" if row["wasserstein"] is None else f"{row['wasserstein']:.3f}"
        ks = "-" if row["ks_p_value"] is None else f"{row['ks_p_value']:.3f}"
        lines.append(f"{label:34s} {row['success_rate']:6.3f} {wilson_text:>14s} {row['average_turns']:6.2f} "
                     f"{row['sr_shift']:+9.3f} "
                     f"{f'[{low:+.2f}, {high:+.2f}]':>15s} {w1:>6s} {ks:>6s} "
                     f"{count_text(row.get('final_score_cases')):>7s} {count_text(row.get('no_reply')):>8s}")
    for key, spread in report["seed_spread"].items():
        if spread["sr_std"] is not None:
            extremes = f" (min {spread['sr_min']:.3f}, max {spread['sr_max']:.3f})" if "sr_min" in spread else ""
            lines.append(f"seed spread {key}: SR {spread['sr_mean']:.3f} ± {spread['sr_std']:.3f} "
                         f"over {spread['runs']} runs{extremes}")
    for key, value in report["pooled_over_user_models"].items():
        lines.append(f"pooled over user models and seeds {key}: SR {value:.3f}")
    for factor, effect in report.get("factors", {}).items():
        lines.append(f"{pooled_heading(factor, effect)} (shift against {effect['reference']}, paired bootstrap "
                     "interval and sign-flip test over cases):")
        for level, row in effect["levels"].items():
            no_reply = f", {row['no_reply']} with no reply" if row.get("no_reply") is not None else ""
            lines.append(f"  {level:30s} SR {row['success_rate']:.3f} {format_interval(row['success_rate_wilson95'])} "
                         f"({row['episodes']} episodes{no_reply}; interval on the cases); shift {row['sr_shift']:+.3f} "
                         f"{format_interval(row['sr_shift_ci95'])}, p "
                         + format_p(row["sr_shift_p"], row.get("sr_shift_p_flips"), method="sr_shift_p_method" in row))
        if effect["friedman_p"] is not None:
            lines.append(f"  Friedman test over the levels: p {format_p(effect['friedman_p'])}")
    return "\n".join(lines)
