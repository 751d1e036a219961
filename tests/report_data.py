"""Fabricated results of a finished run, laid out as the pipeline writes them, for report tests.

:func:`fabricate_results` writes metrics/, dvclive curves, the Dice-coverage CSV and the
evaluate stage's best/median/worst cases under a folder, small and with no training needed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from busseg.report_html import ReportSources
from busseg.visualize import render_overlay


def _tsv(path: Path, name: str, values: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{name}\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values)))


def _case_png(path: Path, shift: int) -> None:
    """An overlay like evaluate's: a disc as the truth, the same disc shifted as the prediction."""
    yy, xx = np.mgrid[:48, :48]
    image = (80 + 100 * ((yy - 24) ** 2 + (xx - 24) ** 2 > 144)).astype(np.uint8)
    truth = (yy - 24) ** 2 + (xx - 24) ** 2 <= 144
    pred = (yy - 24) ** 2 + (xx - 24 - shift) ** 2 <= 144
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_overlay(image, truth, pred)).save(path)


def fabricate_results(root: Path, datasets: tuple[str, ...] = ("alpha", "beta"), rounds: int = 1) -> ReportSources:
    """Write a run's results for ``datasets`` under ``root`` (paths as in dvc.yaml)."""
    for k, name in enumerate(datasets):
        dice = 0.7 - 0.1 * k
        for folder, payload in (
            ("metrics/eval", {"dice": dice, "iou": dice - 0.1, "accuracy": 0.97, "hd95": 20.0 + k, "n_images": 9}),
            ("metrics/pseudo", {"dice": 0.65, "dice_valid": 0.66, "coverage": 0.95, "hit_rate": 0.8}),
            ("metrics/refine", {"rounds": rounds, **{f"round_{r}": {"dice": 0.6 + 0.05 * r, "coverage": 1.0, "hit_rate": 0.7 + 0.05 * r} for r in range(rounds + 1)}}),
        ):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{name}.json").write_text(json.dumps(payload))
        for other in datasets:
            (root / "metrics/cross" / name).mkdir(parents=True, exist_ok=True)
            cross = {} if other == name else {"dice": 0.4 + 0.05 * k}
            (root / "metrics/cross" / name / f"{other}.json").write_text(json.dumps(cross))
        live = {"warmup": ("loss", "loss_s", "val_dice", "lr"), "train": ("loss", "loss_s", "loss_u", "loss_c", "val_dice", "lr")}
        for stage, names in live.items():
            for series in names:
                values = [round(0.5 + 0.05 * e, 4) if series == "val_dice" else round(1.0 / (e + 1), 4) for e in range(5)]
                _tsv(root / "reports" / stage / name / "plots/metrics" / f"{series}.tsv", series, values)
        curve = root / "reports/pseudo" / name / "dice_vs_coverage.csv"
        curve.parent.mkdir(parents=True, exist_ok=True)
        curve.write_text("min_score,coverage,dice\n" + "".join(f"{1 - c / 10},{c / 10},{0.9 - 0.2 * c / 10}\n" for c in range(1, 11)))
        cases = root / "reports/eval" / name / "cases"
        listing = {}
        for shift, case in zip((1, 4, 9), ("best", "median", "worst")):
            _case_png(cases / f"{case}.png", shift)
            listing[case] = {"id": f"{name}_{shift:04d}", "dice": round(1 - shift / 12, 6)}
        (cases / "cases.json").write_text(json.dumps(listing, indent=2))
    return ReportSources(root / "reports/train", root / "reports/warmup", root / "reports/pseudo", root / "reports/eval", root / "metrics/refine")


def build_fabricated_report(root: Path, datasets: tuple[str, ...] = ("alpha", "beta"), rounds: int = 1) -> str:
    """The HTML page for :func:`fabricate_results`'s run, as the report stage builds it."""
    from busseg.report import build_summary, cross_matrix
    from busseg.report_html import build_report_html, read_dataset_material

    sources = fabricate_results(root, datasets, rounds)
    summary = build_summary(root / "metrics/eval", root / "metrics/pseudo", list(datasets), root / "metrics/refine")
    cross = cross_matrix(root / "metrics/eval", root / "metrics/cross", list(datasets))
    materials = [read_dataset_material(name, sources) for name in datasets]
    return build_report_html("busseg results", "a fabricated run", summary, cross, materials)
