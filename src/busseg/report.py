"""The cross-dataset summary: ``metrics/summary.json`` and a markdown results table."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from busseg.errors import ConfigError, DataError
from busseg.metrics import METRIC_NAMES

EVAL_KEYS = (*METRIC_NAMES, "n_images")
PSEUDO_KEYS = ("dice", "dice_valid", "coverage", "hit_rate")


def read_json(path: Path) -> Any:
    """The JSON document in ``path``; a :class:`DataError` naming the file when it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc}") from None


def _read_json_dir(folder: Path) -> dict[str, dict[str, Any]]:
    if not folder.is_dir():
        return {}
    return {path.stem: read_json(path) for path in sorted(folder.glob("*.json"))}


def build_summary(
    eval_dir: str | Path, pseudo_dir: str | Path, datasets: list[str], refine_dir: str | Path | None = None
) -> dict[str, dict[str, float]]:
    """Nested ``dataset -> metric`` (so ``dvc metrics diff`` prints ``synthetic.dice``).

    Pseudo-label quality enters as ``pseudo_dice``, ``pseudo_coverage``, ...; a dataset with
    scans that have no mask (unlabeled, never scored) says how many as ``n_unmasked_scans``; with
    ``refine_dir`` and at least one refinement round, the train split's labels before and
    after the rounds as ``train_labels_dice`` and ``refined_labels_dice`` (the same images;
    "after" is the last accepted round).
    An empty ``datasets`` is an error: an empty table would look like a finished run.
    """
    if not datasets:
        raise ConfigError("datasets", "no dataset declared; add at least one entry (kind, root, options)")
    evals, pseudos = _read_json_dir(Path(eval_dir)), _read_json_dir(Path(pseudo_dir))
    refines = _read_json_dir(Path(refine_dir)) if refine_dir is not None else {}
    summary: dict[str, dict[str, float]] = {}
    for name in datasets:
        if name not in evals:
            raise DataError(Path(eval_dir) / f"{name}.json", "evaluation metrics missing; run evaluate first")
        row = {key: evals[name][key] for key in EVAL_KEYS if key in evals[name]}
        for key in PSEUDO_KEYS:
            if key in pseudos.get(name, {}):
                row[f"pseudo_{key}"] = pseudos[name][key]
        if "n_unmasked" in pseudos.get(name, {}):  # scans without a mask: trained on, never scored
            row["n_unmasked_scans"] = pseudos[name]["n_unmasked"]
        refined = refines.get(name, {})
        # The labels kept are those of the last accepted round (a rejected round's are dropped).
        last = refined.get(f"round_{refined.get('accepted_round', refined.get('rounds', 0))}", {})
        if refined.get("rounds", 0) > 0 and "dice" in refined.get("round_0", {}) and "dice" in last:
            row["train_labels_dice"] = refined["round_0"]["dice"]
            row["refined_labels_dice"] = last["dice"]
        summary[name] = row
    return summary


def format_value(value: Any) -> str:
    """A table cell: floats with 4 decimals (``nan`` for NaN), anything else as ``str``."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(summary: dict[str, dict[str, float]], header: str = "") -> str:
    """A markdown table with one row per dataset."""
    columns: list[str] = []
    for row in summary.values():
        columns.extend(k for k in row if k not in columns)
    lines = [header] if header else []
    lines.append("| dataset | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for name, row in summary.items():
        lines.append(f"| {name} | " + " | ".join(format_value(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def cross_matrix(
    eval_dir: str | Path, cross_dir: str | Path, datasets: list[str], metric: str = "dice"
) -> dict[str, dict[str, float | None]]:
    """``train -> test -> metric`` for every pair of ``datasets`` (None where not measured).

    The diagonal comes from the ordinary evaluation; an empty dict when there is only one
    dataset or cross-dataset evaluation is switched off.
    """
    evals = _read_json_dir(Path(eval_dir))
    # cross_evaluate@<train>-<test> writes <cross_dir>/<train>/<test>.json
    cross = {train: _read_json_dir(Path(cross_dir) / train) for train in datasets}
    if len(datasets) < 2 or not any(cross.get(name) for name in datasets):
        return {}
    matrix: dict[str, dict[str, float | None]] = {}
    for train in datasets:
        matrix[train] = {}
        for test in datasets:
            source = evals.get(train, {}) if test == train else cross.get(train, {}).get(test, {})
            matrix[train][test] = source.get(metric)
    return matrix


def cross_table(eval_dir: str | Path, cross_dir: str | Path, datasets: list[str], metric: str = "dice") -> str:
    """Markdown train-on-X (rows) / test-on-Y (columns) table of ``metric`` (:func:`cross_matrix`).

    An empty string when there is only one dataset or cross-dataset evaluation is switched off.
    """
    matrix = cross_matrix(eval_dir, cross_dir, datasets, metric)
    if not matrix:
        return ""
    lines = [f"| train \\ test ({metric}) | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for train in datasets:
        cells = ["" if matrix[train][test] is None else format_value(matrix[train][test]) for test in datasets]
        lines.append(f"| {train} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
