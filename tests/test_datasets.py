import json

import pytest

from esc_agents import datasets
from esc_agents.core.errors import UserError
from esc_agents.datasets import load_cases, load_extes


def test_esconv_ppdpp_test_has_130_cases_with_fields():
    cases = load_cases("esconv:ppdpp_test")
    assert len(cases) == 130
    case = cases[0]
    assert case.id == "ppdpp_test-0" and case.emotion == "depression" and case.situation
    speakers = [m.speaker for m in case.dialog]
    assert all(a != b for a, b in zip(speakers, speakers[1:]))  # same-speaker runs merged


def test_full_esconv_records_load():
    assert len(load_cases("esconv:valid")) == 195


def test_malformed_record_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = {"emotion_type": "anger", "problem_type": "x", "situation": "s", "dialog": []}
    bad = {"emotion_type": "anger", "problem_type": "x", "dialog": []}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl:2: missing field 'situation'"):
        load_cases(str(path))


def test_generic_jsonl_schema(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"id": "a", "situation": "My cat died.", "emotion": "sadness"}) + "\n")
    (case,) = load_cases(str(path))
    assert (case.id, case.emotion, case.problem) == ("a", "sadness", "unknown")


def test_unknown_specs():
    with pytest.raises(UserError, match="unknown ESConv split"):
        load_cases("esconv:dev")
    with pytest.raises(UserError, match="dataset not found"):
        load_cases("nowhere.jsonl")


def extes_fixture(path, count):
    records = [
        {"description": f"situation {i}", "scene": "Work Stress",
         "content": [{"User": f"hi {i}"}, {"AI": "hello", "AI Strategy": "Question"}, {"User": "ok"}]}
        for i in range(count)
    ]
    path.write_text(json.dumps(records))


def test_extes_split_is_seeded_disjoint_and_sized(tmp_path):
    path = tmp_path / "ExTES.json"
    extes_fixture(path, 450)
    splits = {name: load_extes(name, path) for name in ("train", "valid", "test")}
    assert [len(splits[n]) for n in ("train", "valid", "test")] == [50, 200, 200]
    ids = [{c.id.split("-")[1] for c in cases} for cases in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert [c.id for c in load_extes("test", path)] == [c.id for c in splits["test"]]
    case = splits["test"][0]
    assert case.problem == "Work Stress" and case.dialog[1].strategy == "Question"


def test_missing_extes_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RLFF_ESC_EXTES", str(tmp_path / "ExTES.json"))
    with pytest.raises(UserError, match="put the official ExTES.json at .*ExTES.json"):
        load_cases("extes:test")


def test_shipped_data_has_license_note():
    assert "CC BY-NC 4.0" in (datasets.DATA_DIR / "esconv" / "README.md").read_text()
