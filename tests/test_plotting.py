"""Figures: legends sit outside the data area in every layout, and up to 12 lines get 12
distinct colours."""

from contextlib import contextmanager
from itertools import combinations

import numpy as np
from matplotlib.colors import to_rgb

from esc_agents.core.plotting import PALETTE, figure_file
from esc_agents.evaluation import metrics
from esc_agents.evaluation.metrics import plot_success_by_turn


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _renderer(figure):
    """A closed figure keeps its layout; a fresh Agg canvas measures it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg(figure).get_renderer()


def _boxes(axis):
    renderer = _renderer(axis.figure)
    return axis.get_legend().get_window_extent(renderer), axis.get_window_extent(renderer)


def test_twelve_lines_get_twelve_distinct_colours_and_a_legend_beside_the_data(tmp_path, monkeypatch):
    curves = {f"supporter number {i}": {str(t): (i + t) / 20 for t in range(1, 9)} for i in range(12)}
    captured = []

    @contextmanager
    def keeping_the_axis(*args, **kwargs):
        with figure_file(*args, **kwargs) as axis:
            captured.append(axis)
            yield axis

    monkeypatch.setattr(metrics, "figure_file", keeping_the_axis)
    plot_success_by_turn(curves, tmp_path / "sr.png")
    (axis,) = captured
    colours = [to_rgb(line.get_color()) for line in axis.get_lines()]
    assert len(colours) == 12 and len(set(colours)) == 12
    assert min(np.abs(np.subtract(a, b)).sum() for a, b in combinations(colours, 2)) > 0.15
    legend, data = _boxes(axis)
    assert len(axis.get_legend().get_texts()) == 12
    assert not _overlaps(legend, data) and legend.x0 >= data.x1
    assert (tmp_path / "sr.png").stat().st_size > 0
    assert len(PALETTE) == 12 == len(set(PALETTE))


def test_a_legend_the_caller_made_inside_is_moved_out_in_every_layout(tmp_path):
    x = np.arange(10)
    with figure_file(tmp_path / "one.png", xlabel="x", ylabel="y") as axis:
        for k in range(3):
            axis.plot(x, x * k, label=f"line {k}")
        axis.legend(fontsize=7)  # matplotlib's "best" would sit on the data
    legend, data = _boxes(axis)
    assert not _overlaps(legend, data) and legend.x0 >= data.x1
    assert axis.get_legend().get_texts()[0].get_fontsize() == 7

    with figure_file(tmp_path / "panels.png", xlabel="step", ylabel="", panels=3) as axes:
        for axis in axes:
            axis.plot(x, x, label="a")
            axis.plot(x, -x, label="b")
            axis.legend(fontsize=7)
    for axis in axes:
        legend, data = _boxes(axis)
        renderer = _renderer(axis.figure)
        assert not any(_overlaps(legend, other.get_window_extent(renderer)) for other in axes), "legend covers a panel"
        assert legend.y1 <= data.y0

    with figure_file(tmp_path / "shared.png", xlabel="step", ylabel="", panels=2, shared_legend=True) as axes:
        for axis in axes:
            axis.plot(x, x, label="run a")
            axis.plot(x, x + 1, label="run b")
    assert axes[0].get_legend() is None and [t.get_text() for t in axes[1].get_legend().get_texts()] == ["run a", "run b"]
    legend, _ = _boxes(axes[1])
    renderer = _renderer(axes[1].figure)
    assert not any(_overlaps(legend, other.get_window_extent(renderer)) for other in axes)
