"""`rlff-esc rewards` against the real embedded server: records, relabel, shards, resume, export."""

import json
import re
import sqlite3
import subprocess

import pytest

from tests.conftest import SHORT_REPLIES, kill_after_first_result, read_jsonl, rlff_esc
from training.futures.formulas import FutureOutcome, get_formula
from training.futures.records import RECORDS, read_records

pytestmark = pytest.mark.server

TINY = ["--dataset", "esconv:ppdpp_train", "--limit", "6", "--contexts", "2", "--candidates", "2",
        "--max-turns", "2", "--critic-samples", "2", "--concurrency", "4", *SHORT_REPLIES]
FIELDS = {"key", "context_key", "dialogue_id", "position", "candidate_index", "context", "candidate", "future",
          "critic_scores", "turn_scores", "K", "T", "success", "r_fut", "label", "formula", "delta", "provenance"}


def records(folder):
    return read_jsonl(folder / "records.jsonl")


def cache_rows(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]


@pytest.fixture(scope="module")
def tiny_run(local_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rewards")
    cache = folder / "cache.sqlite"
    result = rlff_esc("rewards", *TINY, "--cache", str(cache), "--out", str(folder / "full"))
    assert result.returncode == 0, result.stderr
    return folder, cache


def test_tiny_run_writes_one_complete_record_per_candidate(tiny_run):
    folder, _ = tiny_run
    rows = records(folder / "full")
    assert len(rows) == 4 and len({r["key"] for r in rows}) == 4
    assert len({r["context_key"] for r in rows}) == 2
    formula = get_formula("terminal_efficiency")
    for row in rows:
        assert FIELDS <= row.keys()
        assert row["context"][-1]["speaker"] == "seeker" and row["candidate"]["speaker"] == "supporter"
        assert row["future"][0]["speaker"] == "seeker" and 1 <= row["K"] <= 2 == row["T"]
        assert len(row["turn_scores"]) == row["K"]
        assert row["turn_scores"] == [score["mean"] for score in row["critic_scores"]]
        outcome = FutureOutcome(row["turn_scores"], row["K"], row["T"], row["success"])
        assert row["r_fut"] == formula(outcome, {"lambda": 0.5}) and row["formula_params"] == {"lambda": 0.5}
        # A future whose critic never gave a parsable verdict has no R_fut and no label.
        assert row["label"] == (None if row["r_fut"] is None else int(row["r_fut"] > 0.5))
        assert row["provenance"]["models"]["critic"] == "smollm2-135m-instruct"
        assert "OPENAI_API_KEY" not in json.dumps(row)
    assert [record.model_dump() for record in read_records(folder / "full" / RECORDS)] == rows
    stats = json.loads((folder / "full" / "stats.json").read_text())
    calls = sum(counts["calls"] for line in read_jsonl(folder / "full" / "usage.jsonl") for counts in line.values())
    scored = [row for row in rows if row["r_fut"] is not None]
    assert stats["records"] == 4 and stats["llm_calls_per_record"] == calls / 4 > 0
    assert stats["scored"] == len(scored) > 0
    ended = [row for row in rows if row["success"] or row["K"] == row["T"]]  # not cut short by a missing reply
    assert stats["cut_short"] == 4 - len(ended)
    if ended:  # every future that ended, scored or not
        assert stats["mean_K"] == pytest.approx(sum(row["K"] for row in ended) / len(ended))
        assert stats["success_rate"] == pytest.approx(sum(row["success"] for row in ended) / len(ended))
    assert stats["label_balance"] == pytest.approx(sum(row["label"] for row in scored) / len(scored))
    assert (folder / "full" / "r_fut_hist.png").stat().st_size > 1000


def test_relabel_recomputes_without_any_llm_call(tiny_run, tmp_path):
    folder, cache = tiny_run
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(folder / "full"), str(copy)], check=True)
    rows_before, cached_before = cache_rows(cache), records(copy)
    result = rlff_esc("rewards", "relabel", str(copy), "--formula", "discounted", "--param", "gamma=0.5",
                      "--delta", "0.0", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no LLM call" in result.stdout and cache_rows(cache) == rows_before
    formula = get_formula("discounted")
    for old, new in zip(cached_before, records(copy)):
        expected = formula(FutureOutcome(old["turn_scores"], old["K"], old["T"], old["success"]), {"gamma": 0.5})
        assert new["r_fut"] == expected and new["formula"] == "discounted"
        assert new["label"] == int(expected > 0.0) and new["future"] == old["future"]


def test_two_shards_merge_to_the_unsharded_keys(tiny_run):
    folder, cache = tiny_run
    for index in (0, 1):
        part = rlff_esc("rewards", *TINY, "--shard", f"{index}/2", "--cache", str(cache),
                        "--out", str(folder / f"part{index}"))
        assert part.returncode == 0, part.stderr
        sent = re.findall(r"requests\s+(\d+)", part.stdout)
        assert sent and set(sent) == {"0"}, part.stdout  # replayed from the shared cache
    merged = rlff_esc("rewards", "merge", str(folder / "part0"), str(folder / "part1"), "--out", str(folder / "merged"))
    assert merged.returncode == 0, merged.stderr
    assert "duplicates 0" in merged.stdout and "missing    0" in merged.stdout
    assert sorted(r["key"] for r in records(folder / "merged")) == sorted(r["key"] for r in records(folder / "full"))


def test_export_splits_by_dialogue(tiny_run, tmp_path):
    folder, _ = tiny_run
    result = rlff_esc("rewards", "export", str(folder / "full"), "--out", str(tmp_path / "hf"),
                      "--valid", "0.5", "--test", "0", timeout=120)
    assert result.returncode == 0, result.stderr
    from datasets import load_from_disk

    data = load_from_disk(str(tmp_path / "hf"))
    train, valid = set(data["train"]["dialogue_id"]), set(data["valid"]["dialogue_id"])
    assert train and valid and not train & valid
    assert set(data["train"].column_names) >= {"context", "reply", "r_fut", "label"}


def test_killed_rewards_run_resumes(local_server, tmp_path):
    out = tmp_path / "run"
    # Two futures at a time: the kill lands after the first record, with at least two still to run.
    # Futures of one turn: the kill and the resume are what is checked here, not the futures' length.
    args = ["rewards", *TINY, "--max-turns", "1", "--concurrency", "2", "--cache", str(tmp_path / "c.sqlite"),
            "--out", str(out)]
    before = kill_after_first_result(args, out / "records.jsonl")
    assert 1 <= len(before) < 4
    resumed = rlff_esc(*args)
    assert resumed.returncode == 0, resumed.stderr
    keys = [r["key"] for r in records(out)]
    assert len(keys) == 4 == len(set(keys)) and records(out)[: len(before)] == before
