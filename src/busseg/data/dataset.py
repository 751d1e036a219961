"""Torch datasets over a prepared folder (:class:`busseg.data.prepared.PreparedDataset`).

Images are resized to the network's square input once, when the dataset is built,
and kept in memory as uint8: BUS datasets are small (BUS-BRA at 224 px is ~94 MB), and
decoding PNGs every step would dominate a CPU training step.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from busseg.data.prepared import PreparedDataset
from busseg.imageio import resize_image, resize_mask

#: Grey level -> [0, 1], computed once on the CPU. Batches index this table on whatever device
#: holds the images, so a GPU-held dataset gives bit-identical batches to the CPU path (CUDA's
#: ``div_(255)`` multiplies by the reciprocal and differs in the last bit for about 4 pixels in 10).
_UNIT_GREY = torch.arange(256, dtype=torch.float32) / 255.0


def grey_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 grey levels (any shape, any device) as float32 in [0, 1], the same bits on every device."""
    return _UNIT_GREY.to(images.device)[images.long()]


class MaskSource(Protocol):
    """Where a dataset's masks come from: the ground truth (:class:`PreparedDataset`) or
    pseudo labels (:class:`~busseg.data.prepared.PseudoLabels`)."""

    def mask(self, sample_id: str) -> np.ndarray: ...


class WeightSource(Protocol):
    """Which pixels of each mask train: ``bool`` (H, W) at the mask's size, or ``None`` for all
    (:class:`busseg.pseudo.refine.InMemoryLabels` with a certainty threshold)."""

    def weight(self, sample_id: str) -> np.ndarray | None: ...


class SegmentationDataset(Dataset):
    """Images of ``ids`` from ``prepared`` (and their masks from ``masks``, when given),
    resized to ``size``.

    Each item is a dict: ``image`` float (1, S, S) in [0, 1], ``mask`` float (1, S, S)
    (only with masks), ``index`` int, and ``weight`` float (1, S, S) in {0, 1} (only with
    ``weights``: the pixels a loss may use). ``masks`` is the prepared dataset itself for
    ground truth, or a :class:`~busseg.data.prepared.PseudoLabels` folder.
    """

    def __init__(
        self,
        prepared: PreparedDataset,
        ids: Sequence[str],
        size: int,
        masks: MaskSource | None = None,
        progress: bool = False,
        desc: str = "loading images",
        weights: WeightSource | None = None,
    ) -> None:
        if weights is not None and masks is None:
            raise ValueError("per-pixel weights need masks")
        self.ids = list(ids)
        self.size = size
        self.has_masks = masks is not None
        self.images = np.empty((len(self.ids), size, size), dtype=np.uint8)
        self.masks = np.empty((len(self.ids), size, size), dtype=bool) if masks is not None else None
        self.weights = np.ones((len(self.ids), size, size), dtype=bool) if weights is not None else None
        for n, image_id in enumerate(tqdm(self.ids, desc=desc, disable=not progress, leave=False)):
            self.images[n] = resize_image(prepared.image(image_id), size)
            if masks is not None and self.masks is not None:
                self.masks[n] = resize_mask(masks.mask(image_id), (size, size))
            if weights is not None and self.weights is not None and (keep := weights.weight(image_id)) is not None:
                self.weights[n] = resize_mask(keep, (size, size))

    def to_device(self, device: torch.device) -> "SegmentationDataset":
        """Keep a copy of the images (uint8) and masks on ``device``; :func:`as_batch` then
        indexes there. For GPUs: a step no longer waits for a host-to-device copy (BUS-BRA at
        224 px is ~94 MB). On the CPU it changes nothing."""
        if device.type != "cpu":
            self.device_images = torch.from_numpy(self.images).to(device)
            self.device_masks = torch.from_numpy(self.masks).to(device) if self.masks is not None else None
            self.device_weights = torch.from_numpy(self.weights).to(device) if self.weights is not None else None
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        item: dict[str, torch.Tensor | int] = {
            "image": grey_to_unit(torch.from_numpy(self.images[i])).unsqueeze(0),
            "index": i,
        }
        if self.masks is not None:
            item["mask"] = torch.from_numpy(self.masks[i]).float().unsqueeze(0)
        if self.weights is not None:
            item["weight"] = torch.from_numpy(self.weights[i]).float().unsqueeze(0)
        return item


def as_batch(dataset: SegmentationDataset, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """Stack items ``indices`` of an in-memory dataset into a batch (no DataLoader needed)."""
    idx = np.asarray(indices, dtype=np.int64)
    device_images = getattr(dataset, "device_images", None)
    if device_images is not None:  # held on the GPU (SegmentationDataset.to_device)
        index = torch.from_numpy(idx).to(device_images.device)
        batch = {"image": grey_to_unit(device_images[index]).unsqueeze(1), "index": index}
        if dataset.device_masks is not None:
            batch["mask"] = dataset.device_masks[index].float().unsqueeze(1)
        if getattr(dataset, "device_weights", None) is not None:
            batch["weight"] = dataset.device_weights[index].float().unsqueeze(1)
        return batch
    batch = {
        "image": grey_to_unit(torch.from_numpy(dataset.images[idx])).unsqueeze(1),
        "index": torch.from_numpy(idx),
    }
    if dataset.masks is not None:
        batch["mask"] = torch.from_numpy(dataset.masks[idx]).float().unsqueeze(1)
    if dataset.weights is not None:
        batch["weight"] = torch.from_numpy(dataset.weights[idx]).float().unsqueeze(1)
    return batch
