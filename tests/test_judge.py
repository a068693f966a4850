"""The judge's order-swap rule and answer parsing, and the human-annotation round trip: export,
fill programmatically, import, and agreement numbers checked against hand computation."""

import csv
import json

import pytest

from esc_agents.core.errors import UserError
from esc_agents.evaluation.agreement import cohen_kappa, krippendorff_alpha
from esc_agents.evaluation.annotation import (
    KEY,
    SHEET,
    export_pairs,
    export_success,
    import_sheets,
)
from esc_agents.evaluation.judge import combine
from esc_agents.prompts import load_prompt
from esc_agents.roles.llm import Judge
from tests.test_compare import fake_run

CRITERIA = ["fluency", "empathy", "identification", "suggestion", "overall"]


def test_a_preference_counts_only_if_it_survives_the_order_swap():
    first = {"empathy": "A", "fluency": "B", "overall": "A", "suggestion": "tie"}
    second = {"empathy": "B", "fluency": "A", "overall": "A", "suggestion": "tie"}  # A/B are swapped here
    assert combine(first, second) == {"empathy": "win", "fluency": "loss", "overall": "tie", "suggestion": "tie"}
    assert combine(first, None) is None


def test_judge_answers_parse_per_criterion_or_not_at_all():
    judge = Judge("judge", None, load_prompt("judge", "default"), None)
    answer = "Fluency: A\nEmpathy: **B**\n- identification: tie\nsuggestion - A\noverall: B because ..."
    assert judge.preferences(answer) == {"fluency": "A", "empathy": "B", "identification": "tie",
                                         "suggestion": "A", "overall": "B"}
    assert judge.preferences("fluency: A\nempathy: B") is None


def test_agreement_matches_hand_computation():
    # kappa: observed 4/5, chance (3*2 + 2*3) / 25 = 0.48 -> (0.8 - 0.48) / 0.52
    assert cohen_kappa(list("aabba"), list("abbba")) == pytest.approx(0.32 / 0.52)
    # alpha (nominal): pairs a-a, a-b, b-b -> D_o = 2/6, D_e = 18/30 -> 1 - (1/3) / 0.6
    assert krippendorff_alpha([list("aab"), list("abb")], ["a", "b"]) == pytest.approx(1 - (1 / 3) / 0.6)
    assert krippendorff_alpha([list("aab")], ["a", "b"]) is None


def fill(sheet, out, choose):
    with sheet.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.update(choose(row))
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_pair_sheets_round_trip_to_win_rates_and_agreement(tmp_path):
    runs = {"vanilla": fake_run(tmp_path / "vanilla", 2, ["c1", "c2", "c3", "c4"]),
            "think": fake_run(tmp_path / "think", 2, ["c1", "c2", "c3", "c4"])}
    sheet = export_pairs(runs, tmp_path / "sheet", CRITERIA, seed=3)
    key = json.loads((tmp_path / "sheet" / KEY).read_text())
    text = sheet.read_text()
    assert "vanilla" not in text.split("\n")[0] and "case" not in text.split("\n")[0]  # identities hidden
    think_column = {item: "1" if entry["1"] == "think" else "2" for item, entry in key["items"].items()}
    # Annotator ann1 always prefers think; ann2 prefers think except on the first item, where it says tie.
    first_item = sorted(key["items"])[0]
    ann1 = fill(sheet, tmp_path / "ann1.csv", lambda row: {c: think_column[row["item"]] for c in CRITERIA})
    ann2 = fill(sheet, tmp_path / "ann2.csv", lambda row: {
        c: "tie" if row["item"] == first_item else think_column[row["item"]] for c in CRITERIA})
    judge_dir = tmp_path / "judge"
    judge_dir.mkdir()
    # The judge: vanilla (run a) loses c1 and c2, ties c3 and c4.
    (judge_dir / "judgments.jsonl").write_text("".join(json.dumps(
        {"case_id": case, "outcome": {c: "loss" if case in ("c1", "c2") else "tie" for c in CRITERIA}}) + "\n"
        for case in ("c1", "c2", "c3", "c4")))
    report = import_sheets(tmp_path / "sheet" / KEY, [ann1, ann2], judge_dir)
    empathy = report["criteria"]["empathy"]
    assert (empathy["win"], empathy["tie"], empathy["loss"]) == (0, 1, 7)  # from vanilla's side
    assert empathy["win_rate"] == pytest.approx(0.5 / 8)
    # alpha over 4 items: three (loss, loss) and one (loss, tie) -> D_o = 2/8, D_e = 2*7*1/(8*7) = 0.25
    assert empathy["krippendorff_alpha"] == pytest.approx(0.0)
    by_item = {item: entry["case_id"] for item, entry in key["items"].items()}
    judge_labels = {i: "loss" if by_item[i] in ("c1", "c2") else "tie" for i in sorted(key["items"])}
    ann1_labels = {i: "loss" for i in key["items"]}
    assert empathy["cohen_kappa_with_model"]["ann1"] == pytest.approx(
        cohen_kappa([ann1_labels[i] for i in sorted(key["items"])], [judge_labels[i] for i in sorted(key["items"])]))
    assert (tmp_path / "sheet" / "key" / "agreement.json").exists()


def test_malformed_sheets_are_refused_with_their_rows(tmp_path):
    runs = {"a": fake_run(tmp_path / "a", 2, ["c1", "c2"]), "b": fake_run(tmp_path / "b", 2, ["c1", "c2"])}
    sheet = export_pairs(runs, tmp_path / "sheet", CRITERIA)
    rows = list(csv.reader(sheet.open()))
    header, first, second = rows[0], rows[1], rows[2]
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerow(first[:4] + ["1"] * 5)
        writer.writerow(first[:4] + ["2"] * 5)  # duplicate
        writer.writerow(["item-9999"] + first[1:4] + ["1"] * 5)  # unknown id
        writer.writerow(second[:4] + ["1", "maybe", "2", "2", "2"])  # outside the scale
    with pytest.raises(UserError) as error:
        import_sheets(tmp_path / "sheet" / KEY, [bad])
    message = str(error.value)
    assert "row 3: duplicate item" in message and "row 4: unknown item 'item-9999'" in message
    assert "row 5: empathy='maybe' not in 1/2/tie" in message


def test_critic_success_round_trip_reports_critic_human_agreement(tmp_path):
    run = fake_run(tmp_path / "run", 2, ["c1", "c2", "c3", "c11"])  # critic: success on c1 and c11
    sheet = export_success(run, tmp_path / "sheet")
    key = json.loads((tmp_path / "sheet" / KEY).read_text())
    agree = fill(sheet, tmp_path / "h1.csv",
                 lambda row: {"success": "yes" if key["items"][row["item"]]["critic_success"] else "no"})
    always_yes = fill(sheet, tmp_path / "h2.csv", lambda row: {"success": "yes"})
    report = import_sheets(tmp_path / "sheet" / KEY, [agree, always_yes])
    assert report["critic_success_rate"] == 0.5 and report["human_success_rate"] == pytest.approx(6 / 8)
    assert report["cohen_kappa_with_model"]["h1"] == pytest.approx(1.0)
    assert report["cohen_kappa_with_model"]["h2"] == pytest.approx(0.0)
    assert SHEET == sheet.name
