"""`view`: the dialogues behind the numbers, in one HTML file that opens from disk.

Every folder the project writes (simulate, compare, bias, rewards, train-grpo with simulated
futures) is loaded here into one JSON document; `viewer.html` (package data: page, style and
vanilla JS) renders it with filters and pagination, so a 130-case x 5-supporter comparison or a
10,000-record D_r stays fast, and the file works without a server or the network.
"""

from __future__ import annotations

import json
import re
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError
from esc_agents.core.runlog import read_unique
from esc_agents.evaluation.intervals import wilson_interval
from esc_agents.evaluation.metrics import summarize
from esc_agents.jobs import outstanding_failures
from esc_agents.runs import TRAJECTORIES, Fingerprint, RunFolder
from training.futures.records import RECORDS, read_records
from training.grpo.records import FUTURES, read_futures

DATA_MARK = "/*VIEWER-DATA*/"


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """A message as shown: `raw` only where the model's full output differs from what others saw;
    `forged`: the spans cleaning removed as another role's words or a verdict, marked on the reply."""
    shown = {"speaker": message["speaker"], "content": message["content"]}
    raw = message.get("raw")
    if raw and raw.strip() != message["content"].strip():
        shown["raw"] = raw
    if message.get("strategy"):
        shown["strategy"] = message["strategy"]
    if message.get("forged"):
        shown["forged"] = message["forged"]
    return shown


def _score(score: dict[str, Any]) -> dict[str, Any]:
    return {"samples": score["samples"], "invalid": score.get("invalid", []), "mean": score.get("mean")}


def _verdict_names(scores: list[dict[str, Any]], names: dict[str, str]) -> None:
    """Collect the critic's verdict label per score value, for the histograms' legend."""
    for score in scores:
        for value, verdict in zip(score["samples"], score.get("verdicts", [])):
            names.setdefault(f"{float(value):g}", verdict)


def _critic_scale(run: RunFolder | None) -> dict[str, str]:
    """The critic prompt's whole verdict scale, so histograms show verdicts nobody gave too: from
    the prompt the run recorded; empty where it keeps none (the verdicts seen will do)."""
    verdicts = run.prompt_file("critic").verdicts if run else []
    return {f"{float(verdict.score):g}": verdict.label for verdict in verdicts}


def _episode(trajectory: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [_message(m) for m in trajectory["messages"]],
            "scores": [_score(s) for s in trajectory["scores"]],
            "turns": trajectory["turns"], "final_score": trajectory.get("final_score"),
            "outcome": "success" if trajectory["success"] else "failure", "status": trajectory.get("status")}


def _known_cases(dataset: str | None) -> dict[str, Any]:
    """The dataset's cases by id, for cases that failed to run (they have no trajectory); empty
    where the dataset cannot be read here."""
    if not dataset:
        return {}
    try:
        from esc_agents.datasets import load_cases

        return {case.id: case for case in load_cases(dataset)}
    except Exception:  # a moved JSONL file or a missing download: show the case id alone
        return {}


def _turns_and_critic(trajectories: list[dict[str, Any]], max_turns: int | None) -> dict[str, Any]:
    """A run's AT and invalid-critic rate as `evaluate` computes them (a failure, no-reply ones
    included, counts T turns); None where the run has no episode or no T."""
    summary = summarize(trajectories, max_turns) if trajectories and max_turns else {}
    return {key: summary.get(key) for key in ("average_turns", "average_turns_ci95", "invalid_critic_rate", "no_reply")}


def _episodes_folder(name: str, kind: str, columns: dict[str, Path], extra: dict[str, Any] | None = None,
                     conditions: dict[str, dict[str, Any]] | None = None) -> dict:
    """Simulate runs side by side on their cases (one column for a simulate folder); `conditions`
    adds each bias column's group and seed."""
    column_info, by_case, names = [], {}, {}
    for index, (label, folder) in enumerate(columns.items()):
        run = RunFolder.find(folder)  # None: a folder of episodes alone
        fingerprint = run.fingerprint if run else Fingerprint()
        for value, verdict in _critic_scale(run).items():
            names.setdefault(value, verdict)
        episode = fingerprint.episode
        trajectories = run.trajectories() if run else read_unique(folder / TRAJECTORIES, "case_id")
        done = {t["case_id"] for t in trajectories}
        failures = run.failures(done) if run else outstanding_failures(folder, "case_id", done)
        known = _known_cases(fingerprint.dataset) if failures else {}
        for trajectory in trajectories:
            _verdict_names(trajectory["scores"], names)
            case = by_case.setdefault(trajectory["case_id"], {
                "id": trajectory["case_id"], "emotion": trajectory["emotion"], "problem": trajectory["problem"],
                "situation": trajectory["messages"][0]["content"] if trajectory["messages"] else ""})
            case.setdefault("runs", {})[index] = _episode(trajectory)
        for failure in failures:
            found = known.get(failure["case_id"])
            case = by_case.setdefault(failure["case_id"], {
                "id": failure["case_id"], "emotion": found.emotion if found else "unknown",
                "problem": found.problem if found else "unknown", "situation": found.situation if found else ""})
            case.setdefault("runs", {})[index] = {"outcome": "failed", "error": failure.get("error", "")}
        successes = sum(bool(t["success"]) for t in trajectories)
        roles = fingerprint.roles
        column_info.append({
            "label": label, "threshold": episode.get("success_threshold", 0.5),
            "max_turns": episode.get("max_turns"), "critic_samples": episode.get("critic_samples"),
            "prompts": {role: binding.get("prompt") for role, binding in roles.items()},
            "episodes": len(trajectories), "failed_to_run": len(failures),
            "success_rate": successes / len(trajectories) if trajectories else None,
            "success_rate_wilson95": wilson_interval(successes, len(trajectories)),
            **_turns_and_critic(trajectories, episode.get("max_turns")), **(conditions or {}).get(label, {}),
        })
    cases = sorted(by_case.values(), key=lambda case: _natural(case["id"]))
    for case in cases:
        case["runs"] = [case["runs"].get(index) for index in range(len(column_info))]
    return {"kind": kind, "name": name, "columns": column_info, "cases": cases, "verdict_names": names,
            **(extra or {})}


def _natural(key: str) -> list:
    """ppdpp_test-2 before ppdpp_test-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _conditions(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each bias condition's group (its label less the seed) and seed, seeds of a group together
    in the order the groups first come."""
    found = {}
    for label, row in report["conditions"].items():
        match = re.fullmatch(r"(.+)_seed(\d+)", label)
        found[label] = {"group": match[1], "seed": row.get("seed", int(match[2]))} if match else {"group": label}
    groups = list(dict.fromkeys(c["group"] for c in found.values()))
    order = sorted(found, key=lambda label: (groups.index(found[label]["group"]), found[label].get("seed", 0)))
    return {label: found[label] for label in order}


def _run_folders(folder: Path, labels: list[str], recorded: dict[str, str]) -> dict[str, Path]:
    """The run folder of each label: DIR/<label> (how compare and bias write them), else the
    path the report recorded (`compare --runs` reads runs from anywhere), else a sibling of DIR."""
    found = {}
    for label in labels:
        candidates = [folder / label]
        if label in recorded:
            candidates += [Path(recorded[label]), folder.parent / Path(recorded[label]).name]
        match = next((c for c in candidates if RunFolder.holds_run(c)), None)
        if match is None:
            raise UserError(f"{folder}: cannot find the run folder of {label!r}")
        found[label] = match
    return found


def _rewards_folder(folder: Path, run: RunFolder) -> dict[str, Any]:
    """D_r: each context with its m candidates, their R_fut, label and simulated future."""
    contexts: dict[str, dict[str, Any]] = {}
    names = _critic_scale(run)
    for record in read_records(folder / RECORDS):
        scores = [score.model_dump() for score in record.critic_scores]
        _verdict_names(scores, names)
        context = contexts.setdefault(record.context_key, {
            "key": record.context_key, "dialogue_id": record.dialogue_id, "emotion": record.emotion,
            "problem": record.problem, "context": [_message(m.model_dump()) for m in record.context],
            "candidates": []})
        context["candidates"].append({
            "index": record.candidate_index, "reply": _message(record.candidate.model_dump()),
            "future": [_message(m.model_dump()) for m in record.future], "scores": [_score(s) for s in scores],
            "r_fut": record.r_fut, "label": record.label, "turns": record.K, "success": record.success})
    for context in contexts.values():
        context["candidates"].sort(key=lambda c: (c["index"] is None, c["index"]))
        values = [c["r_fut"] for c in context["candidates"] if c["r_fut"] is not None]
        context["spread"] = max(values) - min(values) if values else None
    episode = run.fingerprint.episode
    rewards = run.record.labelling()  # relabelled: its labels' formula and delta
    return {"kind": "rewards", "name": folder.name, "threshold": episode.get("success_threshold", 0.5),
            "critic_samples": episode.get("critic_samples"),
            "formula": rewards.get("formula"), "delta": rewards.get("delta"), "verdict_names": names,
            "contexts": sorted(contexts.values(), key=lambda c: _natural(c["key"]))}


def _futures_folder(folder: Path) -> dict[str, Any]:
    """train-grpo's simulated futures: per step, each context's group of completions."""
    groups: dict[tuple[int, str], dict[str, Any]] = {}
    for future in read_futures(folder / FUTURES):
        group = groups.setdefault((future.step, future.context_key),
                                  {"step": future.step, "key": future.context_key, "completions": []})
        group["completions"].append({
            "reply": future.reply, "r_fut": future.r_fut, "error": future.error,
            "turn_scores": future.turn_scores or [], "turns": future.K, "success": future.success,
            "future": [_message(m.model_dump()) for m in future.future or []]})
    for group in groups.values():
        values = [c["r_fut"] for c in group["completions"] if c["r_fut"] is not None]
        group["spread"] = max(values) - min(values) if values else None
    return {"kind": "futures", "name": folder.name, "groups": [groups[key] for key in sorted(groups)]}


def load_folder(folder: Path) -> dict[str, Any] | None:
    """One folder as the viewer's JSON, or None for a folder it has nothing to show of."""
    if (folder / "compare.json").exists():
        report = json.loads((folder / "compare.json").read_text())
        labels = list(report["summaries"])
        return _episodes_folder(folder.name, "compare", _run_folders(folder, labels, report.get("runs", {})))
    if (folder / "bias.json").exists():
        report = json.loads((folder / "bias.json").read_text())
        conditions = _conditions(report)
        return _episodes_folder(folder.name, "bias", _run_folders(folder, list(conditions), report.get("runs", {})),
                                {"reference": report.get("reference"), "personas": report.get("personas", {})},
                                conditions)
    run = RunFolder.find(folder)
    if (folder / RECORDS).exists() and run is not None and run.kind == "rewards":
        return _rewards_folder(folder, run)
    if (folder / FUTURES).exists():
        return _futures_folder(folder)
    if (folder / TRAJECTORIES).exists() or (folder / "failures.jsonl").exists():
        return _episodes_folder(folder.name, "simulate", {folder.name: folder})
    return None


def viewer_parts(folders: list[dict[str, Any]]) -> tuple[str, str]:
    """(style, body) of the viewer for loaded folders, to embed in a page of one's own (`report`)."""
    template = resources.files("esc_agents.evaluation").joinpath("viewer.html").read_text(encoding="utf-8")
    style = template.split("<style>", 1)[1].split("</style>", 1)[0]
    body = template.split("<body>", 1)[1].split("</body>", 1)[0]
    # No "<" at all in the data element: a policy's "</script>" cannot end it early, nor "<!--<script>"
    # keep it open past its end (JSON has "<" only inside strings, where \u003c means the same).
    data = json.dumps({"folders": folders}, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return style, body.replace(DATA_MARK, data)


def write_viewer(folders: list[Path], out: Path | None = None) -> Path:
    loaded = []
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{folder} is not a folder")
        document = load_folder(folder)
        if document is None:
            raise UserError(f"{folder} holds no simulate, compare, bias, rewards or train-grpo futures output")
        loaded.append(document)
    if out is None:
        if len(folders) > 1:
            raise UserError("a view of several folders needs --out FILE.html")
        out = folders[0] / "view.html"
    style, body = viewer_parts(loaded)
    title = "rlff-esc dialogues: " + ", ".join(document["name"] for document in loaded)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
                   f"<style>{style}</style></head><body>{body}</body></html>", encoding="utf-8")
    return out
