"""The ``stu`` importer: STU-Hospital.

STU-Hospital: ``root/images/Test_Image_{n}.png`` with ``root/masks/mask_{n}.png``.
Its masks are square at other resolutions and near-binary; the documented rule of
this kind is: resize the mask to the image size with nearest-neighbour, keep values
> 127. Id ``stu_{n:03d}``; no patient ids (group = id); label ``unknown``.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busseg.data.importers.base import Ignored, Record, check_root, limit_ids, load_pair, parse_options, report_unmatched
from busseg.imageio import IMAGE_SUFFIXES


@dataclass(frozen=True)
class StuOptions:
    """Options of the ``stu`` kind."""

    limit: int | None = None


def import_stu(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """STU samples; masks resized (nearest) to the image and thresholded (> 127)."""
    opts = parse_options(StuOptions, options, section)
    root = check_root(root, section, "stu", ["images/", "masks/"])
    numbers = {}
    for path in (root / "images").glob("Test_Image_*.png"):
        match = re.fullmatch(r"Test_Image_(\d+)", path.stem)
        if match and path.is_file():
            numbers[f"stu_{int(match.group(1)):03d}"] = match.group(1)
    ids = limit_ids(sorted(numbers), opts.limit)
    ignored: list[Ignored] = []
    image_names = {f"Test_Image_{n}.png" for n in numbers.values()}
    report_unmatched(root / "images", image_names, "not named Test_Image_<n>.png, not read", ignored)
    mask_names = {f"mask_{n}.png" for n in numbers.values()}
    report_unmatched(root / "masks", mask_names, "mask without image", ignored, IMAGE_SUFFIXES)

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            number = numbers[sample_id]
            image_path = root / "images" / f"Test_Image_{number}.png"
            mask_path = root / "masks" / f"mask_{number}.png"
            yield load_pair(sample_id, image_path, mask_path, label="unknown", group=sample_id, resize=True)

    return generate()


importers = {"stu": import_stu}
"""This module's entry of :data:`busseg.data.importers.IMPORTERS`."""

LAYOUT: tuple[tuple[str, ...], ...] = (("images/Test_Image_*.png", "masks/"),)
"""The alternative sets of entries that identify this layout (``auto`` tries each kind's in turn)."""
