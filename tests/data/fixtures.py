"""Builders of tiny dataset folders that reproduce each public layout and its quirks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

BUSBRA_ROWS = [
    # ID, Case, Pathology, CSV Height (one deliberately wrong, as in the real CSV)
    ("bus_0001-l", "1", "malignant", 20),
    ("bus_0001-r", "1", "malignant", 20),
    ("bus_0002-s", "2", "benign", 99),
    ("bus_0003-l", "3", "benign", 20),
]


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Save ``array`` as a PNG (converted to ``mode`` when given); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)
    return path


def grey_image(height: int, width: int, seed: int) -> np.ndarray:
    """A reproducible uint8 noise image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def box_mask(height: int, width: int, top: int = 2, left: int = 3, size: int = 5) -> np.ndarray:
    """A bool mask with one square lesion."""
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def write_corrupt(path: Path, seed: int = 0) -> Path:
    """Random bytes under an image name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(300))
    return path


def make_busbra(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A BUS-BRA layout: 1-bit masks, a CSV with one wrong height, one missing mask.

    Returns the expected (image, mask) of the ids that should import;
    ``bus_0003-l`` has no mask.
    """
    expected = {}
    for index, (sample_id, _case, _pathology, _height) in enumerate(BUSBRA_ROWS):
        height, width = (24, 18) if sample_id == "bus_0002-s" else (20, 16)
        image, mask = grey_image(height, width, index), box_mask(height, width, top=index)
        save(root / "images" / f"{sample_id}.png", image)
        if sample_id != "bus_0003-l":
            save(root / "masks" / f"mask_{sample_id.removeprefix('bus_')}.png", mask, mode="1")
            expected[sample_id] = (image, mask)
    lines = ["ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX"]
    lines += [
        f'{sid},{case},x,{pathology},4,GE,16,{height},left,"[1,2,3,4]"'
        for sid, case, pathology, height in BUSBRA_ROWS
    ]
    (root / "bus_data.csv").write_text("\n".join(lines) + "\n")
    return expected


def make_stu(root: Path, numbers: tuple[int, ...] = (1, 2, 10), scale: int = 4) -> dict[str, np.ndarray]:
    """An STU layout: 16x16 images, masks ``scale`` times larger with grey edge values.

    Returns the expected 16x16 mask per id.
    """
    expected = {}
    for number in numbers:
        image, mask = grey_image(16, 16, number), box_mask(16, 16, top=number % 8)
        big = np.kron(mask.astype(np.uint8) * 255, np.ones((scale, scale), dtype=np.uint8))
        # Anti-aliased edge: a few pixels inside/outside the lesion border at mid greys,
        # on the side of the threshold that keeps the nearest-neighbour result unchanged.
        rows, cols = np.nonzero(big)
        big[rows[0], cols[0]] = 200
        big[rows[-1], cols[-1] + 1] = 60
        save(root / "images" / f"Test_Image_{number}.png", image)
        save(root / "masks" / f"mask_{number}.png", big)
        expected[f"stu_{number:03d}"] = mask
    return expected
