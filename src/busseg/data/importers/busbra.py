"""The ``busbra`` importer: BUS-BRA.

BUS-BRA: ``root/images/bus_XXXX-{l,r,s}.png`` with ``root/masks/mask_XXXX-{l,r,s}.png``
and ``root/bus_data.csv``, whose ``Case`` is the group (patient) and ``Pathology``
the label. Id = image stem (``bus_0001-l``). Sizes come from the files, not the CSV
(its Width/Height are wrong for 4 ids).

``devices`` (optional) selects scanners by the ``Device`` column without its probe
frequency (:data:`DEVICES`): only their images are imported, so a pipeline can run on a
scanner the appearance labeler was never fitted on (a held-out target). Every
patient of BUS-BRA was imaged on one scanner, so the patient-grouped split stays grouped.
Images of other scanners are left out silently (they are not part of the selected
dataset), images without a row in ``bus_data.csv`` are skipped as before.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busseg.data.importers.base import (
    Ignored,
    Record,
    Skip,
    check_root,
    limit_ids,
    load_pair,
    parse_options,
    read_csv,
    report_unmatched,
)
from busseg.data.index import LABELS
from busseg.errors import ConfigError
from busseg.imageio import IMAGE_SUFFIXES

DEVICES: tuple[str, ...] = ("GE Logiq 5", "GE Logiq 7", "Toshiba Aplio 300", "U-Systems")
"""BUS-BRA's scanners: its ``Device`` column without the probe frequency (``GE Logiq 7 @10-14MHz``)."""


@dataclass(frozen=True)
class BusBraOptions:
    """Options of the ``busbra`` kind.

    ``devices``: import only the images of these scanners (names of :data:`DEVICES`);
    ``None`` (the default) imports every scanner's.
    """

    limit: int | None = None
    devices: Any = None


def check_devices(devices: Any, key: str) -> frozenset[str] | None:
    """The selected scanners of a ``devices`` option, or ``None`` for all of them.

    Raises :class:`ConfigError` on ``key`` for anything but a non-empty list of names of
    :data:`DEVICES` (the message lists them).
    """
    if devices is None:
        return None
    available = ", ".join(repr(d) for d in DEVICES)
    if not isinstance(devices, (list, tuple)) or not devices:
        raise ConfigError(key, f"expected a non-empty list of BUS-BRA scanners, got {devices!r}; available: {available}")
    for index, name in enumerate(devices):
        if name not in DEVICES:
            raise ConfigError(f"{key}[{index}]", f"unknown BUS-BRA scanner {name!r}; available: {available}")
    return frozenset(devices)


def device_name(raw: str) -> str:
    """A ``Device`` cell without its probe frequency: ``GE Logiq 7 @10-14MHz`` -> ``GE Logiq 7``."""
    return raw.split("@")[0].strip()


def import_busbra(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """BUS-BRA samples with ``Case`` as group and ``Pathology`` as label (see module docs)."""
    opts = parse_options(BusBraOptions, options, section)
    devices = check_devices(opts.devices, f"{section}.devices")
    root = check_root(root, section, "busbra", ["images/", "masks/", "bus_data.csv"])
    metadata = _read_busbra_csv(root / "bus_data.csv", with_device=devices is not None)
    image_ids = {p.stem for p in (root / "images").glob("bus_*.png") if p.is_file()}
    ignored: list[Ignored] = []
    report_unmatched(
        root / "images", {f"{i}.png" for i in image_ids}, "not named bus_XXXX-{l,r,s}.png, not read", ignored
    )
    mask_names = {f"mask_{i.removeprefix('bus_')}.png" for i in image_ids}
    report_unmatched(root / "masks", mask_names, "mask without image", ignored, IMAGE_SUFFIXES)
    if devices is not None:
        # Other scanners' images are not part of this dataset: neither imported nor reported.
        # An image without a CSV row stays, to be skipped with that reason below.
        image_ids = {i for i in image_ids if i not in metadata or metadata[i].device in devices}
        metadata = {i: row for i, row in metadata.items() if row.device in devices}
    ids = limit_ids(sorted(image_ids | set(metadata)), opts.limit)

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            image_path = root / "images" / f"{sample_id}.png"
            mask_path = root / "masks" / f"mask_{sample_id.removeprefix('bus_')}.png"
            if sample_id not in image_ids:
                yield Skip(sample_id, str(image_path), "image missing (listed in bus_data.csv)")
                continue
            if sample_id not in metadata:
                yield Skip(sample_id, str(image_path), "no row in bus_data.csv")
                continue
            case, pathology = metadata[sample_id].case, metadata[sample_id].pathology
            if not case:
                yield Skip(sample_id, str(root / "bus_data.csv"), "empty Case (patient id)")
                continue
            if pathology not in LABELS:
                yield Skip(sample_id, str(root / "bus_data.csv"), f"unknown Pathology {pathology!r}")
                continue
            yield load_pair(sample_id, image_path, mask_path, label=pathology, group=case)

    return generate()


@dataclass(frozen=True)
class _Row:
    """What the importer reads of one row of ``bus_data.csv``."""

    case: str
    pathology: str
    device: str  # without the probe frequency ("" when the CSV has no Device column)


def _read_busbra_csv(path: Path, *, with_device: bool = False) -> dict[str, _Row]:
    """``ID -> (Case, pathology, scanner)`` from BUS-BRA's ``bus_data.csv``.

    The ``Device`` column is required only ``with_device`` (the ``devices`` option).
    """
    table = read_csv(path, ["ID", "Case", "Pathology", *(["Device"] if with_device else [])])
    devices = table["Device"] if "Device" in table.columns else [""] * len(table)
    return {
        row.ID.strip(): _Row(row.Case.strip(), row.Pathology.strip().lower(), device_name(str(device)))
        for row, device in zip(table.itertuples(index=False), devices)
    }


importers = {"busbra": import_busbra}
"""This module's entry of :data:`busseg.data.importers.IMPORTERS`."""

LAYOUT: tuple[tuple[str, ...], ...] = (("images/", "masks/", "bus_data.csv"),)
"""The alternative sets of entries that identify this layout (``auto`` tries each kind's in turn)."""
