"""Stage 2: train a reward model on D_r with one of three objectives on the same split.

classification (the paper's choice): two labels, cross-entropy on 1[R_fut > delta];
ranking: Bradley-Terry over same-context candidates, through TRL's RewardTrainer;
regression: one output, MSE on R_fut.
The run folder holds checkpoints (a rerun resumes), the final model under `model/`,
`reward_model.json` for the scorer, `metrics.json`, `predictions.jsonl` and `loss_curves.png`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.core.types import windowed
from esc_agents.datasets import DEFAULT_EVAL_SPLIT, held_out_check
from esc_agents.provenance import versions
from training.backbones import load_backbone, resolve_backbone
from training.reward_model.config import OBJECTIVES, TRL_DECIDED, RewardModelConfig, trainer_class
from training.reward_model.data import (
    check_trainable,
    context_window_of,
    data_hash,
    encode,
    load_splits,
    same_context_pairs,
    training_dialogues,
)
from training.reward_model.metrics import auc, classification_metrics, ranking_metrics
from training.reward_model.scorer import MODEL_CARD, MODEL_FOLDER
from training.run_folder import CHECKPOINTS, claim, last_checkpoint, plot_log_history
from training.trainer_settings import check_passthrough, effective, trainer_config


def train_reward_model(config: RewardModelConfig, data: Path, out: Path, *,
                       eval_split: str | None = DEFAULT_EVAL_SPLIT, allow_eval_overlap: bool = False) -> dict[str, Any]:
    splits = load_splits(data, valid=config.valid, test=config.test, seed=config.seed)
    check_trainable(splits, config.objective, data)
    held_out = held_out_check(training_dialogues(data, splits) if eval_split else [], eval_split,
                              allow_eval_overlap, "train-rm")
    # The model learns (and later scores) with the supporter's view the candidates were written with.
    window = context_window_of(data)
    splits = {name: [{**row, "context": windowed(row["context"], window)} for row in rows]
              for name, rows in splits.items()}
    arguments = trainer_arguments(config, out, evaluate=_evaluates(config, splits))
    resolve_backbone(config.backbone)  # a backbone without weights fails here, before the folder is claimed
    settings = {"config": config.model_dump(), "data": str(data), "data_hash": data_hash(splits)}
    claim(out, settings)
    tokenizer, model = load_backbone(config.backbone, config.objective, dtype=config.dtype)
    if config.lora is not None:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=config.lora.r, lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout, target_modules=config.lora.target_modules,
        ))
    trainer = _trainer(config, arguments, model, tokenizer, splits)
    trainer.train(resume_from_checkpoint=last_checkpoint(out))

    final = trainer.model.merge_and_unload() if config.lora is not None else trainer.model
    final.save_pretrained(out / MODEL_FOLDER)
    tokenizer.save_pretrained(out / MODEL_FOLDER)
    write_json(out / MODEL_CARD, {
        "objective": config.objective, "max_length": config.max_length, "backbone": config.backbone,
        "score": "P(label=1)" if config.objective == "classification" else "model output",
        "data_hash": settings["data_hash"], "context_window": window, "held_out": held_out,
    })
    plot_log_history(trainer.state.log_history, {"loss": {"train": "loss", "valid": "eval_loss"}},
                     out / "loss_curves.png")

    split = "test" if splits.get("test") else "valid" if splits.get("valid") else "train"
    rows = splits[split]
    predictions = _predict(final, tokenizer, config, rows)
    with (out / "predictions.jsonl").open("w") as handle:
        for row, score in zip(rows, predictions):
            handle.write(json.dumps({"key": row.get("key"), "context_key": row["context_key"], "score": score,
                                     "r_fut": row["r_fut"], "label": row["label"]}) + "\n")
    metrics = {
        "objective": config.objective, "split": split, "rows": len(rows),
        "train_rows": len(splits["train"]), "steps": trainer.state.global_step,
        **evaluate_scores(predictions, rows, config.objective),
        "data_hash": settings["data_hash"], "held_out": held_out, "config": config.model_dump(),
        "trainer_config": effective(arguments), "versions": versions(),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def evaluate_scores(scores: list[float], rows: list[dict], objective: str) -> dict[str, Any]:
    """Ranking numbers for every objective, AUC of the score against the label for every
    objective, and the calibrated-probability numbers where the score is a probability."""
    import numpy as np

    labels = [row["label"] for row in rows]
    result: dict[str, Any] = dict(ranking_metrics(scores, rows))
    if objective == "classification":
        result |= classification_metrics(scores, labels)
    else:
        result["auc"] = auc(np.asarray(scores, dtype=float), np.asarray(labels))
    return result


def _evaluates(config: RewardModelConfig, splits: dict[str, list[dict]]) -> bool:
    """Whether there is anything to evaluate on: same-context pairs for ranking, rows otherwise."""
    valid = splits.get("valid", [])
    return bool(same_context_pairs(valid) if config.objective == "ranking" else valid)


def trainer_arguments(config: RewardModelConfig, out: Path, *, evaluate: bool):
    """The objective's trainer config (`trainer_class`): the fields the run's settings decide
    (`TRL_DECIDED`), `config.trl` for the rest."""
    return trainer_config(trainer_class(config.objective), config, TRL_DECIDED, converted={
        "output_dir": str(out / CHECKPOINTS), "max_steps": config.max_steps or -1, "bf16": config.dtype == "bfloat16",
        "eval_strategy": "steps" if evaluate else "no",
        "max_length": None,  # ranking pairs come tokenized, cut to max_length by `encode`
    }, defaults={"save_total_limit": 2, "use_cpu": not torch.cuda.is_available(), "disable_tqdm": False})


def _trainer(config: RewardModelConfig, arguments, model, tokenizer, splits: dict[str, list[dict]]):
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer

    def encoded(row: dict) -> list[int]:
        return encode(tokenizer, row["context"], row["reply"], config.max_length)

    if config.objective == "ranking":
        from trl import RewardTrainer

        def pairs(rows: list[dict]) -> Dataset | None:
            found = same_context_pairs(rows)
            if not found:
                return None
            return Dataset.from_list([
                {"chosen_ids": encoded(p.chosen), "rejected_ids": encoded(p.rejected),
                 **({"margin": p.margin} if config.ranking_margin else {})}
                for p in found
            ])

        return RewardTrainer(
            model=model, processing_class=tokenizer, train_dataset=pairs(splits["train"]),
            eval_dataset=pairs(splits.get("valid", [])), args=arguments,
        )

    def pointwise(rows: list[dict]) -> Dataset:
        target = (lambda r: int(r["label"])) if config.objective == "classification" else (lambda r: float(r["r_fut"]))
        return Dataset.from_list([{"input_ids": encoded(r), "labels": target(r)} for r in rows])

    return Trainer(
        model=model, args=arguments, processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=pointwise(splits["train"]),
        eval_dataset=pointwise(splits["valid"]) if splits.get("valid") else None,
    )


def _predict(model, tokenizer, config: RewardModelConfig, rows: list[dict]) -> list[float]:
    """Scores of the held-out rows through Trainer.predict, a separate path from the scorer, so
    a test can check that the two agree."""
    import tempfile

    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    dataset = Dataset.from_list([{"input_ids": encode(tokenizer, r["context"], r["reply"], config.max_length)}
                                 for r in rows])
    with tempfile.TemporaryDirectory() as scratch:
        predictor = Trainer(model=model.float(), args=TrainingArguments(
            output_dir=scratch, per_device_eval_batch_size=config.batch_size, report_to=[],
            use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        ), data_collator=DataCollatorWithPadding(tokenizer))
        logits = torch.tensor(predictor.predict(dataset).predictions).float()
    values = logits.softmax(-1)[:, 1] if config.objective == "classification" else logits[:, 0]
    return values.tolist()


def ablate(config: RewardModelConfig, data: Path, out: Path, **held_out: Any) -> dict[str, dict[str, Any]]:
    """The three objectives on the same data, split and backbone, one after the other; `trl`
    settings are checked for each objective's trainer first (ranking's has more fields)."""
    for objective in OBJECTIVES:
        try:
            check_passthrough(config.trl, trainer_class(objective), TRL_DECIDED)
        except ValueError as error:
            raise UserError(f"ablate trains {objective} too: {error}") from None
    results = {}
    for objective in OBJECTIVES:
        print(f"rlff-esc: training the {objective} reward model", file=sys.stderr)
        results[objective] = train_reward_model(config.model_copy(update={"objective": objective}), data,
                                                out / objective, **held_out)
    write_json(out / "ablation.json",
               {name: {k: v for k, v in m.items() if k not in ("config", "trainer_config", "versions")}
                for name, m in results.items()})
    return results


TABLE_COLUMNS = (("pairwise_accuracy", "pair acc"), ("spearman", "spearman"), ("auc", "AUC"),
                 ("accuracy", "accuracy"), ("f1", "F1"), ("calibration_error", "ECE"))


def format_metrics_table(results: dict[str, dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    header = f"{'objective':15s}" + "".join(f"{title:>10s}" for _, title in TABLE_COLUMNS)
    lines = [header]
    for name, metrics in results.items():
        lines.append(f"{name:15s}" + "".join(f"{cell(metrics.get(key)):>10s}" for key, _ in TABLE_COLUMNS))
    first = next(iter(results.values()))
    lines.append(f"({first['split']} split: {first['rows']} rows, {first['pairs']} same-context pairs; "
                 f"trained on {first['train_rows']} rows)")
    return "\n".join(lines)
