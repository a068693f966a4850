"""D_r out of its JSONL: a split-by-dialogue export for the reward-model trainer, and the
summary statistics that say whether the data is worth training on."""

from __future__ import annotations

import json
import random
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.core.plotting import figure_file
from esc_agents.core.runlog import read_jsonl
from esc_agents.core.types import invalid_verdict_rate
from esc_agents.jobs import outstanding_failures
from esc_agents.runs import RunFolder
from training.futures.formulas import FutureOutcome
from training.futures.records import RECORDS, RewardRecord, read_records

SPLITS = ("train", "valid", "test")


def training_rows(folder: Path) -> list[dict[str, Any]]:
    """The trainer's row of every record with an R_fut (a future with no verdict trains nothing)."""
    if not (folder / RECORDS).exists():
        raise UserError(f"{folder} has no {RECORDS}")
    return [training_row(record) for record in read_records(folder / RECORDS) if record.r_fut is not None]


def split_by_dialogue(rows: list[dict], valid: float, test: float, seed: int) -> dict[str, list[dict]]:
    """Whole dialogues go to one split, so no context leaks across train/valid/test."""
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise UserError("--valid and --test are fractions with valid + test < 1")
    dialogues = sorted({row["dialogue_id"] for row in rows})
    random.Random(seed).shuffle(dialogues)
    n_test, n_valid = round(len(dialogues) * test), round(len(dialogues) * valid)
    assignment = {d: "test" for d in dialogues[:n_test]}
    assignment |= {d: "valid" for d in dialogues[n_test:n_test + n_valid]}
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for row in rows:
        splits[assignment.get(row["dialogue_id"], "train")].append(row)
    return splits


def training_row(record: RewardRecord) -> dict[str, Any]:
    """The columns the reward-model trainer reads; raw parts stay in records.jsonl."""
    return {
        "key": record.key,
        "context_key": record.context_key,
        "dialogue_id": record.dialogue_id,
        "context": [{"speaker": m.speaker, "content": m.content} for m in record.context],
        "reply": record.candidate.content,
        "r_fut": float(record.r_fut),
        "label": int(record.label),
        "success": record.success,
        "K": record.K,
    }


def export(folder: Path, out: Path, *, fmt: str, valid: float, test: float, seed: int,
           overwrite: bool = False) -> dict[str, int]:
    """Write the split rows to `out`. An earlier export there is refused unless `overwrite`, and
    then removed whole first: a split it had and this one lacks would otherwise be read with it."""
    scored = training_rows(folder)
    if not scored:
        raise UserError(f"{folder} has no scored records to export")
    earlier = export_files(out)
    if earlier and not overwrite:
        raise UserError(f"{out} holds an export already ({', '.join(path.name for path in earlier)}); "
                        "name a new --out, or pass --overwrite to replace it")
    if len(labels := {row["label"] for row in scored}) == 1:
        print(f"rlff-esc: warning: every exported label is {labels.pop()} ({len(scored)} rows): a classification "
              "reward model cannot learn from one class (train-rm refuses it); `rlff-esc rewards relabel` with "
              "another --delta moves the threshold", file=sys.stderr)
    rows = {name: members for name, members in split_by_dialogue(scored, valid, test, seed).items() if members}
    for path in earlier:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        for name, members in rows.items():
            (out / f"{name}.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in members))
    else:
        from datasets import Dataset, DatasetDict

        data = DatasetDict({name: Dataset.from_list(members) for name, members in rows.items()})
        if fmt == "hf":
            data.save_to_disk(str(out))
        else:
            for name, split in data.items():
                split.to_parquet(str(out / f"{name}.parquet"))
    write_json(out / "export.json", {
        "source": str(folder), "format": fmt, "seed": seed, "valid": valid, "test": test,
        "rows": {name: len(members) for name, members in rows.items()},
        "run": RunFolder.open(folder, None).fingerprint.as_json(),
    })
    return {name: len(members) for name, members in rows.items()}


def export_files(out: Path) -> list[Path]:
    """What an export (of any format, a half-written one too) left in `out`."""
    names = ["export.json", "dataset_dict.json",
             *(f"{split}.{suffix}" for split in SPLITS for suffix in ("jsonl", "parquet"))]
    return [out / name for name in names if (out / name).exists()] + [
        out / split for split in SPLITS if (out / split / "state.json").exists()]


def stats(folder: Path) -> dict[str, Any]:
    """Counts, success, K, label balance, spread within contexts, cost; writes stats.json and a histogram."""
    records = read_records(folder / RECORDS)
    scored = [r for r in records if r.r_fut is not None]
    if not scored:
        raise UserError(f"{folder} has no scored records")
    by_context: dict[str, list[RewardRecord]] = defaultdict(list)
    for record in scored:
        by_context[record.context_key].append(record)
    multi = [group for group in by_context.values() if len(group) > 1]
    usage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    lines = list(read_jsonl(folder / "usage.jsonl"))
    # A usage line from before calls answered by the cache were counted, yet with cache hits: unknown.
    hits_known = all("cached_calls" in counts or not counts.get("cached") for line in lines for counts in line.values())
    for line in lines:
        for role, counts in line.items():
            for name, value in counts.items():
                usage[role][name] += value
    failed = {f["key"] for f in outstanding_failures(folder, "key", {r.key for r in records})}
    r_fut = np.array([r.r_fut for r in scored])
    cut = [FutureOutcome.of_record(r).cut_short for r in records]
    ended = [r for r, cut_short in zip(records, cut) if not cut_short]
    summary = {
        "records": len(records),
        "scored": len(scored),
        "contexts": len(by_context),
        "failed": sorted(failed),
        # Over every future that ended: one without a parsable verdict still ran to T, unsuccessful; one cut
        # short by a missing reply did not end, and its K says nothing of the candidate.
        "cut_short": sum(cut),
        "cut_short_scored": sum(cut_short and r.r_fut is not None for r, cut_short in zip(records, cut)),
        "success_rate": float(np.mean([r.success for r in ended])) if ended else None,
        "mean_K": float(np.mean([r.K for r in ended])) if ended else None,
        "label_balance": float(np.mean([r.label for r in scored])),
        "delta": scored[0].delta,
        "formula": scored[0].formula,
        "r_fut_mean": float(r_fut.mean()),
        "r_fut_std": float(r_fut.std()),
        "same_label_context_share": (
            float(np.mean([len({r.label for r in group}) == 1 for group in multi])) if multi else None
        ),
        "within_context_r_fut_std": float(np.mean([np.std([r.r_fut for r in g]) for g in multi])) if multi else None,
        "calls": {role: dict(counts) for role, counts in usage.items()},
        # Requests sent per record (cache hits cost none), and the calls a record takes with the cache
        # hits counted too (what it costs from a cold cache; a call the cache answered whole counts once).
        "llm_calls_per_record": sum(c["calls"] for c in usage.values()) / max(len(records), 1),
        "llm_calls_per_record_with_cache": sum(c["calls"] + c["cached_calls"] for c in usage.values())
        / max(len(records), 1) if hits_known else None,
        "invalid_critic_rate": invalid_verdict_rate(score.model_dump() for r in records for score in r.critic_scores),
    }
    write_json(folder / "stats.json", summary)
    _histogram(r_fut, summary["delta"], folder / "r_fut_hist.png")
    return summary


def _histogram(values: np.ndarray, delta: float, path: Path) -> None:
    with figure_file(path, xlabel="R_fut", ylabel="records") as axis:
        axis.hist(values, bins=20, color="#4c72b0")
        axis.axvline(delta, color="#c44e52", linestyle="--", label=f"δ = {delta:g}")


def format_stats(summary: dict[str, Any]) -> str:
    same = summary["same_label_context_share"]
    rows = [
        f"records          {summary['records']} ({summary['scored']} scored, {summary['contexts']} contexts, "
        f"{len(summary['failed'])} failed)",
        f"success rate     {summary['success_rate']:.3f}   mean K {summary['mean_K']:.2f}   (over futures that ended; "
        f"{summary['cut_short']} cut short by a missing reply)" if summary["success_rate"] is not None else
        f"success rate     n/a ({summary['cut_short']} futures, every one cut short by a missing reply)",
        f"R_fut            mean {summary['r_fut_mean']:.3f} sd {summary['r_fut_std']:.3f} ({summary['formula']})",
        f"label balance    {summary['label_balance']:.1%} positive at δ = {summary['delta']:g}",
        "same-label ctx   " + (f"{same:.1%} of multi-candidate contexts" if same is not None else "n/a (m = 1)"),
        f"LLM calls/record {summary['llm_calls_per_record']:.1f} sent, "
        + (f"{calls:.1f} counting cache hits" if (calls := summary.get("llm_calls_per_record_with_cache")) is not None
           else "with cache hits unknown (usage from an older version)"),
        f"invalid critic   {summary['invalid_critic_rate']:.1%} of verdicts",
    ]
    if summary.get("cut_short_scored"):
        rows.append(f"warning: {summary['cut_short_scored']} records cut short by a missing reply carry an R_fut from "
                    "an older version, which scored them; `rlff-esc rewards relabel` with the same formula drops it")
    return "\n".join(rows)
