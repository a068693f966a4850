"""LaTeX tables (booktabs) of the SR / AT numbers with their 95% intervals, since that is where
they end up: one `.tex` file per table, each a `table` environment to `\\input` into a paper
(needs `\\usepackage{booktabs}`).

  compare folder   NAME-sr-at.tex (SR, Wilson interval, AT, bootstrap interval, final score, the
                   episodes with a verdict it is over, no-reply episodes, distinct bigrams),
                   NAME-pairs.tex (McNemar on success; on turns a paired bootstrap interval and a
                   sign-flip test),
                   NAME-format.tex (format compliance of think / strategy supporters, if any)
  bias folder      NAME-conditions.tex (SR, Wilson interval, AT, SR shift against the reference,
                   episodes with a verdict, no-reply episodes),
                   NAME-persona.tex, NAME-user_model.tex, NAME-critic_model.tex (each factor that
                   varies, pooled over seeds: SR with a Wilson interval on the cases, the shift
                   with a paired-bootstrap interval and a sign-flip test's p-value)
  simulate run     NAME-sr-at.tex (one row, from its trajectories as they are now; an incomplete
                   run says so in the caption)

Numbers are rounded as printed elsewhere: rates and scores to 3 decimals, turns to 2. Where the
rows' no-reply counts or final-score n differ, the caption says so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from esc_agents.core.errors import UserError
from esc_agents.evaluation.bias import pooled_heading, relabel_bias
from esc_agents.evaluation.compare import bigram_text, relabel_comparison
from esc_agents.evaluation.labels import check_labels, rename
from esc_agents.evaluation.metrics import count_text, count_warnings, current_summary, incomplete, p_text

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape(text: Any) -> str:
    """Text as LaTeX prints it literally."""
    return re.sub(r"[\\&%$#_{}~^]", lambda match: _SPECIAL[match.group()], str(text))


def number(value: float | None, digits: int = 3) -> str:
    return "--" if value is None else f"{value:.{digits}f}"


def interval(bounds: list[float | None] | None, digits: int = 3) -> str:
    if bounds is None or None in bounds:
        return "--"
    return f"[{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def p_value(value: float | None, flips: int | None = None) -> str:
    """A p-value cell as `p_text` words it (never finer than a Monte-Carlo resolution), in LaTeX."""
    if value is None:
        return "--"
    return escape(p_text(value, flips, mark_monte_carlo=True)).replace("< ", "$<$").replace("≤ ", "$\\leq$")


def dashed(text: str) -> str:
    """A cell the other outputs show as `-` (nothing to show), as LaTeX tables show it."""
    return "--" if text == "-" else text


def _caveats(rows: dict[str, dict[str, Any]]) -> str:
    """The count warnings of a table's rows, as sentences for its caption."""
    return "".join(f" Warning: {warning}." for warning in count_warnings(rows))


def _minus(cell: str) -> str:
    """A negative number's sign as a minus, not a hyphen."""
    return re.sub(r"(?<![\w$-])-(?=\d)", "$-$", cell)


def table(header: list[str], rows: list[list[str]], caption: str, label: str, source: Path) -> str:
    """A booktabs table: the first column left-aligned, the rest right-aligned. Header and
    caption are escaped here; cells are passed already formatted."""
    columns = "l" + "r" * (len(header) - 1)
    lines = [f"% rlff-esc: from {escape(source)}; needs \\usepackage{{booktabs}}",
             "\\begin{table}[t]", "\\centering", "\\small",
             f"\\begin{{tabular}}{{{columns}}}", "\\toprule",
             " & ".join(escape(h) for h in header) + " \\\\", "\\midrule"]
    lines += [" & ".join(_minus(cell) for cell in row) + " \\\\" for row in rows]
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{escape(caption)}}}", f"\\label{{{label}}}",
              "\\end{table}", ""]
    return "\n".join(lines)


def _label(name: str, kind: str) -> str:
    return "tab:" + re.sub(r"[^A-Za-z0-9]+", "-", f"{name}-{kind}").strip("-")


def compare_tables(data: dict[str, Any], name: str, source: Path) -> dict[str, str]:
    sr_interval = "Wilson" if data.get("intervals", {}).get("success_rate") == "wilson" else "bootstrap"
    tables = {"sr-at": table(
        ["supporter", "SR", f"SR 95% CI ({sr_interval})", "AT", "AT 95% CI", "final score", "n final", "no reply",
         "distinct bigrams"],
        [[escape(label), number(s["success_rate"]), interval(s["success_rate_ci95"]), number(s["average_turns"], 2),
          interval(s["average_turns_ci95"], 2), number(s["mean_final_score"]),
          dashed(count_text(s.get("final_score_cases"))), dashed(count_text(s.get("no_reply"))), dashed(bigram_text(s))]
         for label, s in data["summaries"].items()],
        f"Success rate (SR) and average turns (AT) on {data['cases']} cases, T = {data['max_turns']}, with 95% "
        f"intervals ({sr_interval} for SR, bootstrap for AT; failures count T turns); the mean final score over the "
        "n final episodes with a verdict; no reply: episodes ended by a supporter with no usable reply (failures); "
        f"distinct bigrams: the share of distinct word bigrams of the supporter's replies.{_caveats(data['summaries'])}",
        _label(name, "sr-at"), source)}
    if data.get("pairs"):
        tables["pairs"] = table(
            ["pair", "A only", "B only", "McNemar p", "turns A-B", "95% CI", "p"],
            [[escape(pair), str(t["success"]["a_only"]), str(t["success"]["b_only"]), p_value(t["success"]["p_value"]),
              f"{t['turns']['mean_difference']:+.2f}", interval(t["turns"]["ci95"], 2),
              p_value(t["turns"]["p_value"], t["turns"].get("p_flips"))]
             for pair, t in data["pairs"].items()],
            "Paired tests on the same cases: exact McNemar on success (discordant cases won by A only and B only) "
            "and, on turns, a paired bootstrap interval with a sign-flip test's p-value.", _label(name, "pairs"),
            source)
    compliance = {label: c for label, c in data.get("format_compliance", {}).items() if c.get("rate") is not None}
    if compliance:
        tables["format"] = table(
            ["supporter", "format", "replies", "followed", "rate", "95% CI (Wilson)"],
            [[escape(label), escape(c["format"]), str(c["replies"]), str(c["followed"]), number(c["rate"]),
              interval(c["rate_ci95"])] for label, c in compliance.items()],
            "Share of supporter replies that followed their format (think: a think block then a response block; "
            "strategy: an ESConv strategy named first).", _label(name, "format"), source)
    return tables


def bias_tables(data: dict[str, Any], name: str, source: Path) -> dict[str, str]:
    tables = {"conditions": table(
        ["condition", "SR", "SR 95% CI (Wilson)", "AT", "SR shift", "95% CI", "n final", "no reply"],
        [[escape(label), number(r["success_rate"]), interval(r.get("success_rate_wilson95")),
          number(r["average_turns"], 2), f"{r['sr_shift']:+.3f}", interval(r["sr_shift_ci95"]),
          dashed(count_text(r.get("final_score_cases"))), dashed(count_text(r.get("no_reply")))]
         for label, r in data["conditions"].items()],
        f"SR and AT per condition on {data['cases']} cases, T = {data['max_turns']}; SR shift against "
        f"{data['reference']} with a paired bootstrap 95% interval; n final: episodes with a verdict; no reply: "
        f"episodes ended by a supporter with no usable reply (failures).{_caveats(data['conditions'])}",
        _label(name, "conditions"), source)}
    for factor, effect in data.get("factors", {}).items():
        title = factor.replace("_", " ")
        friedman = (f" Friedman test over the levels: p = {p_value(effect['friedman_p'])}."
                    if effect.get("friedman_p") is not None else "")
        tables[factor] = table(
            [title, "runs", "SR", "SR 95% CI (Wilson)", "AT", "no reply", "SR shift", "95% CI", "p"],
            [[escape(level), str(r["runs"]), number(r["success_rate"]), interval(r["success_rate_wilson95"]),
              number(r["average_turns"], 2), dashed(count_text(r.get("no_reply")))]
             + (["reference", "--", "--"] if level == effect["reference"] else
                [f"{r['sr_shift']:+.3f}", interval(r["sr_shift_ci95"]),
                 p_value(r["sr_shift_p"], r.get("sr_shift_p_flips"))])
             for level, r in effect["levels"].items()],
            f"The {pooled_heading(factor, effect)}: SR over all episodes of a level (Wilson "
            f"interval on the number of cases) and the shift against {effect['reference']} (paired bootstrap "
            f"interval over cases, sign-flip test).{friedman}",
            _label(name, factor), source)
    return tables


def summary_tables(data: dict[str, Any], name: str, source: Path) -> dict[str, str]:
    caveat = "".join(" " + line[0].upper() + line[1:] + "." for line in incomplete(data))
    return {"sr-at": table(
        ["run", "cases", "SR", "SR 95% CI", "AT", "AT 95% CI", "final score", "n final", "no reply"],
        [[escape(name), str(data["cases"]), number(data["success_rate"]), interval(data["success_rate_ci95"]),
          number(data["average_turns"], 2), interval(data["average_turns_ci95"], 2),
          number(data["mean_final_score"]), dashed(count_text(data.get("final_score_cases"))),
          dashed(count_text(data.get("no_reply")))]],
        f"SR and AT with 95% intervals, T = {data['max_turns']}; the mean final score over the n final episodes "
        f"with a verdict.{escape(caveat)}", _label(name, "sr-at"), source)}


def write_latex(folders: Path | list[Path], out_dir: Path, *, skip_others: bool = False,
                labels: dict[str, str] | None = None) -> list[Path]:
    """One `.tex` file per table of each compare, bias or evaluated simulate folder, written into
    `out_dir` (created) as `<folder name>-<table>.tex`; returns the files written. A folder with
    none of these is refused, or with `skip_others` passed over (`report` takes training folders
    too), as long as some folder had tables. `labels`: display names for the rows (folders,
    supporters, conditions, levels); file names keep the folders'."""
    from esc_agents.evaluation.report import table_rows

    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    names = labels or {}
    check_labels(names, table_rows(folders))
    relabel = {compare_tables: relabel_comparison, bias_tables: relabel_bias}
    makers = (("compare.json", compare_tables), ("bias.json", bias_tables), ("summary.json", summary_tables))
    written: list[Path] = []
    for folder in folders:
        found = [(folder / file, make) for file, make in makers if (folder / file).exists()]
        if not found and skip_others:
            continue
        if not found:
            raise UserError(f"{folder} holds no compare.json, bias.json or summary.json to make LaTeX tables from "
                            "(run `rlff-esc evaluate` on a simulate run first)")
        for source, make in found[:1]:  # a compare or bias folder's own summary.json, if any, is not its result
            data = current_summary(folder) if make is summary_tables else json.loads(source.read_text())
            data = relabel[make](data, names) if make in relabel else data
            shown = rename(names, folder.name) if make is summary_tables else folder.name
            for kind, text in make(data, shown, source).items():
                out_dir.mkdir(parents=True, exist_ok=True)
                path = out_dir / f"{folder.name}-{kind}.tex"
                if path in written:
                    raise UserError(f"two folders are named {folder.name}: their LaTeX tables would overwrite each "
                                    "other (give one folder another name)")
                path.write_text(text)
                written.append(path)
    if not written:
        raise UserError("none of the folders holds compare.json, bias.json or summary.json to make LaTeX tables from")
    return written
