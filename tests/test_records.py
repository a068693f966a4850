"""The typed JSON lines of the training stages: D_r records and GRPO's simulated futures are
written and read through their models, and the files keep the exact bytes older runs wrote."""

import json

import pytest

from esc_agents.core.errors import UserError
from esc_agents.core.types import Message
from tests.conftest import REWARD_FIXTURE
from training.futures.records import RECORDS, jsonl, read_records
from training.grpo.records import SimulatedFuture, read_futures


def test_a_reward_dataset_reads_into_records_and_writes_back_byte_for_byte():
    records = read_records(REWARD_FIXTURE / RECORDS)  # unedited output of `rlff-esc rewards`
    assert len(records) == 48 and records[0].candidate.speaker == "supporter"
    assert jsonl(records) == (REWARD_FIXTURE / RECORDS).read_text(encoding="utf-8")


def test_a_renamed_or_missing_field_is_refused_in_one_line_naming_the_file(tmp_path):
    lines = (REWARD_FIXTURE / RECORDS).read_text(encoding="utf-8").splitlines(keepends=True)
    renamed = json.loads(lines[1])
    renamed["rfut"] = renamed.pop("r_fut")
    path = tmp_path / RECORDS
    path.write_text(lines[0] + json.dumps(renamed) + "\n")
    with pytest.raises(UserError, match=r"records.jsonl: record 2 is no RewardRecord \(r_fut: Field required\)"):
        read_records(path)
    del renamed["rfut"]
    renamed["r_fut"], renamed["flagged"] = 0.5, True
    path.write_text(json.dumps(renamed) + "\n")
    with pytest.raises(UserError, match=r"record 1 is no RewardRecord \(flagged: Extra inputs are not permitted\)"):
        read_records(path)


def test_a_simulated_future_writes_only_the_parts_it_has(tmp_path):
    failed = SimulatedFuture(step=2, context_key="d2@3", reply="x", error="endpoint down")
    scored = SimulatedFuture(step=2, context_key="d1@1", reply="go on", r_fut=0.25, turn_scores=[0.25], K=1,
                             success=False, future=[Message(speaker="seeker", content="ok", strategy=None)])
    checked = scored.model_copy()
    checked.reward_model_score, checked.reward_used = 0.75, "simulated_r_fut"  # as hybrid rewards set them
    scored_line = ('{"step": 2, "context_key": "d1@1", "reply": "go on", "r_fut": 0.25, "error": null, '
                   '"turn_scores": [0.25], "K": 1, "success": false, "future": [{"speaker": "seeker", "content": "ok"}]')
    assert jsonl([failed, scored, checked]).splitlines() == [
        '{"step": 2, "context_key": "d2@3", "reply": "x", "r_fut": null, "error": "endpoint down"}',
        scored_line + "}",
        scored_line + ', "reward_model_score": 0.75, "reward_used": "simulated_r_fut"}',
    ]
    path = tmp_path / "futures.jsonl"
    path.write_text(jsonl([failed, scored, checked]))
    assert read_futures(path) == [failed, scored, checked]
    path.write_text('{"step": 0, "context_key": "a", "reply": "b", "reward_used": "a guess"}\n')
    with pytest.raises(UserError, match="record 1 is no SimulatedFuture \\(reward_used: Input should be"):
        read_futures(path)
