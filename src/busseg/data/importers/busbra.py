"""The ``busbra`` importer: BUS-BRA.

BUS-BRA: ``root/images/bus_XXXX-{l,r,s}.png`` with ``root/masks/mask_XXXX-{l,r,s}.png``
and ``root/bus_data.csv``, whose ``Case`` is the group (patient) and ``Pathology``
the label. Id = image stem (``bus_0001-l``). Sizes come from the files, not the CSV
(its Width/Height are wrong for 4 ids).
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


@dataclass(frozen=True)


class BusBraOptions:
    """Options of the ``busbra`` kind."""

    limit: int | None = None


def import_busbra(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """BUS-BRA samples with ``Case`` as group and ``Pathology`` as label (see module docs)."""
    opts = parse_options(BusBraOptions, options, section)
    root = check_root(root, section, "busbra", ["images/", "masks/", "bus_data.csv"])
    metadata = _read_busbra_csv(root / "bus_data.csv")
    image_ids = {p.stem for p in (root / "images").glob("bus_*.png") if p.is_file()}
    ids = limit_ids(sorted(image_ids | set(metadata)), opts.limit)
    ignored: list[Ignored] = []
    report_unmatched(
        root / "images", {f"{i}.png" for i in image_ids}, "not named bus_XXXX-{l,r,s}.png, not read", ignored
    )
    mask_names = {f"mask_{i.removeprefix('bus_')}.png" for i in image_ids}
    report_unmatched(root / "masks", mask_names, "mask without image", ignored)

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
            case, pathology = metadata[sample_id]
            if not case:
                yield Skip(sample_id, str(root / "bus_data.csv"), "empty Case (patient id)")
                continue
            if pathology not in LABELS:
                yield Skip(sample_id, str(root / "bus_data.csv"), f"unknown Pathology {pathology!r}")
                continue
            yield load_pair(sample_id, image_path, mask_path, label=pathology, group=case)

    return generate()


def _read_busbra_csv(path: Path) -> dict[str, tuple[str, str]]:
    """``ID -> (Case, pathology)`` from BUS-BRA's ``bus_data.csv``."""
    table = read_csv(path, ["ID", "Case", "Pathology"])
    return {
        row.ID.strip(): (row.Case.strip(), row.Pathology.strip().lower())
        for row in table.itertuples(index=False)
    }


importers = {"busbra": import_busbra}
"""This module's entry of :data:`busseg.data.importers.IMPORTERS`."""

LAYOUT: tuple[tuple[str, ...], ...] = (("images/", "masks/", "bus_data.csv"),)
"""The alternative sets of entries that identify this layout (``auto`` tries each kind's in turn)."""
