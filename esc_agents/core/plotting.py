"""One way to make a figure file, so every plot of the project has the same backend, size and
finish, and none leaks a pyplot figure.

Every figure draws its lines from one 12-colour qualitative palette (no two lines of a figure with
up to 12 series share a colour), and legends are placed outside the axes, never over the data:
right of the axes for one panel or for panels sharing their series, under each panel otherwise.
The saved image is widened (`bbox_inches="tight"`) to hold them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# matplotlib's tab10 plus black and a dark olive: 12 colours that stay apart (CIELAB ΔE ≥ 27).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#000000", "#637939")
LEGEND_GAP = 0.02  # between the axes (or their tick labels) and the legend, in axes fractions


def _legend_entries(axes: list) -> tuple[list, list[str], float | None]:
    """Handles and labels over `axes` (the first of each label), and the font size of a legend a
    caller made itself (e.g. `axis.legend(fontsize=7)`), which is removed to be placed again."""
    handles, labels, fontsize = [], [], None
    for axis in axes:
        if (legend := axis.get_legend()) is not None:
            if legend.get_texts() and fontsize is None:
                fontsize = legend.get_texts()[0].get_fontsize()
            legend.remove()
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    return handles, labels, fontsize


def _place_legends(figure, axes: list, shared: bool) -> None:
    """Legends outside the data area, on axes already laid out."""
    groups = [axes] if shared or len(axes) == 1 else [[axis] for axis in axes]
    entries = [_legend_entries(group) for group in groups]
    figure.tight_layout()
    if len(groups) == 1:
        handles, labels, fontsize = entries[0]
        if handles:
            axes[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1 + LEGEND_GAP, 1), borderaxespad=0,
                            fontsize=fontsize or ("small" if len(labels) > 6 else None))
        return
    renderer = figure.canvas.get_renderer()
    for axis, (handles, labels, fontsize) in zip(axes, entries):
        if not handles:
            continue
        # under the tick labels and the x label: their lowest pixel, in axes fractions
        bottom = axis.get_tightbbox(renderer).y0
        box = axis.get_window_extent(renderer)
        top = (bottom - box.y0) / box.height - LEGEND_GAP
        axis.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, top), borderaxespad=0,
                    fontsize=fontsize or "small")


@contextmanager
def figure_file(path: Path, *, xlabel: str, ylabel: str, size: tuple[float, float] | None = None,
                panels: int | None = None, shared_legend: bool = False) -> Iterator:
    """Yields a matplotlib axis (or, with `panels`, a list of that many axes side by side); on
    exit the figure is written to `path` (PNG) and closed. `shared_legend`: the panels plot the
    same series, so one legend (right of the last panel) names them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    count = panels or 1
    with plt.rc_context({"axes.prop_cycle": cycler(color=list(PALETTE))}):  # read when the axes are made
        figure, axes = plt.subplots(1, count, figsize=size or (5 if count == 1 else 3.2 * count, 3.5), squeeze=False)
    axes = list(axes[0])
    try:
        yield axes if panels else axes[0]
        for axis in axes:
            axis.set_xlabel(xlabel)
            axis.set_ylabel(ylabel)
            axis.grid(alpha=0.3)
        _place_legends(figure, axes, shared_legend)
        figure.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)
