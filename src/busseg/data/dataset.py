"""Torch datasets over a prepared folder (``images/``, ``masks/``, ``index.csv``).

Images are resized to the network's square input once, when the dataset is built,
and kept in memory as uint8: BUS datasets are small (BUS-BRA at 224 px is ~94 MB), and
decoding PNGs every step would dominate a CPU training step.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from busseg.errors import DataError


def read_id_list(path: str | Path) -> list[str]:
    """Read a split file: one image id per line, blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "split file not found; run the split stage first")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def write_id_list(path: str | Path, ids: Sequence[str]) -> None:
    """Write one id per line (sorted input gives byte-identical files for the same split)."""
    from busseg.atomic import write_text

    write_text(path, "".join(f"{i}\n" for i in ids))


def load_grey(path: Path) -> np.ndarray:
    """Read a prepared (already validated) 8-bit greyscale PNG."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read prepared image: {exc}") from None


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a uint8 image to size x size."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask to size x size."""
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((size, size), Image.NEAREST)) > 127


class SegmentationDataset(Dataset):
    """Images (and masks, when ``mask_dir`` is given) of ``ids``, resized to ``size``.

    Each item is a dict: ``image`` float (1, S, S) in [0, 1], ``mask`` float (1, S, S)
    (only with masks), ``index`` int. ``mask_dir`` may point to ground-truth masks or
    to pseudo labels; mask files are ``<mask_dir>/<id>.png``.
    """

    def __init__(
        self,
        image_dir: str | Path,
        ids: Sequence[str],
        size: int,
        mask_dir: str | Path | None = None,
        progress: bool = False,
        desc: str = "loading images",
    ) -> None:
        self.ids = list(ids)
        self.size = size
        self.has_masks = mask_dir is not None
        self.images = np.empty((len(self.ids), size, size), dtype=np.uint8)
        self.masks = np.empty((len(self.ids), size, size), dtype=bool) if self.has_masks else None
        for n, image_id in enumerate(tqdm(self.ids, desc=desc, disable=not progress, leave=False)):
            self.images[n] = resize_image(load_grey(Path(image_dir) / f"{image_id}.png"), size)
            if self.masks is not None:
                mask_path = Path(mask_dir) / f"{image_id}.png"  # type: ignore[arg-type]
                if not mask_path.is_file():
                    raise DataError(mask_path, "mask not found")
                self.masks[n] = resize_mask(load_grey(mask_path) > 127, size)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        item: dict[str, torch.Tensor | int] = {
            "image": torch.from_numpy(self.images[i]).float().div_(255.0).unsqueeze(0),
            "index": i,
        }
        if self.masks is not None:
            item["mask"] = torch.from_numpy(self.masks[i]).float().unsqueeze(0)
        return item


def as_batch(dataset: SegmentationDataset, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """Stack items ``indices`` of an in-memory dataset into a batch (no DataLoader needed)."""
    idx = np.asarray(indices, dtype=np.int64)
    batch = {
        "image": torch.from_numpy(dataset.images[idx]).float().div_(255.0).unsqueeze(1),
        "index": torch.from_numpy(idx),
    }
    if dataset.masks is not None:
        batch["mask"] = torch.from_numpy(dataset.masks[idx]).float().unsqueeze(1)
    return batch
