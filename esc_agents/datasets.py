"""Datasets by name, all mapped onto `Case`: a registry of loaders (the `rlff_esc.datasets` entry
points, ESConv's and ExTES's among them), a loader by its Python path, or a JSONL file.

A dataset spec, as `--dataset` takes it, is one of
  NAME[:SPLIT]                       a registered loader, called with SPLIT (`esconv:ppdpp_test`)
  package.module:function[@SPLIT]    a loader of yours, imported like a role (working directory,
                                     --app-dir, installed packages) and called with SPLIT
  path/to/cases.jsonl                ESConv-format records, or the generic schema, one case a line:
                                     `{"situation": str, "id"?: str, "emotion"?: str, "problem"?: str,
                                     "dialog"?: [{"speaker": "seeker"|"supporter", "text": str}]}`
A loader takes the split as its one argument (or none, where the spec gives no split) and returns
the cases; a package registers one as `NAME = "package.module:function"` under
`[project.entry-points."rlff_esc.datasets"]`, which is how ESConv and ExTES are registered too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import random
import site
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError
from esc_agents.core.plugins import import_object, installed
from esc_agents.core.types import Case, Message

DATASET_ENTRY_POINTS = "rlff_esc.datasets"
# The loaders this package registers in pyproject.toml, for an install whose metadata predates the
# entry points (an editable install not reinstalled since): ESConv, the default, must not vanish.
BUILTIN_DATASETS = {"esconv": "esc_agents.datasets:load_esconv", "extes": "esc_agents.datasets:load_extes"}

# ESConv's eight support strategies, the names a strategy supporter must use (Liu et al., 2021).
ESCONV_STRATEGIES = (
    "Question",
    "Self-disclosure",
    "Affirmation and Reassurance",
    "Providing Suggestions",
    "Reflection of feelings",
    "Information",
    "Restatement or Paraphrasing",
    "Others",
)


def _data_dir() -> Path:
    """$RLFF_ESC_DATA, else the checkout's `data/` (source tree, editable install), else the copy a
    wheel installs as data files under `<prefix>/share/rlff-esc/data` (venv or system, or --user)."""
    if "RLFF_ESC_DATA" in os.environ:
        return Path(os.environ["RLFF_ESC_DATA"])
    checkout = Path(__file__).resolve().parent.parent / "data"
    if (checkout / "esconv").is_dir():
        return checkout
    for prefix in (sys.prefix, site.getuserbase()):
        installed = Path(prefix) / "share" / "rlff-esc" / "data"
        if installed.is_dir():
            return installed
    return checkout


DATA_DIR = _data_dir()
ESCONV_SPLITS = ("ppdpp_train", "ppdpp_valid", "ppdpp_test", "train", "valid", "test")
EXTES_SPLITS = ("train", "valid", "test")
EXTES_SPLIT_SEED = 13
EXTES_HELD_OUT = 200  # dialogues each for valid and test, as common practice holds out


class RecordError(ValueError):
    """A record lacks a field or has one of the wrong type."""


def _field(record: dict[str, Any], name: str, kind: type = str) -> Any:
    if name not in record:
        raise RecordError(f"missing field {name!r}")
    value = record[name]
    if not isinstance(value, kind):
        raise RecordError(f"field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _merged(turns: list[tuple[str, str, str | None]]) -> list[Message]:
    """Consecutive utterances by the same speaker become one message (ESConv has many)."""
    messages: list[Message] = []
    for speaker, text, strategy in turns:
        text = text.strip()
        if messages and messages[-1].speaker == speaker:
            messages[-1].content += " " + text
        else:
            messages.append(Message(speaker=speaker, content=text, strategy=strategy))
    return messages


def esconv_case(record: dict[str, Any], case_id: str, source: str) -> Case:
    turns = []
    for turn in _field(record, "dialog", list):
        if not isinstance(turn, dict):
            raise RecordError("dialog entries must be objects")
        speaker = {"usr": "seeker", "sys": "supporter"}.get(_field(turn, "speaker"))
        if speaker is None:
            raise RecordError(f"dialog speaker must be 'usr' or 'sys', got {turn['speaker']!r}")
        turns.append((speaker, _field(turn, "text"), turn.get("strategy")))
    return Case(
        id=case_id,
        situation=_field(record, "situation").strip(),
        emotion=_field(record, "emotion_type").strip(),
        problem=_field(record, "problem_type").strip(),
        dialog=_merged(turns),
        source=source,
    )


def generic_case(record: dict[str, Any], case_id: str, source: str) -> Case:
    turns = []
    for turn in record.get("dialog", []):
        if not isinstance(turn, dict) or turn.get("speaker") not in ("seeker", "supporter"):
            raise RecordError("dialog entries need speaker 'seeker' or 'supporter'")
        turns.append((turn["speaker"], _field(turn, "text"), turn.get("strategy")))
    return Case(
        id=str(record.get("id", case_id)),
        situation=_field(record, "situation").strip(),
        emotion=str(record.get("emotion", "unknown")),
        problem=str(record.get("problem", "unknown")),
        dialog=_merged(turns),
        source=source,
    )


def extes_case(record: dict[str, Any], case_id: str, source: str) -> Case:
    turns = []
    for turn in _field(record, "content", list):
        if not isinstance(turn, dict):
            raise RecordError("content entries must be objects")
        if "User" in turn:
            turns.append(("seeker", str(turn["User"]), None))
        elif "AI" in turn:
            turns.append(("supporter", str(turn["AI"]), turn.get("AI Strategy")))
        else:
            raise RecordError("content entries need a 'User' or 'AI' key")
    return Case(
        id=case_id,
        situation=_field(record, "description").strip(),
        problem=_field(record, "scene").strip(),
        dialog=_merged(turns),
        source=source,
    )


def _read_jsonl(path: Path, make: Callable[[dict, str, str], Case], prefix: str) -> list[Case]:
    cases = []
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise RecordError("a record must be a JSON object")
                cases.append(make(record, f"{prefix}-{line_number - 1}", prefix))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{line_number}: not valid JSON ({exc.msg})") from None
            except RecordError as exc:
                raise UserError(f"{path}:{line_number}: {exc}") from None
    return cases


def extes_path() -> Path:
    return Path(os.environ.get("RLFF_ESC_EXTES", DATA_DIR / "extes" / "ExTES.json"))


def load_extes(split: str, path: Path | None = None) -> list[Case]:
    """ExTES split, made reproducibly: a seeded shuffle (seed 13) of all dialogues, the last 200
    for test, the 200 before them for valid, the rest for train."""
    if split not in EXTES_SPLITS:
        raise UserError(f"unknown ExTES split {split!r} (known: {', '.join(EXTES_SPLITS)})")
    path = path or extes_path()
    if not path.exists():
        raise UserError(
            f"ExTES is not bundled (its license forbids it): put the official ExTES.json at {path} "
            "or set RLFF_ESC_EXTES to its path"
        )
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a JSON list of dialogues")
    order = list(range(len(records)))
    random.Random(EXTES_SPLIT_SEED).shuffle(order)
    test, valid = order[-EXTES_HELD_OUT:], order[-2 * EXTES_HELD_OUT : -EXTES_HELD_OUT]
    train = order[: -2 * EXTES_HELD_OUT]
    cases = []
    for index in sorted({"train": train, "valid": valid, "test": test}[split]):
        try:
            cases.append(extes_case(records[index], f"extes_{split}-{index}", f"extes:{split}"))
        except RecordError as exc:
            raise UserError(f"{path}: record {index}: {exc}") from None
    return cases


def load_esconv(split: str) -> list[Case]:
    """ESConv as shipped in data/esconv/: the PPDPP split (ppdpp_*) or the full records."""
    if split not in ESCONV_SPLITS:
        raise UserError(f"unknown ESConv split {split!r} (known: {', '.join(ESCONV_SPLITS)})")
    path = DATA_DIR / "esconv" / f"{split}.jsonl"
    if not path.exists():
        raise UserError(f"dataset file not found: {path}")
    return _read_jsonl(path, esconv_case, split)


def registered_datasets() -> dict[str, str]:
    """Every dataset name and the loader it names (`package.module:function`): the installed
    `rlff_esc.datasets` entry points, over this package's own where its metadata lacks them."""
    return {**BUILTIN_DATASETS, **{name: entry.value for name, entry in installed(DATASET_ENTRY_POINTS).items()}}


def _unknown(spec: str, registered: dict[str, str]) -> UserError:
    names = ", ".join(sorted(registered)) or "none"
    return UserError(f"dataset not found: {spec} (registered: {names}; or a JSONL file; or a loader of yours, "
                     "package.module:function[@split], from the working directory, --app-dir or an installed package)")


def _loader(spec: str, registered: dict[str, str]) -> tuple[str, Callable[..., Any], str | None]:
    """(what to call it in errors, the loader, the split or None) for a spec naming a loader."""
    name, colon, split = spec.partition(":")
    if name in registered:
        what = f"dataset {name!r}"
        return what, import_object(registered[name], f"{what}: loader"), split if colon else None
    target, at, split = spec.partition("@")
    module_name = target.partition(":")[0]
    try:
        found = importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):  # a missing parent package; an empty or relative name
        found = False
    if ":" not in target or not found:
        raise _unknown(spec, registered)
    return f"dataset loader {target!r}", import_object(target, "dataset loader"), split if at else None


def load_cases(spec: str) -> list[Case]:
    """Resolve a dataset spec (module docstring) to its cases: a registered name first, then a
    file, then a loader's Python path."""
    registered = registered_datasets()
    if spec.partition(":")[0] not in registered and Path(spec).is_file():
        first = next((line for line in Path(spec).open() if line.strip()), "")
        looks_like_esconv = '"dialog"' in first and '"emotion_type"' in first
        return _read_jsonl(Path(spec), esconv_case if looks_like_esconv else generic_case, Path(spec).stem)
    what, loader, split = _loader(spec, registered)
    arguments = () if split is None else (split,)
    try:
        inspect.signature(loader).bind(*arguments)
    except TypeError:
        with_split = f"{spec}:SPLIT" if spec in registered else f"{spec}@SPLIT"
        raise UserError(f"{what} " + (f"needs a split ({with_split})" if split is None else "takes no split")) from None
    except ValueError:  # no signature to read (a builtin): let the call say
        pass
    cases = loader(*arguments)
    if isinstance(cases, (str, bytes, dict)) or not hasattr(cases, "__iter__"):
        raise UserError(f"{what} returned a {type(cases).__name__}, not a list of Case")
    cases = list(cases)
    if wrong := next((case for case in cases if not isinstance(case, Case)), None):
        raise UserError(f"{what} returned a {type(wrong).__name__} among its cases; build each with "
                        "esc_agents.core.types.Case")
    if twice := [case_id for case_id, count in Counter(case.id for case in cases).items() if count > 1]:
        raise UserError(f"{what}: case id {twice[0]!r} appears twice (runs resume by case id)")
    return cases


DEFAULT_EVAL_SPLIT = "esconv:ppdpp_test"


def dialogue_key(case: Case) -> str:
    """The same dialogue under any split's ids: ESConv's full-corpus splits and PPDPP's split share
    dialogues under different ids (e.g. half of esconv:test is in ppdpp_test)."""
    text = case.situation + "\n" + "\n".join(f"{m.speaker}: {m.content}" for m in case.dialog)
    return hashlib.sha256(text.encode()).hexdigest()


def held_out_check(training: list[Case], eval_split: str | None, allow_overlap: bool, command: str) -> dict[str, Any]:
    """Refuse training dialogues that are also in the evaluation split (None: no check), or with
    `allow_overlap` warn and return them for the provenance record."""
    if not eval_split:
        return {"eval_split": None, "eval_overlap": []}
    try:
        evaluation = load_cases(eval_split)
    except UserError as exc:
        raise UserError(f"{command}: --eval-split {eval_split}: {exc} ('none': no check)") from None
    held_out = {dialogue_key(case) for case in evaluation}
    leaked = sorted({case.id for case in training if dialogue_key(case) in held_out})
    if leaked:
        named = f"{len(leaked)} training dialogues ({', '.join(leaked[:5])}{' ...' if len(leaked) > 5 else ''})"
        if not allow_overlap:
            raise UserError(f"{command}: {named} are also in the evaluation split {eval_split}; train on "
                            "esconv:ppdpp_train, or pass --allow-eval-overlap to go on (it is recorded)")
        print(f"rlff-esc: WARNING: {named} are also in the evaluation split {eval_split}; results on it "
              "are not held out (recorded in the run's provenance)", file=sys.stderr)
    return {"eval_split": eval_split, "eval_overlap": leaked}
