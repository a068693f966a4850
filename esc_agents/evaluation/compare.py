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
from esc_agents.core.jsonfile import write_json
from esc_agents.core.types import counted_turns
from esc_agents.datasets import ESCONV_STRATEGIES
from esc_agents.evaluation.intervals import wilson_interval
from esc_agents.evaluation.labels import rename, rename_in_text, rename_keys
from esc_agents.evaluation.metrics import (INTERVALS, count_text, count_warnings, format_interval, format_p,
                                           plot_success_by_turn, summarize, with_count_warnings)
from esc_agents.evaluation.paired import mcnemar, paired_bootstrap
from esc_agents.provenance import describe_identity, differing_fields, same_server, settings_only
from esc_agents.roles.replies import split_strategy
from esc_agents.runs import Fingerprint, RunFolder

# What must be equal for two runs to be compared: everything but the supporter.
SHARED_FIELDS = ("dataset", "episode", "seed", "roles.user_simulator", "roles.critic")
# The roles among them, whose servers must be one too (compared apart: an unknown one is no difference).
SHARED_ROLES = tuple(field.removeprefix("roles.") for field in SHARED_FIELDS if field.startswith("roles."))


def supporter_binding(spec: str) -> tuple[str, dict[str, Any]]:
    """(label, config overrides) for one supporter spec: a prompt, PROMPT@PROFILE, or a servable
    model folder. Reads only: the command line merges a train-grpo folder into one first."""
    folder = Path(spec)
    if folder.is_dir():
        from training.grpo.export import POLICY_CARD, policy_profile, trained_completion_length

        card = json.loads((folder / POLICY_CARD).read_text()) if (folder / POLICY_CARD).exists() else {}
        supporter = {"endpoint": "policy", "prompt": card.get("prompt", "think")}
        # A policy trained to write up to N tokens (think block first) is cut off with fewer.
        if (budget := trained_completion_length(card)) is not None:
            supporter["max_tokens"] = budget
        return folder.name, {"endpoints": {"policy": policy_profile(folder)}, "supporter": supporter}
    prompt, _, profile = spec.partition("@")
    label = spec.replace("@", "-").replace("/", "_").removesuffix(".yaml")
    return label, {"supporter": {"prompt": prompt, **({"endpoint": profile} if profile else {})}}


def _shared(fingerprint: Fingerprint) -> dict[str, Any]:
    picked = {}
    for field in SHARED_FIELDS:
        value: Any = settings_only(fingerprint.as_json())
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
    meant: set[str]  # case ids the runs were meant to finish (run.json `cases`), finished or not
    folders: dict[str, RunFolder]  # label -> its run


def mixed_servers(folders: dict[str, RunFolder], role: str) -> str | None:
    """One line naming two runs whose `role` ran on different servers, or None. A run that did not
    record its server (an older run.json) is no difference; one moved with --same-model matches
    what it ran on before the move as well as after."""
    known = {label: servers for label, run in folders.items() if (servers := run.record.served_identities(role))}
    for a, b in combinations(known, 2):
        if not any(same_server(x, y) for x in known[a] for y in known[b]):
            return (f"the {role} of {b} ran on {describe_identity(known[b][0])}, "
                    f"that of {a} on {describe_identity(known[a][0])}")
    return None


def load_runs(runs: dict[str, Path], allow_mismatch: bool) -> LoadedRuns:
    """Trajectories per label, keyed by case id; refuses runs whose cases or settings differ, or
    whose user simulator or critic ran on other servers (a difference either makes would read as the
    supporters'), and runs that share no finished case."""
    folders = {label: RunFolder.open(folder, "simulate") for label, folder in runs.items()}
    meant = {case for run in folders.values() for case in run.cases()}
    trajectories = {label: {t["case_id"]: t for t in run.trajectories()} for label, run in folders.items()}
    warnings = []
    first = next(iter(runs))
    for label in runs:
        differ = differing_fields(_shared(folders[first].fingerprint), _shared(folders[label].fingerprint))
        if set(trajectories[label]) != set(trajectories[first]):
            differ.append("cases")
        if differ:
            message = f"{label} differs from {first} in {', '.join(differ)}"
            if not allow_mismatch:
                raise UserError(f"runs are not comparable: {message} (--allow-mismatch compares them anyway)")
            warnings.append(message)
    for role in SHARED_ROLES:
        if message := mixed_servers(folders, role):
            if not allow_mismatch:
                raise UserError(f"runs are not comparable: {message} (--allow-mismatch compares them anyway)")
            warnings.append(message)
    common = sorted(set.intersection(*(set(t) for t in trajectories.values())))
    if not common:
        raise UserError("the runs share no finished case")
    return LoadedRuns(trajectories, common, folders[first].max_turns, warnings, meant, folders)


def compare_runs(runs: dict[str, Path], out: Path, *, allow_mismatch: bool = False,
                 labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Summaries per supporter and paired tests per pair on their common cases (in case-id order,
    so intervals depend on the cases alone); writes `compare.json` and one SR-by-turn plot.
    `labels`: display names for the supporters (their folders keep theirs)."""
    loaded = load_runs(runs, allow_mismatch)
    trajectories, common, max_turns = loaded.trajectories, loaded.common, loaded.max_turns
    summaries = {label: summarize([by_case[c] for c in common], max_turns) for label, by_case in trajectories.items()}

    def outcomes(label: str) -> tuple[np.ndarray, np.ndarray]:
        episodes = [trajectories[label][c] for c in common]
        return (np.array([t["success"] for t in episodes]),
                np.array([counted_turns(t, max_turns) for t in episodes], dtype=float))

    pairs = {}
    for a, b in combinations(runs, 2):
        (a_success, a_turns), (b_success, b_turns) = outcomes(a), outcomes(b)
        success = mcnemar(a_success, b_success)
        pairs[f"{a} vs {b}"] = {"supporters": [a, b],
                                "success": {**success, "won": {a: success["a_only"], b: success["b_only"]}},
                                "turns": paired_bootstrap(a_turns, b_turns)}
    out.mkdir(parents=True, exist_ok=True)
    report = {"cases": len(common), "max_turns": max_turns, "runs": {k: str(v) for k, v in runs.items()},
              "intervals": INTERVALS, "summaries": summaries, "pairs": pairs,
              "by_emotion": by_group(trajectories, common, "emotion", max_turns),
              "by_problem": by_group(trajectories, common, "problem", max_turns),
              "format_compliance": {label: format_compliance([trajectories[label][c] for c in common],
                                                             reply_format(loaded.folders[label]))
                                    for label in runs},
              "warnings": loaded.warnings + count_warnings(summaries)}
    report = relabel_comparison(report, labels or {})
    write_json(out / "compare.json", report)
    plot_success_by_turn({label: s["success_by_turn"] for label, s in report["summaries"].items()},
                         out / "success_by_turn.png")
    return report


def pair_names(pair: str, tests: dict[str, Any]) -> tuple[str, str]:
    """The two supporters of a pair; a compare.json written before pairs named them, from the key."""
    if supporters := tests.get("supporters"):
        return supporters[0], supporters[1]
    a, _, b = pair.partition(" vs ")
    return (a, b) if b and " vs " not in b else ("A", "B")


def relabel_comparison(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A compare.json's content with its supporters shown under `names` (see `labels`)."""
    if not names:
        return data
    pairs = {}
    for pair, tests in data["pairs"].items():
        a, b = (rename(names, name) for name in pair_names(pair, tests))
        success = {**tests["success"], **({"won": {a: tests["success"]["a_only"], b: tests["success"]["b_only"]}}
                                          if "won" in tests["success"] else {})}
        pairs[f"{a} vs {b}"] = {**tests, "success": success,
                                **({"supporters": [a, b]} if "supporters" in tests else {})}
    groups = {group: {name: {**row, "supporters": rename_keys(row["supporters"], names)}
                      for name, row in data[group].items()} for group in ("by_emotion", "by_problem") if group in data}
    return {**data, **groups, "pairs": pairs,
            **{key: rename_keys(data[key], names) for key in ("summaries", "runs", "format_compliance") if key in data},
            "warnings": [rename_in_text(warning, names) for warning in data.get("warnings", [])]}


def by_group(trajectories: dict[str, dict[str, dict]], common: list[str], key: str,
             max_turns: int) -> dict[str, dict[str, Any]]:
    """Per emotion (or problem) of the common cases, each supporter's SR with its Wilson interval
    and AT: {group: {"cases": n, "supporters": {label: {...}}}}."""
    first = next(iter(trajectories.values()))
    groups: dict[str, list[str]] = {}
    for case in common:
        groups.setdefault(str(first[case].get(key, "")).strip().lower(), []).append(case)
    table = {}
    for name, cases in sorted(groups.items()):
        supporters = {}
        for label, by_case in trajectories.items():
            episodes = [by_case[c] for c in cases]
            wins = sum(bool(t["success"]) for t in episodes)
            supporters[label] = {
                "success_rate": wins / len(episodes), "success_rate_ci95": wilson_interval(wins, len(episodes)),
                "average_turns": float(np.mean([counted_turns(t, max_turns) for t in episodes]))}
        table[name] = {"cases": len(cases), "supporters": supporters}
    return table


def reply_format(run: RunFolder) -> dict[str, str]:
    """The supporter prompt's reply format and tags, from the prompt the run recorded."""
    spec = run.prompt_file("supporter")
    return {"reply_format": spec.reply_format, "think_tag": spec.think_tag, "response_tag": spec.response_tag}


def followed_format(raw: str, spec: dict[str, str]) -> bool | None:
    """Whether one supporter output followed its prompt's format (None for a plain prompt): a think
    reply is exactly one non-empty think block and one non-empty response block (R_fmt = 1, the
    opening tag may have been pre-filled by the chat template); a strategy reply opens with one of
    ESConv's 8 strategies in brackets."""
    if spec["reply_format"] == "think":
        from training.grpo.format_reward import FormatSpec

        return any(FormatSpec(spec["think_tag"], spec["response_tag"], prefilled).reward(raw) == 1.0
                   for prefilled in (False, True))
    if spec["reply_format"] == "strategy":
        return split_strategy(raw)[0] in ESCONV_STRATEGIES
    return None


def format_compliance(episodes: list[dict[str, Any]], spec: dict[str, str]) -> dict[str, Any]:
    """The share of a think or strategy supporter's replies (over every supporter turn of the
    episodes, the model's raw output) that followed its format, with a Wilson interval. Only
    replies that were kept count: an output empty after cleaning was asked again and is in no
    trajectory, and an episode whose supporter never gave a usable reply (`no_reply`, counted
    apart) has none; both are likely format failures, so the rate is an upper bound."""
    if spec["reply_format"] not in ("think", "strategy"):
        return {"format": spec["reply_format"], "replies": None, "followed": None, "rate": None, "rate_ci95": None,
                "episodes_without_reply": None}
    outputs = [message.get("raw") or message["content"] for episode in episodes for message in episode["messages"]
               if message["speaker"] == "supporter"]
    followed = sum(bool(followed_format(raw, spec)) for raw in outputs)
    return {"format": spec["reply_format"], "replies": len(outputs), "followed": followed,
            "rate": followed / len(outputs) if outputs else None, "rate_ci95": wilson_interval(followed, len(outputs)),
            "episodes_without_reply": sum(episode.get("status") == "no_reply" for episode in episodes)}


def format_comparison(report: dict[str, Any]) -> str:
    """The printed comparison: per supporter its numbers with the counts they rest on (no-reply
    episodes, the final score's n) and the share of distinct bigrams of its replies; per pair who
    won which discordant cases, and how each p-value was computed."""
    lines = [f"{report['cases']} cases, T = {report['max_turns']}",
             f"{'supporter':22s} {'SR':>6s} {'Wilson 95%':>15s} {'AT':>6s} {'95% CI':>15s} {'final':>7s} "
             f"{'n final':>7s} {'no reply':>8s} {'dist-2':>6s} {'forged':>6s}"]
    for label, s in report["summaries"].items():
        final = "-" if s["mean_final_score"] is None else f"{s['mean_final_score']:.3f}"
        lines.append(f"{label:22s} {s['success_rate']:6.3f} {format_interval(s['success_rate_ci95']):>15s} "
                     f"{s['average_turns']:6.2f} {format_interval(s['average_turns_ci95']):>15s} {final:>7s} "
                     f"{count_text(s.get('final_score_cases')):>7s} {count_text(s.get('no_reply')):>8s} "
                     f"{bigram_text(s):>6s} {forged_text(s):>6s}")
    for pair, tests in report["pairs"].items():
        success, turns = tests["success"], tests["turns"]
        a, b = pair_names(pair, tests)
        lines.append(f"{pair}: McNemar: {a} won {success['a_only']}, {b} won {success['b_only']} of the discordant "
                     f"cases, p {format_p(success['p_value'])}; turns difference {turns['mean_difference']:+.2f} "
                     f"{format_interval(turns['ci95'])}, sign-flip p "
                     f"{format_p(turns['p_value'], turns.get('p_flips'), method='p_method' in turns)}")
    for label, compliance in report.get("format_compliance", {}).items():
        if compliance["rate"] is not None:
            lines.append(f"{label}: {compliance['followed']} of {compliance['replies']} replies followed the "
                         f"{compliance['format']} format ({compliance['rate']:.1%}, 95% CI "
                         f"{format_interval(compliance['rate_ci95'])})"
                         + (f"; {compliance['episodes_without_reply']} episodes ended with no usable reply"
                            if compliance.get("episodes_without_reply") else ""))
    lines += [f"warning: {w}" for w in with_count_warnings(report["warnings"], report["summaries"])]
    return "\n".join(lines)


def forged_text(summary: dict[str, Any]) -> str:
    """Supporter replies that carried another role's words or a verdict (cut before any role saw
    them); `-` for a summary older than the count."""
    forged = summary.get("forged")
    return "-" if forged is None else str(forged["replies"])


def bigram_text(summary: dict[str, Any]) -> str:
    """The share of distinct bigrams of a supporter's replies, `-` where there is none to count."""
    share = (summary.get("distinct_bigrams") or {}).get("share")
    return "-" if share is None else f"{share:.3f}"
