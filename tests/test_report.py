"""`report`: one self-contained HTML file that renders in a real headless browser."""

import json
import re
import shutil
import subprocess

import pytest

from esc_agents.evaluation.compare import compare_runs
from tests.conftest import rlff_esc
from tests.test_compare import fake_run

CHECK = ("<script>window.addEventListener('load',()=>{document.body.setAttribute('data-check',"
         "[...document.images].filter(i=>i.naturalWidth>0).length+'/'+document.images.length+' '+"
         "document.querySelectorAll('table').length)})</script></body>")


@pytest.fixture
def report(tmp_path):
    a, b = fake_run(tmp_path / "vanilla", 2, ["c1", "c2"]), fake_run(tmp_path / "think", 2, ["c1", "c2"])
    compare_runs({"vanilla": a, "think": b}, tmp_path / "cmp")
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "metrics.json").write_text(json.dumps({"objective": "classification", "auc": 0.71}))
    out = tmp_path / "report.html"
    result = rlff_esc("report", str(tmp_path / "cmp"), str(tmp_path / "rm"), "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    return out


def test_the_report_is_self_contained(report):
    html = report.read_text()
    # compare summary, pairs, the think supporter's format compliance, by emotion, by problem; reward-model metrics
    assert html.count("<table>") == 6
    assert "<th>SR 95% CI (Wilson)</th>" in html and "<h4>by emotion</h4>" in html and "<h4>by problem</h4>" in html
    by_emotion = html.split("<h4>by emotion</h4>", 1)[1].split("</table>", 1)[0]
    assert "<th>SR vanilla</th><th>SR think</th>" in by_emotion
    assert "<tr><td>sad</td><td>2</td><td>0.500 [0.09, 0.91]</td><td>0.500 [0.09, 0.91]</td>" in by_emotion
    assert re.search(r'<img alt="success_by_turn.png" src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', html)
    assert not re.search(r'(src|href)="(https?:|file:|/)', html)


def test_the_report_renders_its_tables_and_images_in_headless_chromium(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed here (Debian: apt-get install chromium); rendering not checked")
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", CHECK))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    assert 'data-check="1/1 6"' in dom, dom[-500:]


def grpo_folder(folder, reward: str, r_fut: list[float], simulation: dict | None = None):
    folder.mkdir()
    (folder / "grpo.json").write_text(json.dumps({"reward": reward}))
    history = [{"step": step + 1, "reward": value, "rewards/r_fut/mean": value, "rewards/r_fmt/mean": 0.0,
                "kl": 0.01 * step, "completions/mean_length": 20.0} for step, value in enumerate(r_fut)]
    (folder / "metrics.json").write_text(json.dumps({
        "steps": len(r_fut), "train_seconds": 10.0 * len(r_fut), "reward": reward, "history": history,
        "reward_last": r_fut[-1], "r_fut_last": r_fut[-1], "r_fmt_last": 0.0, "simulation": simulation}))
    return folder


def test_grpo_runs_of_different_reward_modes_are_compared_on_shared_axes(tmp_path):
    model = grpo_folder(tmp_path / "rm", "model", [0.2, 0.3, 0.4])
    usage = {"user_simulator": {"calls": 12}, "critic": {"calls": 36}}
    simulated = grpo_folder(tmp_path / "sim", "simulated", [-0.5, 0.0],
                            {"futures": 8, "failed": 1, "usage": usage})
    out = tmp_path / "report.html"
    result = rlff_esc("report", str(model), str(simulated), "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    compared = html.split("<h2>GRPO runs compared</h2>", 1)[1].split("</section>", 1)[0]
    assert re.search(r'<img alt="grpo_runs.png" src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', compared)
    rows = re.findall(r"<tr><td>([^<]+)</td>((?:<td>[^<]*</td>)+)</tr>", compared)
    cells = {label: re.findall(r"<td>([^<]*)</td>", rest) for label, rest in rows}
    assert cells["rm (model)"][:2] == ["3", "10.000"] and cells["rm (model)"][5] == "-"
    assert cells["sim (simulated)"][5:7] == ["24.000", "1"]  # (12 + 36) calls over 2 steps; one failed future


def test_a_rewards_folder_shows_its_stats_and_out_may_name_a_missing_folder(tmp_path):
    rewards = tmp_path / "dr"
    rewards.mkdir()
    stats = {"records": 480, "scored": 478, "contexts": 120, "failed": ["k1", "k2"], "success_rate": 0.027,
             "mean_K": 1.0, "label_balance": 0.317, "delta": -0.6, "formula": "terminal_efficiency", "r_fut_mean": -0.594,
             "r_fut_std": 0.424, "same_label_context_share": None, "within_context_r_fut_std": None,
             "calls": {"critic": {"calls": 480}}, "llm_calls_per_record": 2.5, "invalid_critic_rate": 0.0}
    (rewards / "stats.json").write_text(json.dumps(stats))
    out = tmp_path / "not" / "yet" / "report.html"
    result = rlff_esc("report", str(rewards), "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    table = out.read_text().split("<th>D_r</th>", 1)[1].split("</table>", 1)[0]
    cells = dict(re.findall(r"<tr><td>([^<]+)</td><td>([^<]*)</td></tr>", table))
    assert cells["label balance"] == "0.317" and cells["llm calls per record"] == "2.500"
    assert cells["records"] == "480" and cells["failed records"] == "2" and cells["same label context share"] == "-"
