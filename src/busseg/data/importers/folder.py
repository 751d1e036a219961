"""The ``folder`` importer: a folder of scans, with the masks of those that have one.

``root/images/`` holds the scans (PNG, JPEG, BMP, TIFF or DICOM ``.dcm``); ``root/masks/``
holds the ground-truth masks of the outlined ones (optional: a folder of scans only is a
folder of unlabeled scans). An image without a mask is imported as an *unlabeled* scan
(the prepared index leaves its ``mask`` empty): it never enters validation or test, and
semi-supervised training uses it as an unlabeled image. Option ``require_masks: true``
restores the strict rule (an image without a mask is skipped with the reason, and
``masks/`` must exist), for a dataset that should be fully annotated. Pairing rule: an image
``images/<stem>.<ext>`` goes with the mask ``masks/<stem><mask_suffix>.<ext2>``
(any image extension; option ``mask_suffix``, default ``""``, e.g. ``"_mask"``).
Option ``mask_pattern`` replaces that rule: a glob inside ``masks/`` with the
placeholder ``{stem}`` (e.g. ``"{stem}_mask*.png"``); every mask it matches is
OR-merged into one (lesions annotated in several files). Write the pattern so
that one stem cannot match another image's masks (``"{stem}*.png"`` would give
``case1`` the masks of ``case10``). Id = image stem. Option ``labels_csv`` (path,
relative to ``root`` unless absolute) names a CSV with columns ``id,label[,group]``;
images it does not list get label ``unknown`` and group = id. Masks and images
must have the same size. Masks are images (never DICOM). Example, BrEaST-Lesions_USG (CC BY 4.0), whose lesion
masks are ``caseNNN_tumor*.png`` next to ``caseNNN.png`` (sort the images into
``images/`` and the masks into ``masks/``, and write the labels from its table)::

    breast:
      kind: folder
      root: /data/BrEaST
      mask_pattern: "{stem}_tumor*.png"
      labels_csv: labels.csv

A clinic's scans, a few outlined, plus last year's unlabeled scans as a second source::

    clinic:
      kind: composite
      root: /data/clinic
      sources:
        outlined: {kind: folder, root: 2025}       # images/ + masks/ of some of them
        archive: {kind: folder, root: 2024}        # images/ only
"""
from __future__ import annotations

import glob
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
from busseg.errors import ConfigError
from busseg.imageio import IMAGE_SUFFIXES


@dataclass(frozen=True)
class FolderOptions:
    """Options of the ``folder`` kind (see the module docstring for the pairing rule)."""

    mask_suffix: str = ""
    mask_pattern: str | None = None
    labels_csv: str | None = None
    limit: int | None = None
    require_masks: bool = False


def import_folder(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """Samples from ``root/images`` and ``root/masks`` paired by stem; images without a mask
    are unlabeled samples unless option ``require_masks`` (see module docs)."""
    opts = parse_options(FolderOptions, options, section)
    if opts.mask_pattern is not None:
        _check_mask_pattern(opts.mask_pattern, opts.mask_suffix, section)
    root = check_root(root, section, "folder", ["images/", "masks/"] if opts.require_masks else ["images/"])
    labels = read_labels_csv(root, opts.labels_csv, section) if opts.labels_csv else {}
    ignored: list[Ignored] = []
    images = files_by_stem(root / "images", ignored)
    has_masks_folder = (root / "masks").is_dir()
    masks = files_by_stem(root / "masks", ignored, IMAGE_SUFFIXES) if has_masks_folder else {}
    stems = unique_ids(images)
    ids = limit_ids(sorted(stems), opts.limit)

    def masks_of(stem: str) -> tuple[list[Path], str]:
        """The mask files of ``stem`` and how they were looked for."""
        if opts.mask_pattern is None:
            return masks.get(stem + opts.mask_suffix, []), f"{stem}{opts.mask_suffix}.*"
        pattern = opts.mask_pattern.format(stem=glob.escape(stem))
        if not has_masks_folder:
            return [], pattern
        return sorted(p for p in (root / "masks").glob(pattern) if p.is_file()), pattern

    used_masks = {path for stem in images for path in masks_of(stem)[0]}
    ignored += [
        Ignored(str(path), "mask without image")
        for paths in masks.values()
        for path in paths
        if path not in used_masks
    ]
    if opts.labels_csv:
        ignored += unlisted(labels, stems, labels_path(root, opts.labels_csv), "labels_csv")

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            stem = stems[sample_id]
            mask_paths, looked_for = masks_of(stem)
            label, group = labels.get(sample_id) or labels.get(stem) or ("unknown", sample_id)
            yield pair_and_load(
                sample_id,
                images[stem],
                mask_paths,
                missing_mask=f"no mask found (looked for {root / 'masks' / looked_for})",
                merge_masks=opts.mask_pattern is not None,
                require_mask=opts.require_masks,
                label=label,
                group=group,
            )

    return generate()


def _check_mask_pattern(pattern: str, mask_suffix: str, section: str) -> None:
    """A ``mask_pattern`` must contain ``{stem}``, format cleanly, stay inside ``masks/``
    and not be combined with ``mask_suffix``."""
    key = f"{section}.mask_pattern"
    if mask_suffix:
        raise ConfigError(key, "cannot be combined with mask_suffix; put the suffix in the pattern")
    marker = "<stem>"
    try:
        formatted = pattern.format(stem=marker)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            key, f"{pattern!r} is not a valid pattern ({exc}); the only placeholder is {{stem}}"
        ) from None
    if marker not in formatted:
        raise ConfigError(key, f"{pattern!r} must contain {{stem}}, e.g. '{{stem}}_mask*.png'")
    if Path(formatted).is_absolute() or ".." in Path(formatted).parts:
        raise ConfigError(key, f"{pattern!r} must be a glob inside the masks/ folder")


importers = {"folder": import_folder}
"""This module's entry of :data:`busseg.data.importers.IMPORTERS`."""

LAYOUT: tuple[tuple[str, ...], ...] = (("images/", "masks/"), ("images/",))
"""The alternative sets of entries that identify this layout (``auto`` tries each kind's in turn)."""
