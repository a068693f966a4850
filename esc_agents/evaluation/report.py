"""`report`: one self-contained HTML file for any mix of run folders (simulate, compare, bias,
train-rm, train-grpo): tables, the folders' PNG plots embedded, resolved configs, and the
dialogues behind them in the embedded viewer (`rlff-esc view`). No external asset, so the file
can be mailed or attached to a paper's supplement."""

from __future__ import annotations

import base64
import json
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError
from esc_agents.core.runlog import read_unique
from esc_agents.evaluation.bias import pooled_heading, relabel_bias, row_names
from esc_agents.evaluation.compare import bigram_text, forged_text, relabel_comparison
from esc_agents.evaluation.labels import check_labels, rename
from esc_agents.evaluation.metrics import current_summary, incomplete, p_text, with_count_warnings
from esc_agents.evaluation.viewer import load_folder, viewer_parts

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.85em}section{border-top:2px solid #444;margin-top:2em}
td:not(:first-child){white-space:nowrap}.bias-example{margin:.4em 0 .8em;max-width:760px}
.bias-example p{margin:.25em 0;padding:.3em .6em;border-radius:.6em}.bias-seeker{background:#eef3fb;margin-right:4em}
.bias-supporter{background:#eef8ee;margin-left:4em}.bias-vote{color:#666;font-size:.85em}
table.wrap-last td:last-child{white-space:normal;text-align:left;min-width:20em}"""


def _table(header: list[str], rows: list[list[Any]], css_class: str | None = None) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
            return f"[{value[0]:.3f}, {value[1]:.3f}]"
        return escape("-" if value is None else str(value))

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    opening = f'<table class="{css_class}">' if css_class else "<table>"
    return f"{opening}<tr>{head}</tr>{body}</table>"


def _images(folder: Path) -> str:
    return "".join(
        f'<img alt="{escape(png.name)}" src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">'
        for png in sorted(folder.glob("*.png")))


def _summary_section(summary: dict[str, Any]) -> str:
    keys = ("cases", "success_rate", "success_rate_ci95", "average_turns", "average_turns_ci95", "mean_final_score",
            "mean_final_score_ci95", "final_score_cases", "invalid_critic_rate", "no_reply")
    html = "".join(f"<p>warning: {line}</p>" for line in incomplete(summary))
    html += _table(["metric", "value"], [[key, summary.get(key)] for key in keys]
                   + [["distinct_bigrams", bigram_text(summary)], ["forged_replies", forged_text(summary)]])
    for group in ("by_emotion", "by_problem"):
        rows = [[name, g["cases"], g["success_rate"], g["average_turns"]] for name, g in summary.get(group, {}).items()]
        if rows:
            html += f"<h4>{group.replace('_', ' ')}</h4>" + _table(["", "cases", "SR", "AT"], rows)
    return html


def _interval_text(bounds: list[float] | None, digits: int = 2) -> str:
    return "-" if bounds is None or None in bounds else f"[{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def _rate_with_interval(rate: float | None, bounds: list[float] | None) -> str:
    return "-" if rate is None else f"{rate:.3f} {_interval_text(bounds)}"


def _compare_section(data: dict[str, Any]) -> str:
    """Supporters' SR / AT with the counts they rest on and the share of distinct bigrams of their
    replies, paired tests, format compliance, and SR / AT per emotion and problem."""
    sr_interval = "Wilson" if data.get("intervals", {}).get("success_rate") == "wilson" else "bootstrap"
    html = _table(["supporter", "SR", f"SR 95% CI ({sr_interval})", "AT", "AT 95% CI (bootstrap)", "final score",
                   "episodes with a verdict", "no reply", "distinct bigrams", "forged replies"], [
        [label, s["success_rate"], s["success_rate_ci95"], s["average_turns"], s["average_turns_ci95"],
         s["mean_final_score"], s.get("final_score_cases"), s.get("no_reply"), bigram_text(s), forged_text(s)]
        for label, s in data["summaries"].items()])
    html += _table(["pair", "A only", "B only", "McNemar p", "turns A-B", "95% CI", "p"], [
        [pair, t["success"]["a_only"], t["success"]["b_only"], p_text(t["success"]["p_value"]),
         t["turns"]["mean_difference"], t["turns"]["ci95"],
         p_text(t["turns"]["p_value"], t["turns"].get("p_flips"), mark_monte_carlo=True)]
        for pair, t in data["pairs"].items()])
    compliance = {label: c for label, c in data.get("format_compliance", {}).items() if c.get("rate") is not None}
    if compliance:
        html += ("<h4>format compliance</h4><p>The share of each think or strategy supporter's replies that followed "
                 "its format: a think block then a response block (R<sub>fmt</sub> = 1), or one of ESConv's "
                 "strategies named in brackets first.</p>")
        html += _table(["supporter", "format", "replies", "followed", "rate", "95% CI (Wilson)"], [
            [label, c["format"], c["replies"], c["followed"], c["rate"], c["rate_ci95"]]
            for label, c in compliance.items()])
    labels = list(data["summaries"])
    for group in ("by_emotion", "by_problem"):
        if rows := data.get(group):
            html += f"<h4>{group.replace('_', ' ')}</h4><p>SR with its Wilson 95% interval, and AT, per supporter.</p>"
            html += _table([group.removeprefix("by_"), "cases"] + [f"SR {label}" for label in labels]
                           + [f"AT {label}" for label in labels], [
                [name, row["cases"]]
                + [_rate_with_interval(row["supporters"][label]["success_rate"],
                                       row["supporters"][label]["success_rate_ci95"]) for label in labels]
                + [row["supporters"][label]["average_turns"] for label in labels] for name, row in rows.items()])
    html += "".join(f"<p>warning: {escape(w)}</p>" for w in with_count_warnings(data["warnings"], data["summaries"]))
    return html


def _transcript(example: dict[str, Any]) -> str:
    outcome = "success" if example["success"] else "failure"
    final = "-" if example.get("final_score") is None else f"{example['final_score']:.2f}"
    turns = f"{example['turns']} turn{'' if example['turns'] == 1 else 's'}"
    head = (f"{escape(example['condition'])}, case {escape(str(example['case_id']))}: {outcome} after {turns}, "
            f"final critic score {final}")
    means = iter(example.get("critic_means", []))
    lines = []
    for index, message in enumerate(example["messages"]):
        vote = ""
        if message["speaker"] == "seeker" and index > 0:
            mean = next(means, None)
            vote = "" if mean is None else f' <span class="bias-vote">critic mean {mean:.2f}</span>'
        lines.append(f'<p class="bias-{escape(message["speaker"])}"><b>{escape(message["speaker"])}</b> '
                     f"{escape(message['content'])}{vote}</p>")
    return f"<p><i>{head}</i></p>{''.join(lines)}"


def _bias_section(data: dict[str, Any]) -> str:
    """Conditions, each factor's effect pooled over seeds with its test, the spread over seeds,
    the personas' axes, and one example dialogue per persona."""
    html = "".join(f"<p>warning: {escape(w)}</p>"
                   for w in with_count_warnings(data.get("warnings", []), data["conditions"]))
    html += _table(["condition", "SR", "SR 95% CI (Wilson)", "AT", "SR shift", "95% CI", "Wasserstein", "KS p",
                    "episodes with a verdict", "no reply"], [
        [label, r["success_rate"], r.get("success_rate_wilson95"), r["average_turns"], r["sr_shift"],
         r["sr_shift_ci95"], r["wasserstein"], r["ks_p_value"], r.get("final_score_cases"), r.get("no_reply")]
        for label, r in data["conditions"].items()])
    for factor, effect in data.get("factors", {}).items():
        name = factor.replace("_", " ")
        html += (f"<h4>{escape(pooled_heading(factor, effect))}</h4><p>SR over every episode of a level, with a "
                 "Wilson 95% interval on the number of cases; the shift against "
                 f"{escape(effect['reference'])} is the mean over cases of the difference in each case's success "
                 "rate, with a paired bootstrap 95% interval and a sign-flip test's p-value (a case's repeated runs "
                 "are not counted as independent cases).")
        if effect.get("friedman_p") is not None:
            html += f" Friedman test over the {len(effect['levels'])} levels: p = {p_text(effect['friedman_p'])}."
        header = [name, "runs", "episodes", "SR", "SR 95% CI (Wilson)", "AT", "no reply", "SR shift", "95% CI", "p"]
        html += "</p>" + _table(header, [
            [level, r["runs"], r["episodes"], r["success_rate"], r["success_rate_wilson95"], r["average_turns"],
             r.get("no_reply"),
             *(["reference", "-", "-"] if level == effect["reference"] else
               [r["sr_shift"], r["sr_shift_ci95"],
                p_text(r["sr_shift_p"], r.get("sr_shift_p_flips"), mark_monte_carlo=True)])]
            for level, r in effect["levels"].items()])
    spread = data.get("seed_spread", {})
    if any(s.get("sr_by_seed") for s in spread.values()):
        html += "<h4>spread over seeds</h4>" + _table(
            ["persona", "user model", "critic model", "runs", "SR by seed", "mean", "std", "min", "max"], [
                key.split("|") + [s["runs"], ", ".join(f"{seed}: {rate:.3f}" for seed, rate in s["sr_by_seed"].items()),
                                  s["sr_mean"], s["sr_std"], s["sr_min"], s["sr_max"]]
                for key, s in spread.items()])
    if personas := data.get("personas"):
        axes = sorted({axis for persona in personas.values() for axis in persona["axes"]})
        header = ["persona", *(axis.replace("_", " ") for axis in axes), "given as", "description"]
        html += "<h4>personas</h4>" + _table(header, [
            [label, *(p["axes"].get(axis) for axis in axes), p["given"], p["description"]]
            for label, p in personas.items()], css_class="wrap-last")  # descriptions wrap, numbers do not
    if examples := data.get("examples"):
        html += "<h4>one dialogue per persona</h4>" + "".join(
            f'<details class="bias-example" open><summary>{escape(persona)}</summary>{_transcript(example)}</details>'
            for persona, example in examples.items())
    return html


def _section(folder: Path, viewer_index: int | None, names: dict[str, str]) -> str:
    parts = []
    if (folder / "compare.json").exists():
        parts.append(_compare_section(relabel_comparison(json.loads((folder / "compare.json").read_text()), names)))
    if (folder / "bias.json").exists():
        parts.append(_bias_section(relabel_bias(json.loads((folder / "bias.json").read_text()), names)))
    if (folder / "judge.json").exists():
        data = json.loads((folder / "judge.json").read_text())
        parts.append(_table(["criterion", "win", "tie", "loss", "win rate 95% CI"], [
            [name, c["win"], c["tie"], c["loss"], c["win_rate_ci95"]] for name, c in data["criteria"].items()]))
    if (folder / "summary.json").exists():
        parts.append(_summary_section(current_summary(folder)))
    if (folder / "stats.json").exists():  # a rewards folder after `rewards stats`
        stats = json.loads((folder / "stats.json").read_text())
        parts.append(_table(["D_r", "value"], [
            [key.replace("_", " "), stats.get(key)] for key in REWARD_STATS if key in stats]
            + [["failed records", len(stats.get("failed", []))]]))
    if (folder / "metrics.json").exists():
        metrics = json.loads((folder / "metrics.json").read_text())
        parts.append(_table(["metric", "value"], [[k, v] for k, v in metrics.items()
                                                   if isinstance(v, (int, float, str)) or v is None]))
    parts.append(_images(folder))
    if viewer_index is not None:
        parts.append(f'<p><a href="#f={viewer_index}" onclick="document.getElementById(\'dialogues\').scrollIntoView()">'
                     "Read its dialogues</a> in the viewer below.</p>")
    for name in ("run.json", "train_config.json"):
        if (folder / name).exists():
            parts.append(f"<details><summary>{name}</summary><pre>{escape((folder / name).read_text())}</pre></details>")
    return f"<section><h2>{escape(rename(names, folder.name))}</h2>{''.join(parts)}</section>"


GRPO_PANELS = {"reward (total)": "reward", "R_fut": "rewards/r_fut/mean", "R_fmt": "rewards/r_fmt/mean", "KL": "kl",
               "completion length": "completions/mean_length"}
LINE_STYLES = ("-", "--", ":", "-.")


def _grpo_runs(folders: list[Path]) -> dict[str, dict[str, Any]]:
    """train-grpo folders (grpo.json and metrics.json), labelled by folder name and reward mode."""
    runs = {}
    for folder in folders:
        if (folder / "grpo.json").exists() and (folder / "metrics.json").exists():
            metrics = json.loads((folder / "metrics.json").read_text())
            mode = metrics.get("reward", "model")
            runs[folder.name if folder.name == mode else f"{folder.name} ({mode})"] = metrics
    return runs


def _grpo_comparison(runs: dict[str, dict[str, Any]], scratch: Path) -> str:
    """The training runs' curves on shared axes, and what each step cost."""
    from esc_agents.core.plotting import figure_file

    figure = scratch / "grpo_runs.png"
    with figure_file(figure, xlabel="step", ylabel="", panels=len(GRPO_PANELS), shared_legend=True) as axes:
        for axis, (title, key) in zip(axes, GRPO_PANELS.items()):
            axis.set_title(title, fontsize=9)
            for index, (label, metrics) in enumerate(runs.items()):
                points = [(entry["step"], entry[key]) for entry in metrics["history"] if key in entry]
                if points:  # line styles differ so that identical curves stay visible
                    axis.plot(*zip(*points), marker=".", label=label, linestyle=LINE_STYLES[index % len(LINE_STYLES)])
        axes[0].legend(fontsize=7)
    rows = []
    for label, metrics in runs.items():
        steps = max(metrics["steps"], 1)
        simulation = metrics.get("simulation") or {}
        calls = sum(usage["calls"] for usage in simulation.get("usage", {}).values()) / steps if simulation else None
        rows.append([label, metrics["steps"], metrics["train_seconds"] / steps, metrics.get("reward_last"),
                     metrics.get("r_fut_last"), metrics.get("r_fmt_last"), calls, simulation.get("failed"),
                     metrics.get("spearman_last")])
    table = _table(["run", "steps", "s/step", "reward", "R_fut", "R_fmt", "LLM requests/step", "failed futures",
                    "RM-vs-simulated Spearman"], rows)
    note = ("<p>Last logged values. R_fut is on the reward model's scale (P(label 1) for classification) in "
            "model and hybrid runs and on the R_fut formula's scale in simulated runs.</p>")
    return f"<section><h2>GRPO runs compared</h2>{table}{note}{_images(scratch)}</section>"


REWARD_STATS = ("records", "scored", "contexts", "formula", "delta", "label_balance", "r_fut_mean", "r_fut_std",
                "success_rate", "mean_K", "cut_short", "same_label_context_share", "within_context_r_fut_std",
                "llm_calls_per_record", "llm_calls_per_record_with_cache", "invalid_critic_rate")
KNOWN_OUTPUTS = ("compare.json", "bias.json", "judge.json", "summary.json", "metrics.json", "stats.json",
                 "trajectories.jsonl", "records.jsonl")


def table_rows(folders: list[Path]) -> list[list[str]]:
    """The rows of the tables a report (and its LaTeX) would show that `--labels` may rename: the
    folders, each compare folder's supporters, each bias folder's conditions and factor levels."""
    tables = [[folder.name for folder in folders]]
    for folder in folders:
        if (folder / "compare.json").exists():
            tables.append(list(json.loads((folder / "compare.json").read_text())["summaries"]))
        if (folder / "bias.json").exists():
            tables += row_names(json.loads((folder / "bias.json").read_text()))
    return tables


def write_report(folders: list[Path], out: Path, labels: dict[str, str] | None = None) -> Path:
    """The report of `folders`; `labels`: display names for folders, supporters, conditions and
    levels, refused when one names no row."""
    names = labels or {}
    for folder in folders:
        if not folder.is_dir() or not any((folder / name).exists() for name in KNOWN_OUTPUTS):
            raise UserError(f"{folder} holds no simulate, compare, bias, judge, rewards or training output")
        for name, key in (("trajectories.jsonl", "case_id"), ("records.jsonl", "key")):
            if (folder / name).exists():
                read_unique(folder / name, key)  # a key held twice is refused, as evaluate and stats refuse it
    check_labels(names, table_rows(folders))
    viewable, sections = [], []
    for folder in folders:
        try:
            document = load_folder(folder)
        except UserError:  # e.g. a compare folder whose runs were not copied along: tables only
            document = None
        sections.append(_section(folder, len(viewable) if document else None, names))
        viewable += [document] if document else []
    body = "".join(sections)
    if len(runs := _grpo_runs(folders)) > 1:
        with tempfile.TemporaryDirectory() as scratch:
            body = _grpo_comparison(runs, Path(scratch)) + body
    style = STYLE
    if viewable:
        viewer_style, viewer = viewer_parts(viewable)
        style += viewer_style
        body += f'<section id="dialogues"><h2>Dialogues</h2>{viewer}</section>'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>rlff-esc report</title>"
                   f"<style>{style}</style></head><body><h1>rlff-esc report</h1>{body}</body></html>")
    return out
