"""The report's matplotlib charts: valid SVG, and the same bytes for the same data."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from busseg.report_figures import coverage_svg, curves_svg, rounds_svg

CURVES = [("losses", "loss", {"loss": ([0, 1, 2], [1.0, 0.6, 0.4])}), ("validation", "Dice", {"val_dice": ([0, 1, 2], [0.5, 0.6, 0.7])})]


def test_charts_are_svg_without_a_date() -> None:
    for svg in (curves_svg(CURVES, "t"), coverage_svg([0.1, 0.5, 1.0], [0.9, 0.8, 0.7], "c"), rounds_svg([{"dice": 0.6}, {"dice": 0.7}], "r")):
        root = ET.fromstring(svg.encode("utf-8"))
        assert root.tag.endswith("svg")
        assert "<dc:date>" not in svg
        assert "<text" not in svg  # glyphs as paths: no font needed where the page is opened


def test_same_data_same_bytes_in_a_fresh_process() -> None:
    """Two renders in two interpreters (fresh hash salts, font caches) are byte-identical."""
    code = "from test_report_figures import CURVES; from busseg.report_figures import curves_svg; import sys; sys.stdout.write(curves_svg(CURVES, 't'))"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=__file__.rsplit("/", 1)[0]).stdout for _ in range(2)}
    assert len(outputs) == 1 and outputs == {curves_svg(CURVES, "t")}


def test_nothing_to_draw_is_an_error() -> None:
    with pytest.raises(ValueError, match="no curve"):
        curves_svg([("losses", "loss", {})], "t")
    with pytest.raises(ValueError, match="no label-quality"):
        rounds_svg([{}, {}], "r")
