"""Where a backbone's weights are: the embedded default, a local folder, or a hub id that is
already in the local cache. Nothing is downloaded, and a folder without weights is refused
before any model loads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


def resolve_backbone(name: str) -> Path:
    if name == "embedded":
        from esc_agents.models.local_server import embedded_model_dir

        return embedded_model_dir()
    folder = Path(name).expanduser()
    if not folder.exists():
        folder = _cached_snapshot(name)
    if not (folder / "config.json").exists():
        raise UserError(f"backbone {name}: {folder} has no config.json")
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise UserError(f"backbone {name}: {folder} has no weights (*.safetensors or *.bin)")
    return folder


def backbone_record(name: str, folder: Path, run: Path) -> dict[str, Any]:
    """How a run folder names its backbone so that it survives a move to another directory or
    machine: the embedded model by its bundled weights, a hub id by its id and snapshot, a folder
    by its path relative to the run folder (it moves with a run folder or a tree that holds both),
    its path when the run was made and a SHA-256 of its weights."""
    if name == "embedded":
        from esc_agents.models.local_server import bundled_weights_id

        return {"embedded": bundled_weights_id()}
    if not Path(name).expanduser().exists():
        return {"hub_id": name, "revision": folder.name}
    return {"folder": str(folder.resolve()), "relative": os.path.relpath(folder.resolve(), run.resolve()),
            "sha256": weights_digest(folder)}


def resolve_recorded_backbone(record: dict[str, Any], run: Path) -> Path:
    """The folder of a backbone named by `backbone_record`, wherever the run folder is now; what
    cannot be found is named in one line."""
    if "embedded" in record:
        from esc_agents.models.local_server import (
            bundled_weights_id,
            embedded_model_dir,
        )

        if (installed := bundled_weights_id()) != record["embedded"]:
            raise UserError(f"{run} was trained on the embedded weights {record['embedded']}, but {installed} is "
                            "installed; install that version of the weights")
        return embedded_model_dir()
    if "hub_id" in record:
        folder = resolve_backbone(record["hub_id"])
        if folder.name != record["revision"]:
            raise UserError(f"{run} was trained on {record['hub_id']} at revision {record['revision']}, but the local "
                            f"Hugging Face cache holds {folder.name}; fetch that revision")
        return folder
    places = [Path(os.path.normpath(run / record["relative"])), Path(record["folder"])]
    for place in places:
        if (place / "config.json").exists() and weights_digest(place) == record["sha256"]:
            return place
    raise UserError(f"the base model of {run} is missing: no folder with its weights (sha256 {record['sha256'][:12]}) "
                    f"at {places[0]} (its place relative to the run folder) or at {places[1]}; put it back there")


def weights_digest(folder: Path) -> str:
    """SHA-256 of a model folder's config.json and weight files."""
    digest = hashlib.sha256()
    files = sorted(path for pattern in WEIGHT_PATTERNS for path in folder.glob(pattern)) + [folder / "config.json"]
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _cached_snapshot(name: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        raise UserError(f"backbone {name}: not a folder and not in the local Hugging Face cache "
                        f"(fetch it once with `hf download {name}` where a network is allowed)") from None


def load_backbone(name: str, objective: str, *, dtype: str):
    """Tokenizer and a sequence-classification model on the backbone: two labels for
    classification, one output for ranking and regression."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = resolve_backbone(name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    extra = {"problem_type": "regression"} if objective == "regression" else {}
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=2 if objective == "classification" else 1, dtype=getattr(torch, dtype), **extra,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model
