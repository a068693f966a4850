"""Reward-model pieces that need no training: metrics on hand-computed tables, the shared
encoding, pair building, and the checks that refuse untrainable data."""

import json

import numpy as np
import pytest

from esc_agents.core.errors import UserError
from training.reward_model.data import (
    check_trainable,
    encode,
    load_splits,
    same_context_pairs,
)
from training.reward_model.metrics import (
    auc,
    classification_metrics,
    expected_calibration_error,
    ranking_metrics,
)


def row(context_key, r_fut, reply="r", dialogue="d1", label=None):
    return {"key": f"{context_key}-{reply}", "context_key": context_key, "dialogue_id": dialogue,
            "context": [{"speaker": "seeker", "content": "I lost my job."}], "reply": reply, "r_fut": r_fut,
            "label": int(r_fut > 0.5) if label is None else label}


def test_auc_counts_correctly_ordered_positive_negative_pairs():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert auc(np.array([0.9, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.75)
    assert auc(np.array([0.2, 0.3]), np.array([1, 1])) is None


def test_classification_metrics_on_a_hand_table():
    metrics = classification_metrics([0.9, 0.8, 0.3, 0.6], [1, 0, 0, 1])
    # predicted 1,1,0,1 against 1,0,0,1: accuracy 3/4; precision 2/3, recall 1 -> F1 0.8
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx(0.8)
    assert metrics["positive_rate"] == pytest.approx(0.5)


def test_calibration_error_is_zero_when_confidence_matches_frequency():
    p = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(p, y) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([0.95, 0.95]), np.array([0, 0])) == pytest.approx(0.95)


def test_pairs_are_within_one_context_with_the_higher_reward_chosen():
    rows = [row("a", 0.2, "x"), row("a", 0.9, "y"), row("a", 0.9, "z"), row("b", 0.1, "w")]
    pairs = same_context_pairs(rows)
    assert {(p.chosen["reply"], p.rejected["reply"]) for p in pairs} == {("y", "x"), ("z", "x")}
    assert all(p.margin == pytest.approx(0.7) for p in pairs)


def test_ranking_metrics_count_a_tie_as_half_and_report_spearman():
    rows = [row("a", 0.2, "x"), row("a", 0.9, "y"), row("b", 0.1, "u"), row("b", 0.6, "v")]
    metrics = ranking_metrics([0.1, 0.5, 0.3, 0.3], rows)
    assert metrics["pairs"] == 2
    assert metrics["pairwise_accuracy"] == pytest.approx(0.75)
    # ranks of the scores 1, 4, 2.5, 2.5 against R_fut's 2, 4, 1, 3: covariance 3 over sqrt(4.5 * 5)
    assert metrics["spearman"] == pytest.approx(3 / 22.5**0.5)


def test_untrainable_data_is_refused_per_objective(tmp_path):
    single_class = {"train": [row("a", 0.9, "x"), row("b", 0.8, "y")]}
    with pytest.raises(UserError, match="classification needs both classes"):
        check_trainable(single_class, "classification", tmp_path)
    with pytest.raises(UserError, match="ranking needs m >= 2"):
        check_trainable(single_class, "ranking", tmp_path)
    check_trainable(single_class, "regression", tmp_path)


def test_exports_of_another_version_or_with_a_leaked_dialogue_are_refused(tmp_path):
    (tmp_path / "export.json").write_text("{}")
    (tmp_path / "train.jsonl").write_text(json.dumps({"context": [], "reply": "x"}) + "\n")
    with pytest.raises(UserError, match="lacks context_key"):
        load_splits(tmp_path)
    (tmp_path / "train.jsonl").write_text(json.dumps(row("a", 0.2)) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps(row("b", 0.2)) + "\n")
    with pytest.raises(UserError, match="dialogue d1 is in both train and test"):
        load_splits(tmp_path)


class WordTokenizer:
    """One token per whitespace-separated word; wraps texts in [CLS] ... [SEP] like an encoder."""

    def __call__(self, text, add_special_tokens=True):
        ids = [hash(word) % 1000 + 10 for word in text.split()]
        return {"input_ids": [1, *ids, 2] if add_special_tokens else ids}


def test_encoding_keeps_the_reply_and_the_latest_context_within_the_budget():
    tokenizer = WordTokenizer()
    context = [{"speaker": "seeker", "content": "old " * 50}, {"speaker": "supporter", "content": "recent words"}]
    ids = encode(tokenizer, context, "my reply", max_length=12)
    assert len(ids) == 12
    assert ids[0] == 1 and ids[-1] == 2
    reply_ids = tokenizer("\nCandidate supporter reply: my reply", add_special_tokens=False)["input_ids"]
    assert ids[-1 - len(reply_ids):-1] == reply_ids
    context_part = ids[1:-1 - len(reply_ids)]
    assert context_part[-2:] == tokenizer("recent words", add_special_tokens=False)["input_ids"]
