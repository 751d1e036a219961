"""The ``udiat`` importer: UDIAT Dataset B.

UDIAT Dataset B: ``root/original/000001.png`` with ``root/GT/000001.png`` (same
file names). Id = file stem; label ``unknown`` and group = id, unless option
``labels_csv`` names a CSV with columns ``id,label[,group]`` (as for ``folder``).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busseg.data.importers.base import (
    Ignored,
    Record,
    check_root,
    files_by_stem,
    labels_path,
    limit_ids,
    pair_and_load,
    parse_options,
    read_labels_csv,
    unique_ids,
    unlisted,
)
from busseg.imageio import IMAGE_SUFFIXES


@dataclass(frozen=True)
class UdiatOptions:
    """Options of the ``udiat`` kind."""

    labels_csv: str | None = None
    limit: int | None = None


def import_udiat(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """UDIAT Dataset B samples: ``original/<name>`` with ``GT/<name>`` (see module docs)."""
    opts = parse_options(UdiatOptions, options, section)
    root = check_root(root, section, "udiat", ["original/", "GT/"])
    labels = read_labels_csv(root, opts.labels_csv, section) if opts.labels_csv else {}
    ignored: list[Ignored] = []
    images = files_by_stem(root / "original", ignored)
    masks = files_by_stem(root / "GT", ignored, IMAGE_SUFFIXES)
    stems = unique_ids(images)
    ids = limit_ids(sorted(stems), opts.limit)
    ignored += [Ignored(str(p), "mask without image") for m, ps in masks.items() if m not in images for p in ps]
    if opts.labels_csv:
        ignored += unlisted(labels, stems, labels_path(root, opts.labels_csv), "labels_csv")

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            stem = stems[sample_id]
            label, group = labels.get(sample_id) or labels.get(stem) or ("unknown", sample_id)
            yield pair_and_load(
                sample_id,
                images[stem],
                masks.get(stem, []),
                missing_mask=f"no mask found (looked for {root / 'GT' / stem}.*)",
                label=label,
                group=group,
            )

    return generate()


importers = {"udiat": import_udiat}
"""This module's entry of :data:`busseg.data.importers.IMPORTERS`."""

LAYOUT: tuple[tuple[str, ...], ...] = (("original/", "GT/"),)
"""The alternative sets of entries that identify this layout (``auto`` tries each kind's in turn)."""
