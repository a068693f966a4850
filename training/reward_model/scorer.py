"""The reward model at use time: load once, score lists of (context, reply) in length-sorted
batches without gradients. GRPO, `rlff-esc score` and the untrained-model ablation all go
through `RewardScorer`, and it encodes with the trainer's own `encode`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from esc_agents.core.errors import UserError
from training.reward_model.data import encode

MODEL_CARD = "reward_model.json"
MODEL_FOLDER = "model"
RANDOM = "random"


class RewardScorer:
    def __init__(self, model, tokenizer, *, objective: str, max_length: int, batch_size: int = 16,
                 context_window: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.objective = objective
        self.max_length = max_length
        self.batch_size = batch_size
        self.context_window = context_window  # the supporter's view the model was trained on

    @classmethod
    def load(cls, folder: str | Path, *, batch_size: int = 16, device: str | None = None,
             dtype: str = "float32") -> RewardScorer:
        """A folder written by `rlff-esc train-rm`, or "random" for an untrained head on the
        embedded backbone (the paper's untrained-reward-model ablation)."""
        if str(folder) == RANDOM:
            return cls.untrained(batch_size=batch_size, device=device, dtype=dtype)
        card = read_model_card(Path(folder))
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(Path(folder) / MODEL_FOLDER, dtype=getattr(torch, dtype))
        tokenizer = AutoTokenizer.from_pretrained(Path(folder) / MODEL_FOLDER)
        return cls(model.to(device or _default_device()), tokenizer, objective=card["objective"],
                   max_length=card["max_length"], batch_size=batch_size, context_window=card.get("context_window"))

    @classmethod
    def untrained(cls, backbone: str = "embedded", *, seed: int = 0, max_length: int = 384,
                  batch_size: int = 16, device: str | None = None, dtype: str = "float32") -> RewardScorer:
        """The backbone with a freshly initialised two-class head, seeded so runs repeat."""
        from training.backbones import load_backbone

        torch.manual_seed(seed)
        tokenizer, model = load_backbone(backbone, "classification", dtype=dtype)
        return cls(model.to(device or _default_device()), tokenizer, objective="classification",
                   max_length=max_length, batch_size=batch_size)

    def encode(self, context: list[dict[str, str]], reply: str) -> list[int]:
        return encode(self.tokenizer, context, reply, self.max_length, self.context_window)

    @torch.inference_mode()
    def score(self, contexts: Sequence[list[dict[str, str]]], replies: Sequence[str]) -> list[float]:
        """One float per pair: P(label 1) for classification, the model's value otherwise."""
        if len(contexts) != len(replies):
            raise ValueError("score() needs one context per reply")
        encoded = [self.encode(c, r) for c, r in zip(contexts, replies)]
        # Longest first, so each batch pads little and memory peaks in the first batch.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        scores = [0.0] * len(encoded)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            members = order[start:start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in members]}, return_tensors="pt")
            logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
            values = logits.softmax(-1)[:, 1] if self.objective == "classification" else logits[:, 0]
            for i, value in zip(members, values.tolist()):
                scores[i] = value
        return scores


def read_model_card(folder: Path) -> dict:
    card = folder / MODEL_CARD
    if not card.exists():
        raise UserError(f"{folder} is not a reward model folder (no {MODEL_CARD}); train one with "
                        "`rlff-esc train-rm`, or use 'random'")
    data = json.loads(card.read_text())
    if not (folder / MODEL_FOLDER / "config.json").exists():
        raise UserError(f"{folder}: {MODEL_FOLDER}/ has no weights; the training run did not finish")
    return data


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
