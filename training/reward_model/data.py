"""D_r as the reward-model trainer sees it: splits by dialogue, one rendering of (context,
reply) into tokens shared by training and scoring, and the per-objective datasets."""

from __future__ import annotations

import functools
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError
from esc_agents.core.runlog import read_jsonl
from esc_agents.core.types import windowed
from esc_agents.runs import Fingerprint, RunFolder
from training.futures.export import SPLITS, split_by_dialogue, training_rows
from training.futures.records import RECORDS

REQUIRED_COLUMNS = ("context_key", "dialogue_id", "context", "reply", "r_fut", "label")
REPLY_HEADER = "\nCandidate supporter reply: "


def _read_export(folder: Path) -> dict[str, list[dict]]:
    """An export folder in any of the three formats `rewards export` writes."""
    if (folder / "dataset_dict.json").exists():
        from datasets import load_from_disk

        data = load_from_disk(str(folder))
        return {name: data[name].to_list() for name in data}
    splits: dict[str, list[dict]] = {}
    for name in SPLITS:
        if (folder / f"{name}.jsonl").exists():
            splits[name] = list(read_jsonl(folder / f"{name}.jsonl"))
        elif (folder / f"{name}.parquet").exists():
            from datasets import Dataset

            splits[name] = Dataset.from_parquet(str(folder / f"{name}.parquet")).to_list()
    return splits


def load_splits(folder: Path, *, valid: float = 0.15, test: float = 0.15, seed: int = 0) -> dict[str, list[dict]]:
    """Reads `rewards export` output as split there, or a `rewards` run folder split here by
    dialogue with the same function, so both routes give the same kind of split."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"reward data folder not found: {folder}")
    if (folder / RECORDS).exists():
        splits = split_by_dialogue(training_rows(folder), valid, test, seed)
    elif (folder / "export.json").exists():
        splits = _read_export(folder)
    else:
        raise UserError(f"{folder} is neither a `rewards` run folder ({RECORDS}) nor a `rewards export` folder")
    for name, rows in splits.items():
        for index, row in enumerate(rows):
            missing = [column for column in REQUIRED_COLUMNS if column not in row]
            if missing:
                raise UserError(f"{folder}: {name} row {index} lacks {', '.join(missing)}; "
                                "re-export it with this version's `rlff-esc rewards export`")
    if not splits.get("train"):
        raise UserError(f"{folder} has no training rows")
    for name, rows in splits.items():
        if name == "train":
            continue
        leaked = {r["dialogue_id"] for r in rows} & {r["dialogue_id"] for r in splits["train"]}
        if leaked:
            raise UserError(f"{folder}: dialogue {sorted(leaked)[0]} is in both train and {name}")
    return splits


def context_window_of(folder: Path) -> int | None:
    """The supporter's context window the reward data was made with (None: the whole history)."""
    return source_run(folder).role("supporter").get("context_window")


def source_run(folder: Path) -> Fingerprint:
    """The fingerprint of the `rewards` run the data came from (an empty one if unknown): its
    run.json's, or the one an export kept."""
    folder = Path(folder)
    if (run := RunFolder.find(folder)) is not None:
        return run.fingerprint
    if (folder / "export.json").exists():
        return Fingerprint.model_validate(json.loads((folder / "export.json").read_text()).get("run", {}))
    return Fingerprint()


def training_dialogues(folder: Path, splits: dict[str, list[dict]]) -> list:
    """The dialogues behind the training rows, loaded from the dataset the reward data was made from."""
    from esc_agents.datasets import load_cases

    dataset = source_run(folder).dataset
    if dataset is None:
        raise UserError(f"{folder}: no record of the dataset its reward data came from; "
                        "pass --eval-split none to train without the held-out check")
    used = {row["dialogue_id"] for row in splits["train"]}
    return [case for case in load_cases(dataset) if case.id in used]


def data_hash(splits: dict[str, list[dict]]) -> str:
    """Identifies the exact rows and split a model was trained on."""
    digest = hashlib.sha256()
    for name in sorted(splits):
        for row in splits[name]:
            digest.update(json.dumps([name, row["context_key"], row["reply"], row["r_fut"]]).encode())
    return digest.hexdigest()[:16]


def render_context(context: list[dict[str, str]]) -> str:
    return "".join(f"{m['speaker'].capitalize()}: {m['content']}\n" for m in context)


def encode(tokenizer, context: list[dict[str, str]], reply: str, max_length: int,
           window: int | None = None) -> list[int]:
    """Token ids of (context, reply). The context is the latest `window` messages (the supporter's
    view the data was made with), then cut from the left to the token budget, so the turns nearest
    the reply survive; the reply is kept (up to half the budget). Training and scoring both call this."""
    context = windowed(context, window)
    specials = _special_ids(tokenizer)
    budget = max_length - len(specials[0]) - len(specials[1])
    reply_ids = tokenizer(REPLY_HEADER + reply, add_special_tokens=False)["input_ids"][: max(budget // 2, 1)]
    context_ids = tokenizer(render_context(context), add_special_tokens=False)["input_ids"]
    keep = budget - len(reply_ids)
    context_ids = context_ids[len(context_ids) - keep:] if keep > 0 else []
    return specials[0] + context_ids + reply_ids + specials[1]


@functools.cache
def _special_ids(tokenizer) -> tuple[list[int], list[int]]:
    """What the tokenizer itself wraps a text in ([CLS] … [SEP] for encoders, BOS for some LMs);
    probed once per tokenizer, not per scored pair."""
    probe = tokenizer("a", add_special_tokens=False)["input_ids"]
    wrapped = tokenizer("a")["input_ids"]
    start = wrapped.index(probe[0]) if probe and probe[0] in wrapped else 0
    return wrapped[:start], wrapped[start + len(probe):]


@dataclass(frozen=True)
class Pair:
    chosen: dict[str, Any]
    rejected: dict[str, Any]

    @property
    def margin(self) -> float:
        return float(self.chosen["r_fut"] - self.rejected["r_fut"])


def same_context_pairs(rows: list[dict]) -> list[Pair]:
    """Every pair of candidates of one context whose R_fut differ, higher first."""
    by_context: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_context[row["context_key"]].append(row)
    pairs = []
    for key in sorted(by_context):
        for a, b in combinations(by_context[key], 2):
            if a["r_fut"] != b["r_fut"]:
                pairs.append(Pair(a, b) if a["r_fut"] > b["r_fut"] else Pair(b, a))
    return pairs


def check_trainable(splits: dict[str, list[dict]], objective: str, folder: Path) -> None:
    """Data that cannot train the objective is refused before any model loads."""
    train = splits["train"]
    if objective == "classification" and len({row["label"] for row in train}) < 2:
        raise UserError(f"{folder}: every training label is {train[0]['label']}; classification needs both "
                        "classes (relabel with another --delta, or generate more contexts)")
    if objective == "ranking" and not same_context_pairs(train):
        raise UserError(f"{folder}: no training context has candidates with different R_fut; ranking needs "
                        "m >= 2 candidates per context")
    if objective == "regression" and len({row["r_fut"] for row in train}) < 2:
        raise UserError(f"{folder}: every training R_fut is equal; regression has nothing to fit")
