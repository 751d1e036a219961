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
``folder``
    Any ``root/images/`` + ``root/masks/`` pair of folders. Pairing rule: an image
    ``images/<stem>.<ext>`` goes with the mask ``masks/<stem><mask_suffix>.<ext2>``
    (any image extension; option ``mask_suffix``, default ``""``, e.g. ``"_mask"``).
    Id = image stem. Option ``labels_csv`` (path, relative to ``root`` unless absolute)
    names a CSV with columns ``id,label[,group]``; images it does not list get label
    ``unknown`` and group = id. Masks and images must have the same size.

Every real kind (not ``synthetic``) accepts option ``limit``: keep only the first N ids
in sorted order (for quick runs); skipped ids count towards N.

What raises and what skips:

* raise :class:`~busseg.errors.ConfigError`: unknown kind, unknown or ill-typed option,
  missing ``root`` for a real kind;
* raise :class:`~busseg.errors.DataError` (when the importer is called, before any
  sample is read): ``root`` missing or without the expected folders/files (the message
  lists what was looked for), a metadata CSV that is unreadable or lacks columns;
* :class:`Skip` (during iteration): missing mask, image or metadata row, unreadable or
  corrupt file, non-binary mask, mask whose size differs from its image (for kinds
  without a resize rule), ambiguous pairing, unknown label value.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from busseg.config import check_range, from_dict
from busseg.data.index import LABELS
from busseg.errors import ConfigError, DataError
from busseg.imageio import read_image, read_mask, resize_mask

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
    ``id`` when the source has none); ``source_*`` say where the pixels came from.
    """

    id: str
    image: np.ndarray
    mask: np.ndarray
    label: str
    group: str
    source_image: str
    source_mask: str


@dataclass
class Skip:
    """A sample left out of the dataset, with the file at fault and why."""

    id: str
    path: str
    reason: str


Record = Sample | Skip
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
    labels_csv: str | None = None
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
    image_ids = {p.stem for p in (root / "images").glob("bus_*.png")}
    ids = _limit(sorted(image_ids | set(metadata)), opts.limit)

    def generate() -> Iterator[Record]:
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
        if match:
            numbers[f"stu_{int(match.group(1)):03d}"] = match.group(1)
    ids = _limit(sorted(numbers), opts.limit)

    def generate() -> Iterator[Record]:
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
    root = _check_root(root, section, "folder", ["images/", "masks/"])
    labels = _read_labels_csv(root, opts.labels_csv, section) if opts.labels_csv else {}
    images = _files_by_stem(root / "images")
    masks = _files_by_stem(root / "masks")
    ids = _limit(sorted(images), opts.limit)

    def generate() -> Iterator[Record]:
        for sample_id in ids:
            image_paths = images[sample_id]
            mask_paths = masks.get(sample_id + opts.mask_suffix, [])
            if len(image_paths) > 1:
                yield Skip(sample_id, str(image_paths[0]), _ambiguous("images", image_paths))
            elif not mask_paths:
                expected = root / "masks" / f"{sample_id}{opts.mask_suffix}.*"
                yield Skip(sample_id, str(image_paths[0]), f"no mask found (looked for {expected})")
            elif len(mask_paths) > 1:
                yield Skip(sample_id, str(mask_paths[0]), _ambiguous("masks", mask_paths))
            else:
                label, group = labels.get(sample_id, ("unknown", sample_id))
                yield _load_pair(sample_id, image_paths[0], mask_paths[0], label=label, group=group)

    return generate()


IMPORTERS: dict[str, Importer] = {
    "busbra": import_busbra,
    "folder": import_folder,
    "stu": import_stu,
    "synthetic": import_synthetic,
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


def _load_pair(
    sample_id: str,
    image_path: Path,
    mask_path: Path,
    *,
    label: str,
    group: str,
    resize: bool = False,
) -> Record:
    """Read one image/mask pair, or a :class:`Skip` saying what is wrong with it.

    ``resize=True`` applies the resize-and-threshold rule of kinds that document one.
    """
    if not mask_path.is_file():
        return Skip(sample_id, str(mask_path), "mask missing")
    try:
        image = read_image(image_path)
        if resize:
            mask = read_mask(mask_path, threshold=True)
            if _aspect_differs(mask.shape, image.shape):
                return Skip(sample_id, str(mask_path), _size_reason("aspect ratio", mask.shape, image.shape))
            mask = resize_mask(mask, image.shape)
        else:
            mask = read_mask(mask_path)
    except DataError as error:
        return Skip(sample_id, str(error.path), error.problem)
    if mask.shape != image.shape:
        return Skip(sample_id, str(mask_path), _size_reason("size", mask.shape, image.shape))
    return Sample(
        id=sample_id,
        image=image,
        mask=mask,
        label=label,
        group=group,
        source_image=str(image_path),
        source_mask=str(mask_path),
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
    path = Path(name) if Path(name).is_absolute() else root / name
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


def _files_by_stem(folder: Path) -> dict[str, list[Path]]:
    """Image files of ``folder`` (not recursive, hidden files ignored) grouped by stem."""
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS:
            files.setdefault(path.stem, []).append(path)
    return files


def _ambiguous(what: str, paths: list[Path]) -> str:
    return f"ambiguous pairing: several {what} share this stem ({', '.join(p.name for p in paths)})"

