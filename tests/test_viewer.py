"""`view`: every folder kind loads into the viewer's JSON, the HTML is self-contained, and in a real
headless Chromium the filters count right, each seeker reply shows its l critic votes, compare
cases sit side by side and a D_r future expands. Screenshots go to $VIEWER_SCREENSHOTS (the
README's come from `VIEWER_SCREENSHOTS=docs/viewer pytest tests/test_viewer.py`) or a tmp folder."""

import json
import os
import shutil
from pathlib import Path

import pytest

from esc_agents.evaluation.intervals import wilson_interval
from esc_agents.evaluation.viewer import load_folder
from tests.browser import Browser, chromium
from tests.conftest import REWARD_FIXTURE, read_jsonl, rlff_esc

SMALL_RUN = ["--limit", "3", "--max-turns", "2", "--critic-samples", "3", "--concurrency", "3"]


def embedded_data(html_path: Path) -> dict:
    html = html_path.read_text()
    start = html.index('<script type="application/json" id="rv-data">') + len('<script type="application/json" id="rv-data">')
    return json.loads(html[start:html.index("</script>", start)])


def score(samples: list[float], invalid: list[str] = ()) -> dict:
    return {"samples": samples, "verdicts": ["feels better" if s > 0 else "feels worse" for s in samples],
            "invalid": list(invalid), "mean": sum(samples) / len(samples) if samples else None}


def episode(case_id: str, scores: list[dict], success: bool, extra_supporter: bool = False) -> dict:
    messages = [{"speaker": "seeker", "content": f"situation of {case_id}"}]
    for i in range(len(scores)):
        messages += [{"speaker": "supporter", "content": f"reply {i}", "raw": f"<think>plan {i}</think> reply {i}"},
                     {"speaker": "seeker", "content": f"answer {i} </script><b>", "raw": f"answer {i} </script><b>"}]
    if extra_supporter:
        messages.append({"speaker": "supporter", "content": "a last word"})
    return {"case_id": case_id, "emotion": "sadness", "problem": "job crisis", "messages": messages, "scores": scores,
            "turns": len(scores), "success": success, "final_score": scores[-1]["mean"] if scores else None,
            "status": "success" if success else "max_turns"}


def simulate_folder(folder: Path, trajectories: list[dict], failures: list[dict] = (), threshold: float = 0.5) -> Path:
    folder.mkdir(parents=True)
    fingerprint = {"dataset": "esconv:ppdpp_test", "seed": 0, "roles": {"supporter": {"prompt": folder.name}},
                   "episode": {"max_turns": 2, "critic_samples": 3, "success_threshold": threshold}}
    (folder / "run.json").write_text(json.dumps({"fingerprint": fingerprint}))
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trajectories))
    if failures:
        (folder / "failures.jsonl").write_text("".join(json.dumps(f) + "\n" for f in failures))
    return folder


def test_wilson_intervals_stay_open_at_the_edges():
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-3)  # not [1.0, 1.0]
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] > 0.2
    assert wilson_interval(0, 0) is None


def test_a_simulate_folder_loads_cases_outcomes_votes_and_cases_that_failed_to_run(tmp_path):
    run = simulate_folder(tmp_path / "run", [
        episode("ppdpp_test-1", [score([1.0, 0.5], ["???"])], True),
        episode("ppdpp_test-0", [score([-1.0, -1.0, 0.5]), score([0.5, -1.0, -1.0])], False, extra_supporter=True),
    ], failures=[{"case_id": "ppdpp_test-4", "error": "endpoint down"},
                 {"case_id": "ppdpp_test-1", "error": "retried and finished since"}])
    folder = load_folder(run)
    assert folder["kind"] == "simulate" and folder["columns"][0]["threshold"] == 0.5
    assert [c["id"] for c in folder["cases"]] == ["ppdpp_test-0", "ppdpp_test-1", "ppdpp_test-4"]
    first, second, failed = (c["runs"][0] for c in folder["cases"])
    assert (first["outcome"], second["outcome"], failed["outcome"]) == ("failure", "success", "failed")
    assert failed["error"] == "endpoint down"
    assert folder["cases"][2]["situation"]  # read from the dataset: a failed case has no trajectory
    assert [s["invalid"] for s in second["scores"]] == [["???"]]
    # raw is kept only where it differs from what the other roles saw (the think block)
    assert [("raw" in m) for m in first["messages"]] == [False, True, False, True, False, False]
    assert folder["verdict_names"] == {"1": "feels better", "0.5": "feels better", "-1": "feels worse"}
    assert folder["columns"][0]["success_rate"] == 0.5 and folder["columns"][0]["failed_to_run"] == 1


def test_view_writes_one_self_contained_file_next_to_the_folder_or_anywhere(tmp_path):
    run = simulate_folder(tmp_path / "run", [episode("c1", [score([1.0, 1.0, 1.0])], True)])
    result = rlff_esc("view", str(run), timeout=120)
    assert result.returncode == 0, result.stderr
    html = (run / "view.html").read_text()
    assert "<script" in html and 'src="' not in html and "http" not in html.split("rv-data")[0]
    assert "</script><b>" not in html  # a message's "</" cannot close the data element early
    assert embedded_data(run / "view.html")["folders"][0]["cases"][0]["runs"][0]["messages"][2]["content"] == \
        "answer 0 </script><b>"
    out = tmp_path / "new" / "deeper" / "v.html"
    assert rlff_esc("view", str(run), str(REWARD_FIXTURE), "--out", str(out), timeout=120).returncode == 0
    assert [f["kind"] for f in embedded_data(out)["folders"]] == ["simulate", "rewards"]
    refused = rlff_esc("view", str(tmp_path / "new"), timeout=120)
    assert refused.returncode == 2 and "holds no simulate" in refused.stderr


def test_a_rewards_folder_groups_candidates_by_context_with_their_spread():
    folder = load_folder(REWARD_FIXTURE)
    records = read_jsonl(REWARD_FIXTURE / "records.jsonl")
    assert folder["kind"] == "rewards" and len(folder["contexts"]) == 12
    # the critic prompt's whole scale, verdicts nobody gave included, for the histograms
    assert folder["verdict_names"] == {"-1": "feels worse", "-0.5": "feels the same", "0.5": "feels better",
                                       "1": "issue solved"}
    assert sum(len(c["candidates"]) for c in folder["contexts"]) == len(records) == 48
    context = folder["contexts"][0]
    values = [r["r_fut"] for r in records if r["context_key"] == context["key"]]
    assert context["spread"] == pytest.approx(max(values) - min(values))
    assert all(len(x["scores"]) == x["turns"] for c in folder["contexts"] for x in c["candidates"])


def futures_folder(folder: Path) -> Path:
    folder.mkdir()
    lines = []
    for step in (1, 2):
        for key in ("d1@1", "d2@3"):
            for i in range(2):
                lines.append({"step": step, "context_key": key, "reply": f"completion {i} at {step}", "r_fut": 0.25 * i,
                              "error": None, "turn_scores": [-0.5, 0.25 * i], "K": 2, "success": False, "future": [
                                  {"speaker": "seeker", "content": "hm"}, {"speaker": "supporter", "content": "go on"},
                                  {"speaker": "seeker", "content": "ok"}]})
    lines.append({"step": 2, "context_key": "d2@3", "reply": "x", "r_fut": None, "error": "endpoint down"})
    (folder / "futures.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "grpo.json").write_text("{}")
    return folder


def test_train_grpo_futures_are_grouped_by_step_and_context(tmp_path):
    folder = load_folder(futures_folder(tmp_path / "grpo"))
    assert [(g["step"], g["key"], len(g["completions"])) for g in folder["groups"]] == [
        (1, "d1@1", 2), (1, "d2@3", 2), (2, "d1@1", 2), (2, "d2@3", 3)]
    assert folder["groups"][3]["completions"][2]["error"] == "endpoint down"


def test_compare_and_bias_folders_find_their_runs(tmp_path):
    a = simulate_folder(tmp_path / "runs" / "vanilla", [episode("c1", [score([1.0])], True), episode("c2", [score([-1.0])], False)])
    b = simulate_folder(tmp_path / "runs" / "think", [episode("c1", [score([-1.0])], False), episode("c2", [score([-1.0])], False)])
    compare = tmp_path / "runs" / "cmp"
    compare.mkdir()
    (compare / "compare.json").write_text(json.dumps({"summaries": {"vanilla": {}, "think": {}},
                                                      "runs": {"vanilla": str(a), "think": "elsewhere/think"}}))
    folder = load_folder(compare)  # `think` is found beside the compare folder, by name
    assert folder["kind"] == "compare" and [c["label"] for c in folder["columns"]] == ["vanilla", "think"]
    assert [[r["outcome"] for r in c["runs"]] for c in folder["cases"]] == [["success", "failure"], ["failure", "failure"]]
    bias = tmp_path / "bias"
    shutil.copytree(a, bias / "cooperative_seed0")
    shutil.copytree(b, bias / "resistant_seed0")
    (bias / "bias.json").write_text(json.dumps({"reference": "cooperative_seed0",
                                                "conditions": {"cooperative_seed0": {}, "resistant_seed0": {}}}))
    folder = load_folder(bias)
    assert folder["kind"] == "bias" and folder["columns"][1]["success_rate_wilson95"] == pytest.approx(wilson_interval(0, 2))


# ---------- in a real browser ----------

@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return Path(os.environ.get("VIEWER_SCREENSHOTS") or tmp_path_factory.mktemp("viewer-screenshots"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = chromium()
    if executable is None:
        pytest.skip("Chromium is not installed here (Debian: apt-get install chromium); the viewer is not checked")
    opened = Browser(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield opened
    opened.close()


def choose(browser: Browser, select_id: str, value: str) -> int:
    """Pick a filter value; the count the viewer shows."""
    browser.eval(f"(() => {{ const s = document.getElementById({select_id!r}); s.value = {value!r};"
                 "s.dispatchEvent(new Event('change')); })()")
    return int(browser.eval("document.getElementById('rv-count').dataset.count"))


def open_item(browser: Browser, item_id: str, marker: str) -> None:
    """Click an entry of the list and wait for its detail."""
    browser.eval(f"document.querySelector('.rv-item[data-id={json.dumps(item_id)}]').click()")
    browser.wait_for(f"document.querySelector('[{marker}={json.dumps(item_id)}]') !== null")


TURN_VOTES = """[...document.querySelectorAll('{scope} .rv-turn-votes')].map(e => [+e.dataset.votes, +e.dataset.invalid,
    e.previousElementSibling.classList.contains('rv-seeker'), e.checkVisibility()])"""


@pytest.fixture(scope="module")
def simulated(local_server, tmp_path_factory) -> dict[str, Path]:
    """Two small real simulate runs of different supporter prompts, and their comparison."""
    root = tmp_path_factory.mktemp("viewer-runs")
    cache = str(root / "cache.sqlite")
    for prompt in ("vanilla", "think"):
        result = rlff_esc("simulate", *SMALL_RUN, "--supporter-prompt", prompt, "--cache", cache,
                          "--out", str(root / prompt), timeout=900)
        assert (root / prompt / "trajectories.jsonl").exists(), result.stderr[-2000:]
    result = rlff_esc("compare", "--runs", str(root / "vanilla"), str(root / "think"), "--out", str(root / "cmp"),
                      timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # cooperative_seed0 replays the vanilla run from the cache; only the resistant persona runs
    result = rlff_esc("bias", *SMALL_RUN, "--personas", "cooperative,resistant", "--cache", cache,
                      "--out", str(root / "bias"), timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return {"vanilla": root / "vanilla", "think": root / "think", "compare": root / "cmp", "bias": root / "bias"}


@pytest.mark.server
def test_a_simulate_run_filters_by_outcome_and_shows_every_turns_votes(simulated, browser, screenshots, tmp_path):
    run = tmp_path / "think"
    shutil.copytree(simulated["think"], run)
    with (run / "failures.jsonl").open("a") as handle:  # a case that failed to run, as `simulate` records it
        handle.write(json.dumps({"case_id": "ppdpp_test-7", "error": "endpoint unreachable after 5 attempts"}) + "\n")
    assert rlff_esc("view", str(run), timeout=120).returncode == 0
    trajectories = read_jsonl(run / "trajectories.jsonl")
    browser.errors.clear()
    browser.open((run / "view.html").as_uri())

    assert choose(browser, "rv-outcome", "failure") == sum(not t["success"] for t in trajectories)
    assert choose(browser, "rv-outcome", "success") == sum(t["success"] for t in trajectories)
    assert choose(browser, "rv-outcome", "failed") == 1
    open_item(browser, "ppdpp_test-7", "data-case")
    assert "endpoint unreachable" in browser.eval("document.querySelector('.rv-detail').textContent")
    assert choose(browser, "rv-outcome", "") == len(trajectories) + 1

    for trajectory in trajectories:
        open_item(browser, trajectory["case_id"], "data-case")
        shown = browser.eval(TURN_VOTES.format(scope=".rv-detail"))
        assert [s[:2] for s in shown] == [[len(s["samples"]), len(s["invalid"])] for s in trajectory["scores"]]
        assert all(votes + invalid == 3 and after_seeker and visible for votes, invalid, after_seeker, visible in shown)
        # the full model output (think blocks) is collapsed, one click away
        differing = sum(bool(m.get("raw")) and m["raw"].strip() != m["content"].strip() for m in trajectory["messages"])
        assert browser.eval("document.querySelectorAll('.rv-detail details.rv-raw:not([open])').length") == differing
    if differing:
        browser.eval("document.querySelector('.rv-detail details.rv-raw summary').click()")
        assert browser.eval("document.querySelectorAll('.rv-detail details.rv-raw[open]').length") == 1
    browser.screenshot(screenshots / "simulate.png")
    assert browser.errors == []


@pytest.mark.server
def test_a_comparison_puts_the_same_case_side_by_side_and_filters_discordant_cases(simulated, browser, screenshots):
    assert rlff_esc("view", str(simulated["compare"]), timeout=120).returncode == 0
    runs = {label: {t["case_id"]: t for t in read_jsonl(simulated[label] / "trajectories.jsonl")}
            for label in ("vanilla", "think")}
    differ = [case for case in runs["vanilla"] if runs["vanilla"][case]["success"] != runs["think"][case]["success"]]
    browser.errors.clear()
    browser.open((simulated["compare"] / "view.html").as_uri())
    browser.eval("document.getElementById('rv-discordant').click()")
    assert int(browser.eval("document.getElementById('rv-count').dataset.count")) == len(differ)
    case = differ[0] if differ else sorted(runs["vanilla"])[0]
    if not differ:
        browser.eval("document.getElementById('rv-discordant').click()")
    open_item(browser, case, "data-case")
    columns = browser.eval("[...document.querySelectorAll('.rv-column')].map(c => [c.dataset.column, "
                           "c.classList.contains('rv-differs'), c.querySelectorAll('.rv-turn-votes').length])")
    assert columns == [[label, bool(differ), len(runs[label][case]["scores"])] for label in ("vanilla", "think")]
    browser.screenshot(screenshots / "compare.png")
    assert browser.errors == []


@pytest.mark.server
def test_a_bias_study_shows_each_conditions_sr_with_its_wilson_interval(simulated, browser, screenshots):
    assert rlff_esc("view", str(simulated["bias"]), timeout=120).returncode == 0
    labels = ["cooperative_seed0", "resistant_seed0"]
    expected = []
    for label in labels:
        outcomes = [t["success"] for t in read_jsonl(simulated["bias"] / label / "trajectories.jsonl")]
        low, high = wilson_interval(sum(outcomes), len(outcomes))
        expected.append([label, f"SR {sum(outcomes) / len(outcomes):.3f} [{low:.2f}, {high:.2f}]"])
    browser.errors.clear()
    browser.open((simulated["bias"] / "view.html").as_uri())
    cards = browser.eval("[...document.querySelectorAll('.rv-card')].map(c => [c.querySelector('b').textContent, "
                         "c.childNodes[1].textContent.trim()])")
    assert cards == expected
    first = browser.eval("document.querySelector('.rv-item').dataset.id")
    open_item(browser, first, "data-case")
    assert browser.eval("[...document.querySelectorAll('.rv-column')].map(c => c.dataset.column)") == labels
    browser.screenshot(screenshots / "bias.png")
    assert browser.errors == []


def test_a_reward_dataset_sorts_contexts_by_spread_and_expands_a_future(browser, screenshots, tmp_path):
    out = tmp_path / "dr" / "view.html"
    assert rlff_esc("view", str(REWARD_FIXTURE), "--out", str(out), timeout=120).returncode == 0
    records = read_jsonl(REWARD_FIXTURE / "records.jsonl")
    spread = {}
    for record in records:
        spread.setdefault(record["context_key"], []).append(record["r_fut"])
    browser.errors.clear()
    browser.open(out.as_uri())
    order = browser.eval("[...document.querySelectorAll('.rv-item')].map(a => a.dataset.id)")
    widths = [max(spread[key]) - min(spread[key]) for key in order]
    assert len(order) == 12 and widths == sorted(widths, reverse=True)
    open_item(browser, order[0], "data-context")
    candidates = sorted((r for r in records if r["context_key"] == order[0]), key=lambda r: r["candidate_index"])
    assert browser.eval("[...document.querySelectorAll('.rv-candidate')].map(c => c.querySelector('.rv-rfut').textContent)") == \
        [f"R_fut {r['r_fut']:+.2f} ".replace("+0.00", "0.00") for r in candidates]
    assert browser.eval(TURN_VOTES.format(scope=".rv-candidate")) and not any(
        visible for *_, visible in browser.eval(TURN_VOTES.format(scope=".rv-candidate")))  # collapsed
    browser.eval("document.querySelector('.rv-candidate details.rv-future summary').click()")
    shown = browser.eval(TURN_VOTES.format(scope=".rv-candidate details[open]"))
    assert [s[:2] for s in shown] == [[len(s["samples"]), len(s["invalid"])] for s in candidates[0]["critic_scores"]]
    assert all(after_seeker and visible for _, _, after_seeker, visible in shown)
    browser.screenshot(screenshots / "rewards.png")
    assert browser.errors == []


def test_train_grpo_futures_show_by_step(browser, screenshots, tmp_path):
    folder = futures_folder(tmp_path / "grpo")
    assert rlff_esc("view", str(folder), timeout=120).returncode == 0
    browser.errors.clear()
    browser.open((folder / "view.html").as_uri())
    assert choose(browser, "rv-step", "2") == 2
    open_item(browser, "2|d2@3", "data-group")
    assert browser.eval("document.querySelectorAll('.rv-candidate').length") == 3
    browser.eval("document.querySelector('.rv-candidate details.rv-future summary').click()")
    assert browser.eval("[...document.querySelectorAll('details[open] .rv-turn-mean')].map(e => e.textContent)") == \
        ["critic mean -0.50", "critic mean 0.00"]
    browser.screenshot(screenshots / "futures.png")
    assert browser.errors == []


def test_the_report_embeds_the_viewer_and_writes_into_a_new_folder(browser, tmp_path):
    run = simulate_folder(tmp_path / "run", [episode("c1", [score([1.0, 1.0, 1.0])], True),
                                             episode("c2", [score([-1.0, 0.5, -1.0])], False)])
    out = tmp_path / "not" / "yet" / "report.html"
    result = rlff_esc("report", str(run), str(REWARD_FIXTURE), "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert 'href="#f=0"' in html and 'href="#f=1"' in html  # each folder's section links to its dialogues
    assert [f["kind"] for f in embedded_data(out)["folders"]] == ["simulate", "rewards"]
    browser.errors.clear()
    browser.open(out.as_uri())
    browser.eval("document.querySelector('a[href=\"#f=1\"]').click()")
    browser.wait_for("document.getElementById('rv-count').textContent === '12 of 12 contexts'")
    assert browser.errors == []
