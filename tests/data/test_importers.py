from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import busseg.data.importers as importers
import busseg.data.importers.base as importer_base
from busseg.data.importers import IMPORTERS, Ignored, Sample, Skip, get_importer, sanitise_id
from busseg.errors import ConfigError, DataError

from .fixtures import (
    BUSBRA_ROWS,
    BUSI_DUPLICATE,
    box_mask,
    colour_mask,
    grey_image,
    add_calipers,
    add_doppler,
    luma,
    make_bus_uclm,
    make_bus_uclm_like,
    make_busbra,
    make_busi,
    make_stu,
    make_udiat,
    rgb,
    save,
    scan,
    tint,
    write_corrupt,
)

# The shared data sets lie beside the repository (../shared/data), in CI too.
REAL_BUSBRA = Path(__file__).resolve().parents[3] / "shared" / "data" / "BUS-BRA"
HAS_SYNTHETIC = importlib.util.find_spec("busseg.data.synthetic") is not None


def _split(records) -> tuple[dict[str, Sample], dict[str, Skip]]:
    """Samples and skips by id (:class:`Ignored` entries left out; see :func:`_ignored`)."""
    samples, skips = {}, {}
    for record in records:
        if not isinstance(record, Ignored):
            (samples if isinstance(record, Sample) else skips)[record.id] = record
    return samples, skips


def _ignored(records) -> dict[str, str]:
    """``file name -> reason`` of the :class:`Ignored` entries."""
    return {Path(r.path).name: r.reason for r in records if isinstance(r, Ignored)}


# --- registry -------------------------------------------------------------------------


ALL_KINDS = ["auto", "bus_uclm", "busbra", "busi", "composite", "folder", "stu", "synthetic", "udiat"]
REAL_KINDS = ["busbra", "stu", "folder", "busi", "bus_uclm", "udiat", "auto", "composite"]


def test_registry_lists_every_kind():
    assert sorted(IMPORTERS) == ALL_KINDS
    assert get_importer("stu") is importers.import_stu
    assert get_importer("busi") is importers.import_busi


def test_unknown_kind_names_parameter_and_choices():
    with pytest.raises(ConfigError) as info:
        get_importer("x", section="datasets.mine")
    assert info.value.key == "datasets.mine.kind"
    assert info.value.problem == f"unknown kind 'x'; available: {', '.join(ALL_KINDS)}"


@pytest.mark.parametrize("kind", REAL_KINDS)
def test_real_kinds_need_a_root(kind):
    with pytest.raises(ConfigError) as info:
        get_importer(kind)(None, {}, section="datasets.d")
    assert info.value.key == "datasets.d.root"


@pytest.mark.parametrize("kind", REAL_KINDS)
def test_missing_root_raises_data_error(tmp_path, kind):
    with pytest.raises(DataError, match="not found") as info:
        get_importer(kind)(tmp_path / "absent", {})
    assert info.value.path == tmp_path / "absent"


@pytest.mark.parametrize(
    ("kind", "looked_for"),
    [
        ("busbra", "images/, masks/, bus_data.csv"),
        ("stu", "images/, masks/"),
        ("folder", "images/"),
        ("busi", "Dataset_BUSI_with_GT/ or benign/, malignant/"),
        ("bus_uclm", "images/, masks/"),
        ("udiat", "original/, GT/"),
    ],
)
def test_empty_root_lists_what_was_looked_for(tmp_path, kind, looked_for):
    with pytest.raises(DataError, match=f"looked for {looked_for}; missing") as info:
        get_importer(kind)(tmp_path, {})
    assert info.value.path == tmp_path


@pytest.mark.parametrize("kind", ["busbra", "stu", "folder", "busi", "bus_uclm", "udiat", "composite"])
def test_unknown_and_bad_options_raise_config_error(tmp_path, kind):
    with pytest.raises(ConfigError, match="unknown key") as info:
        get_importer(kind)(tmp_path, {"limt": 3}, section="datasets.d")
    assert info.value.key == "datasets.d.limt"
    with pytest.raises(ConfigError) as info:
        get_importer(kind)(tmp_path, {"limit": 0}, section="datasets.d")
    assert info.value.key == "datasets.d.limit"


# --- busbra ---------------------------------------------------------------------------


def test_busbra_groups_labels_and_sizes_from_files(tmp_path):
    expected = make_busbra(tmp_path)
    samples, skips = _split(importers.import_busbra(tmp_path, {}))
    assert sorted(samples) == sorted(expected)
    for sample_id, (image, mask) in expected.items():
        np.testing.assert_array_equal(samples[sample_id].image, image)
        np.testing.assert_array_equal(samples[sample_id].mask, mask)
    rows = {sid: (case, pathology) for sid, case, pathology, _ in BUSBRA_ROWS}
    for sample_id, sample in samples.items():
        assert (sample.group, sample.label) == rows[sample_id]
    # The CSV claims height 99 for this id; the files (24 px) win.
    assert samples["bus_0002-s"].image.shape == (24, 18)
    assert set(skips) == {"bus_0003-l"}
    assert skips["bus_0003-l"].reason == "mask missing"
    assert skips["bus_0003-l"].path.endswith("mask_0003-l.png")


def test_busbra_limit_takes_first_sorted_ids(tmp_path):
    make_busbra(tmp_path)
    ids = [record.id for record in importers.import_busbra(tmp_path, {"limit": 2})]
    assert ids == ["bus_0001-l", "bus_0001-r"]


def test_busbra_skips_corrupt_image_and_rows_without_files(tmp_path):
    make_busbra(tmp_path)
    write_corrupt(tmp_path / "images" / "bus_0001-r.png")
    save(tmp_path / "images" / "bus_0009-l.png", grey_image(20, 16, 9))  # not in the CSV
    (tmp_path / "images" / "bus_0001-l.png").unlink()  # in the CSV, image gone
    samples, skips = _split(importers.import_busbra(tmp_path, {}))
    assert sorted(samples) == ["bus_0002-s"]
    assert "cannot read image" in skips["bus_0001-r"].reason
    assert skips["bus_0001-r"].path.endswith("bus_0001-r.png")
    assert skips["bus_0009-l"].reason == "no row in bus_data.csv"
    assert "image missing" in skips["bus_0001-l"].reason


@pytest.mark.parametrize(
    ("row", "reason"),
    [("bus_0002-s,,x,benign", "empty Case"), ("bus_0002-s,2,x,tumour", "unknown Pathology 'tumour'")],
)
def test_busbra_skips_rows_with_bad_metadata(tmp_path, row, reason):
    make_busbra(tmp_path)
    (tmp_path / "bus_data.csv").write_text("ID,Case,Histology,Pathology\n" + row + "\n")
    (record,) = [r for r in importers.import_busbra(tmp_path, {}) if r.id == "bus_0002-s"]
    assert isinstance(record, Skip) and reason in record.reason
    assert record.path.endswith("bus_data.csv")


def test_busbra_csv_without_needed_columns(tmp_path):
    make_busbra(tmp_path)
    (tmp_path / "bus_data.csv").write_text("ID,Pathology\nbus_0001-l,benign\n")
    with pytest.raises(DataError, match="missing column.*Case"):
        importers.import_busbra(tmp_path, {})


def test_busbra_iterates_lazily(tmp_path, monkeypatch):
    make_busbra(tmp_path)
    calls = []
    real_read = importer_base.read_image_with_colour
    monkeypatch.setattr(importer_base, "read_image_with_colour", lambda path: calls.append(path) or real_read(path))
    records = importers.import_busbra(tmp_path, {})
    assert calls == []
    next(records)
    assert len(calls) == 1


def _set_devices(root: Path, devices: dict[str, str]) -> None:
    """Rewrite the fixture's ``Device`` column: ``id -> device cell`` (probe frequency included)."""
    table = pd.read_csv(root / "bus_data.csv", dtype=str, keep_default_na=False)
    table["Device"] = table["ID"].map(devices)
    table.to_csv(root / "bus_data.csv", index=False)


FIXTURE_DEVICES = {
    "bus_0001-l": "GE Logiq 7 @10-14MHz",
    "bus_0001-r": "GE Logiq 7 @10-14MHz",
    "bus_0002-s": "Toshiba Aplio 300 @12-14 MHz",
    "bus_0003-l": "U-Systems @10-14MHz",
}


@pytest.mark.parametrize(
    ("devices", "ids"),
    [
        (["GE Logiq 7"], ["bus_0001-l", "bus_0001-r"]),
        (["Toshiba Aplio 300"], ["bus_0002-s"]),
        (["GE Logiq 7", "Toshiba Aplio 300"], ["bus_0001-l", "bus_0001-r", "bus_0002-s"]),
        (["GE Logiq 5"], []),
    ],
)
def test_busbra_devices_import_only_those_scanners(tmp_path, devices, ids):
    make_busbra(tmp_path)
    _set_devices(tmp_path, FIXTURE_DEVICES)
    records = list(importers.import_busbra(tmp_path, {"devices": devices}))
    samples, skips = _split(records)
    assert sorted(samples) == ids
    assert not skips  # bus_0003-l (no mask) is a U-Systems image: not part of these datasets
    assert not _ignored(records)  # other scanners' files are not "ignored" either: they are another dataset


def test_busbra_devices_keep_patient_groups_and_report_images_without_a_row(tmp_path):
    make_busbra(tmp_path)
    _set_devices(tmp_path, FIXTURE_DEVICES)
    save(tmp_path / "images" / "bus_0009-l.png", grey_image(20, 16, 9))  # no CSV row: scanner unknown
    samples, skips = _split(importers.import_busbra(tmp_path, {"devices": ["GE Logiq 7"]}))
    assert {s.group for s in samples.values()} == {"1"}
    assert skips["bus_0009-l"].reason == "no row in bus_data.csv"


@pytest.mark.parametrize(
    ("devices", "key"),
    [
        (["GE Logiq 9"], "dataset.devices[0]"),
        (["GE Logiq 7 @10-14MHz"], "dataset.devices[0]"),  # the name without the probe frequency
        ([], "dataset.devices"),
        ("GE Logiq 7", "dataset.devices"),
        ({"GE Logiq 7": True}, "dataset.devices"),
    ],
)
def test_busbra_bad_devices_list_the_scanners(tmp_path, devices, key):
    make_busbra(tmp_path)
    with pytest.raises(ConfigError) as info:
        importers.import_busbra(tmp_path, {"devices": devices})
    assert info.value.key == key
    assert "available: 'GE Logiq 5', 'GE Logiq 7', 'Toshiba Aplio 300', 'U-Systems'" in info.value.problem


def test_busbra_devices_need_the_device_column(tmp_path):
    make_busbra(tmp_path)
    (tmp_path / "bus_data.csv").write_text("ID,Case,Pathology\nbus_0001-l,1,benign\n")
    assert [r.id for r in importers.import_busbra(tmp_path, {}) if isinstance(r, Sample)] == ["bus_0001-l"]
    with pytest.raises(DataError, match="missing column.*Device"):
        importers.import_busbra(tmp_path, {"devices": ["GE Logiq 7"]})


@pytest.mark.skipif(not REAL_BUSBRA.is_dir(), reason="BUS-BRA not present at ../shared/data")
def test_real_busbra_device_names_are_the_documented_ones():
    from busseg.data.importers.busbra import DEVICES, device_name

    table = pd.read_csv(REAL_BUSBRA / "bus_data.csv", dtype=str)
    counts = table["Device"].map(device_name).value_counts().to_dict()
    assert counts == {"GE Logiq 7": 902, "GE Logiq 5": 809, "Toshiba Aplio 300": 139, "U-Systems": 25}
    assert set(counts) == set(DEVICES)


@pytest.mark.skipif(not REAL_BUSBRA.is_dir(), reason="BUS-BRA not present at ../shared/data")
def test_real_busbra_groups_from_case_and_labels_from_pathology():
    table = pd.read_csv(REAL_BUSBRA / "bus_data.csv", dtype=str).set_index("ID")
    samples, skips = _split(importers.import_busbra(REAL_BUSBRA, {"limit": 20}))
    assert not skips and len(samples) == 20
    assert sorted(samples) == sorted(table.index)[:20]
    for sample_id, sample in samples.items():
        assert sample.group == table.loc[sample_id, "Case"]
        assert sample.label == table.loc[sample_id, "Pathology"]
        assert sample.image.dtype == np.uint8 and sample.mask.shape == sample.image.shape
        assert sample.mask.any()


# --- stu ------------------------------------------------------------------------------


def test_stu_resizes_and_thresholds_masks(tmp_path):
    expected = make_stu(tmp_path)
    samples, skips = _split(importers.import_stu(tmp_path, {}))
    assert not skips
    assert list(samples) == ["stu_001", "stu_002", "stu_010"]  # numeric order
    for sample_id, mask in expected.items():
        sample = samples[sample_id]
        assert sample.image.shape == (16, 16)
        np.testing.assert_array_equal(sample.mask, mask)
        assert (sample.label, sample.group) == ("unknown", sample_id)
        assert sample.source_mask.endswith(f"mask_{int(sample_id[4:])}.png")


def test_stu_skips_missing_mask_and_distorting_resize(tmp_path):
    make_stu(tmp_path)
    (tmp_path / "masks" / "mask_2.png").unlink()
    save(tmp_path / "masks" / "mask_10.png", box_mask(64, 32).astype(np.uint8) * 255)
    samples, skips = _split(importers.import_stu(tmp_path, {"limit": 3}))
    assert list(samples) == ["stu_001"]
    assert skips["stu_002"].reason == "mask missing"
    assert "aspect ratio" in skips["stu_010"].reason


# --- folder ---------------------------------------------------------------------------


def _make_folder(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A generic layout with every quirk; returns the expected good pairs."""
    grey = grey_image(10, 12, 0)
    grey[0, :2] = (0, 255)  # full range, so the 16-bit copy rescales back to ``grey``
    mask = box_mask(10, 12)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((10, 12, 1), 255, np.uint8)], axis=2)
    save(root / "images" / "rgb.png", rgb)
    save(root / "masks" / "rgb_mask.png", mask, mode="1")
    save(root / "images" / "rgba.png", rgba)
    colour_mask = np.zeros((10, 12, 3), np.uint8)
    colour_mask[mask] = (0, 255, 0)
    save(root / "masks" / "rgba_mask.png", colour_mask)
    save(root / "images" / "deep.png", grey.astype(np.uint16) * 257)  # 16-bit, full range
    save(root / "masks" / "deep_mask.png", mask.astype(np.uint8))  # 0/1
    save(root / "images" / "nomask.png", grey)
    save(root / "images" / "bigger.png", grey)
    save(root / "masks" / "bigger_mask.png", box_mask(20, 24), mode="1")
    save(root / "images" / "greymask.png", grey)
    save(root / "masks" / "greymask_mask.png", grey)
    write_corrupt(root / "images" / "corrupt.png")
    save(root / "masks" / "corrupt_mask.png", mask, mode="1")
    save(root / "images" / "twice.png", grey)
    save(root / "images" / "twice.jpg", grey)
    save(root / "masks" / "twice_mask.png", mask, mode="1")
    (root / "images" / "notes.txt").write_text("not an image")
    return {"rgb": (grey, mask), "rgba": (grey, mask), "deep": (grey, mask)}


def test_folder_pairs_by_suffix_and_skips_each_quirk(tmp_path):
    expected = _make_folder(tmp_path)
    samples, skips = _split(importers.import_folder(tmp_path, {"mask_suffix": "_mask", "require_masks": True}))
    assert sorted(samples) == sorted(expected)
    for sample_id, (image, mask) in expected.items():
        np.testing.assert_array_equal(samples[sample_id].image, image)
        np.testing.assert_array_equal(samples[sample_id].mask, mask)
        assert (samples[sample_id].label, samples[sample_id].group) == ("unknown", sample_id)
    reasons = {sample_id: skip.reason for sample_id, skip in skips.items()}
    assert set(reasons) == {"nomask", "bigger", "greymask", "corrupt", "twice"}
    assert "no mask found" in reasons["nomask"]
    assert "size differs" in reasons["bigger"] and "24x20" in reasons["bigger"]
    assert "not binary" in reasons["greymask"]
    assert "cannot read image" in reasons["corrupt"]
    assert "ambiguous" in reasons["twice"]


def test_folder_same_stem_rule_and_labels_csv(tmp_path):
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        save(tmp_path / "images" / f"{name}.png", grey_image(8, 8, seed))
        save(tmp_path / "masks" / f"{name}.png", box_mask(8, 8, size=3), mode="1")
    (tmp_path / "labels.csv").write_text("id,label,group\na,Benign,p1\nb,malignant,\n")
    samples, skips = _split(importers.import_folder(tmp_path, {"labels_csv": "labels.csv"}))
    assert not skips
    assert {(s.id, s.label, s.group) for s in samples.values()} == {
        ("a", "benign", "p1"),
        ("b", "malignant", "b"),
        ("c", "unknown", "c"),
    }


@pytest.mark.parametrize(
    ("csv", "match"),
    [
        ("id,label\na,tumour\n", "label 'tumour'"),
        ("id,label\na,benign\na,benign\n", "listed twice"),
        ("name,label\na,benign\n", "missing column"),
    ],
)
def test_folder_bad_labels_csv(tmp_path, csv, match):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "labels.csv").write_text(csv)
    with pytest.raises(DataError, match=match) as info:
        importers.import_folder(tmp_path, {"labels_csv": "labels.csv"})
    assert info.value.path == tmp_path / "labels.csv"


def test_folder_missing_labels_csv(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="labels_csv not found"):
        importers.import_folder(tmp_path, {"labels_csv": "nope.csv"})


def test_folder_empty_folders_yield_nothing(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    assert list(importers.import_folder(tmp_path, {})) == []


# --- synthetic ------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_SYNTHETIC, reason="busseg.data.synthetic is not written yet")
def test_synthetic_ids_groups_and_options():
    records = list(importers.import_synthetic(None, {"count": 3, "seed": 5, "size": 64}))
    assert [r.id for r in records] == ["syn_0000", "syn_0001", "syn_0002"]
    for record in records:
        assert isinstance(record, Sample)
        assert record.group == record.id
        assert record.image.shape == record.mask.shape == (64, 64)
        assert record.image.dtype == np.uint8 and record.mask.dtype == bool
        assert record.label in ("benign", "malignant", "normal")
    again = list(importers.import_synthetic(None, {"count": 3, "seed": 5, "size": 64}))
    np.testing.assert_array_equal(records[2].image, again[2].image)


@pytest.mark.skipif(not HAS_SYNTHETIC, reason="busseg.data.synthetic is not written yet")
@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "d.count"),
        ({"count": 0}, "d.count"),
        ({"count": 2, "seed": 1.5}, "d.seed"),
        ({"count": 2, "colour": 1}, "d.colour"),
    ],
)
def test_synthetic_option_errors(options, key):
    with pytest.raises(ConfigError) as info:
        importers.import_synthetic(None, options, section="d")
    assert info.value.key == key


@pytest.mark.parametrize("kind", ["folder", "udiat"])
def test_every_kind_converts_tinted_and_colour_images_and_says_which(tmp_path, kind):
    """One colour rule for all kinds: tinted grey and Doppler are converted, and marked."""
    images, masks = ("images", "masks") if kind == "folder" else ("original", "GT")
    grey = rgb(scan(96, 128, 0))
    tinted = add_calipers(tint(scan(96, 128, 1)))
    coloured = add_doppler(tint(scan(96, 128, 2)))
    for name, image in (("a_grey", grey), ("b_tinted", tinted), ("c_doppler", coloured)):
        save(tmp_path / images / f"{name}.png", image)
        save(tmp_path / masks / f"{name}.png", box_mask(96, 128, size=9), mode="1")
    samples, skips = _split(get_importer(kind)(tmp_path, {}))
    assert not skips
    assert {i: s.colour for i, s in samples.items()} == {"a_grey": "grey", "b_tinted": "tinted", "c_doppler": "colour"}
    for name, image in (("a_grey", grey), ("b_tinted", tinted), ("c_doppler", coloured)):
        np.testing.assert_array_equal(samples[name].image, luma(image))
    assert [s.colour_converted for s in samples.values()] == [False, False, True]


# --- busi -----------------------------------------------------------------------------


@pytest.mark.parametrize("parent", [True, False], ids=["parent-folder", "dataset-folder"])
def test_busi_merges_masks_converts_doppler_and_excludes_normal(tmp_path, parent):
    expected = make_busi(tmp_path)
    root = tmp_path if parent else tmp_path / "Dataset_BUSI_with_GT"
    samples, skips = _split(importers.import_busi(root, {}))
    assert sorted(samples) == sorted(i for i in expected if not i.startswith("normal"))
    for sample_id, sample in samples.items():
        label, image, mask = expected[sample_id]
        assert (sample.label, sample.group) == (label, sample_id)
        np.testing.assert_array_equal(sample.image, image)
        np.testing.assert_array_equal(sample.mask, mask)
        assert sample.colour_converted == (sample_id == "benign_004")
    assert samples["benign_002"].source_mask.count(";") == 2  # three masks merged
    assert set(skips) == {"benign_005"}
    assert "mask missing" in skips["benign_005"].reason and "benign (5)_mask" in skips["benign_005"].reason
    first, second = BUSI_DUPLICATE
    np.testing.assert_array_equal(samples[first].image, samples[second].image)


def test_busi_includes_normal_images_when_asked(tmp_path):
    expected = make_busi(tmp_path)
    samples, _ = _split(importers.import_busi(tmp_path, {"exclude_normal": False}))
    assert sorted(samples) == sorted(expected)
    normal = samples["normal_001"]
    assert normal.label == "normal" and not normal.mask.any()


def test_busi_limit_counts_sorted_ids_and_skips(tmp_path):
    make_busi(tmp_path)
    ids = [record.id for record in importers.import_busi(tmp_path, {"limit": 6})]
    assert ids == ["benign_001", "benign_002", "benign_003", "benign_004", "benign_005", "malignant_001"]


def test_busi_ids_without_number_and_clashing_names(tmp_path):
    base = tmp_path / "benign"
    (tmp_path / "malignant").mkdir()
    for name in ("odd name!", "benign (1)", "benign(1)"):
        save(base / f"{name}.png", grey_image(8, 8, 0))
        save(base / f"{name}_mask.png", box_mask(8, 8, size=2), mode="1")
    samples, skips = _split(importers.import_busi(tmp_path, {}))
    # BUSI's own spelling keeps the plain id; the other name of case 1 gets a suffix.
    assert sorted(samples) == ["benign_001", "benign_001-" + _sha8("benign(1)"), "benign_odd_name"]
    assert samples["benign_001"].source_image.endswith("benign (1).png")
    assert not skips


def _sha8(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:8]


def test_busi_names_differing_only_in_non_ascii_characters_both_import(tmp_path):
    base = tmp_path / "benign"
    (tmp_path / "malignant").mkdir()
    for seed, name in enumerate(("lésion", "lèsion")):
        save(base / f"{name}.png", grey_image(8, 8, seed))
        save(base / f"{name}_mask.png", box_mask(8, 8, size=2), mode="1")
    samples, skips = _split(importers.import_busi(tmp_path, {}))
    assert not skips  # not "several images share this stem"
    assert sorted(samples) == sorted(f"benign_l_sion-{_sha8(n)}" for n in ("lésion", "lèsion"))
    images = {Path(s.source_image).stem: s.image for s in samples.values()}
    np.testing.assert_array_equal(images["lésion"], grey_image(8, 8, 0))
    np.testing.assert_array_equal(images["lèsion"], grey_image(8, 8, 1))


@pytest.mark.parametrize(
    ("stem", "expected"),
    [(" case1 ", "case1"), ("case\n1", "case_1"), (".hidden", "hidden"), ("a b/c", "a_b_c"), ("é", "image")],
)
def test_sanitise_id(stem, expected):
    assert sanitise_id(stem) == expected


def test_file_names_with_spaces_and_newlines_get_safe_distinct_ids(tmp_path):
    for seed, name in enumerate((" case1 ", "case1", "case\n2")):
        save(tmp_path / "images" / f"{name}.png", grey_image(8, 8, seed))
        save(tmp_path / "masks" / f"{name}.png", box_mask(8, 8, size=2), mode="1")
    samples, skips = _split(importers.import_folder(tmp_path, {}))
    assert not skips
    assert sorted(samples) == sorted(["case1", "case1-" + _sha8(" case1 "), "case_2"])
    np.testing.assert_array_equal(samples["case1"].image, grey_image(8, 8, 1))
    np.testing.assert_array_equal(samples["case_2"].image, grey_image(8, 8, 2))


def test_unused_files_are_reported(tmp_path):
    for name in ("a", "b"):
        save(tmp_path / "images" / f"{name}.png", grey_image(8, 8, 0))
        save(tmp_path / "masks" / f"{name}.png", box_mask(8, 8, size=2), mode="1")
    save(tmp_path / "masks" / "orphan.png", box_mask(8, 8, size=2), mode="1")
    (tmp_path / "images" / ".DS_Store").write_bytes(b"\0")
    save(tmp_path / "images" / "._a.png", grey_image(8, 8, 0))
    (tmp_path / "labels.csv").write_text("id,label\na,benign\nghost,malignant\n")
    records = list(importers.import_folder(tmp_path, {"labels_csv": "labels.csv"}))
    samples, skips = _split(records)
    assert sorted(samples) == ["a", "b"] and not skips
    ignored = [(Path(r.path).name, r.reason) for r in records if isinstance(r, Ignored)]
    assert ("orphan.png", "mask without image") in ignored
    assert (".DS_Store", "hidden file, not read") in ignored and ("._a.png", "hidden file, not read") in ignored
    assert ("labels.csv", "'ghost' listed in labels_csv, no such image") in ignored


def test_busi_refuses_mismatched_extra_mask(tmp_path):
    base = tmp_path / "malignant"
    (tmp_path / "benign").mkdir()
    save(base / "malignant (1).png", grey_image(8, 8, 0))
    save(base / "malignant (1)_mask.png", box_mask(8, 8, size=2), mode="1")
    save(base / "malignant (1)_mask_1.png", box_mask(9, 8, size=2), mode="1")
    (record,) = importers.import_busi(tmp_path, {})
    assert isinstance(record, Skip) and "size differs" in record.reason
    assert record.path.endswith("malignant (1)_mask_1.png")


# --- bus_uclm -------------------------------------------------------------------------


def test_bus_uclm_labels_groups_and_tinted_images(tmp_path):
    expected = make_bus_uclm(tmp_path)
    samples, skips = _split(importers.import_bus_uclm(tmp_path, {}))
    assert sorted(samples) == sorted(expected)
    for sample_id, (label, group, image, mask) in expected.items():
        sample = samples[sample_id]
        assert (sample.label, sample.group) == (label, group)
        np.testing.assert_array_equal(sample.image, image)
        np.testing.assert_array_equal(sample.mask, mask)
        assert sample.colour == "tinted"
        assert sample.flags == {"doppler": "no", "marks": "no", "combined": "no"}
    assert set(skips) == {"BEAU_000"}
    assert "size differs" in skips["BEAU_000"].reason and "16x20" in skips["BEAU_000"].reason


@pytest.mark.parametrize(
    ("info", "label"),
    [
        (None, "unknown"),  # no INFO.csv: a lesion without class colour stays unknown
        ("file_name,Class\nBEAU_001,benign\n", "benign"),
        ("Patient,Age\nBEAU,40\n", "unknown"),  # no image column: reported, not used
        ("\x00\xff\xfe garbage", "unknown"),
    ],
)
def test_bus_uclm_info_csv_is_optional_and_never_fatal(tmp_path, info, label):
    make_bus_uclm(tmp_path, info=info)
    records = list(importers.import_bus_uclm(tmp_path, {}))
    samples, _ = _split(records)
    assert samples["BEAU_001"].label == label
    assert samples["ALWI_000"].label == "benign"  # from the mask colour without a Label
    if info is not None and label == "unknown":
        assert "INFO.csv" in _ignored(records)


def test_bus_uclm_info_label_gives_the_class(tmp_path):
    make_bus_uclm(tmp_path)
    text = (tmp_path / "INFO.csv").read_text(encoding="utf-8-sig")
    (tmp_path / "INFO.csv").write_text("\ufeff" + text.replace("ALWI_000.png;16x16;Benign", "ALWI_000;16x16;Malignant"))
    samples, _ = _split(importers.import_bus_uclm(tmp_path, {}))
    assert samples["ALWI_000"].label == "malignant"  # Label wins over the (green) mask colour


def test_bus_uclm_exclude_normal(tmp_path):
    make_bus_uclm(tmp_path)
    samples, skips = _split(importers.import_bus_uclm(tmp_path, {"exclude_normal": True}))
    assert sorted(samples) == ["ALWI_000", "ALWI_001", "BEAU_001"]
    assert set(skips) == {"BEAU_000"}


def test_bus_uclm_converts_doppler_and_reports_missing_masks(tmp_path):
    make_bus_uclm(tmp_path)
    coloured = add_doppler(tint(scan(48, 64, 0)))
    save(tmp_path / "images" / "ALWI_000.png", coloured)
    save(tmp_path / "masks" / "ALWI_000.png", colour_mask(box_mask(48, 64), (0, 255, 0)))
    (tmp_path / "images" / "ALWI_001.png").unlink()
    records = list(importers.import_bus_uclm(tmp_path, {}))
    samples, skips = _split(records)
    assert samples["ALWI_000"].colour == "colour"
    np.testing.assert_array_equal(samples["ALWI_000"].image, luma(coloured))
    ignored = _ignored(records)
    assert ignored["ALWI_001.png"] == "mask without image"
    assert ignored["INFO.csv"] == "'ALWI_001' listed in INFO.csv, no such image"


def test_bus_uclm_like_the_real_dataset(tmp_path):
    """Tinted map, calipers, Doppler (Yes and Y), colour masks, INFO.csv with BOM and ';'."""
    facts = make_bus_uclm_like(tmp_path)
    raw = (tmp_path / "INFO.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfImage;Resolution;Label;Doppler;Marks;Combined")
    with Image.open(tmp_path / "images" / "ALWI_000.png") as image:
        assert image.mode == "RGB"
        pixels = np.asarray(image).astype(int)
    assert (pixels.max(axis=2) - pixels.min(axis=2) > 8).mean() > 0.3  # R, G, B differ: tinted
    records = list(importers.import_bus_uclm(tmp_path, {}))
    samples, skips = _split(records)
    assert not skips and not _ignored(records)
    assert sorted(samples) == sorted(facts)
    for sample_id, fact in facts.items():
        sample = samples[sample_id]
        assert (sample.label, sample.group) == (fact["label"], fact["group"])
        assert sample.flags == {k: fact[k] for k in ("doppler", "marks", "combined")}
        assert sample.colour == ("colour" if fact["doppler"] == "yes" else "tinted"), sample_id
    assert {s.group for s in samples.values()} == {"ALWI", "BEAU", "CAFE", "DUNE"}


# --- udiat ----------------------------------------------------------------------------


def test_udiat_pairs_original_with_gt(tmp_path):
    expected = make_udiat(tmp_path)
    (tmp_path / "GT" / "000003.png").unlink()
    samples, skips = _split(importers.import_udiat(tmp_path, {}))
    assert sorted(samples) == ["000001", "000002"]
    for sample_id, sample in samples.items():
        np.testing.assert_array_equal(sample.image, expected[sample_id][0])
        np.testing.assert_array_equal(sample.mask, expected[sample_id][1])
        assert (sample.label, sample.group) == ("unknown", sample_id)
    assert "no mask found" in skips["000003"].reason


def test_udiat_labels_csv(tmp_path):
    make_udiat(tmp_path)
    (tmp_path / "labels.csv").write_text("id,label,group\n000001,malignant,p7\n000002,Benign,\n")
    samples, _ = _split(importers.import_udiat(tmp_path, {"labels_csv": "labels.csv", "limit": 3}))
    assert {(s.id, s.label, s.group) for s in samples.values()} == {
        ("000001", "malignant", "p7"),
        ("000002", "benign", "000002"),
        ("000003", "unknown", "000003"),
    }


# --- folder mask_pattern (BrEaST-like) -------------------------------------------------


def test_folder_mask_pattern_merges_every_matching_mask(tmp_path):
    one, two = box_mask(12, 12, 0, 0, 3), box_mask(12, 12, 6, 6, 4)
    for name, seed in (("case1", 1), ("case10", 2), ("case[2]", 3), ("case4", 4)):
        save(tmp_path / "images" / f"{name}.png", grey_image(12, 12, seed))
    save(tmp_path / "masks" / "case1_tumor.png", one, mode="1")
    save(tmp_path / "masks" / "case1_tumor2.png", colour_mask(two, (0, 255, 0)))
    save(tmp_path / "masks" / "case1_other.png", box_mask(12, 12), mode="1")  # not a lesion
    save(tmp_path / "masks" / "case10_tumor.png", two, mode="1")
    save(tmp_path / "masks" / "case[2]_tumor.png", one, mode="1")  # glob characters in the stem
    options = {"mask_pattern": "{stem}_tumor*.png", "require_masks": True}
    records = list(importers.import_folder(tmp_path, options))
    samples, skips = _split(records)
    assert sorted(samples) == ["case1", "case10", "case_2"]  # the id is sanitised, the glob is not
    np.testing.assert_array_equal(samples["case1"].mask, one | two)
    np.testing.assert_array_equal(samples["case10"].mask, two)
    np.testing.assert_array_equal(samples["case_2"].mask, one)
    assert _ignored(records) == {"case1_other.png": "mask without image"}
    assert "no mask found" in skips["case4"].reason and "case4_tumor*.png" in skips["case4"].reason


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mask_pattern": "mask_*.png"}, "must contain {stem}"),
        ({"mask_pattern": "{name}.png"}, "not a valid pattern"),
        ({"mask_pattern": "../{stem}.png"}, "inside the masks/ folder"),
        ({"mask_pattern": "{stem}*.png", "mask_suffix": "_m"}, "cannot be combined"),
    ],
)
def test_folder_bad_mask_pattern(tmp_path, options, match):
    with pytest.raises(ConfigError, match=match) as info:
        importers.import_folder(tmp_path, options, section="d")
    assert info.value.key == "d.mask_pattern"


# --- auto -----------------------------------------------------------------------------


def _make_busi_without_parent(root: Path) -> None:
    """BUSI's class folders directly in ``root / "y"``."""
    make_busi(root / "x")
    (root / "x" / "Dataset_BUSI_with_GT").rename(root / "y")


@pytest.mark.parametrize(
    ("build", "kind"),
    [
        (make_busbra, "busbra"),
        (make_stu, "stu"),
        (make_busi, "busi"),
        (_make_busi_without_parent, "busi"),
        (make_bus_uclm, "bus_uclm"),
        (make_udiat, "udiat"),
        (_make_folder, "folder"),
    ],
    ids=["busbra", "stu", "busi-parent", "busi-folder", "bus_uclm", "udiat", "folder"],
)
def test_auto_detects_each_layout(tmp_path, build, kind):
    build(tmp_path)
    root = tmp_path / "y" if (tmp_path / "y").is_dir() else tmp_path
    assert importers.detect_kind(root) == kind
    auto = [r for r in importers.import_auto(root, {"limit": 3}) if not isinstance(r, Ignored)]
    direct = [r for r in get_importer(kind)(root, {"limit": 3}) if not isinstance(r, Ignored)]
    assert [r.id for r in auto] == [r.id for r in direct] and len(auto) == 3


@pytest.mark.parametrize(("folder", "kind"), [("BUS-BRA", "busbra"), ("STU", "stu")])
def test_auto_detects_the_real_datasets(folder, kind):
    root = REAL_BUSBRA.parent / folder
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    assert importers.detect_kind(root) == kind


def test_auto_options_belong_to_the_detected_kind(tmp_path):
    make_busi(tmp_path)
    samples, _ = _split(importers.import_auto(tmp_path, {"exclude_normal": False}))
    assert "normal_001" in samples
    with pytest.raises(ConfigError, match="unknown key") as info:
        importers.import_auto(tmp_path, {"mask_suffix": "_m"}, section="d")
    assert info.value.key == "d.mask_suffix"


def test_auto_unknown_layout_lists_every_kind(tmp_path):
    (tmp_path / "scans").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError, match="no known dataset layout") as info:
        importers.import_auto(tmp_path, {})
    assert info.value.path == tmp_path
    for looked_for in (
        "busbra: images/, masks/, bus_data.csv",
        "bus_uclm: images/, masks/, INFO.csv",
        "stu: images/Test_Image_*.png, masks/",
        "busi: Dataset_BUSI_with_GT/ or benign/, malignant/",
        "udiat: original/, GT/",
        "folder: images/, masks/ or images/",
    ):
        assert looked_for in info.value.problem
