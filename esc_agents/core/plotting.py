"""One way to make a figure file, so every plot of the project has the same backend, size and
finish, and none leaks a pyplot figure."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def figure_file(path: Path, *, xlabel: str, ylabel: str, size: tuple[float, float] | None = None,
                panels: int | None = None, shared_legend: bool = False) -> Iterator:
    """Yields a matplotlib axis (or, with `panels`, a list of that many axes side by side); on
    exit the figure is written to `path` (PNG) and closed. `shared_legend`: the panels plot the
    same series, so only the first gets a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = panels or 1
    figure, axes = plt.subplots(1, count, figsize=size or (5 if count == 1 else 3.2 * count, 3.5), squeeze=False)
    axes = list(axes[0])
    try:
        yield axes if panels else axes[0]
        for index, axis in enumerate(axes):
            axis.set_xlabel(xlabel)
            axis.set_ylabel(ylabel)
            axis.grid(alpha=0.3)
            if shared_legend and index > 0:
                continue
            if axis.get_legend_handles_labels()[0] and axis.get_legend() is None:
                axis.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
    finally:
        plt.close(figure)
