"""Human-annotation round trips. `export` writes a CSV sheet with hidden identities (random item
ids, A/B order randomised per item) and a key kept in its own folder; `import` reads filled
sheets (one file per annotator), refuses malformed ones with the rows named, and reports human
results with agreement among annotators (Krippendorff's alpha) and with the model (Cohen's kappa).
Two kinds: pairwise quality (the judge's criteria) and episode success (the critic's verdict)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.core.runlog import read_jsonl
from esc_agents.evaluation.agreement import cohen_kappa, krippendorff_alpha
from esc_agents.evaluation.compare import load_runs
from esc_agents.evaluation.judge import JUDGMENTS, trajectory_messages, win_rates
from esc_agents.roles.llm import render_transcript

SHEET = "sheet.csv"
KEY = Path("key") / "key.json"
PAIR_SCALE = ("1", "2", "tie")
SUCCESS_SCALE = ("yes", "no")
OUTCOMES = ("win", "tie", "loss")


def _transcript(trajectory: dict[str, Any]) -> str:
    return render_transcript(trajectory_messages(trajectory))


def _write(out: Path, header: list[str], rows: list[list[str]], key: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with (out / SHEET).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    (out / KEY).parent.mkdir(exist_ok=True)
    write_json(out / KEY, key)
    return out / SHEET


def export_pairs(runs: dict[str, Path], out: Path, criteria: list[str], seed: int = 0) -> Path:
    (a, b) = list(runs)
    loaded = load_runs(runs, allow_mismatch=False)
    trajectories = loaded.trajectories
    rng = random.Random(seed)
    cases = list(loaded.common)
    rng.shuffle(cases)
    rows, items = [], {}
    for number, case_id in enumerate(cases, 1):
        item = f"item-{number:04d}"
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        items[item] = {"case_id": case_id, "1": first, "2": second}
        rows.append([item, trajectories[a][case_id]["messages"][0]["content"],
                     _transcript(trajectories[first][case_id]), _transcript(trajectories[second][case_id]),
                     *[""] * len(criteria)])
    return _write(out, ["item", "situation", "conversation_1", "conversation_2", *criteria], rows,
                  {"kind": "pairs", "a": a, "b": b, "criteria": criteria, "scale": PAIR_SCALE, "items": items})


def export_success(run: Path, out: Path, seed: int = 0) -> Path:
    episodes = list(read_jsonl(run / "trajectories.jsonl"))
    random.Random(seed).shuffle(episodes)
    rows, items = [], {}
    for number, episode in enumerate(episodes, 1):
        item = f"item-{number:04d}"
        items[item] = {"case_id": episode["case_id"], "critic_success": bool(episode["success"])}
        rows.append([item, episode["messages"][0]["content"], _transcript(episode), ""])
    return _write(out, ["item", "situation", "conversation", "success"], rows,
                  {"kind": "success", "run": str(run), "columns": ["success"], "scale": SUCCESS_SCALE, "items": items})


def read_sheets(sheets: list[Path], key: dict[str, Any]) -> dict[str, dict[str, dict[str, str]]]:
    """{annotator (file stem): {item: {column: label}}}; every problem row is listed in the error."""
    columns = key["criteria"] if key["kind"] == "pairs" else key["columns"]
    filled: dict[str, dict[str, dict[str, str]]] = {}
    for sheet in sheets:
        problems, labels = [], {}
        with sheet.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ["item", *columns] if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{sheet}: no column {', '.join(missing)}")
            for line, row in enumerate(reader, 2):
                item = row["item"].strip()
                if item not in key["items"]:
                    problems.append(f"row {line}: unknown item {item!r}")
                    continue
                if item in labels:
                    problems.append(f"row {line}: duplicate item {item}")
                    continue
                # A blank cell is an item the annotator did not rate, not an answer off the scale.
                said = {c: label for c in columns if (label := (row[c] or "").strip().lower())}
                if not said:
                    continue
                bad = [f"{c}={said[c]!r}" for c in said if said[c] not in key["scale"]]
                if bad:
                    problems.append(f"row {line}: {', '.join(bad)} not in {'/'.join(key['scale'])}")
                    continue
                labels[item] = said
        if problems:
            raise UserError(f"{sheet}: {'; '.join(problems)}")
        filled[sheet.stem] = labels
    return filled


def _outcome(key: dict[str, Any], item: str, label: str) -> str:
    """A sheet label as run a's win / tie / loss."""
    if label == "tie":
        return "tie"
    return "win" if key["items"][item][label] == key["a"] else "loss"


def _agreement(per_annotator: dict[str, dict[str, str]], model: dict[str, str], scale: tuple[str, ...],
               items: list[str]) -> dict[str, Any]:
    alpha = krippendorff_alpha([[labels.get(i) for i in items] for labels in per_annotator.values()], scale)
    kappas = {}
    for name, labels in per_annotator.items():
        shared = [i for i in items if i in labels and i in model]
        kappas[name] = cohen_kappa([labels[i] for i in shared], [model[i] for i in shared])
    return {"krippendorff_alpha": alpha, "cohen_kappa_with_model": kappas}


def import_pairs(key: dict[str, Any], sheets: list[Path], judgments: Path | None) -> dict[str, Any]:
    filled = read_sheets(sheets, key)
    items = sorted(key["items"])
    judge: dict[str, dict[str, str]] = {}
    if judgments is not None:
        by_case = {j["case_id"]: j["outcome"] for j in read_jsonl(judgments / JUDGMENTS) if j["outcome"]}
        judge = {item: by_case[entry["case_id"]] for item, entry in key["items"].items() if entry["case_id"] in by_case}
    report: dict[str, Any] = {"kind": "pairs", "a": key["a"], "b": key["b"], "annotators": sorted(filled),
                              "criteria": {}}
    for criterion in key["criteria"]:
        human = {name: {i: _outcome(key, i, labels[i][criterion]) for i in labels if criterion in labels[i]}
                 for name, labels in filled.items()}
        pooled = [{criterion: o} for labels in human.values() for o in labels.values()]
        model = {i: judge[i][criterion] for i in judge}
        report["criteria"][criterion] = {**win_rates(pooled, [criterion])[criterion],
                                         **_agreement(human, model, OUTCOMES, items)}
    return report


def import_success(key: dict[str, Any], sheets: list[Path]) -> dict[str, Any]:
    filled = read_sheets(sheets, key)
    items = sorted(key["items"])
    human = {name: {i: labels[i]["success"] for i in labels} for name, labels in filled.items()}
    critic = {i: "yes" if entry["critic_success"] else "no" for i, entry in key["items"].items()}
    said = [label for labels in human.values() for label in labels.values()]
    return {"kind": "success", "annotators": sorted(filled),
            "human_success_rate": said.count("yes") / len(said) if said else None,
            "critic_success_rate": list(critic.values()).count("yes") / len(critic),
            **_agreement(human, critic, SUCCESS_SCALE, items)}


def import_sheets(key_path: Path, sheets: list[Path], judgments: Path | None = None) -> dict[str, Any]:
    if not key_path.exists():
        raise UserError(f"key file not found: {key_path}")
    key = json.loads(key_path.read_text())
    report = import_pairs(key, sheets, judgments) if key["kind"] == "pairs" else import_success(key, sheets)
    write_json(key_path.parent / "agreement.json", report)
    return report
