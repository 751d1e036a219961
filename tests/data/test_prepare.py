from __future__ import annotations

import importlib.util
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from busseg.data.index import INDEX_COLUMNS, read_index, write_index
from busseg.data.prepare import prepare_dataset
from busseg.errors import ConfigError, DataError
from busseg.imageio import read_image, read_mask

from .fixtures import (
    BUSI_DUPLICATE,
    box_mask,
    grey_image,
    make_busbra,
    make_bus_uclm_like,
    make_busi,
    make_stu,
    save,
    write_corrupt,
)

HAS_SYNTHETIC = importlib.util.find_spec("busseg.data.synthetic") is not None


def _make_folder(root: Path) -> None:
    """Four pairs of two sizes (one a duplicate image, one an empty mask) and a corrupt one."""
    save(root / "images" / "a.png", grey_image(20, 24, 1))
    save(root / "images" / "b.png", grey_image(28, 18, 2))
    save(root / "images" / "a_copy.png", grey_image(20, 24, 1))
    save(root / "images" / "n.png", grey_image(20, 24, 3))
    write_corrupt(root / "images" / "z.png")
    for name in ("a", "a_copy", "z"):
        save(root / "masks" / f"{name}.png", box_mask(20, 24), mode="1")
    save(root / "masks" / "b.png", box_mask(28, 18, size=2), mode="1")
    save(root / "masks" / "n.png", np.zeros((20, 24), np.uint8))
    (root / "labels.csv").write_text(
        "id,label,group\na,benign,p1\na_copy,benign,p2\nb,malignant,p1\nn,normal,\n"
    )


def _siblings(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.parent.iterdir())


def test_prepare_folder_writes_images_masks_and_index(tmp_path):
    _make_folder(tmp_path / "src")
    out = tmp_path / "prepared" / "mine"
    spec = {"kind": "folder", "root": str(tmp_path / "src"), "labels_csv": "labels.csv"}
    report = prepare_dataset("mine", spec, out, progress=False)

    index = read_index(out / "index.csv")
    assert list(index.columns) == list(INDEX_COLUMNS)
    assert list(index["id"]) == ["a", "a_copy", "b", "n"]
    assert list(index["group"]) == ["p1", "p2", "p1", "n"]
    for row in index.itertuples():
        assert row.image == f"images/{row.id}.png" and row.mask == f"masks/{row.id}.png"
        original = read_image(tmp_path / "src" / row.image)
        np.testing.assert_array_equal(read_image(out / row.image), original)
        np.testing.assert_array_equal(read_mask(out / row.mask), read_mask(tmp_path / "src" / row.mask))
        assert (row.height, row.width) == read_image(out / row.image).shape
    assert index.set_index("id").loc["a", "hash"] == index.set_index("id").loc["a_copy", "hash"]

    assert report.n_images == 4
    assert report.labels == {"benign": 2, "malignant": 1, "normal": 1, "unknown": 0}
    assert report.n_empty_masks == 1
    assert report.duplicates == [("a_copy", "a")] and report.n_duplicates == 1
    assert [s["id"] for s in report.skipped] == ["z"]
    assert "cannot read image" in report.skipped[0]["reason"]
    assert report.width_range == (18, 24) and report.height_range == (20, 28)
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["n_skipped"] == 1 and summary["n_duplicates"] == 1
    assert summary["width_range"] == [18, 24]
    assert summary["colour_converted"] == 0 and summary["sources"] == {}
    assert summary["tinted_converted"] == 0 and summary["ignored"] == [] and summary["flagged"] == {}
    assert summary["detected_kind"] is None and summary["n_cross_source_duplicates"] == 0
    assert _siblings(out) == ["mine"]  # no temporary folder left behind


def test_prepare_busbra_and_stu_fixtures(tmp_path):
    make_busbra(tmp_path / "bra")
    spec = {"kind": "busbra", "root": str(tmp_path / "bra")}
    report = prepare_dataset("bra", spec, tmp_path / "o1", progress=False)
    assert report.n_images == 3 and report.labels["malignant"] == 2
    assert [s["reason"] for s in report.skipped] == ["mask missing"]
    assert list(read_index(tmp_path / "o1" / "index.csv")["group"]) == ["1", "1", "2"]

    make_stu(tmp_path / "stu")
    spec = {"kind": "stu", "root": str(tmp_path / "stu"), "limit": 2}
    report = prepare_dataset("stu", spec, tmp_path / "o2", progress=False)
    assert report.n_images == 2 and report.labels["unknown"] == 2
    mask = read_mask(tmp_path / "o2" / "masks" / "stu_001.png")
    assert mask.shape == (16, 16)


def test_prepare_busi_reports_colour_duplicates_and_skips(tmp_path):
    make_busi(tmp_path / "busi")
    spec = {"kind": "busi", "root": str(tmp_path / "busi")}
    report = prepare_dataset("busi", spec, tmp_path / "out", progress=False)
    index = read_index(tmp_path / "out" / "index.csv")
    assert list(index.columns) == list(INDEX_COLUMNS)  # no source column outside composites
    assert report.n_images == 7 == len(index)
    assert report.labels == {"benign": 4, "malignant": 3, "normal": 0, "unknown": 0}
    assert report.colour_converted == 1 and report.colour_converted_ids == ["benign_004"]
    assert report.duplicates == [tuple(reversed(BUSI_DUPLICATE))]
    assert [(s["id"], s["reason"].split(" (")[0]) for s in report.skipped] == [("benign_005", "mask missing")]
    assert report.width_range == report.height_range == (16, 16)
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["colour_converted"] == 1 and summary["n_duplicates"] == 1


def test_prepare_auto_reports_the_detected_kind(tmp_path):
    make_busi(tmp_path / "busi")
    spec = {"kind": "auto", "root": str(tmp_path / "busi"), "exclude_normal": False}
    report = prepare_dataset("any", spec, tmp_path / "out", progress=False)
    assert (report.kind, report.detected_kind) == ("auto", "busi")
    assert report.labels["normal"] == 1 and report.n_empty_masks == 1


def test_relative_root_is_resolved_against_working_directory(tmp_path, monkeypatch):
    _make_folder(tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    report = prepare_dataset("rel", {"kind": "folder", "root": "src"}, Path("out"), progress=False)
    assert report.root == "src"  # as written in params: the report is machine-independent
    assert (tmp_path / "out" / "index.csv").is_file()


def test_empty_result_raises_and_leaves_old_output_intact(tmp_path):
    (tmp_path / "src" / "images").mkdir(parents=True)
    (tmp_path / "src" / "masks").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "marker").write_text("old dataset")
    with pytest.raises(DataError, match="no usable sample") as info:
        prepare_dataset("e", {"kind": "folder", "root": str(tmp_path / "src")}, out, progress=False)
    assert info.value.path == (tmp_path / "src").resolve()
    assert (out / "marker").read_text() == "old dataset"
    assert _siblings(out) == ["out", "src"]


def test_all_skipped_error_gives_reasons(tmp_path):
    write_corrupt(tmp_path / "src" / "images" / "x.png")
    (tmp_path / "src" / "masks").mkdir()
    with pytest.raises(DataError, match=r"all 1 skipped: x: no mask found"):
        spec = {"kind": "folder", "root": str(tmp_path / "src"), "require_masks": True}
        prepare_dataset("e", spec, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_success_replaces_an_existing_output(tmp_path):
    _make_folder(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "marker").write_text("old dataset")
    prepare_dataset("r", {"kind": "folder", "root": str(tmp_path / "src")}, out, progress=False)
    assert not (out / "marker").exists() and (out / "index.csv").is_file()
    assert _siblings(out) == ["out", "src"]


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"root": "x"}, "datasets.d.kind"),
        ({"kind": "busx"}, "datasets.d.kind"),
        ({"kind": "busi"}, "datasets.d.root"),
        ({"kind": "stu"}, "datasets.d.root"),
    ],
)
def test_spec_errors_name_the_parameter(tmp_path, spec, key):
    with pytest.raises(ConfigError) as info:
        prepare_dataset("d", spec, tmp_path / "out", progress=False)
    assert info.value.key == key
    assert list(tmp_path.iterdir()) == []


def test_progress_flag_controls_the_bar(tmp_path, capsys):
    _make_folder(tmp_path / "src")
    spec = {"kind": "folder", "root": str(tmp_path / "src")}
    prepare_dataset("p", spec, tmp_path / "o1", progress=False)
    assert capsys.readouterr().err == ""
    prepare_dataset("p", spec, tmp_path / "o2", progress=True)
    assert "prepare p" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_SYNTHETIC, reason="busseg.data.synthetic is not written yet")
def test_prepare_synthetic(tmp_path):
    spec = {"kind": "synthetic", "count": 12, "seed": 3, "size": 64}
    report = prepare_dataset("syn", spec, tmp_path / "syn", progress=False)
    index = read_index(tmp_path / "syn" / "index.csv")
    assert report.n_images == 12 == len(index)
    assert sum(report.labels.values()) == 12 and report.labels["unknown"] == 0
    assert list(index["id"]) == [f"syn_{i:04d}" for i in range(12)]
    assert (index["group"] == index["id"]).all()
    assert report.width_range == report.height_range == (64, 64)
    assert read_mask(tmp_path / "syn" / "masks" / "syn_0000.png").shape == (64, 64)


def test_prepare_bus_uclm_like_folder_imports_every_image_and_lists_doppler_and_calipers(tmp_path):
    facts = make_bus_uclm_like(tmp_path / "uclm")
    spec = {"kind": "auto", "root": str(tmp_path / "uclm")}
    report = prepare_dataset("uclm", spec, tmp_path / "out", progress=False)
    assert report.detected_kind == "bus_uclm"
    assert report.n_images == len(facts) == 24 and report.n_skipped == 0 and report.n_ignored == 0
    assert report.labels == {"benign": 8, "malignant": 12, "normal": 4, "unknown": 0}
    doppler = sorted(i for i, f in facts.items() if f["doppler"] == "yes")
    marks = sorted(i for i, f in facts.items() if f["marks"] == "yes")
    assert report.colour_converted_ids == doppler and report.colour_converted == 4
    assert sorted(report.tinted_converted_ids) == sorted(set(facts) - set(doppler))
    assert report.flagged == {"doppler": doppler, "marks": marks, "combined": ["DUNE_005"]}
    raw = pd.read_csv(tmp_path / "out" / "index.csv", dtype=str).set_index("id")
    assert list(raw.columns) == [*INDEX_COLUMNS[1:], "doppler", "marks", "combined"]
    assert sorted(raw.index[raw["marks"] == "yes"]) == marks
    assert raw["group"].nunique() == 4
    assert list(read_index(tmp_path / "out" / "index.csv").columns) == list(INDEX_COLUMNS)


def test_tiny_images_are_skipped_with_the_reason(tmp_path):
    _make_folder(tmp_path / "src")
    save(tmp_path / "src" / "images" / "dot.png", grey_image(1, 1, 0))
    save(tmp_path / "src" / "masks" / "dot.png", np.full((1, 1), 255, np.uint8))
    report = prepare_dataset("t", {"kind": "folder", "root": str(tmp_path / "src")}, tmp_path / "out", progress=False)
    (skip,) = [s for s in report.skipped if s["id"] == "dot"]
    assert skip["reason"] == "image too small: 1x1 px (at least 16 px per side)"
    assert not (tmp_path / "out" / "images" / "dot.png").exists()


def test_leftovers_of_killed_runs_are_removed_and_outputs_get_usual_permissions(tmp_path):
    _make_folder(tmp_path / "src")
    prepared = tmp_path / "prepared"
    stale = [prepared / ".mine.building-0123abcd4567", prepared / ".mine.old-89ab", prepared / ".mine.999999999.tmp"]
    for folder in stale:
        (folder / "images").mkdir(parents=True)
    (prepared / ".other.999999999.tmp").mkdir()  # any dead writer's temporary goes
    busy = prepared / f".other.{os.getppid()}.tmp"  # a live writer's (another stage right now) stays
    busy.mkdir()
    prepare_dataset("mine", {"kind": "folder", "root": str(tmp_path / "src")}, prepared / "mine", progress=False)
    assert _siblings(prepared / "mine") == [busy.name, "mine"]
    umask = os.umask(0)
    os.umask(umask)
    out = prepared / "mine"
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((out / "images").stat().st_mode) == 0o777 & ~umask
    for path in (out / "index.csv", out / "images" / "a.png", out / "masks" / "a.png"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# --- index.csv schema (busseg.data.index) ---------------------------------------------


def _index_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["0001", "b"],
            "image": ["images/0001.png", "images/b.png"],
            "mask": ["masks/0001.png", "masks/b.png"],
            "label": ["benign", "normal"],
            "group": ["007", "b"],
            "width": [10, 12],
            "height": [8, 9],
            "hash": ["ab", "cd"],
        }
    )


def test_index_keeps_an_optional_source_column(tmp_path):
    rows = _index_rows().assign(source=["udiat", "bus_uclm"], extra=["x", "y"])
    write_index(rows, tmp_path / "index.csv")
    index = read_index(tmp_path / "index.csv")
    assert list(index.columns) == [*INDEX_COLUMNS, "source"]
    assert list(index["source"]) == ["udiat", "bus_uclm"]
    with pytest.raises(DataError, match="row 2: empty 'source'"):
        write_index(_index_rows().assign(source=["udiat", None]), tmp_path / "other.csv")


def test_index_round_trip_keeps_text_as_text(tmp_path):
    write_index(_index_rows()[list(reversed(INDEX_COLUMNS))], tmp_path / "index.csv")
    index = read_index(tmp_path / "index.csv")
    assert list(index.columns) == list(INDEX_COLUMNS)
    assert list(index["id"]) == ["0001", "b"] and list(index["group"]) == ["007", "b"]
    assert list(index["width"]) == [10, 12] and index["width"].dtype.kind == "i"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda df: df.drop(columns=["hash"]), "missing column"),
        (lambda df: df.assign(label=["benign", "tumour"]), "row 2: label 'tumour'"),
        (lambda df: df.assign(width=[10, 0]), "row 2: 'width' must be a positive integer"),
        (lambda df: df.assign(height=["8", "x"]), "'height' must be a positive integer"),
        (lambda df: df.assign(id=["a", "a"]), "appears more than once"),
        (lambda df: df.assign(group=["", "b"]), "row 1: empty 'group'"),
    ],
)
def test_read_index_rejects_broken_files(tmp_path, change, match):
    path = tmp_path / "index.csv"
    change(_index_rows()).to_csv(path, index=False)
    with pytest.raises(DataError, match=match) as info:
        read_index(path)
    assert info.value.path == path
    with pytest.raises(DataError, match=match):
        write_index(change(_index_rows()), tmp_path / "other.csv")
    assert not (tmp_path / "other.csv").exists()


@pytest.mark.parametrize(
    "content", [None, "", "\x00\xff garbage \x00"], ids=["absent", "empty", "binary"]
)
def test_read_index_unreadable(tmp_path, content):
    path = tmp_path / "index.csv"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_index(path)
    assert info.value.path == path
