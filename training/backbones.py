"""Where a backbone's weights are: the embedded default, a local folder, or a hub id that is
already in the local cache. Nothing is downloaded, and a folder without weights is refused
before any model loads."""

from __future__ import annotations

from pathlib import Path

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
