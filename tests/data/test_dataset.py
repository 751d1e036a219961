"""In-memory segmentation datasets and split files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from busseg.data.dataset import SegmentationDataset, as_batch
from busseg.data.index import read_index
from busseg.data.prepared import PreparedDataset, PseudoLabels
from busseg.data.split import read_id_list, write_id_list
from busseg.errors import DataError


def test_items_and_batches(tiny_prepared: Path) -> None:
    ids = sorted(read_index(tiny_prepared / "index.csv")["id"])[:4]
    prepared = PreparedDataset(tiny_prepared)
    ds = SegmentationDataset(prepared, ids, 32, masks=prepared)
    item = ds[0]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}
    batch = as_batch(ds, [0, 2, 2])
    assert batch["image"].shape == (3, 1, 32, 32) and batch["mask"].shape == (3, 1, 32, 32)
    assert torch.equal(batch["image"][1], ds[2]["image"])
    unlabeled = SegmentationDataset(prepared, ids, 32)
    assert "mask" not in as_batch(unlabeled, [0])


def test_missing_mask_and_split_file_are_named(tiny_prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothere.png"):
        SegmentationDataset(PreparedDataset(tiny_prepared), ["nothere"], 32)
    with pytest.raises(DataError, match="train.txt"):
        read_id_list(tmp_path / "train.txt")
    write_id_list(tmp_path / "x.txt", ["b", "a"])
    assert read_id_list(tmp_path / "x.txt") == ["b", "a"]


def test_prepared_dataset_and_pseudo_labels_share_one_layout(tiny_prepared: Path, tmp_path: Path) -> None:
    prepared = PreparedDataset(tiny_prepared)
    first = prepared.ids[0]
    assert prepared.ids == list(read_index(tiny_prepared / "index.csv")["id"])
    assert prepared.image_path(first) == tiny_prepared / "images" / f"{first}.png"
    assert prepared.image(first).dtype == "uint8" and prepared.mask(first).dtype == bool
    assert prepared.mask(first).shape == prepared.image(first).shape
    labels = PseudoLabels(tmp_path)
    assert labels.mask_path(first) == tmp_path / "masks" / f"{first}.png"
    with pytest.raises(DataError, match="mask not found"):
        labels.mask(first)


class HalfWeights:
    """Keeps the left half of every mask's pixels, except for ``whole`` (all of them)."""

    def __init__(self, prepared: PreparedDataset, whole: str) -> None:
        self.prepared, self.whole = prepared, whole

    def weight(self, sample_id: str):
        if sample_id == self.whole:
            return None
        keep = self.prepared.mask(sample_id) * False
        keep[:, : keep.shape[1] // 2] = True
        return keep


def test_per_pixel_weights_travel_with_items_and_batches(tiny_prepared: Path) -> None:
    ids = sorted(read_index(tiny_prepared / "index.csv")["id"])[:3]
    prepared = PreparedDataset(tiny_prepared)
    ds = SegmentationDataset(prepared, ids, 32, masks=prepared, weights=HalfWeights(prepared, whole=ids[1]))
    assert ds[0]["weight"].shape == (1, 32, 32)
    assert bool(ds[0]["weight"][..., :16].eq(1).all()) and bool(ds[0]["weight"][..., 16:].eq(0).all())
    batch = as_batch(ds, [0, 1])
    assert batch["weight"].dtype == torch.float32 and bool(batch["weight"][1].eq(1).all())
    assert "weight" not in as_batch(SegmentationDataset(prepared, ids, 32, masks=prepared), [0])
    with pytest.raises(ValueError, match="need masks"):
        SegmentationDataset(prepared, ids, 32, weights=HalfWeights(prepared, whole=ids[1]))
