"""SR / AT and friends over a run's trajectories (PPDPP protocol), with 95% intervals.

130 test cases is a small sample, so every headline number carries a 95% interval: a Wilson
score interval for SR (a bootstrap of a 0/1 outcome collapses to [0, 0] or [1, 1] when every
case failed or succeeded) and a percentile bootstrap for AT and the final score. Failures count
T turns in AT; an episode whose supporter gave no usable reply (`no_reply`) is a failure like
any other. Every interval resamples the cases in case-id order, so it depends on the cases alone,
not on the order in which their episodes finished. A case that did not run at all (the endpoint
failed after its retries) is no supporter outcome: it is listed, and the summary says
`complete: false` until a rerun finishes it.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.core.plotting import figure_file
from esc_agents.core.types import counted_turns, invalid_verdict_rate
from esc_agents.evaluation.intervals import wilson_interval
from esc_agents.runs import TRAJECTORIES, RunFolder

BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ci(values: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> list[float | None]:
    if len(values) == 0:
        return [None, None]
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, len(values)), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(low), float(high)]


def in_case_order(trajectories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trajectories sorted by case id: a bootstrap draws indices, so the same cases in the order
    their episodes finished would give another interval on every run."""
    return sorted(trajectories, key=lambda trajectory: str(trajectory["case_id"]))


def distinct_bigrams(texts: list[str]) -> dict[str, Any]:
    """Distinct word bigrams over all bigrams of the texts (each text on its own, lower-cased):
    near 1 for varied replies, low when a supporter collapses onto a template that SR and AT
    do not show."""
    bigrams = [pair for text in texts for words in [re.findall(r"\w+", text.lower())]
               for pair in zip(words, words[1:])]
    return {"distinct": len(set(bigrams)), "total": len(bigrams),
            "share": len(set(bigrams)) / len(bigrams) if bigrams else None}


def supporter_texts(trajectories: list[dict[str, Any]]) -> list[str]:
    """The supporter turns' text (as the seeker heard it) of every trajectory."""
    return [message["content"] for trajectory in trajectories for message in trajectory.get("messages", [])
            if message["speaker"] == "supporter"]


def forged_replies(trajectories: list[dict[str, Any]]) -> dict[str, int]:
    """Supporter turns from which cleaning removed another role's words or a critic's verdict, and
    the spans removed: a supporter that writes them is trying the critic, even where it failed."""
    turns = [message.get("forged") or [] for trajectory in trajectories for message in trajectory.get("messages", [])
             if message["speaker"] == "supporter"]
    return {"replies": sum(bool(spans) for spans in turns), "spans": sum(len(spans) for spans in turns)}


def format_interval(bounds: list[float | None] | None, digits: int = 2) -> str:
    """`[low, high]`, or `-` where there was nothing to resample."""
    if bounds is None or None in bounds:
        return "-"
    return f"[{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def _group(trajectories: list[dict], key: str, max_turns: int) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for trajectory in trajectories:
        groups[trajectory[key].strip().lower()].append(trajectory)
    return {
        name: {
            "cases": len(members),
            "success_rate": float(np.mean([t["success"] for t in members])),
            "average_turns": float(np.mean([counted_turns(t, max_turns) for t in members])),
        }
        for name, members in sorted(groups.items())
    }


# How each interval is made (older summaries, without this key, had a bootstrap SR interval).
INTERVALS = {"success_rate": "wilson", "average_turns": "bootstrap", "mean_final_score": "bootstrap"}


def summarize(trajectories: list[dict[str, Any]], max_turns: int) -> dict[str, Any]:
    if not trajectories:
        raise UserError("no finished trajectories to evaluate")
    trajectories = in_case_order(trajectories)
    success = np.array([t["success"] for t in trajectories], dtype=float)
    turns = np.array([counted_turns(t, max_turns) for t in trajectories], dtype=float)
    finals = np.array([t["final_score"] for t in trajectories if t["final_score"] is not None], dtype=float)
    return {
        "cases": len(trajectories),
        "max_turns": max_turns,
        "success_rate": float(success.mean()),
        "success_rate_ci95": wilson_interval(int(success.sum()), len(success)),
        "average_turns": float(turns.mean()),
        "average_turns_ci95": bootstrap_ci(turns),
        "mean_final_score": float(finals.mean()) if len(finals) else None,
        "mean_final_score_ci95": bootstrap_ci(finals),
        # An episode that ended before any verdict (no reply at its first turn) has no final score.
        "final_score_cases": len(finals),
        "intervals": INTERVALS,
        "success_by_turn": {
            str(turn): float(np.mean([t["success"] and t["turns"] <= turn for t in trajectories]))
            for turn in range(1, max_turns + 1)
        },
        "invalid_critic_rate": invalid_verdict_rate(score for t in trajectories for score in t["scores"]),
        "no_reply": sum(t.get("status") == "no_reply" for t in trajectories),
        "by_emotion": _group(trajectories, "emotion", max_turns),
        "by_problem": _group(trajectories, "problem", max_turns),
        "distinct_bigrams": distinct_bigrams(supporter_texts(trajectories)),
        "forged": forged_replies(trajectories),
    }


# What each count a row of a table shows beside its numbers means, for warnings when they differ.
COUNTED = {"no_reply": "episodes ended by a supporter with no usable reply (each a failure)",
           "final_score_cases": "episodes with a verdict (the n of the mean final score)"}


def count_warnings(rows: dict[str, dict[str, Any]]) -> list[str]:
    """A warning per count (no-reply episodes, the final score's n) that differs between rows
    compared side by side: a supporter silent in some cases has its mean final score over fewer,
    other episodes, and its row would otherwise read like the rest. Rows that lack a count (older
    files) are passed over."""
    warnings = []
    for key, meaning in COUNTED.items():
        counts = {label: row[key] for label, row in rows.items() if row.get(key) is not None}
        if len(set(counts.values())) > 1:
            warnings.append(f"{meaning} differ between rows: "
                            + ", ".join(f"{label} {count}" for label, count in counts.items()))
    return warnings


def count_text(count: int | None) -> str:
    """A count as a table shows it: `-` where an older file did not keep it."""
    return "-" if count is None else str(count)


def with_count_warnings(warnings: list[str], rows: dict[str, dict[str, Any]]) -> list[str]:
    """`warnings` and any count warning they lack (a file written before counts were warned of)."""
    return list(warnings) + [w for w in count_warnings(rows) if w not in warnings]


def plot_success_by_turn(curves: dict[str, dict[str, float]], path: Path) -> None:
    """One line per run label: the share of cases solved by each turn."""
    with figure_file(path, xlabel="turn", ylabel="success rate by turn") as axis:
        for label, curve in curves.items():
            axis.plot([int(t) for t in curve], list(curve.values()), marker="o", label=label)
        axis.set_ylim(0, 1)


def evaluate_run(out: Path) -> dict[str, Any]:
    """Read `out/trajectories.jsonl` and `out/run.json`; write `summary.json` and `success_by_turn.png`."""
    summary = run_summary(out)
    write_json(out / "summary.json", summary)
    plot_success_by_turn({out.name: summary["success_by_turn"]}, out / "success_by_turn.png")
    return summary


def current_summary(folder: Path) -> dict[str, Any]:
    """A simulate run's summary as its trajectories say now (summary.json is as old as the last
    `evaluate`: a run resumed since would show stale numbers); a folder with no trajectories,
    its summary.json."""
    if (folder / TRAJECTORIES).exists() and RunFolder.holds_run(folder):
        return run_summary(folder)
    return json.loads((folder / "summary.json").read_text())


def run_summary(out: Path) -> dict[str, Any]:
    """`evaluate`'s summary of a simulate run folder, written nowhere."""
    run = RunFolder.open(out, "simulate")
    trajectories = run.trajectories()
    summary = summarize(trajectories, run.max_turns)
    done = {t["case_id"] for t in trajectories}
    failed = sorted({failure["case_id"] for failure in run.failures(done)})
    never_ran = [case for case in run.cases() if case not in done and case not in set(failed)]
    summary["failed_cases"] = failed
    summary["missing_cases"] = never_ran
    summary["complete"] = not failed and not never_ran
    summary["dataset"] = run.fingerprint.dataset
    return summary


def incomplete(summary: dict[str, Any]) -> list[str]:
    """What a summary leaves out, in words (nothing for a complete run): the cases that failed or
    never ran are in no number of it."""
    failed, missing = summary.get("failed_cases") or [], summary.get("missing_cases") or []
    if not failed and not missing:
        return []
    parts = [f"{len(failed)} failed" if failed else "", f"{len(missing)} did not run" if missing else ""]
    return [f"incomplete run: of its cases, {' and '.join(p for p in parts if p)}; these numbers leave them out "
            "(rerun its simulate command to finish them)"]


def p_method(flips: int | None) -> str:
    """How a permutation p-value was computed: `exact`, or from `flips` random sign patterns."""
    return "exact" if flips is None else f"monte carlo, {flips} flips, resolution 1/{flips}"


def p_text(p_value: float | None, flips: int | None = None, *, mark_monte_carlo: bool = False) -> str:
    """`0.034`, or `< 0.001`: a p-value is never printed as 0. A Monte-Carlo p-value (`flips`
    draws) is never printed finer than its resolution 1/flips: 1,000 flips with none as extreme
    give `≤ 0.001`, not `< 0.001`. `mark_monte_carlo` (a table cell, where exact goes without
    saying) adds how a Monte-Carlo one was drawn."""
    if p_value is None:
        return "-"
    if flips is not None and 1 / flips >= 0.001 and p_value < 1 / flips:
        text = f"≤ {1 / flips:g}"
    else:
        text = "< 0.001" if p_value < 0.001 else f"{p_value:.3f}"
    return f"{text} ({p_method(flips)})" if mark_monte_carlo and flips is not None else text


def format_p(p_value: float, flips: int | None = None, *, method: bool = False) -> str:
    """`= 0.034`, `< 0.001` or `≤ 0.001` (see `p_text`); with `method`, how it was computed."""
    text = p_text(p_value, flips)
    text = text if text[0] in "<≤" else f"= {text}"
    return f"{text} ({p_method(flips)})" if method else text


def format_summary(summary: dict[str, Any]) -> str:
    def ci(name: str) -> str:
        return format_interval(summary[f"{name}_ci95"], 3)

    final = summary["mean_final_score"]
    rows = [
        f"cases            {summary['cases']}  (T = {summary['max_turns']}, dataset {summary.get('dataset', '?')})",
        f"SR               {summary['success_rate']:.3f}  95% CI {ci('success_rate')} (Wilson)",
        f"AT               {summary['average_turns']:.2f}   95% CI {ci('average_turns')}",
        f"final score      {final:.3f}  95% CI {ci('mean_final_score')}"
        + (f" (over {summary['final_score_cases']} episodes with a verdict)"
           if summary.get("final_score_cases", summary["cases"]) != summary["cases"] else "")
        if final is not None else "final score      n/a",
        f"invalid critic   {summary['invalid_critic_rate']:.1%} of verdicts",
        f"no reply         {summary.get('no_reply', 0)} episodes ended by a supporter with no usable reply (failures)",
    ]
    if summary.get("failed_cases"):
        rows.append(f"failed cases     {len(summary['failed_cases'])}: {', '.join(summary['failed_cases'])}")
    if summary.get("missing_cases"):
        rows.append(f"never ran        {len(summary['missing_cases'])}: {', '.join(summary['missing_cases'])}")
    if summary.get("complete") is False:
        rows.append("INCOMPLETE       the numbers above leave out the cases listed; rerun the same simulate "
                    "command to finish them")
    return "\n".join(rows)
