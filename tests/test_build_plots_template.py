"""The committed offline template for `dvc plots show` and the tool that builds it."""
from __future__ import annotations

import configparser
import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / ".dvc" / "plots" / "offline.html"

spec = importlib.util.spec_from_file_location("build_plots_template", REPO / "tools" / "build_plots_template.py")
build_plots_template = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_plots_template)


def test_dvc_config_points_at_the_committed_template() -> None:
    config = configparser.ConfigParser(inline_comment_prefixes=("#",))
    config.read(REPO / ".dvc" / "config")
    assert (REPO / ".dvc" / config["plots"]["html_template"]).resolve() == TEMPLATE.resolve()
    assert config["core"]["analytics"] == "false" and config["core"]["autostage"] == "false"


def test_committed_template_inlines_the_libraries_dvc_asks_the_cdn_for() -> None:
    page = TEMPLATE.read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page  # no {scripts}: DVC adds no CDN tags
    assert not re.search(r"<script[^>]*\bsrc=", page)
    for name, version, _ in build_plots_template.LIBRARIES:
        assert f"/* {name} {version} (BSD-3-Clause):" in page
    # the same versions as dvc-render's CDN tags
    from dvc_render.vega import VegaRenderer

    for name, version, _ in build_plots_template.LIBRARIES:
        assert f"npm/{name}@{version}" in VegaRenderer.SCRIPTS


def _fake_package(root: Path, name: str, version: str, build: str, code: str) -> None:
    package = root / f"{name}-{version}" / "package"
    (package / build).parent.mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"name": name, "version": version, "license": "BSD-3-Clause"}))
    (package / "LICENSE").write_text(f"Copyright {name}\n")
    (package / build).write_text(code)


def test_build_inlines_each_library_without_its_source_map(tmp_path: Path) -> None:
    for name, version, build in build_plots_template.LIBRARIES:
        _fake_package(tmp_path, name, version, build, f"var {name.replace('-', '_')} = 1;\n//# sourceMappingURL={name}.min.js.map\n")
    page = build_plots_template.build_template(tmp_path)
    assert "var vega_embed = 1;" in page and "sourceMappingURL" not in page
    assert page.index("var vega = 1;") < page.index("var vega_lite = 1;") < page.index("var vega_embed = 1;")


def test_build_refuses_code_that_would_break_the_page(tmp_path: Path) -> None:
    for name, version, build in build_plots_template.LIBRARIES:
        _fake_package(tmp_path, name, version, build, "x = '{plot_divs}';" if name == "vega" else "y = 1;")
    with pytest.raises(SystemExit, match="plot_divs"):
        build_plots_template.build_template(tmp_path)
