"""The on-disk layout of a prepared dataset and of its pseudo labels, in one place.

A prepared dataset folder (written by :mod:`busseg.data.prepare`) holds
``images/<id>.png`` (uint8 greyscale), ``masks/<id>.png`` (0/255) and ``index.csv``
(:mod:`busseg.data.index`); a pseudo-label folder (written by :mod:`busseg.pseudo.run`)
holds ``masks/<id>.png`` and ``labels.csv``. Every reader goes through
:class:`PreparedDataset` and :class:`PseudoLabels`, so the file names and the rule that
turns a stored 0/255 mask back into a boolean one (:data:`MASK_THRESHOLD`) are written once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from busseg.data.index import has_mask, read_index
from busseg.errors import DataError
from busseg.imageio import load_grey

IMAGES_DIR = "images"
MASKS_DIR = "masks"
INDEX_FILE = "index.csv"
LABELS_FILE = "labels.csv"

MASK_THRESHOLD = 127
"""A stored mask pixel above this is lesion. Masks are written as 0/255, so any threshold
in between reads them back exactly; 127 is the one every reader uses."""


def image_file(sample_id: str) -> str:
    """The image of ``sample_id`` relative to a prepared folder (``images/<id>.png``)."""
    return f"{IMAGES_DIR}/{sample_id}.png"


def mask_file(sample_id: str) -> str:
    """The mask of ``sample_id`` relative to a prepared or pseudo-label folder (``masks/<id>.png``)."""
    return f"{MASKS_DIR}/{sample_id}.png"


def read_mask_png(path: str | Path) -> np.ndarray:
    """A stored 0/255 mask as ``bool`` (H, W); :class:`DataError` naming ``path`` if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "mask not found")
    return load_grey(path) > MASK_THRESHOLD


class PreparedDataset:
    """A prepared dataset folder: its index, its ids, and each sample's image and mask.

    The index is read (and validated) on first use only, so that a stage that knows its
    ids from a split file opens the folder without reading ``index.csv``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._index: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.root)!r})"

    @property
    def index_path(self) -> Path:
        """``<root>/index.csv``."""
        return self.root / INDEX_FILE

    @property
    def index(self) -> pd.DataFrame:
        """The validated ``index.csv`` (:func:`busseg.data.index.read_index`)."""
        if self._index is None:
            self._index = read_index(self.index_path)
        return self._index

    @property
    def ids(self) -> list[str]:
        """Every sample id, in index order."""
        return [str(i) for i in self.index["id"]]

    @property
    def masked_ids(self) -> list[str]:
        """The ids of the images with a ground-truth mask, in index order."""
        return [str(i) for i in self.index["id"][has_mask(self.index)]]

    def image_path(self, sample_id: str) -> Path:
        """The image file of ``sample_id``."""
        return self.root / image_file(sample_id)

    def mask_path(self, sample_id: str) -> Path:
        """The ground-truth mask file of ``sample_id``."""
        return self.root / mask_file(sample_id)

    def image(self, sample_id: str) -> np.ndarray:
        """The image of ``sample_id``, ``uint8`` (H, W)."""
        return load_grey(self.image_path(sample_id))

    def mask(self, sample_id: str) -> np.ndarray:
        """The ground-truth mask of ``sample_id``, ``bool`` (H, W).

        Raises :class:`DataError` naming the file for an image without a mask (an
        unlabeled scan): a stage that asks for one has put it in the wrong split.
        """
        path = self.mask_path(sample_id)
        if not path.is_file() and sample_id in set(self.ids) and sample_id not in set(self.masked_ids):
            raise DataError(path, f"{sample_id!r} has no ground-truth mask (an unlabeled image); "
                                  "only masked images can be labeled, validation or test images")
        return read_mask_png(path)


class PseudoLabels:
    """A pseudo-label folder: ``masks/<id>.png`` and the per-image table ``labels.csv``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"PseudoLabels({str(self.root)!r})"

    @property
    def masks_dir(self) -> Path:
        """``<root>/masks``, the folder of the label masks."""
        return self.root / MASKS_DIR

    @property
    def table_path(self) -> Path:
        """``<root>/labels.csv`` (columns :data:`busseg.pseudo.run.LABEL_COLUMNS`)."""
        return self.root / LABELS_FILE

    def mask_path(self, sample_id: str) -> Path:
        """The pseudo-label mask file of ``sample_id``."""
        return self.root / mask_file(sample_id)

    def mask(self, sample_id: str) -> np.ndarray:
        """The pseudo label of ``sample_id``, ``bool`` (H, W) (empty for an invalid label)."""
        return read_mask_png(self.mask_path(sample_id))
