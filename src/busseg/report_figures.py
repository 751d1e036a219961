"""The HTML report's charts, drawn with matplotlib and returned as deterministic SVG.

Deterministic means byte-identical for the same data: matplotlib writes the date into an
SVG's metadata and derives the ids of its clip paths and glyphs from a random salt unless
told otherwise, so :func:`figure_svg` renders with ``svg.hashsalt`` fixed and no date. The
style is matplotlib's default (a user's ``matplotlibrc`` cannot change the output), with
text as paths, so the SVG needs no font on the machine that opens the report.
"""
from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import matplotlib
from matplotlib import style as mpl_style
from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: One curve: x values and y values of the same length.
Series = tuple[Sequence[float], Sequence[float]]

#: Settings on top of matplotlib's default style for every chart of the report.
REPORT_RC = {
    "svg.hashsalt": "busseg-report",
    "svg.fonttype": "path",
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
}

#: SVG metadata: no creation date (it would change every render).
SVG_METADATA = {"Date": None}

PANEL_SIZE = (3.6, 2.6)  # inches per panel


@contextmanager
def report_style() -> Iterator[None]:
    """matplotlib's default style plus :data:`REPORT_RC`, whatever the user's matplotlibrc."""
    with mpl_style.context("default"), matplotlib.rc_context(REPORT_RC):
        yield


def figure_svg(fig: Figure) -> str:
    """``fig`` as SVG text, the same bytes for the same figure on every run."""
    buffer = io.StringIO()
    with report_style():
        fig.savefig(buffer, format="svg", metadata=SVG_METADATA, bbox_inches="tight")
    return buffer.getvalue()


def _new_figure(n_panels: int) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_panels`` axes side by side (call inside :func:`report_style`)."""
    fig = Figure(figsize=(PANEL_SIZE[0] * n_panels, PANEL_SIZE[1]), layout="constrained")
    return fig, [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]


def curves_svg(panels: Sequence[tuple[str, str, Mapping[str, Series]]], title: str) -> str:
    """Line charts side by side, one per ``(panel title, y label, {curve name: series})``.

    Panels without curves are left out; the x axis is the epoch (dvclive's ``step``).
    """
    panels = [panel for panel in panels if panel[2]]
    if not panels:
        raise ValueError("curves_svg: no curve to draw")
    with report_style():
        fig, axes = _new_figure(len(panels))
        for ax, (panel_title, ylabel, curves) in zip(axes, panels):
            for name, (x, y) in curves.items():
                ax.plot(x, y, marker="o", markersize=3, label=name)
            ax.set_title(panel_title)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7)
        fig.suptitle(title)
        return figure_svg(fig)


def coverage_svg(coverage: Sequence[float], dice: Sequence[float], title: str) -> str:
    """Pseudo-label Dice against coverage: keeping only the labels scoring above a threshold."""
    with report_style():
        fig, (ax,) = _new_figure(1)
        ax.plot(coverage, dice, marker="o", markersize=3)
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("coverage (share of images kept)")
        ax.set_ylabel("Dice of the kept labels")
        ax.set_title(title)
        return figure_svg(fig)


def rounds_svg(rounds: Sequence[Mapping[str, float]], title: str) -> str:
    """The train split's label quality per refinement round (round 0: the first labels).

    Each entry may hold ``dice``, ``dice_top50``, ``coverage`` and ``hit_rate``; the ones
    present are drawn against the round number.
    """
    keys = [k for k in ("dice", "dice_top50", "coverage", "hit_rate") if any(k in r for r in rounds)]
    if not keys:
        raise ValueError("rounds_svg: no label-quality value in any round")
    with report_style():
        fig, (ax,) = _new_figure(1)
        for key in keys:
            points = [(i, float(r[key])) for i, r in enumerate(rounds) if key in r]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=4, label=key)
        ax.set_xticks(range(len(rounds)))
        ax.set_xlabel("refinement round")
        ax.set_ylabel("train-split labels")
        ax.set_title(title)
        ax.legend(fontsize=7)
        return figure_svg(fig)
