"""reports/index.html: every section present, self-contained, deterministic."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from report_data import build_fabricated_report, fabricate_results

from busseg.errors import DataError
from busseg.report_html import read_cases, read_dataset_material, read_dvclive_series, read_refine_rounds


def test_page_has_every_section_and_embeds_everything(tmp_path: Path) -> None:
    page = build_fabricated_report(tmp_path)
    for text in ("Summary", "Across datasets", "Dataset alpha", "Dataset beta", "Warm-up", "Training (student)",
                 "Dice against coverage", "Label refinement", "best: alpha_0001, Dice 0.9167", "worst: beta_0009"):
        assert text in page, text
    # 2 datasets x (warm-up, training, coverage, rounds) charts and 3 cases each
    assert page.count('src="data:image/svg+xml;base64,') == 8
    assert page.count('src="data:image/png;base64,') == 6
    # Nothing from elsewhere: no script, no external URL in src/href/url(), no @import.
    assert "<script" not in page.lower() and "@import" not in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "http://" not in page and "https://" not in page.replace("http://www.w3.org/", "")
    # The embedded SVG charts carry no URL to fetch either.
    for chunk in re.findall(r'data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)', page):
        svg = base64.b64decode(chunk).decode("utf-8")
        assert not re.search(r'(xlink:)?href="(?!#)', svg)


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    assert build_fabricated_report(tmp_path / "a") == build_fabricated_report(tmp_path / "b")


def test_one_dataset_no_rounds_has_no_matrix_and_no_refinement(tmp_path: Path) -> None:
    page = build_fabricated_report(tmp_path, datasets=("solo",), rounds=0)
    assert "Across datasets" not in page and "Label refinement" not in page
    assert "Dataset solo" in page


def test_missing_material_is_said_not_fatal(tmp_path: Path) -> None:
    sources = fabricate_results(tmp_path, ("alpha",))
    material = read_dataset_material("nothere", sources)
    assert (material.warmup, material.train, material.coverage, material.rounds, material.cases) == ({}, {}, None, [], [])


def test_readers_name_the_broken_file(tmp_path: Path) -> None:
    sources = fabricate_results(tmp_path, ("alpha",))
    assert read_refine_rounds(sources.refine_metrics / "alpha.json")[1]["dice"] == pytest.approx(0.65)
    bad = sources.train_live / "alpha" / "plots" / "metrics" / "loss.tsv"
    bad.write_text("epoch\tloss\n0\t1\n")
    with pytest.raises(DataError, match="loss.tsv"):
        read_dvclive_series(bad.parent)
    (sources.eval_reports / "alpha" / "cases" / "median.png").unlink()
    with pytest.raises(DataError, match="median.png"):
        read_cases(sources.eval_reports / "alpha" / "cases")
