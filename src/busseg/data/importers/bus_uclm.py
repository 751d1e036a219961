"""The ``bus_uclm`` importer: BUS-UCLM.

BUS-UCLM: ``root/images/`` and ``root/masks/`` holding the same file names
(``ALWI_000.png``), and ``root/INFO.csv``. Id = sanitised file stem; group
(patient) = the id's prefix before the first ``_`` (``ALWI``; 38 patients). Images
are RGB through the scanner's blue-tinted grey map with coloured calipers, body
marks and letters (read as greyscale content, listed as ``tinted``); 37 are colour
Doppler. Masks are RGB: black background, green (0, 255, 0) benign, red
(255, 0, 0) malignant; any non-black pixel is lesion. ``INFO.csv`` as published:
``;``-separated, UTF-8 with a byte-order mark, columns
``Image;Resolution;Label;Doppler;Marks;Combined`` (the separator is taken from
the header; column names compare lower-case without spaces, ``_``, ``-``; the
image column is the first of ``image``, ``image_name``, ``filename``, ``file``,
``name``, ``id``, matched to the file name or stem). ``Label``
(``Normal``/``Benign``/``Malignant``) gives the class; without it (no row, no
file) an all-black mask is ``normal`` and a lesion takes its colour's class
(:func:`busseg.imageio.mask_colour_class`), else ``unknown``. ``Doppler``,
``Marks`` (calipers burned in) and ``Combined`` (side-by-side composite) become
the index columns ``doppler``, ``marks``, ``combined`` (``yes``/``no``, ``unknown``
without a row; ``Y`` counts as yes), and ``Doppler: Yes`` lists the image as
colour content. ``INFO.csv`` is optional: an unreadable one is reported and not
used. An image whose size differs from its mask is skipped with both sizes in
the reason, never resized. Option ``exclude_normal`` (default ``false`` here:
BUS-UCLM's 419 normal images are a documented part of the dataset; ``true``
drops them after reading them, so they count towards ``limit``).
"""
from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from busseg.data.importers.base import (
    Ignored,
    Record,
    Sample,
    check_root,
    files_by_stem,
    limit_ids,
    pair_and_load,
    parse_options,
    unique_ids,
    unlisted,
)
from busseg.data.index import FLAG_COLUMNS
from busseg.errors import DataError
from busseg.imageio import COLOUR, IMAGE_SUFFIXES, mask_colour_class

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BusUclmOptions:
    """Options of the ``bus_uclm`` kind."""

    exclude_normal: bool = False
    limit: int | None = None


def import_bus_uclm(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """BUS-UCLM samples: label from INFO.csv or the mask colour, patient from the name."""
    opts = parse_options(BusUclmOptions, options, section)
    root = check_root(root, section, "bus_uclm", ["images/", "masks/"])
    ignored: list[Ignored] = []
    info = _read_info_csv(root / "INFO.csv", ignored)
    images = files_by_stem(root / "images", ignored)
    masks = files_by_stem(root / "masks", ignored, IMAGE_SUFFIXES)
    stems = unique_ids(images)
    ids = limit_ids(sorted(stems), opts.limit)
    ignored += [Ignored(str(p), "mask without image") for m, ps in masks.items() if m not in images for p in ps]
    ignored += unlisted(info, stems, root / "INFO.csv", "INFO.csv")

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            stem = stems[sample_id]
            record = pair_and_load(
                sample_id,
                images[stem],
                masks.get(stem, []),
                missing_mask=f"no mask found (looked for {root / 'masks' / stem}.*)",
                label="unknown",
                group=sample_id.split("_", 1)[0] or sample_id,
            )
            if isinstance(record, Sample):
                _apply_info(record, info.get(stem) if stem in info else info.get(sample_id))
                if opts.exclude_normal and record.label == "normal":
                    continue
            yield record

    return generate()


_INFO_IMAGE_COLUMNS = ("image", "imagename", "filename", "file", "name", "id")


_INFO_LABEL_COLUMNS = ("label", "class", "pathology", "diagnosis", "type", "category")


_INFO_FLAG_COLUMNS = FLAG_COLUMNS  # INFO.csv's Doppler, Marks, Combined


_YES = {"yes", "y", "true", "1", "si", "sí", "s"}


_NO = {"no", "n", "false", "0", ""}


@dataclass(frozen=True)
class InfoRow:
    """One row of BUS-UCLM's ``INFO.csv``: the label (or ``""``) and the flag columns present."""

    label: str
    flags: dict[str, str]


def _read_info_csv(path: Path, ignored: list[Ignored]) -> dict[str, InfoRow]:
    """``image stem -> InfoRow`` from BUS-UCLM's ``INFO.csv``, or ``{}`` when it is unusable.

    The real file is ``;``-separated with a UTF-8 byte-order mark and the columns
    ``Image;Resolution;Label;Doppler;Marks;Combined``; the separator is taken from the
    header line (``;``, tab or ``,``), so exports through other tools read as well. The
    file is optional: missing is silent; unreadable or without an image column it is
    reported in ``ignored`` and the labels come from the mask colours.
    """
    if not path.is_file():
        return {}
    try:
        text = path.read_bytes().decode("utf-8-sig")
        header = text.splitlines()[0] if text.strip() else ""
        separator = max((";", "\t", ","), key=header.count)
        table = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - an optional file must never stop the import
        ignored.append(Ignored(str(path), f"cannot read it ({type(exc).__name__}: {exc}); labels from mask colours"))
        return {}
    columns = {re.sub(r"[\s_-]+", "", str(c)).lower(): c for c in table.columns}
    image_column = next((columns[c] for c in _INFO_IMAGE_COLUMNS if c in columns), None)
    label_column = next((columns[c] for c in _INFO_LABEL_COLUMNS if c in columns), None)
    if image_column is None:
        ignored.append(Ignored(str(path), f"no image column among {list(table.columns)}; not used"))
        return {}
    rows: dict[str, InfoRow] = {}
    for record in table.to_dict("records"):
        image = str(record[image_column])
        if not image.strip():
            continue
        label = str(record[label_column]).strip().lower() if label_column else ""
        if label not in ("benign", "malignant", "normal"):
            if label:
                ignored.append(Ignored(str(path), f"{image!r}: unknown Label {label!r}, mask colour used"))
            label = ""
        flags = {flag: _flag_value(record[columns[flag]]) for flag in _INFO_FLAG_COLUMNS if flag in columns}
        stem = image.rsplit(".", 1)[0] if image.lower().endswith(IMAGE_SUFFIXES) else image
        rows[stem] = InfoRow(label, flags)
    return rows


def _flag_value(value: Any) -> str:
    """A yes/no cell of INFO.csv (``Yes``, ``Y``, ``No``, empty, ...) as ``yes``/``no``/``unknown``."""
    text = str(value).strip().lower()
    return "yes" if text in _YES else "no" if text in _NO else "unknown"


def _apply_info(sample: Sample, row: InfoRow | None) -> None:
    """Set a BUS-UCLM sample's label and flags from its INFO.csv row and its mask.

    ``Label`` gives the class when present; otherwise an empty mask is ``normal`` and a
    lesion takes the class of its colour (green benign, red malignant), else ``unknown``.
    ``Doppler: Yes`` marks the image as colour content whatever its pixels look like.
    """
    colour_label = _mask_label(sample)
    if row is not None and row.label:
        if row.label != colour_label and colour_label != "unknown":
            logger.warning("%s: INFO.csv says %s, the mask says %s; INFO.csv used", sample.id, row.label, colour_label)
        sample.label = row.label
    else:
        sample.label = colour_label
    sample.flags = {flag: "unknown" for flag in _INFO_FLAG_COLUMNS}
    if row is not None:
        sample.flags.update(row.flags)
    if sample.flags["doppler"] == "yes":
        sample.colour = COLOUR


def _mask_label(sample: Sample) -> str:
    """A BUS-UCLM label from the mask alone: ``normal`` if empty, else its colour's class."""
    if not sample.mask.any():
        return "normal"
    try:
        colour_label = mask_colour_class(sample.source_mask)
    except DataError:  # the mask was just read; only a file changing under us lands here
        colour_label = None
    return colour_label or "unknown"


importers = {"bus_uclm": import_bus_uclm}
"""This module's entry of :data:`busseg.data.importers.IMPORTERS`."""

LAYOUT: tuple[tuple[str, ...], ...] = (("images/", "masks/", "INFO.csv"),)
"""The alternative sets of entries that identify this layout (``auto`` tries each kind's in turn)."""
