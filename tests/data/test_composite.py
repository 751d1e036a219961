"""The ``composite`` kind: several sources in one prepared dataset with a ``source`` column."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from busseg.data.importers import Ignored, Sample, Skip, import_composite
from busseg.data.index import INDEX_COLUMNS, read_index
from busseg.data.prepare import prepare_dataset
from busseg.data.split import SplitConfig, split_dataset
from busseg.errors import ConfigError, DataError

from .fixtures import grey_image, make_bus_uclm, make_busi, make_udiat

SOURCES = {"udiat": {"kind": "udiat", "root": "UDIAT"}, "bus_uclm": {"kind": "bus_uclm", "root": "BUS-UCLM"}}


def _make_sources(root: Path) -> None:
    """UDIAT and BUS-UCLM under ``root``, with one duplicate across and one within sources.

    ``udiat 000002`` has the pixels of ``bus_uclm ALWI_000``; ``udiat 000003`` those of
    ``udiat 000001``.
    """
    uclm = make_bus_uclm(root / "BUS-UCLM")
    images = {
        "000001": grey_image(16, 16, 51),
        "000002": uclm["ALWI_000"][2],  # the grey content of make_bus_uclm's (tinted) ALWI_000
        "000003": grey_image(16, 16, 51),
    }
    make_udiat(root / "UDIAT", images)


def _records(root: Path, options: dict) -> tuple[dict[str, Sample], dict[str, Skip]]:
    samples, skips = {}, {}
    for record in import_composite(root, options, section="datasets.both"):
        if not isinstance(record, Ignored):
            (samples if isinstance(record, Sample) else skips)[record.id] = record
    return samples, skips


def test_ids_groups_and_sources_are_prefixed(tmp_path):
    _make_sources(tmp_path)
    samples, skips = _records(tmp_path, {"sources": SOURCES})
    assert list(samples) == [
        "bus_uclm__ALWI_000",
        "bus_uclm__ALWI_001",
        "bus_uclm__ALWI_002",
        "bus_uclm__BEAU_001",
        "udiat__000001",
        "udiat__000002",
        "udiat__000003",
    ]
    assert samples["bus_uclm__ALWI_001"].group == "bus_uclm__ALWI"
    assert samples["bus_uclm__ALWI_001"].label == "malignant"
    assert samples["udiat__000002"].group == "udiat__000002"
    assert {s.source for s in samples.values()} == {"bus_uclm", "udiat"}
    assert all(s.source == s.id.split("__")[0] for s in samples.values())
    assert list(skips) == ["bus_uclm__BEAU_000"] and skips["bus_uclm__BEAU_000"].source == "bus_uclm"
    assert "size differs" in skips["bus_uclm__BEAU_000"].reason


def test_prepare_writes_source_column_counts_and_duplicates(tmp_path):
    _make_sources(tmp_path / "bus")
    spec = {"kind": "composite", "root": str(tmp_path / "bus"), "sources": SOURCES}
    report = prepare_dataset("both", spec, tmp_path / "out", progress=False)

    index = read_index(tmp_path / "out" / "index.csv")
    assert list(index.columns) == [*INDEX_COLUMNS, "source"]
    assert list(index["source"]) == ["bus_uclm"] * 4 + ["udiat"] * 3
    # BUS-UCLM's INFO.csv flags become columns; UDIAT rows have no such facts.
    raw = pd.read_csv(tmp_path / "out" / "index.csv", dtype=str).set_index("id")
    assert list(raw.columns[-3:]) == ["doppler", "marks", "combined"]
    assert raw.loc["bus_uclm__ALWI_000", "marks"] == "no" and raw.loc["udiat__000001", "marks"] == "unknown"
    assert (tmp_path / "out" / "images" / "udiat__000001.png").is_file()

    assert report.n_images == 7 and report.n_skipped == 1
    assert report.labels == {"benign": 1, "malignant": 2, "normal": 1, "unknown": 3}
    assert report.duplicates == [("udiat__000002", "bus_uclm__ALWI_000"), ("udiat__000003", "udiat__000001")]
    assert report.n_cross_source_duplicates == 1
    assert report.skipped[0]["source"] == "bus_uclm"
    assert report.sources["bus_uclm"] == {
        "n_images": 4,
        "labels": {"benign": 1, "malignant": 2, "normal": 1, "unknown": 0},
        "n_skipped": 1,
        "n_ignored": 0,
        "n_empty_masks": 1,
        "n_unmasked": 0,
        "colour_converted": 0,
        "tinted_converted": 4,
    }
    assert report.tinted_converted_ids == [f"bus_uclm__{i}" for i in ("ALWI_000", "ALWI_001", "ALWI_002", "BEAU_001")]
    assert report.sources["udiat"]["n_images"] == 3 and report.sources["udiat"]["labels"]["unknown"] == 3
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["n_duplicates"] == 2 and list(summary["sources"]) == ["bus_uclm", "udiat"]


@pytest.mark.parametrize("seed", range(4))
def test_split_keeps_duplicates_together_and_stratifies_by_source(tmp_path, seed):
    _make_sources(tmp_path / "bus")
    spec = {"kind": "composite", "root": str(tmp_path / "bus"), "sources": SOURCES}
    prepare_dataset("both", spec, tmp_path / "out", progress=False)
    index = read_index(tmp_path / "out" / "index.csv")
    parts = split_dataset(index, SplitConfig(train=0.5, val=0.0, test=0.5), seed)
    part_of = {image_id: name for name, ids in parts.items() for image_id in ids}
    assert sorted(part_of) == sorted(index["id"])
    assert part_of["udiat__000002"] == part_of["bus_uclm__ALWI_000"]
    assert part_of["udiat__000003"] == part_of["udiat__000001"]
    assert part_of["bus_uclm__ALWI_000"] == part_of["bus_uclm__ALWI_001"] == part_of["bus_uclm__ALWI_002"]


def test_source_roots_relative_to_composite_root_or_absolute(tmp_path, monkeypatch):
    make_udiat(tmp_path / "data" / "UDIAT")
    make_busi(tmp_path / "elsewhere")
    sources = {
        "udiat": {"kind": "udiat", "root": "UDIAT", "limit": 2},
        "busi": {"kind": "auto", "root": str(tmp_path / "elsewhere"), "exclude_normal": False},
    }
    monkeypatch.chdir(tmp_path)  # prepare resolves the composite root against the working directory
    spec = {"kind": "composite", "root": "data", "sources": sources}
    report = prepare_dataset("mix", spec, Path("out"), progress=False)
    assert report.sources["udiat"]["n_images"] == 2
    assert report.sources["busi"]["n_images"] == 8 and report.sources["busi"]["colour_converted"] == 1
    assert report.colour_converted_ids == ["busi__benign_004"]
    assert report.n_cross_source_duplicates == 0 and report.n_duplicates == 1  # BUSI's own pair


def test_limit_applies_to_the_combined_stream(tmp_path):
    _make_sources(tmp_path)
    records = [r for r in import_composite(tmp_path, {"sources": SOURCES, "limit": 6}) if not isinstance(r, Ignored)]
    assert [r.id for r in records][-2:] == ["bus_uclm__BEAU_001", "udiat__000001"]
    assert len(records) == 6


@pytest.mark.parametrize(
    ("sources", "key", "match"),
    [
        ({}, "datasets.both.sources", "missing or empty"),
        ({"a b": {"kind": "udiat", "root": "UDIAT"}}, "datasets.both.sources.a b", "source names"),
        ({"u": "UDIAT"}, "datasets.both.sources.u", "expected a dataset spec"),
        ({"u": {"root": "UDIAT"}}, "datasets.both.sources.u.kind", "missing"),
        ({"u": {"kind": "composite", "root": "."}}, "datasets.both.sources.u.kind", "cannot be composite"),
        ({"u": {"kind": "udiatt", "root": "UDIAT"}}, "datasets.both.sources.u.kind", "unknown kind"),
        ({"u": {"kind": "udiat"}}, "datasets.both.sources.u.root", "missing"),
        ({"u": {"kind": "udiat", "root": "UDIAT", "limt": 1}}, "datasets.both.sources.u.limt", "unknown key"),
    ],
)
def test_bad_sources_name_the_nested_parameter(tmp_path, sources, key, match):
    _make_sources(tmp_path)
    with pytest.raises(ConfigError, match=match) as info:
        import_composite(tmp_path, {"sources": sources}, section="datasets.both")
    assert info.value.key == key


def test_a_missing_source_folder_fails_before_any_sample_is_read(tmp_path):
    _make_sources(tmp_path)
    sources = {**SOURCES, "zzz": {"kind": "busi", "root": "BUSI"}}
    with pytest.raises(DataError, match="not found") as info:
        import_composite(tmp_path, {"sources": sources})
    assert info.value.path == tmp_path / "BUSI"
