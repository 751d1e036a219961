"""``reports/index.html``: every result of a run on one page that opens anywhere, offline.

The page is self-contained: no script, no stylesheet, font or image from elsewhere. Charts
are SVG drawn by matplotlib (:mod:`busseg.report_figures`) and overlays are the evaluate
stage's PNGs, both embedded as ``data:`` URIs, so the file can be mailed or opened from a
server without internet. It holds:

* the summary table (``metrics/summary.json``) and the train-on-X / test-on-Y matrix;
* per dataset: the warm-up and training curves (dvclive's ``plots/metrics/*.tsv``), the
  pseudo labels' Dice against coverage, the refinement rounds' label quality (when there
  are rounds), and the best, median and worst test cases (ground truth green, prediction red).

The same inputs give the same bytes (no date, fixed SVG ids), as a DVC output must.
"""
from __future__ import annotations

import base64
import csv
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busseg.cases import CASES
from busseg.errors import DataError
from busseg.report import format_value, read_json
from busseg.report_figures import Series, coverage_svg, curves_svg, rounds_svg

#: dvclive series of a training run, grouped into the panels of its chart: (title, y label, names).
CURVE_PANELS = (
    ("losses", "loss", ("loss", "loss_s", "loss_u", "loss_c")),
    ("validation", "Dice", ("val_dice",)),
)

STYLE = """
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
.table { overflow-x: auto; margin: 0.5em 0 1em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
figure { margin: 0.5em 0 1.5em; }
figure.chart img { max-width: 100%; height: auto; }
.cases { display: flex; flex-wrap: wrap; gap: 1em; }
.cases img { width: 300px; height: auto; image-rendering: pixelated; border: 1px solid #ccc; }
.note { color: #666; }
.legend-truth { color: #00a000; font-weight: bold; }
.legend-pred { color: #e02020; font-weight: bold; }
"""


@dataclass(frozen=True)
class ReportSources:
    """Where the report reads each dataset's material (folders holding ``<dataset>/...``)."""

    train_live: Path  #: dvclive folders of the train stage: <dataset>/plots/metrics/*.tsv
    warmup_live: Path  #: the same for the warm-up (static teacher)
    pseudo_reports: Path  #: <dataset>/dice_vs_coverage.csv
    eval_reports: Path  #: <dataset>/cases/{cases.json,best.png,median.png,worst.png}
    refine_metrics: Path  #: <dataset>.json of the refine stage


@dataclass
class DatasetMaterial:
    """One dataset's material for the page, as read by :func:`read_dataset_material`."""

    name: str
    warmup: dict[str, Series] = field(default_factory=dict)
    train: dict[str, Series] = field(default_factory=dict)
    coverage: tuple[list[float], list[float]] | None = None
    rounds: list[dict[str, float]] = field(default_factory=list)
    cases: list[tuple[str, str, float, bytes]] = field(default_factory=list)  #: (case, id, dice, PNG)


def read_dvclive_series(folder: Path) -> dict[str, Series]:
    """``{name: (steps, values)}`` from dvclive's ``<folder>/*.tsv`` (columns ``step``, ``<name>``).

    A missing folder gives an empty dict (e.g. a run without that stage's live output).
    """
    series: dict[str, Series] = {}
    if not folder.is_dir():
        return series
    for path in sorted(folder.glob("*.tsv")):
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        name = path.stem
        try:
            series[name] = ([float(r["step"]) for r in rows], [float(r[name]) for r in rows])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(path, f"expected dvclive columns 'step' and '{name}': {exc}") from None
    return series


def read_coverage_curve(path: Path) -> tuple[list[float], list[float]] | None:
    """``(coverage, dice)`` from the pseudo_label stage's ``dice_vs_coverage.csv``; None if absent."""
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return [float(r["coverage"]) for r in rows], [float(r["dice"]) for r in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(path, f"expected columns 'coverage' and 'dice': {exc}") from None


def read_refine_rounds(path: Path) -> list[dict[str, float]]:
    """Label quality per round ``[round_0, round_1, ...]`` when the refine stage ran rounds, else []."""
    if not path.is_file():
        return []
    metrics = read_json(path)
    rounds = int(metrics.get("rounds", 0))
    if rounds <= 0:
        return []
    return [dict(metrics.get(f"round_{i}", {})) for i in range(rounds + 1)]


def read_cases(folder: Path) -> list[tuple[str, str, float, bytes]]:
    """``(case, id, dice, PNG bytes)`` for best, median and worst from the evaluate stage's
    ``cases`` folder (``cases.json`` and ``<case>.png``); [] when the folder is absent."""
    listing_path = folder / "cases.json"
    if not listing_path.is_file():
        return []
    listing = read_json(listing_path)
    cases = []
    for case in CASES:
        if case not in listing:
            continue
        picture = folder / f"{case}.png"
        if not picture.is_file():
            raise DataError(picture, "listed in cases.json but missing; re-run evaluate")
        cases.append((case, str(listing[case]["id"]), float(listing[case]["dice"]), picture.read_bytes()))
    return cases


def read_dataset_material(name: str, sources: ReportSources) -> DatasetMaterial:
    """Everything the page shows for dataset ``name`` (parts that are missing stay empty)."""
    return DatasetMaterial(
        name=name,
        warmup=read_dvclive_series(sources.warmup_live / name / "plots" / "metrics"),
        train=read_dvclive_series(sources.train_live / name / "plots" / "metrics"),
        coverage=read_coverage_curve(sources.pseudo_reports / name / "dice_vs_coverage.csv"),
        rounds=read_refine_rounds(sources.refine_metrics / f"{name}.json"),
        cases=read_cases(sources.eval_reports / name / "cases"),
    )


def data_uri(payload: bytes | str, mime: str) -> str:
    """``payload`` as a base64 ``data:`` URI (str payloads as UTF-8)."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")


def _chart(svg: str, alt: str) -> str:
    """An SVG chart as an ``<img>`` with a data URI (its ids stay apart from other charts')."""
    return f'<figure class="chart"><img alt="{html.escape(alt)}" src="{data_uri(svg, "image/svg+xml")}"></figure>'


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; cells are formatted like the markdown table's and escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_value(c) if c is not None else '')}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def summary_section(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """The summary table: one row per dataset, one column per metric."""
    columns: list[str] = []
    for row in summary.values():
        columns.extend(k for k in row if k not in columns)
    rows = [[name, *(row.get(c) for c in columns)] for name, row in summary.items()]
    return "<h2>Summary</h2>" + html_table(["dataset", *columns], rows)


def cross_section(matrix: Mapping[str, Mapping[str, float | None]], metric: str = "dice") -> str:
    """The train-on-row / test-on-column matrix; empty when there is none."""
    if not matrix:
        return ""
    tests = list(next(iter(matrix.values())))
    rows = [[train, *(matrix[train].get(test) for test in tests)] for train in matrix]
    return (
        "<h2>Across datasets</h2>"
        f'<p class="note">Test {html.escape(metric)} of the student trained on the row\'s dataset, '
        "tested on the column's (the diagonal is the ordinary evaluation).</p>"
        + html_table([f"train \\ test ({metric})", *tests], rows)
    )


def _curve_panels(series: Mapping[str, Series]) -> list[tuple[str, str, dict[str, Series]]]:
    """:data:`CURVE_PANELS` filled with the ``series`` a run recorded (absent names left out)."""
    return [(title, ylabel, {n: series[n] for n in names if n in series}) for title, ylabel, names in CURVE_PANELS]


def dataset_section(material: DatasetMaterial) -> str:
    """Curves, pseudo-label quality, refinement rounds and overlays of one dataset."""
    name = material.name
    parts = [f'<h2 id="dataset-{html.escape(name)}">Dataset {html.escape(name)}</h2>']
    for label, series in (("Warm-up (static teacher on pseudo labels)", material.warmup), ("Training (student)", material.train)):
        panels = _curve_panels(series)
        if any(curves for _, _, curves in panels):
            parts.append(f"<h3>{label}</h3>" + _chart(curves_svg(panels, f"{name}: {label}"), f"{name} {label} curves"))
        else:
            parts.append(f'<h3>{label}</h3><p class="note">No curves recorded.</p>')
    parts.append("<h3>Pseudo labels: Dice against coverage</h3>")
    if material.coverage and material.coverage[0]:
        parts.append(
            '<p class="note">Keeping only the labels scoring above a threshold: the share of images '
            "kept (coverage) and the Dice of those kept, against the ground truth.</p>"
            + _chart(coverage_svg(*material.coverage, f"{name}: pseudo-label quality"), f"{name} Dice vs coverage")
        )
    else:
        parts.append('<p class="note">No pseudo-label curve recorded.</p>')
    if material.rounds:
        parts.append(
            "<h3>Label refinement</h3>"
            + _chart(rounds_svg(material.rounds, f"{name}: train-split labels per round"), f"{name} refinement rounds")
        )
    parts.append("<h3>Test cases: best, median and worst by Dice</h3>")
    if material.cases:
        parts.append(
            '<p class="note">Among the test images with a lesion. Left: the image; right: '
            '<span class="legend-truth">ground truth</span> and <span class="legend-pred">prediction</span> '
            'outlines.</p><div class="cases">'
        )
        for case, image_id, dice, png in material.cases:
            caption = f"{case}: {image_id}, Dice {dice:.4f}"
            parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="{data_uri(png, "image/png")}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append("</div>")
    else:
        parts.append('<p class="note">No test cases recorded.</p>')
    return "\n".join(parts)


def build_report_html(
    title: str,
    description: str,
    summary: Mapping[str, Mapping[str, Any]],
    cross: Mapping[str, Mapping[str, float | None]],
    materials: Sequence[DatasetMaterial],
) -> str:
    """The whole page as one string (self-contained, deterministic)."""
    nav = " · ".join(f'<a href="#dataset-{html.escape(m.name)}">{html.escape(m.name)}</a>' for m in materials)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(description)}</p>",
        f"<p>Datasets: {nav}</p>" if nav else "",
        summary_section(summary),
        cross_section(cross),
        *(dataset_section(m) for m in materials),
        '<p class="note">Written by the busseg report stage; self-contained, it opens without a network.</p>',
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )
