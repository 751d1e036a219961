"""The ``busi`` importer: BUSI (Dataset_BUSI_with_GT).

BUSI: ``root`` is the folder ``Dataset_BUSI_with_GT/`` or its parent. Class
sub-folders ``benign/``, ``malignant/`` (both required) and ``normal/``; the label
is the sub-folder. An image ``benign (1).png`` goes with ``benign (1)_mask.png``
and any extra ``benign (1)_mask_1.png``, ``_mask_2.png``, ... (17 BUSI images mark
several lesions this way): all its masks are OR-merged. Id ``<class>_<n:03d>``
(``benign (7).png`` -> ``benign_007``; a name without ``(n)`` becomes
``<class>_<stem>`` with the stem sanitised by :func:`sanitise_id`; names that map to
one id are told apart as :func:`~busseg.data.importers.base.unique_ids` says, never skipped). No patient ids
(group = id). BUSI images are RGB with grey content, 16 with colour Doppler
overlays, converted and listed like every kind's (see "Colour" in :mod:`busseg.data.importers`). Option
``exclude_normal`` (default ``true``, as the paper): leave out ``normal/``
(133 images with empty masks) before listing, so they are neither samples nor
skips and do not count towards ``limit``.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busseg.data.importers.base import (
    Ignored,
    Record,
    check_root,
    files_by_stem,
    limit_ids,
    pair_and_load,
    parse_options,
    sanitise_id,
    unique_ids,
)


@dataclass(frozen=True)
class BusiOptions:
    """Options of the ``busi`` kind."""

    exclude_normal: bool = True
    limit: int | None = None


_BUSI_CLASSES = ("benign", "malignant", "normal")


_BUSI_FOLDER = "Dataset_BUSI_with_GT"


_BUSI_MASK = re.compile(r"(?P<stem>.+)_mask(?:_\d+)?")


_BUSI_NUMBER = re.compile(r".*\((?P<number>\d+)\)")


def import_busi(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """BUSI samples: label from the class folder, extra masks OR-merged (see module docs)."""
    opts = parse_options(BusiOptions, options, section)
    base = _busi_base(root, section)
    classes = [c for c in _BUSI_CLASSES if not (opts.exclude_normal and c == "normal")]
    ignored: list[Ignored] = []
    cases = _busi_cases(base, classes, ignored)
    ids = limit_ids(sorted(cases), opts.limit)

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            label, image_paths, mask_paths = cases[sample_id]
            yield pair_and_load(
                sample_id,
                image_paths,
                mask_paths,
                missing_mask=f"mask missing (looked for {image_paths[0].stem}_mask*.png)",
                merge_masks=True,
                label=label,
                group=sample_id,
            )

    return generate()


def _busi_base(root: Path | None, section: str) -> Path:
    """The folder holding BUSI's class sub-folders: ``root`` or ``root/Dataset_BUSI_with_GT``."""
    expected = ["benign/", "malignant/"]
    if root is not None and Path(root).is_dir():
        root = Path(root)
        if not any((root / c).is_dir() for c in _BUSI_CLASSES) and (root / _BUSI_FOLDER).is_dir():
            root = root / _BUSI_FOLDER
    return check_root(root, section, "busi", expected, looked_for=f"{_BUSI_FOLDER}/ or {', '.join(expected)}")


def _busi_cases(
    base: Path, classes: Sequence[str], ignored: list[Ignored]
) -> dict[str, tuple[str, list[Path], list[Path]]]:
    """``id -> (label, image files, mask files)`` over BUSI's class sub-folders.

    Masks whose image is missing and files that are no candidates go to ``ignored``.
    """
    cases: dict[str, tuple[str, list[Path], list[Path]]] = {}
    for label in classes:
        folder = base / label
        if not folder.is_dir():
            continue  # only normal/ is optional; benign/ and malignant/ were checked
        files = files_by_stem(folder, ignored)
        masks: dict[str, list[Path]] = {}
        for stem in files:
            match = _BUSI_MASK.fullmatch(stem)
            if match:
                masks.setdefault(match["stem"], []).extend(files[stem])
        image_stems = [stem for stem in files if not _BUSI_MASK.fullmatch(stem)]
        for stem in sorted(set(masks) - set(image_stems)):
            ignored += [Ignored(str(path), "mask without image") for path in masks[stem]]
        ids = unique_ids(
            image_stems,
            make_id=lambda stem, label=label: _busi_id(label, stem),
            canonical=lambda stem, _id, label=label: _busi_canonical(label, stem),
        )
        for sample_id, stem in ids.items():
            cases[sample_id] = (label, files[stem], sorted(masks.get(stem, [])))
    return cases


def _busi_id(label: str, stem: str) -> str:
    """``benign (7)`` -> ``benign_007``; other names keep a sanitised stem."""
    match = _BUSI_NUMBER.fullmatch(stem)
    if match:
        return f"{label}_{int(match['number']):03d}"
    return f"{label}_{sanitise_id(stem)}"


def _busi_canonical(label: str, stem: str) -> bool:
    """Whether ``stem`` spells its id without loss: BUSI's own ``<class> (<n>)`` or a safe name.

    Of several names that map to one id (``benign (1)`` and ``benign(1)``, or names
    differing only in non-ASCII characters), this one keeps the plain id.
    """
    match = _BUSI_NUMBER.fullmatch(stem)
    if match:
        return stem == f"{label} ({int(match['number'])})"
    return sanitise_id(stem) == stem


importers = {"busi": import_busi}
"""This module's entry of :data:`busseg.data.importers.IMPORTERS`."""

LAYOUT: tuple[tuple[str, ...], ...] = ((f"{_BUSI_FOLDER}/",), ("benign/", "malignant/"))
"""The alternative sets of entries that identify this layout (``auto`` tries each kind's in turn)."""
