"""What every importer kind shares: the records, option parsing, root checks, pairing and ids.

An importer is called as ``importer(root, options, section=...)`` and returns a lazy
iterator of :class:`Sample`, :class:`Skip` and :class:`Ignored` records (see
:mod:`busseg.data.importers` for the rules every kind follows). The helpers here are the
one implementation of each shared rule: :func:`check_root` (the dataset folder and the
entries a kind needs), :func:`parse_spec` (a dataset entry of params.yaml: kind, root,
options), :func:`pair_and_load` / :func:`load_pair` (an image with its mask(s), read by
:func:`busseg.imageio.read_image_with_colour`, the one colour rule of every kind), and
:func:`sanitise_id` / :func:`unique_ids` (file names as safe, distinct sample ids).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from busseg.config import check_range, from_dict
from busseg.data.index import LABELS
from busseg.errors import ConfigError, DataError
from busseg.dicom import frame_note, is_dicom
from busseg.imageio import COLOUR, GREY, IMAGE_SUFFIXES, SCAN_SUFFIXES, read_image_with_colour, read_mask, resize_mask

ASPECT_TOLERANCE = 0.02
"""Largest relative aspect-ratio difference between a mask and its image that a resize
rule accepts; beyond it, resizing would distort the lesion, so the pair is skipped."""


@dataclass
class Sample:
    """One usable image, with its mask when it has one.

    ``image`` is ``uint8`` (H, W), ``mask`` is ``bool`` (H, W) of the same shape, or
    ``None`` for an image without a ground-truth mask (an unlabeled scan),
    ``label`` one of :data:`busseg.data.index.LABELS`, ``group`` the patient id (or
    ``id`` when the source has none); ``source_*`` say where the pixels came from
    (``source_mask`` joins several OR-merged mask files with ``;``). ``source`` is the
    source name inside a ``composite`` dataset (empty otherwise). ``colour`` is the
    image's content by :func:`busseg.imageio.classify_colour` (``grey``, ``tinted`` or
    ``colour``; BUS-UCLM's ``Doppler: Yes`` also makes it ``colour``): both non-grey
    kinds were converted to luma; ``colour_reason`` says where the rule found colour and how
    much (:attr:`busseg.imageio.ColourContent.reason`; empty unless it did). ``flags`` are per-image facts from the dataset's
    metadata (BUS-UCLM: ``doppler``, ``marks``, ``combined`` = ``yes``/``no``/``unknown``)
    that the prepared index keeps as columns. ``note`` says what reading left out
    (a DICOM cine clip's later frames), for the prepare report.
    """

    id: str
    image: np.ndarray
    mask: np.ndarray | None
    label: str
    group: str
    source_image: str
    source_mask: str
    source: str = ""
    colour: str = GREY
    flags: dict[str, str] = field(default_factory=dict)
    colour_reason: str = ""
    note: str = ""

    @property
    def has_mask(self) -> bool:
        """Whether the image has a ground-truth mask (False: an unlabeled scan)."""
        return self.mask is not None

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
class DatasetSpec:
    """A dataset entry of params.yaml taken apart: its ``kind``, its ``root`` (an absolute
    path, or None when the entry has none) and the kind's remaining ``options``."""

    kind: Any
    root: Path | None
    options: dict[str, Any]


def parse_spec(spec: Any, section: str, *, parent: Path | None = None) -> DatasetSpec:
    """Split a dataset spec (``kind``, ``root``, options) into a :class:`DatasetSpec`.

    A relative ``root`` is resolved against ``parent`` (default: the working directory);
    an absolute one replaces it. Used by ``prepare`` for a dataset and by ``composite``
    for each of its sources, so both read a spec the same way.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(section, f"expected a dataset spec (kind, root, options), got {spec!r}")
    options = dict(spec)
    if "kind" not in options:
        raise ConfigError(f"{section}.kind", "missing; the dataset kind to import")
    kind = options.pop("kind")
    root = options.pop("root", None)
    if root is None:
        return DatasetSpec(kind, None, options)
    if not isinstance(root, (str, Path)) or not str(root).strip():
        raise ConfigError(f"{section}.root", f"expected a folder path, got {root!r}")
    return DatasetSpec(kind, (Path(parent or Path.cwd()) / Path(root).expanduser()).resolve(), options)


def lookup(registry: Mapping[str, Importer], kind: Any, section: str) -> Importer:
    """The importer of ``kind`` in ``registry``; an unknown kind is a :class:`ConfigError`
    on ``<section>.kind`` that lists the available kinds."""
    try:
        return registry[kind]
    except (KeyError, TypeError):
        raise ConfigError(
            f"{section}.kind", f"unknown kind {kind!r}; available: {', '.join(sorted(registry))}"
        ) from None


def merge_registries(*registries: Mapping[str, Importer]) -> dict[str, Importer]:
    """One ``kind -> importer`` dict from each module's entries (a kind defined twice is a bug)."""
    merged: dict[str, Importer] = {}
    for registry in registries:
        for kind, importer in registry.items():
            if kind in merged:
                raise ValueError(f"importer kind {kind!r} is registered twice")
            merged[kind] = importer
    return dict(sorted(merged.items()))


SPEC_KEYS = ("kind", "root")
"""Keys of every dataset entry besides its kind's options (listed with them when a key is unknown)."""


def parse_options(cls: type, options: Mapping[str, Any], section: str) -> Any:
    """Build and range-check an options dataclass from the spec's remaining keys."""
    opts = from_dict(cls, options, section, also=SPEC_KEYS)
    if getattr(opts, "limit", None) is not None:
        check_range(f"{section}.limit", opts.limit, 1, float("inf"))
    return opts


def check_root(
    root: Path | None, section: str, kind: str, expected: Sequence[str], *, looked_for: str | None = None
) -> Path:
    """Return ``root`` as a Path after checking that it holds the ``expected`` entries.

    Entries ending in ``/`` are folders, the others files. The error lists everything
    looked for (``looked_for``, when a kind also accepts another layout, e.g. BUSI's
    parent folder), so that a wrong ``root`` is recognised at once.
    """
    if root is None:
        raise ConfigError(f"{section}.root", f"missing; kind '{kind}' reads a dataset folder")
    root = Path(root)
    looked_for = looked_for or ", ".join(expected)
    if not root.is_dir():
        raise DataError(root, missing_folder(root, f"kind '{kind}' expects {looked_for}"))
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


def missing_folder(root: Path, expected: str) -> str:
    """Why ``root`` (not a folder) cannot be a dataset: missing, or a file where a folder
    belongs (say so: "not found" sends a user looking for a path that is right there)."""
    if root.exists():
        kind = "a file" if root.is_file() else "not a folder"
        return f"is {kind}, not a dataset folder ({expected}); root names the folder that holds the dataset"
    return f"dataset folder not found ({expected})"


def limit_ids(ids: list[str], limit: int | None) -> list[str]:
    return ids if limit is None else ids[:limit]


def pair_and_load(
    sample_id: str,
    image_paths: Sequence[Path],
    mask_paths: Sequence[Path],
    *,
    missing_mask: str,
    label: str,
    group: str,
    merge_masks: bool = False,
    require_mask: bool = True,
) -> Record:
    """Check that ``sample_id`` has one image and its mask(s), then load the pair.

    Several masks are an ambiguous pairing unless ``merge_masks`` (they are OR-merged).
    An image without a mask is a :class:`Skip` with reason ``missing_mask`` when
    ``require_mask``, else an unlabeled :class:`Sample` (``mask=None``).
    """
    if len(image_paths) > 1:
        return Skip(sample_id, str(image_paths[0]), _ambiguous("images", image_paths))
    if not mask_paths:
        if require_mask:
            return Skip(sample_id, str(image_paths[0]), missing_mask)
        return load_unlabeled(sample_id, image_paths[0], label=label, group=group)
    if len(mask_paths) > 1 and not merge_masks:
        return Skip(sample_id, str(mask_paths[0]), _ambiguous("masks", mask_paths))
    return load_pair(sample_id, image_paths[0], mask_paths, label=label, group=group)


def load_pair(
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
        note = frame_note(image_path) if is_dicom(image_path) else ""
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
        note=note,
        colour_reason=content.reason,
    )


def load_unlabeled(sample_id: str, image_path: Path, *, label: str, group: str) -> Record:
    """Read an image without a mask (an unlabeled scan), or a :class:`Skip` saying why not."""
    try:
        image, content = read_image_with_colour(image_path)
        note = frame_note(image_path) if is_dicom(image_path) else ""
    except DataError as error:
        return Skip(sample_id, str(error.path), error.problem)
    return Sample(
        id=sample_id, image=image, mask=None, label=label, group=group,
        source_image=str(image_path), source_mask="", colour=content.kind, note=note,
        colour_reason=content.reason,
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


def read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
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


def read_labels_csv(root: Path, name: str, section: str) -> dict[str, tuple[str, str]]:
    """``id -> (label, group)`` from the ``folder`` kind's ``labels_csv``."""
    path = labels_path(root, name)
    if not path.is_file():
        raise DataError(path, f"labels_csv not found (option {section}.labels_csv)")
    table = read_csv(path, ["id", "label"])
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


def labels_path(root: Path, name: str) -> Path:
    """The ``labels_csv`` option as a path: relative to ``root`` unless absolute."""
    return Path(name) if Path(name).is_absolute() else root / name


def files_by_stem(
    folder: Path, ignored: list[Ignored], suffixes: tuple[str, ...] = SCAN_SUFFIXES
) -> dict[str, list[Path]]:
    """Files of ``folder`` (not recursive) with one of ``suffixes``, grouped by stem.

    ``suffixes`` defaults to scans (images and DICOM); pass :data:`busseg.imageio.IMAGE_SUFFIXES`
    for a masks folder (masks are images, never DICOM). Hidden files (``.DS_Store``, macOS
    ``._x.png``), sub-folders and other files are left out and appended to ``ignored``
    with the reason.
    """
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        reason = _unusable_entry(path, suffixes)
        if reason:
            ignored.append(Ignored(str(path), reason))
        else:
            files.setdefault(path.stem, []).append(path)
    return files


def _unusable_entry(path: Path, suffixes: tuple[str, ...] = SCAN_SUFFIXES) -> str:
    """Why ``path`` (an entry of an images or masks folder) is not a candidate file, or ``""``."""
    if path.name.startswith("."):
        return "hidden file, not read"
    if not path.is_file():
        return "not a regular file (a folder or special file), not read"
    if path.suffix.lower() not in suffixes:
        what = "an image file" if suffixes == SCAN_SUFFIXES else "a mask image"
        return f"not {what} (extension {path.suffix or 'none'}; read are {', '.join(suffixes)})"
    return ""


def report_unmatched(
    folder: Path, used: set[str], reason: str, ignored: list[Ignored], suffixes: tuple[str, ...] = SCAN_SUFFIXES
) -> None:
    """Append every entry of ``folder`` whose name is not in ``used`` to ``ignored``."""
    for path in sorted(folder.iterdir()):
        if path.name not in used:
            ignored.append(Ignored(str(path), _unusable_entry(path, suffixes) or reason))


def unlisted(table: Mapping[str, Any], stems: Mapping[str, str], path: Path, what: str) -> list[Ignored]:
    """An :class:`Ignored` for each key of a metadata ``table`` that names no image
    (neither a sample id nor an image's file stem)."""
    known = set(stems) | set(stems.values())
    return [Ignored(str(path), f"{key!r} listed in {what}, no such image") for key in table if key not in known]


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


def unique_ids(
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
