"""Importers that read public BUS dataset layouts into one sample stream.

An importer is called as ``importer(root, options, section=...)`` and returns a lazy
iterator of :class:`Sample` (a usable image/mask pair) and :class:`Skip` (a pair that
was left out, with the reason). Kinds, registered in :data:`IMPORTERS`:

``synthetic``
    Generated cases from :mod:`busseg.data.synthetic`. Options ``count`` (required),
    ``seed`` (default 0) and the fields of ``SyntheticOptions`` (``size``, ...); ``root``
    is ignored. Ids ``syn_0000``, ``syn_0001``, ...; group = id.
``busbra``
    BUS-BRA: ``root/images/bus_XXXX-{l,r,s}.png`` with ``root/masks/mask_XXXX-{l,r,s}.png``
    and ``root/bus_data.csv``, whose ``Case`` is the group (patient) and ``Pathology``
    the label. Id = image stem (``bus_0001-l``). Sizes come from the files, not the CSV
    (its Width/Height are wrong for 4 ids).
``stu``
    STU-Hospital: ``root/images/Test_Image_{n}.png`` with ``root/masks/mask_{n}.png``.
    Its masks are square at other resolutions and near-binary; the documented rule of
    this kind is: resize the mask to the image size with nearest-neighbour, keep values
    > 127. Id ``stu_{n:03d}``; no patient ids (group = id); label ``unknown``.
``busi``
    BUSI: ``root`` is the folder ``Dataset_BUSI_with_GT/`` or its parent. Class
    sub-folders ``benign/``, ``malignant/`` (both required) and ``normal/``; the label
    is the sub-folder. An image ``benign (1).png`` goes with ``benign (1)_mask.png``
    and any extra ``benign (1)_mask_1.png``, ``_mask_2.png``, ... (17 BUSI images mark
    several lesions this way): all its masks are OR-merged. Id ``<class>_<n:03d>``
    (``benign (7).png`` -> ``benign_007``; a name without ``(n)`` becomes
    ``<class>_<stem>`` with the stem sanitised by :func:`sanitise_id`; names that map to
    one id are told apart as :func:`_unique_ids` says, never skipped). No patient ids
    (group = id). BUSI images are RGB with grey content, 16 with colour Doppler
    overlays, converted and listed like every kind's (see "Colour" below). Option
    ``exclude_normal`` (default ``true``, as the paper): leave out ``normal/``
    (133 images with empty masks) before listing, so they are neither samples nor
    skips and do not count towards ``limit``.
``bus_uclm``
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
``udiat``
    UDIAT Dataset B: ``root/original/000001.png`` with ``root/GT/000001.png`` (same
    file names). Id = file stem; label ``unknown`` and group = id, unless option
    ``labels_csv`` names a CSV with columns ``id,label[,group]`` (as for ``folder``).
``folder``
    Any ``root/images/`` + ``root/masks/`` pair of folders. Pairing rule: an image
    ``images/<stem>.<ext>`` goes with the mask ``masks/<stem><mask_suffix>.<ext2>``
    (any image extension; option ``mask_suffix``, default ``""``, e.g. ``"_mask"``).
    Option ``mask_pattern`` replaces that rule: a glob inside ``masks/`` with the
    placeholder ``{stem}`` (e.g. ``"{stem}_mask*.png"``); every mask it matches is
    OR-merged into one (lesions annotated in several files). Write the pattern so
    that one stem cannot match another image's masks (``"{stem}*.png"`` would give
    ``case1`` the masks of ``case10``). Id = image stem. Option ``labels_csv`` (path,
    relative to ``root`` unless absolute) names a CSV with columns ``id,label[,group]``;
    images it does not list get label ``unknown`` and group = id. Masks and images
    must have the same size. Example, BrEaST-Lesions_USG (CC BY 4.0), whose lesion
    masks are ``caseNNN_tumor*.png`` next to ``caseNNN.png`` (sort the images into
    ``images/`` and the masks into ``masks/``, and write the labels from its table)::

        breast:
          kind: folder
          root: /data/BrEaST
          mask_pattern: "{stem}_tumor*.png"
          labels_csv: labels.csv
``auto``
    Detects the layout of ``root`` and imports it with that kind, in this order:
    ``busbra`` (``images/``, ``masks/``, ``bus_data.csv``), ``bus_uclm`` (``images/``,
    ``masks/``, ``INFO.csv``), ``stu`` (``images/Test_Image_*.png``, ``masks/``),
    ``busi`` (``Dataset_BUSI_with_GT/``, or ``benign/`` and ``malignant/``), ``udiat``
    (``original/``, ``GT/``), ``folder`` (``images/``, ``masks/``). Options are those
    of the detected kind. See :func:`detect_kind`.
``composite``
    Several sources as one dataset. ``root`` is their common parent folder (the
    pipeline tracks it as the stage's dependency) and option ``sources`` maps a
    source name to a nested spec (``kind``, ``root``, options); a relative source
    ``root`` is resolved against the composite's ``root``::

        both:
          kind: composite
          root: /data/bus
          sources:
            udiat: {kind: udiat, root: UDIAT}
            bus_uclm: {kind: bus_uclm, root: BUS-UCLM}

    Sources are read in name order; ids and groups get the prefix ``<source>__``
    (``udiat__000001``) and every record the ``source`` name, which the prepared
    index keeps in its ``source`` column (so that the split stratifies by source).
    Source names are letters, digits, ``_``, ``.`` and ``-``; sources cannot be
    composite themselves.

Every real kind (not ``synthetic``) accepts option ``limit``: keep only the first N ids
in sorted order (for quick runs); skipped ids count towards N. For ``composite`` it
keeps the first N samples and skips of the combined stream, after each source's own ``limit``.

Ids: every kind that takes ids from file names (``folder``, ``udiat``, ``bus_uclm``,
``busi``) passes them through :func:`sanitise_id` (leading/trailing spaces, newlines,
non-ASCII characters and a leading dot never reach a prepared file name); two names that
give one id keep distinct ids (:func:`_unique_ids`).

Colour (one rule for every kind, :func:`busseg.imageio.classify_colour`): grey content
stored as RGB is read as is; greyscale content through a tinted grey map and/or with
small coloured overlays (calipers, body marks) is converted to luma and the sample is
marked ``tinted``; colour content (a colour Doppler box) is converted to luma too and
marked ``colour``. The prepare report lists both ("converted and listed", as the paper
evaluates BUSI's Doppler images; a user who wants them out filters on the list).

Reported, not read (:class:`Ignored`, listed in the prepare report): hidden files,
entries that are not image files, masks without an image, metadata CSV rows naming no
image, an unusable ``INFO.csv``.

What raises and what skips:

* raise :class:`~busseg.errors.ConfigError`: unknown kind, unknown or ill-typed option,
  missing ``root`` for a real kind;
* raise :class:`~busseg.errors.DataError` (when the importer is called, before any
  sample is read): ``root`` missing or without the expected folders/files (the message
  lists what was looked for), a metadata CSV that is unreadable or lacks columns;
* :class:`Skip` (during iteration): missing mask, image or metadata row, unreadable or
  corrupt file, non-binary mask, mask whose size differs from its image (for kinds
  without a resize rule), ambiguous pairing (one stem with several image files, or
  several masks where the kind does not merge them), unknown label value.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from busseg.config import check_range, from_dict
from busseg.data.index import FLAG_COLUMNS, LABELS
from busseg.errors import ConfigError, DataError
from busseg.imageio import (
    COLOUR,
    GREY,
    mask_colour_class,
    read_image_with_colour,
    read_mask,
    resize_mask,
)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File extensions the ``folder`` importer treats as images or masks (case-insensitive)."""

ASPECT_TOLERANCE = 0.02
"""Largest relative aspect-ratio difference between a mask and its image that a resize
rule accepts; beyond it, resizing would distort the lesion, so the pair is skipped."""


@dataclass
class Sample:
    """One usable image/mask pair.

    ``image`` is ``uint8`` (H, W), ``mask`` is ``bool`` (H, W) of the same shape,
    ``label`` one of :data:`busseg.data.index.LABELS`, ``group`` the patient id (or
    ``id`` when the source has none); ``source_*`` say where the pixels came from
    (``source_mask`` joins several OR-merged mask files with ``;``). ``source`` is the
    source name inside a ``composite`` dataset (empty otherwise). ``colour`` is the
    image's content by :func:`busseg.imageio.classify_colour` (``grey``, ``tinted`` or
    ``colour``; BUS-UCLM's ``Doppler: Yes`` also makes it ``colour``): both non-grey
    kinds were converted to luma. ``flags`` are per-image facts from the dataset's
    metadata (BUS-UCLM: ``doppler``, ``marks``, ``combined`` = ``yes``/``no``/``unknown``)
    that the prepared index keeps as columns.
    """

    id: str
    image: np.ndarray
    mask: np.ndarray
    label: str
    group: str
    source_image: str
    source_mask: str
    source: str = ""
    colour: str = GREY
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def colour_converted(self) -> bool:
        """Whether the image had colour content (e.g. Doppler) that was converted to luma."""
        return self.colour == COLOUR


@dataclass
class Skip:
    """A sample left out of the dataset, with the file at fault and why.

    ``source`` is the source name inside a ``composite`` dataset (empty otherwise).
    """

    id: str
    path: str
    reason: str
    source: str = ""


@dataclass
class Ignored:
    """A file in the dataset folder that is not part of any sample, or metadata without a file.

    Masks without an image, hidden files, files that are not images, CSV rows naming
    no image and unusable metadata files end up here, so that the prepare report shows
    them instead of dropping them silently. ``source`` as in :class:`Skip`.
    """

    path: str
    reason: str
    source: str = ""


Record = Sample | Skip | Ignored
Importer = Callable[..., Iterator[Record]]


@dataclass(frozen=True)
class BusBraOptions:
    """Options of the ``busbra`` kind."""

    limit: int | None = None


@dataclass(frozen=True)
class StuOptions:
    """Options of the ``stu`` kind."""

    limit: int | None = None


@dataclass(frozen=True)
class FolderOptions:
    """Options of the ``folder`` kind (see the module docstring for the pairing rule)."""

    mask_suffix: str = ""
    mask_pattern: str | None = None
    labels_csv: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class BusiOptions:
    """Options of the ``busi`` kind."""

    exclude_normal: bool = True
    limit: int | None = None


@dataclass(frozen=True)
class BusUclmOptions:
    """Options of the ``bus_uclm`` kind."""

    exclude_normal: bool = False
    limit: int | None = None


@dataclass(frozen=True)
class UdiatOptions:
    """Options of the ``udiat`` kind."""

    labels_csv: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class CompositeOptions:
    """Options of the ``composite`` kind: ``sources`` maps a name to a nested spec."""

    sources: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None


def import_synthetic(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """Generated samples; ``options`` are ``count``, ``seed`` and ``SyntheticOptions`` fields."""
    # Imported here so that the real-data importers work without the generator module.
    from busseg.data.synthetic import SyntheticOptions, generate_dataset

    rest = dict(options)
    count = _pop_int(rest, "count", section, default=None)
    seed = _pop_int(rest, "seed", section, default=0)
    check_range(f"{section}.count", count, 1, float("inf"))
    try:
        synthetic_options = from_dict(SyntheticOptions, rest, section)
    except ConfigError as exc:  # the generator's own checks name the bare option
        if exc.key.startswith(section):
            raise
        raise ConfigError(f"{section}.{exc.key}", exc.problem) from None
    width = max(4, len(str(count - 1)))

    def generate() -> Iterator[Record]:
        cases = generate_dataset(count, seed, synthetic_options)
        for index, case in enumerate(cases):
            sample_id = f"syn_{index:0{width}d}"
            source = f"synthetic:seed={seed}:index={index}"
            yield Sample(
                id=sample_id,
                image=np.asarray(case.image, dtype=np.uint8),
                mask=np.asarray(case.mask, dtype=bool),
                label=case.label,
                group=sample_id,
                source_image=source,
                source_mask=source,
            )

    return generate()


def import_busbra(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """BUS-BRA samples with ``Case`` as group and ``Pathology`` as label (see module docs)."""
    opts = _options(BusBraOptions, options, section)
    root = _check_root(root, section, "busbra", ["images/", "masks/", "bus_data.csv"])
    metadata = _read_busbra_csv(root / "bus_data.csv")
    image_ids = {p.stem for p in (root / "images").glob("bus_*.png") if p.is_file()}
    ids = _limit(sorted(image_ids | set(metadata)), opts.limit)
    ignored: list[Ignored] = []
    _report_unmatched(
        root / "images", {f"{i}.png" for i in image_ids}, "not named bus_XXXX-{l,r,s}.png, not read", ignored
    )
    mask_names = {f"mask_{i.removeprefix('bus_')}.png" for i in image_ids}
    _report_unmatched(root / "masks", mask_names, "mask without image", ignored)

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
            yield _load_pair(sample_id, image_path, mask_path, label=pathology, group=case)

    return generate()


def import_stu(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """STU samples; masks resized (nearest) to the image and thresholded (> 127)."""
    opts = _options(StuOptions, options, section)
    root = _check_root(root, section, "stu", ["images/", "masks/"])
    numbers = {}
    for path in (root / "images").glob("Test_Image_*.png"):
        match = re.fullmatch(r"Test_Image_(\d+)", path.stem)
        if match and path.is_file():
            numbers[f"stu_{int(match.group(1)):03d}"] = match.group(1)
    ids = _limit(sorted(numbers), opts.limit)
    ignored: list[Ignored] = []
    image_names = {f"Test_Image_{n}.png" for n in numbers.values()}
    _report_unmatched(root / "images", image_names, "not named Test_Image_<n>.png, not read", ignored)
    mask_names = {f"mask_{n}.png" for n in numbers.values()}
    _report_unmatched(root / "masks", mask_names, "mask without image", ignored)

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            number = numbers[sample_id]
            image_path = root / "images" / f"Test_Image_{number}.png"
            mask_path = root / "masks" / f"mask_{number}.png"
            yield _load_pair(sample_id, image_path, mask_path, label="unknown", group=sample_id, resize=True)

    return generate()


def import_folder(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """Samples from ``root/images`` and ``root/masks`` paired by stem (see module docs)."""
    opts = _options(FolderOptions, options, section)
    if opts.mask_pattern is not None:
        _check_mask_pattern(opts.mask_pattern, opts.mask_suffix, section)
    root = _check_root(root, section, "folder", ["images/", "masks/"])
    labels = _read_labels_csv(root, opts.labels_csv, section) if opts.labels_csv else {}
    ignored: list[Ignored] = []
    images = _files_by_stem(root / "images", ignored)
    masks = _files_by_stem(root / "masks", ignored)
    stems = _unique_ids(images)
    ids = _limit(sorted(stems), opts.limit)

    def masks_of(stem: str) -> tuple[list[Path], str]:
        """The mask files of ``stem`` and how they were looked for."""
        if opts.mask_pattern is None:
            return masks.get(stem + opts.mask_suffix, []), f"{stem}{opts.mask_suffix}.*"
        pattern = opts.mask_pattern.format(stem=glob.escape(stem))
        return sorted(p for p in (root / "masks").glob(pattern) if p.is_file()), pattern

    used_masks = {path for stem in images for path in masks_of(stem)[0]}
    ignored += [
        Ignored(str(path), "mask without image")
        for paths in masks.values()
        for path in paths
        if path not in used_masks
    ]
    if opts.labels_csv:
        ignored += _unlisted(labels, stems, _labels_path(root, opts.labels_csv), "labels_csv")

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            stem = stems[sample_id]
            mask_paths, looked_for = masks_of(stem)
            label, group = labels.get(sample_id) or labels.get(stem) or ("unknown", sample_id)
            yield _pair_and_load(
                sample_id,
                images[stem],
                mask_paths,
                missing_mask=f"no mask found (looked for {root / 'masks' / looked_for})",
                merge_masks=opts.mask_pattern is not None,
                label=label,
                group=group,
            )

    return generate()


def import_busi(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """BUSI samples: label from the class folder, extra masks OR-merged (see module docs)."""
    opts = _options(BusiOptions, options, section)
    base = _busi_base(root, section)
    classes = [c for c in _BUSI_CLASSES if not (opts.exclude_normal and c == "normal")]
    ignored: list[Ignored] = []
    cases = _busi_cases(base, classes, ignored)
    ids = _limit(sorted(cases), opts.limit)

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            label, image_paths, mask_paths = cases[sample_id]
            yield _pair_and_load(
                sample_id,
                image_paths,
                mask_paths,
                missing_mask=f"mask missing (looked for {image_paths[0].stem}_mask*.png)",
                merge_masks=True,
                label=label,
                group=sample_id,
            )

    return generate()


def import_bus_uclm(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """BUS-UCLM samples: label from INFO.csv or the mask colour, patient from the name."""
    opts = _options(BusUclmOptions, options, section)
    root = _check_root(root, section, "bus_uclm", ["images/", "masks/"])
    ignored: list[Ignored] = []
    info = _read_info_csv(root / "INFO.csv", ignored)
    images = _files_by_stem(root / "images", ignored)
    masks = _files_by_stem(root / "masks", ignored)
    stems = _unique_ids(images)
    ids = _limit(sorted(stems), opts.limit)
    ignored += [Ignored(str(p), "mask without image") for m, ps in masks.items() if m not in images for p in ps]
    ignored += _unlisted(info, stems, root / "INFO.csv", "INFO.csv")

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            stem = stems[sample_id]
            record = _pair_and_load(
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


def import_udiat(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """UDIAT Dataset B samples: ``original/<name>`` with ``GT/<name>`` (see module docs)."""
    opts = _options(UdiatOptions, options, section)
    root = _check_root(root, section, "udiat", ["original/", "GT/"])
    labels = _read_labels_csv(root, opts.labels_csv, section) if opts.labels_csv else {}
    ignored: list[Ignored] = []
    images = _files_by_stem(root / "original", ignored)
    masks = _files_by_stem(root / "GT", ignored)
    stems = _unique_ids(images)
    ids = _limit(sorted(stems), opts.limit)
    ignored += [Ignored(str(p), "mask without image") for m, ps in masks.items() if m not in images for p in ps]
    if opts.labels_csv:
        ignored += _unlisted(labels, stems, _labels_path(root, opts.labels_csv), "labels_csv")

    def generate() -> Iterator[Record]:
        yield from ignored  # first, so that a limit never hides them
        for sample_id in ids:
            stem = stems[sample_id]
            label, group = labels.get(sample_id) or labels.get(stem) or ("unknown", sample_id)
            yield _pair_and_load(
                sample_id,
                images[stem],
                masks.get(stem, []),
                missing_mask=f"no mask found (looked for {root / 'GT' / stem}.*)",
                label=label,
                group=group,
            )

    return generate()


def _report_unmatched(folder: Path, used: set[str], reason: str, ignored: list[Ignored]) -> None:
    """Append every entry of ``folder`` whose name is not in ``used`` to ``ignored``."""
    for path in sorted(folder.iterdir()):
        if path.name not in used:
            ignored.append(Ignored(str(path), _unusable_entry(path) or reason))


def _unlisted(table: Mapping[str, Any], stems: Mapping[str, str], path: Path, what: str) -> list[Ignored]:
    """An :class:`Ignored` for each key of a metadata ``table`` that names no image
    (neither a sample id nor an image's file stem)."""
    known = set(stems) | set(stems.values())
    return [Ignored(str(path), f"{key!r} listed in {what}, no such image") for key in table if key not in known]


def import_auto(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """Samples of whatever known layout :func:`detect_kind` finds at ``root``."""
    if root is None:
        raise ConfigError(f"{section}.root", "missing; kind 'auto' reads a dataset folder")
    kind = detect_kind(root)
    logger.info("%s: %s looks like a '%s' dataset", section, root, kind)
    return IMPORTERS[kind](Path(root), options, section=section)


def detect_kind(root: str | Path) -> str:
    """The kind whose layout ``root`` has (see ``auto`` in the module docs).

    Raises :class:`DataError` naming ``root`` when it is not a folder or matches none
    of the known layouts; the message lists, per kind, what was looked for.
    """
    root = Path(root)
    looked_for = "; ".join(
        f"{kind}: {' or '.join(', '.join(entries) for entries in alternatives)}"
        for kind, alternatives in _LAYOUTS
    )
    if not root.is_dir():
        raise DataError(root, f"dataset folder not found (kind 'auto' looks for {looked_for})")
    for kind, alternatives in _LAYOUTS:
        if any(all(_has_entry(root, entry) for entry in entries) for entries in alternatives):
            return kind
    raise DataError(root, f"no known dataset layout; looked for {looked_for}")


def import_composite(
    root: Path | None, options: Mapping[str, Any], *, section: str = "dataset"
) -> Iterator[Record]:
    """Several nested sources as one stream, with ``<source>__`` id prefixes (see module docs).

    Every source's importer is called here, so that a missing folder or a bad option in
    any source raises before the first sample is read.
    """
    opts = _options(CompositeOptions, options, section)
    if root is None:
        raise ConfigError(f"{section}.root", "missing; kind 'composite' needs the sources' parent folder")
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found (kind 'composite' resolves its sources' roots here)")
    if not opts.sources:
        raise ConfigError(f"{section}.sources", "missing or empty; map each source name to a dataset spec")
    streams = [
        _prefixed(name, _open_source(name, opts.sources[name], root, f"{section}.sources.{name}"))
        for name in sorted(opts.sources)
    ]
    return _limit_records(itertools.chain.from_iterable(streams), opts.limit)


IMPORTERS: dict[str, Importer] = {
    "auto": import_auto,
    "bus_uclm": import_bus_uclm,
    "busbra": import_busbra,
    "busi": import_busi,
    "composite": import_composite,
    "folder": import_folder,
    "stu": import_stu,
    "synthetic": import_synthetic,
    "udiat": import_udiat,
}
"""Importer of each dataset ``kind``."""


def get_importer(kind: str, *, section: str = "dataset") -> Importer:
    """The importer registered for ``kind``; ``section`` (e.g. ``datasets.busbra``) names
    the parameter in the :class:`ConfigError` raised for an unknown kind."""
    try:
        return IMPORTERS[kind]
    except (KeyError, TypeError):
        raise ConfigError(
            f"{section}.kind", f"unknown kind {kind!r}; available: {', '.join(sorted(IMPORTERS))}"
        ) from None


def _pair_and_load(
    sample_id: str,
    image_paths: Sequence[Path],
    mask_paths: Sequence[Path],
    *,
    missing_mask: str,
    label: str,
    group: str,
    merge_masks: bool = False,
) -> Record:
    """Check that ``sample_id`` has one image and its mask(s), then load the pair.

    Several masks are an ambiguous pairing unless ``merge_masks`` (they are OR-merged);
    ``missing_mask`` is the skip reason when there is none.
    """
    if len(image_paths) > 1:
        return Skip(sample_id, str(image_paths[0]), _ambiguous("images", image_paths))
    if not mask_paths:
        return Skip(sample_id, str(image_paths[0]), missing_mask)
    if len(mask_paths) > 1 and not merge_masks:
        return Skip(sample_id, str(mask_paths[0]), _ambiguous("masks", mask_paths))
    return _load_pair(sample_id, image_paths[0], mask_paths, label=label, group=group)


def _load_pair(
    sample_id: str,
    image_path: Path,
    mask_paths: Path | Sequence[Path],
    *,
    label: str,
    group: str,
    resize: bool = False,
) -> Record:
    """Read one image and its mask(s), or a :class:`Skip` saying what is wrong with them.

    Several masks are OR-merged (each must have the image's size). ``resize=True``
    applies the resize-and-threshold rule of kinds that document one. Images are read
    by :func:`busseg.imageio.read_image_with_colour`, the one colour rule of every kind:
    tinted grey and colour content are converted to luma, and ``Sample.colour`` says which.
    """
    mask_paths = [mask_paths] if isinstance(mask_paths, Path) else list(mask_paths)
    for mask_path in mask_paths:
        if not mask_path.is_file():
            return Skip(sample_id, str(mask_path), "mask missing")
    masks = []
    try:
        image, content = read_image_with_colour(image_path)
        for mask_path in mask_paths:
            mask = read_mask(mask_path, threshold=resize)
            if resize:
                if _aspect_differs(mask.shape, image.shape):
                    reason = _size_reason("aspect ratio", mask.shape, image.shape)
                    return Skip(sample_id, str(mask_path), reason)
                mask = resize_mask(mask, image.shape)
            if mask.shape != image.shape:
                return Skip(sample_id, str(mask_path), _size_reason("size", mask.shape, image.shape))
            masks.append(mask)
    except DataError as error:
        return Skip(sample_id, str(error.path), error.problem)
    return Sample(
        id=sample_id,
        image=image,
        mask=np.logical_or.reduce(masks) if len(masks) > 1 else masks[0],
        label=label,
        group=group,
        source_image=str(image_path),
        source_mask=";".join(str(p) for p in mask_paths),
        colour=content.kind,
    )


def _size_reason(what: str, mask_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> str:
    return (
        f"mask {what} differs from its image: mask {mask_shape[1]}x{mask_shape[0]}, "
        f"image {image_shape[1]}x{image_shape[0]} (width x height)"
    )


def _aspect_differs(mask_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> bool:
    mask_aspect = mask_shape[1] / mask_shape[0]
    image_aspect = image_shape[1] / image_shape[0]
    return abs(mask_aspect / image_aspect - 1.0) > ASPECT_TOLERANCE


def _options(cls: type, options: Mapping[str, Any], section: str) -> Any:
    """Build and range-check an options dataclass from the spec's remaining keys."""
    opts = from_dict(cls, options, section)
    if getattr(opts, "limit", None) is not None:
        check_range(f"{section}.limit", opts.limit, 1, float("inf"))
    return opts


def _pop_int(values: dict[str, Any], key: str, section: str, *, default: int | None) -> int:
    """Remove ``key`` from ``values`` and check it is an integer (required when no default)."""
    if key not in values:
        if default is None:
            raise ConfigError(f"{section}.{key}", "missing; required for kind 'synthetic'")
        return default
    value = values.pop(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{section}.{key}", f"expected an integer, got {value!r}")
    return value


def _check_root(root: Path | None, section: str, kind: str, expected: list[str]) -> Path:
    """Return ``root`` as a Path after checking that it holds the ``expected`` entries.

    Entries ending in ``/`` are folders, the others files. The error lists everything
    looked for, so that a wrong ``root`` is recognised at once.
    """
    if root is None:
        raise ConfigError(f"{section}.root", f"missing; kind '{kind}' reads a dataset folder")
    root = Path(root)
    looked_for = ", ".join(expected)
    if not root.is_dir():
        raise DataError(root, f"dataset folder not found (kind '{kind}' expects {looked_for})")
    missing = [
        entry
        for entry in expected
        if not ((root / entry).is_dir() if entry.endswith("/") else (root / entry).is_file())
    ]
    if missing:
        raise DataError(
            root, f"not a '{kind}' dataset: looked for {looked_for}; missing {', '.join(missing)}"
        )
    return root


def _limit(ids: list[str], limit: int | None) -> list[str]:
    return ids if limit is None else ids[:limit]


def _read_busbra_csv(path: Path) -> dict[str, tuple[str, str]]:
    """``ID -> (Case, pathology)`` from BUS-BRA's ``bus_data.csv``."""
    table = _read_csv(path, ["ID", "Case", "Pathology"])
    return {
        row.ID.strip(): (row.Case.strip(), row.Pathology.strip().lower())
        for row in table.itertuples(index=False)
    }


def _read_labels_csv(root: Path, name: str, section: str) -> dict[str, tuple[str, str]]:
    """``id -> (label, group)`` from the ``folder`` kind's ``labels_csv``."""
    path = _labels_path(root, name)
    if not path.is_file():
        raise DataError(path, f"labels_csv not found (option {section}.labels_csv)")
    table = _read_csv(path, ["id", "label"])
    labels: dict[str, tuple[str, str]] = {}
    for number, row in enumerate(table.to_dict("records"), start=2):
        sample_id, label = row["id"].strip(), row["label"].strip().lower()
        if label not in LABELS:
            raise DataError(path, f"line {number}: label {label!r} not one of {', '.join(LABELS)}")
        if sample_id in labels:
            raise DataError(path, f"line {number}: id {sample_id!r} listed twice")
        group = str(row.get("group", "")).strip() or sample_id
        labels[sample_id] = (label, group)
    return labels


def _labels_path(root: Path, name: str) -> Path:
    """The ``labels_csv`` option as a path: relative to ``root`` unless absolute."""
    return Path(name) if Path(name).is_absolute() else root / name


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read a metadata CSV as strings, checking that ``columns`` are present."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(path, f"cannot read CSV: {exc}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(
            path,
            f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}",
        )
    return table


def _files_by_stem(folder: Path, ignored: list[Ignored]) -> dict[str, list[Path]]:
    """Image files of ``folder`` (not recursive) grouped by stem.

    Hidden files (``.DS_Store``, macOS ``._x.png``), sub-folders and files that are not
    images are left out and appended to ``ignored`` with the reason.
    """
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        reason = _unusable_entry(path)
        if reason:
            ignored.append(Ignored(str(path), reason))
        else:
            files.setdefault(path.stem, []).append(path)
    return files


def _unusable_entry(path: Path) -> str:
    """Why ``path`` (an entry of an images or masks folder) is not a candidate file, or ``""``."""
    if path.name.startswith("."):
        return "hidden file, not read"
    if not path.is_file():
        return "not a regular file (a folder or special file), not read"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file (extension {path.suffix or 'none'}; read are {', '.join(IMAGE_EXTENSIONS)})"
    return ""


_UNSAFE_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")


def sanitise_id(stem: str) -> str:
    """A file stem as a safe sample id: runs of characters other than ASCII letters, digits
    and ``_.-`` become ``_``, leading and trailing ``_`` and ``.`` are removed.

    Ids name the prepared files (``images/<id>.png``), so leading or trailing spaces, a
    newline or a leading dot in a source file name must not reach them.
    """
    return _UNSAFE_ID_CHARACTERS.sub("_", stem).strip("_.") or "image"


def _disambiguated(sample_id: str, stem: str) -> str:
    """``sample_id`` made unique for ``stem``: ``-`` and 8 hex digits of the stem's SHA-1."""
    digest = hashlib.sha1(stem.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{sample_id}-{digest}"


def _unique_ids(
    stems: Iterable[str], make_id: Callable[[str], str] = sanitise_id, canonical: Callable[[str, str], bool] | None = None
) -> dict[str, str]:
    """``id -> stem`` for distinct file stems, never giving two stems one id.

    ``make_id`` turns a stem into its id; when several stems get the same id (``a b`` and
    ``a_b``, or two names differing only in non-ASCII characters), the stem that spells
    the id exactly (``canonical(stem, id)``, default ``stem == id``) keeps it and the
    others get :func:`_disambiguated` ids: nothing is skipped for a clash of names.
    """
    canonical = canonical or (lambda stem, sample_id: stem == sample_id)
    by_id: dict[str, list[str]] = {}
    for stem in sorted(set(stems)):
        by_id.setdefault(make_id(stem), []).append(stem)
    ids: dict[str, str] = {}
    for sample_id, clashing in by_id.items():
        for stem in clashing:
            keeps = len(clashing) == 1 or canonical(stem, sample_id)
            ids[sample_id if keeps else _disambiguated(sample_id, stem)] = stem
    return ids


def _ambiguous(what: str, paths: list[Path]) -> str:
    return f"ambiguous pairing: several {what} share this stem ({', '.join(p.name for p in paths)})"


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


_BUSI_CLASSES = ("benign", "malignant", "normal")
_BUSI_FOLDER = "Dataset_BUSI_with_GT"
_BUSI_MASK = re.compile(r"(?P<stem>.+)_mask(?:_\d+)?")
_BUSI_NUMBER = re.compile(r".*\((?P<number>\d+)\)")


def _busi_base(root: Path | None, section: str) -> Path:
    """The folder holding BUSI's class sub-folders: ``root`` or ``root/Dataset_BUSI_with_GT``."""
    if root is None:
        raise ConfigError(f"{section}.root", "missing; kind 'busi' reads a dataset folder")
    root = Path(root)
    expected = ["benign/", "malignant/"]
    if not root.is_dir():
        raise DataError(
            root, f"dataset folder not found (kind 'busi' expects {_BUSI_FOLDER}/ or {', '.join(expected)})"
        )
    if not any((root / c).is_dir() for c in _BUSI_CLASSES) and (root / _BUSI_FOLDER).is_dir():
        root = root / _BUSI_FOLDER
    missing = [entry for entry in expected if not (root / entry).is_dir()]
    if missing:
        raise DataError(
            root,
            f"not a 'busi' dataset: looked for {_BUSI_FOLDER}/ or {', '.join(expected)}; "
            f"missing {', '.join(missing)}",
        )
    return root


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
        files = _files_by_stem(folder, ignored)
        masks: dict[str, list[Path]] = {}
        for stem in files:
            match = _BUSI_MASK.fullmatch(stem)
            if match:
                masks.setdefault(match["stem"], []).extend(files[stem])
        image_stems = [stem for stem in files if not _BUSI_MASK.fullmatch(stem)]
        for stem in sorted(set(masks) - set(image_stems)):
            ignored += [Ignored(str(path), "mask without image") for path in masks[stem]]
        ids = _unique_ids(
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
        stem = image.rsplit(".", 1)[0] if image.lower().endswith(IMAGE_EXTENSIONS) else image
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


_LAYOUTS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("busbra", (("images/", "masks/", "bus_data.csv"),)),
    ("bus_uclm", (("images/", "masks/", "INFO.csv"),)),
    ("stu", (("images/Test_Image_*.png", "masks/"),)),
    ("busi", ((f"{_BUSI_FOLDER}/",), ("benign/", "malignant/"))),
    ("udiat", (("original/", "GT/"),)),
    ("folder", (("images/", "masks/"),)),
)
"""Each kind with the alternative sets of entries that identify its layout, in the
order :func:`detect_kind` tries them (the more specific layouts first)."""


def _has_entry(root: Path, entry: str) -> bool:
    """Whether ``root`` has ``entry``: a folder (``x/``), a glob (``x/*.png``) or a file."""
    if entry.endswith("/"):
        return (root / entry).is_dir()
    if "*" in entry:
        return any(path.is_file() for path in root.glob(entry))
    return (root / entry).is_file()


_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _open_source(name: str, spec: Any, parent: Path, section: str) -> Iterator[Record]:
    """Call the importer of one ``composite`` source, its root resolved against ``parent``."""
    if not _SOURCE_NAME.fullmatch(name):
        raise ConfigError(section, "source names are letters, digits, '_', '.' and '-' (they prefix ids)")
    if not isinstance(spec, Mapping):
        raise ConfigError(section, f"expected a dataset spec (kind, root, options), got {spec!r}")
    options = dict(spec)
    if "kind" not in options:
        raise ConfigError(f"{section}.kind", "missing; the kind of this source")
    kind = options.pop("kind")
    if kind == "composite":
        raise ConfigError(f"{section}.kind", "a composite source cannot be composite itself")
    importer = get_importer(kind, section=section)
    root = options.pop("root", None)
    if root is not None:
        if not isinstance(root, (str, Path)) or not str(root).strip():
            raise ConfigError(f"{section}.root", f"expected a folder path, got {root!r}")
        root = (parent / Path(root).expanduser()).resolve()  # an absolute root replaces parent
    return importer(root, options, section=section)


def _limit_records(records: Iterator[Record], limit: int | None) -> Iterator[Record]:
    """``records`` up to ``limit`` samples and skips; :class:`Ignored` entries do not count."""
    if limit is None:
        yield from records
        return
    count = 0
    for record in records:
        if isinstance(record, Ignored):
            yield record
            continue
        if count == limit:
            return
        count += 1
        yield record


def _prefixed(name: str, records: Iterator[Record]) -> Iterator[Record]:
    """``records`` with ids (and groups) prefixed ``<name>__`` and ``source`` set to ``name``."""
    prefix = f"{name}__"
    for record in records:
        if isinstance(record, Ignored):
            yield dataclasses.replace(record, source=name)
        elif isinstance(record, Sample):
            yield dataclasses.replace(record, id=prefix + record.id, group=prefix + record.group, source=name)
        else:
            yield dataclasses.replace(record, id=prefix + record.id, source=name)
