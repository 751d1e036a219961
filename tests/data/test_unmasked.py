"""A user's own scans: images without a mask are unlabeled scans, from import to split.

The ``folder`` kind imports an image without a mask as an unlabeled sample (``require_masks``
restores the strict rule), the prepared index leaves its ``mask`` empty, and the split takes
validation and test from the masked images only.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from busseg.data import importers
from busseg.data.importers import Ignored, Sample, Skip
from busseg.data.index import has_mask, read_index
from busseg.data.prepare import prepare_dataset
from busseg.data.prepared import PreparedDataset
from busseg.data.split import REAL, SIMULATED, SplitConfig, choose_labeled, plan_split, split_dataset
from busseg.errors import ConfigError, DataError
from tests.data.fixtures import box_mask, grey_image, save

REPO = Path(__file__).resolve().parents[2]


def make_clinic(root: Path, n_images: int, masked: set[int], size: int = 24) -> None:
    """``images/scan_NN.png`` for ``n_images`` scans, ``masks/scan_NN.png`` for the ``masked`` ones."""
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for n in range(n_images):
        save(root / "images" / f"scan_{n:02d}.png", grey_image(size, size, n))
        if n in masked:
            save(root / "masks" / f"scan_{n:02d}.png", box_mask(size, size, 4 + n % 5, 3, 8), mode="1")


def records_by_type(records) -> tuple[dict[str, Sample], dict[str, Skip], list[Ignored]]:
    records = list(records)
    return (
        {r.id: r for r in records if isinstance(r, Sample)},
        {r.id: r for r in records if isinstance(r, Skip)},
        [r for r in records if isinstance(r, Ignored)],
    )


def test_folder_imports_an_image_without_mask_as_unlabeled(tmp_path):
    make_clinic(tmp_path, 4, masked={0, 2})
    samples, skips, _ = records_by_type(importers.import_folder(tmp_path, {}))
    assert not skips
    assert {i for i, s in samples.items() if s.has_mask} == {"scan_00", "scan_02"}
    assert samples["scan_01"].mask is None and samples["scan_01"].source_mask == ""
    np.testing.assert_array_equal(samples["scan_01"].image, grey_image(24, 24, 1))


def test_require_masks_restores_the_strict_rule(tmp_path):
    make_clinic(tmp_path, 3, masked={0})
    samples, skips, _ = records_by_type(importers.import_folder(tmp_path, {"require_masks": True}))
    assert list(samples) == ["scan_00"]
    assert set(skips) == {"scan_01", "scan_02"} and "no mask found" in skips["scan_01"].reason
    (tmp_path / "masks" / "scan_00.png").unlink()
    (tmp_path / "masks").rmdir()
    with pytest.raises(DataError, match="missing masks/"):
        importers.import_folder(tmp_path, {"require_masks": True})


def test_require_masks_must_be_a_boolean(tmp_path):
    make_clinic(tmp_path, 1, masked={0})
    with pytest.raises(ConfigError, match="require_masks"):
        importers.import_folder(tmp_path, {"require_masks": "yes"}, section="datasets.clinic")


def test_a_folder_of_scans_only_is_a_folder_of_unlabeled_scans(tmp_path):
    for n in range(3):
        save(tmp_path / "images" / f"s{n}.png", grey_image(20, 20, n))
    samples, skips, ignored = records_by_type(importers.import_folder(tmp_path, {}))
    assert sorted(samples) == ["s0", "s1", "s2"] and not skips and not ignored
    assert not any(s.has_mask for s in samples.values())
    assert importers.detect_kind(tmp_path) == "folder"


def test_a_mask_without_its_image_is_reported_not_read(tmp_path):
    make_clinic(tmp_path, 2, masked={0, 1})
    save(tmp_path / "masks" / "orphan.png", box_mask(24, 24), mode="1")
    samples, _, ignored = records_by_type(importers.import_folder(tmp_path, {}))
    assert sorted(samples) == ["scan_00", "scan_01"]
    assert [(Path(r.path).name, r.reason) for r in ignored] == [("orphan.png", "mask without image")]


def test_an_unlabeled_folder_joins_an_annotated_one_in_a_composite(tmp_path):
    make_clinic(tmp_path / "clinic" / "outlined", 6, masked={0, 1, 2, 3, 4, 5})
    for n in range(4):
        save(tmp_path / "clinic" / "archive" / "images" / f"old_{n}.png", grey_image(24, 24, 50 + n))
    spec = {"kind": "composite", "root": str(tmp_path / "clinic"),
            "sources": {"outlined": {"kind": "folder", "root": "outlined"},
                        "archive": {"kind": "folder", "root": "archive"}}}
    report = prepare_dataset("clinic", spec, tmp_path / "out", progress=False)
    assert (report.n_images, report.n_masked, report.n_unmasked) == (10, 6, 4)
    assert report.sources["archive"]["n_unmasked"] == 4 and report.sources["outlined"]["n_unmasked"] == 0
    index = read_index(tmp_path / "out" / "index.csv")
    assert sorted(index.loc[~has_mask(index), "id"]) == [f"archive__old_{n}" for n in range(4)]


def test_prepare_writes_no_mask_for_an_unmasked_image_and_no_stage_can_read_one(tmp_path):
    make_clinic(tmp_path / "src", 5, masked={1, 3})
    report = prepare_dataset("clinic", {"kind": "folder", "root": str(tmp_path / "src")}, tmp_path / "out", progress=False)
    assert (report.n_masked, report.n_unmasked) == (2, 3)
    assert report.unmasked_ids == ["scan_00", "scan_02", "scan_04"]
    assert report.n_empty_masks == 0  # an unmasked image is not an empty mask
    raw = pd.read_csv(tmp_path / "out" / "index.csv", dtype=str, keep_default_na=False).set_index("id")
    assert raw.loc["scan_00", "mask"] == "" and raw.loc["scan_01", "mask"] == "masks/scan_01.png"
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["scan_01.png", "scan_03.png"]
    prepared = PreparedDataset(tmp_path / "out")
    assert prepared.masked_ids == ["scan_01", "scan_03"]
    assert prepared.mask("scan_01").any()
    with pytest.raises(DataError, match="'scan_00' has no ground-truth mask") as info:
        prepared.mask("scan_00")
    assert info.value.path == tmp_path / "out" / "masks" / "scan_00.png"


def index_of(n_images: int, masked: set[int], groups: dict[int, str] | None = None) -> pd.DataFrame:
    """An in-memory index of ``n_images`` ids, masks for ``masked``, patient ``groups``."""
    groups = groups or {}
    return pd.DataFrame({
        "id": [f"i{n:02d}" for n in range(n_images)],
        "image": [f"images/i{n:02d}.png" for n in range(n_images)],
        "mask": [f"masks/i{n:02d}.png" if n in masked else "" for n in range(n_images)],
        "label": ["unknown"] * n_images,
        "group": [groups.get(n, f"i{n:02d}") for n in range(n_images)],
        "width": [32] * n_images, "height": [32] * n_images,
        "hash": [f"h{n}" for n in range(n_images)],
    })


def test_a_fully_masked_dataset_is_split_exactly_as_before():
    index = index_of(40, masked=set(range(40)))
    plan = plan_split(index, SplitConfig(), 0.25, seed=3)
    parts = split_dataset(index, SplitConfig(), 3)
    labeled = choose_labeled(index, parts["train"], 0.25, 3)
    assert plan.mode == SIMULATED
    assert (plan.train, plan.val, plan.test, plan.labeled) == (parts["train"], parts["val"], parts["test"], labeled)
    assert plan.unlabeled == sorted(set(parts["train"]) - set(labeled))


def test_real_unlabeled_images_train_unlabeled_and_never_validate_or_test():
    masked = {0, 3, 5, 8, 11, 14, 17, 20, 23, 26}
    index = index_of(40, masked)
    masked_ids = {f"i{n:02d}" for n in masked}
    plan = plan_split(index, SplitConfig(), 0.025, seed=0)
    assert plan.mode == REAL
    assert set(plan.val) | set(plan.test) <= masked_ids and plan.val and plan.test
    assert set(plan.labeled) == masked_ids - set(plan.val) - set(plan.test)  # every other mask is used
    assert set(plan.unlabeled) == set(index["id"]) - masked_ids  # label_ratio hid nothing
    assert plan.train == sorted(plan.labeled + plan.unlabeled)
    assert plan_split(index, SplitConfig(), 0.5, seed=0) == plan  # label_ratio has no say here


def test_counts_for_validation_and_test_with_few_masks():
    index = index_of(30, masked={1, 2, 3, 4})
    plan = plan_split(index, SplitConfig(val=1, test=1), 0.1, seed=0)
    assert (len(plan.labeled), len(plan.val), len(plan.test), len(plan.unlabeled)) == (2, 1, 1, 26)


def test_too_few_masks_are_refused_with_the_numbers():
    index = index_of(30, masked={1, 2})
    with pytest.raises(DataError, match=r"2 of 30 images have a mask, which gave .* labeled, .* validation and .* test"):
        plan_split(index, SplitConfig(), 0.1, seed=0)
    with pytest.raises(DataError, match="leave no training image of the 2 images"):
        plan_split(index, SplitConfig(val=1, test=1), 0.1, seed=0)


def test_a_dataset_without_any_mask_has_nothing_to_validate_on():
    with pytest.raises(DataError, match="none of the 12 images has a mask: there is nothing to validate or test on"):
        plan_split(index_of(12, masked=set()), SplitConfig(), 0.1, seed=0)


def test_unmasked_images_of_a_test_patient_do_not_train():
    # Patients p0..p9: one outlined scan each, plus two unmasked scans of the same patient.
    groups = {n: f"p{n % 10}" for n in range(30)}
    index = index_of(30, masked=set(range(10)), groups=groups)
    plan = plan_split(index, SplitConfig(val=2, test=2), 0.1, seed=1)
    held_patients = {groups[int(i[1:])] for i in plan.val + plan.test}
    assert len(plan.held_out) == 2 * len(held_patients)
    assert all(groups[int(i[1:])] in held_patients for i in plan.held_out)
    assert not {groups[int(i[1:])] for i in plan.unlabeled + plan.labeled} & held_patients


@pytest.mark.parametrize(("val", "test", "match"), [(1.5, 2, "whole number"), (2, 0, "test part must be > 0")])
def test_bad_counts_name_the_key(val, test, match):
    with pytest.raises(ConfigError, match=match):
        SplitConfig(val=val, test=test).check()


def test_split_stage_writes_the_case_and_the_counts(tmp_path):
    make_clinic(tmp_path / "src", 20, masked={0, 1, 2, 3, 4, 5})
    prepare_dataset("clinic", {"kind": "folder", "root": str(tmp_path / "src")}, tmp_path / "prepared", progress=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(split={"train": 0.7, "val": 1, "test": 2}, datasets={"clinic": {"kind": "folder", "root": str(tmp_path / "src")}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "split.py"), "--index", str(tmp_path / "prepared" / "index.csv"),
         "--out", "splits", "--metrics", "split.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "14 unmasked images are the unlabeled ones" in proc.stdout
    metrics = json.loads((tmp_path / "split.json").read_text())
    assert metrics["mode"] == "real" and metrics["label_ratio"] is None
    assert (metrics["n_masked"], metrics["n_unmasked"], metrics["n_val"], metrics["n_test"], metrics["n_labeled"]) == (6, 14, 1, 2, 3)
    unlabeled = (tmp_path / "splits" / "unlabeled.txt").read_text().split()
    assert unlabeled == [f"scan_{n:02d}" for n in range(6, 20)]
