"""A GRPO adapter merged into its base model: a plain model folder that `transformers serve`
(the embedded local profile) or vLLM can serve, so the trained policy is evaluated through the
same rollout engine as every baseline."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError
from esc_agents.models.cache import POLICY_CARD
from training.backbones import resolve_recorded_backbone
from training.grpo.config import ADAPTER, RUN_CARD


def export_policy(run: Path, out: Path) -> Path:
    adapter = run / ADAPTER
    if not (adapter / "adapter_config.json").exists() or not (run / RUN_CARD).exists():
        raise UserError(f"{run} has no finished GRPO adapter ({ADAPTER}/adapter_config.json and {RUN_CARD})")
    card = json.loads((run / RUN_CARD).read_text())
    base_folder = base_of(run, card)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    return save_servable(merged, AutoTokenizer.from_pretrained(adapter), out, {
        "id": adapter_fingerprint(adapter), "source": str(run), "base": card.get("base", card["policy"]),
        "prompt": card["prompt"], "think_tag": card["think_tag"], "response_tag": card["response_tag"],
        "max_completion_length": card["config"]["max_completion_length"],
    })


def base_of(run: Path, card: dict[str, Any]) -> Path:
    """The base model a run's adapter was trained on, found wherever the run folder is now (a run
    card of an older version names it by the absolute path it had then)."""
    if "base" in card:
        return resolve_recorded_backbone(card["base"], run)
    folder = Path(card["policy"])
    if not (folder / "config.json").exists():
        raise UserError(f"the base model of {run} is missing: {folder} (recorded in its {RUN_CARD}) "
                        "is not a model folder")
    return folder


def save_servable(model, tokenizer, out: Path, card: dict[str, Any]) -> Path:
    """A full model folder with `architectures` set and sampling on (the local server shares one
    sampling config across a batch), written aside and renamed, so a kill leaves no half folder."""
    model.config.architectures = [type(model).__name__]
    model.generation_config.do_sample = True
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    card.setdefault("id", adapter_fingerprint(staging))
    (staging / POLICY_CARD).write_text(json.dumps(card, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def trained_completion_length(card: dict[str, Any]) -> int | None:
    """The max_completion_length a policy was trained with, from its card (or, for folders
    exported before cards held it, from the train-grpo folder it came from)."""
    if "max_completion_length" in card:
        return card["max_completion_length"]
    source = Path(card.get("source", "")) / "grpo.json"
    if card.get("source") and source.exists():
        return json.loads(source.read_text())["config"]["max_completion_length"]
    return None


def adapter_fingerprint(adapter: Path) -> str:
    digest = hashlib.sha256()
    for weights in sorted(adapter.glob("*.safetensors")):
        digest.update(weights.read_bytes())
    return digest.hexdigest()[:12]


def policy_profile(folder: Path, port: int = 8766) -> dict[str, Any]:
    """An embedded endpoint profile that serves an exported policy folder. Its model name carries
    the weights' fingerprint, so cached completions of another policy are never replayed."""
    card_path = folder / POLICY_CARD
    if not (folder / "config.json").exists():
        raise UserError(f"--supporter-model {folder}: not a model folder (no config.json); "
                        "make one with `rlff-esc export`")
    policy_id = json.loads(card_path.read_text())["id"] if card_path.exists() else hashlib.sha256(
        str(folder.resolve()).encode()).hexdigest()[:12]
    return {"base_url": f"http://127.0.0.1:{port}/v1", "model": f"policy-{policy_id}", "embedded": True,
            "model_path": str(folder.resolve()), "supports_n": False, "max_concurrency": 16}
