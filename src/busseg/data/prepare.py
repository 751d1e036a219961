"""Turning one dataset spec into a prepared folder: ``images/``, ``masks/``, ``index.csv``.

The prepared folder is the only form of a dataset that later stages read: every image
an 8-bit greyscale PNG, every mask a 0/255 PNG of the same size, and an index (see
:mod:`busseg.data.index`) with label, patient group and content hash per sample (and
the source of each sample, for ``composite`` datasets).
"""
from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from busseg.atomic import atomic_dir
from busseg.data.importers import Ignored, Sample, Skip, detect_kind, get_importer, parse_spec
from busseg.data.index import FLAG_COLUMNS, INDEX_COLUMNS, LABELS, SOURCE_COLUMN, write_index
from busseg.data.prepared import INDEX_FILE, image_file, mask_file
from busseg.errors import DataError
from busseg.imageio import MIN_IMAGE_SIZE, TINTED, content_hash, too_small, write_png  # noqa: F401 (re-exported: its size rule)

_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` wrote and what it left out.

    ``labels`` counts the written samples per class (every class of
    :data:`~busseg.data.index.LABELS`, zeros included). ``skipped`` lists each sample
    left out as ``{id, path, reason}`` (plus ``source`` in a composite dataset).
    ``duplicates`` pairs each sample whose image equals an earlier one with that
    earlier id; duplicates stay in the index (their equal ``hash`` lets the split keep
    them together); ``n_cross_source_duplicates`` counts the pairs whose two samples
    come from different sources of a composite dataset. ``colour_converted`` counts the
    images with colour content converted to luma (Doppler; BUS-UCLM's ``Doppler: Yes``),
    listed in ``colour_converted_ids``, and ``colour_reasons`` says per such id why: where
    the colour rule found colour and how much (:attr:`busseg.imageio.ColourContent.reason`),
    or that the dataset's metadata marks it Doppler; ``tinted_converted`` and ``tinted_converted_ids``
    the images with greyscale content stored in colour (a tinted grey map, coloured
    calipers or body marks), converted to luma as well (see :mod:`busseg.imageio`).
    ``flagged`` lists, per flag column of the index (BUS-UCLM: ``doppler``, ``marks``,
    ``combined``), the ids whose flag is ``yes``. ``ignored`` lists ``{path, reason}``
    (plus ``source``) for files that are part of no sample: hidden files, masks without
    images, metadata rows without images. ``sources`` has, per source of a composite
    dataset, ``n_images``, ``labels``, ``n_skipped``, ``n_ignored``, ``n_empty_masks``,
    ``colour_converted`` and ``tinted_converted`` (empty for other kinds).
    ``n_unmasked`` counts the images without a ground-truth mask (unlabeled scans, listed
    in ``unmasked_ids``; the index leaves their ``mask`` empty); ``n_masked`` the others.
    ``notes`` maps an id to what reading left out (a DICOM cine clip's later frames).
    ``warnings`` lists ``{id, problem}`` for samples that were written but look wrong
    (:func:`sample_warnings`: a blank image with a lesion mask, a mask covering the whole
    image, the same image as an earlier sample with a different mask).
    ``detected_kind`` is the layout kind ``auto`` found (``None`` for other kinds).
    ``width_range``/``height_range`` are ``(min, max)`` in pixels.
    """

    name: str
    kind: str
    root: str | None
    detected_kind: str | None = None
    n_images: int = 0
    n_masked: int = 0
    n_unmasked: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    n_empty_masks: int = 0
    colour_converted: int = 0
    colour_converted_ids: list[str] = field(default_factory=list)
    colour_reasons: dict[str, str] = field(default_factory=dict)
    tinted_converted: int = 0
    tinted_converted_ids: list[str] = field(default_factory=list)
    flagged: dict[str, list[str]] = field(default_factory=dict)
    unmasked_ids: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    n_cross_source_duplicates: int = 0
    warnings: list[dict[str, str]] = field(default_factory=list)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    width_range: tuple[int, int] | None = None
    height_range: tuple[int, int] | None = None

    @property
    def n_skipped(self) -> int:
        """Number of samples left out."""
        return len(self.skipped)

    @property
    def n_ignored(self) -> int:
        """Number of files (or metadata rows) that are part of no sample."""
        return len(self.ignored)

    @property
    def n_duplicates(self) -> int:
        """Number of samples whose image repeats an earlier sample's image."""
        return len(self.duplicates)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (counts first, then the lists)."""
        summary = asdict(self)
        summary["n_skipped"] = self.n_skipped
        summary["n_ignored"] = self.n_ignored
        summary["n_duplicates"] = self.n_duplicates
        summary["duplicates"] = [list(pair) for pair in self.duplicates]
        for key in ("width_range", "height_range"):
            if summary[key] is not None:
                summary[key] = list(summary[key])
        return summary


def prepare_dataset(
    name: str,
    spec: Mapping[str, Any],
    out_dir: str | Path,
    *,
    progress: bool = True,
    build_in: str | Path | None = None,
) -> PrepareReport:
    """Import dataset ``name`` described by ``spec`` and write it to ``out_dir``.

    ``spec`` is the dataset's parameter entry: ``kind`` (see
    :data:`busseg.data.importers.IMPORTERS`), ``root`` (for real kinds; a relative
    path is resolved against the current working directory) and the kind's options.
    The folder is built in a temporary sibling of ``out_dir`` (``.<name>.<pid>.tmp``,
    :func:`busseg.atomic.atomic_dir`) and renamed into place at the end, so a failure
    never leaves a half-written dataset; an existing ``out_dir`` is replaced, and
    temporaries of killed earlier runs are removed first. ``build_in`` (the stage passes
    the scratch folder) holds that temporary instead, where later runs also clean up.
    Raises :class:`DataError` when no sample is usable, or naming the output file when
    writing fails (disk full, ``ulimit -f``).
    """
    section = f"datasets.{name}"
    parsed = parse_spec(spec, section)
    kind, root = parsed.kind, parsed.root
    records = get_importer(kind, section=section)(root, parsed.options, section=section)

    out_dir = Path(out_dir)
    # The root as written in params (not resolved), so the report is the same on every machine.
    report = PrepareReport(name=name, kind=str(kind), root=None if root is None else str(spec.get("root")))
    if kind == "auto" and root is not None:  # the importer has just detected the same
        report.detected_kind = detect_kind(root)
    try:
        _remove_legacy_temporaries(out_dir)
        with atomic_dir(out_dir, build_in=build_in) as build_dir:
            rows = _write_samples(records, build_dir, out_dir, report, progress=progress, desc=f"prepare {name}")
            if not rows:
                raise DataError(root if root is not None else section, _empty_problem(report))
            _write_index_file(_index_table(rows), build_dir / INDEX_FILE, out_dir / INDEX_FILE)
    except OSError as exc:  # creating or renaming the folder: name the output, not a temporary
        raise DataError(out_dir, f"cannot write the prepared dataset: {exc.strerror or exc}") from None
    return report


def _remove_legacy_temporaries(out_dir: Path) -> None:
    """Remove ``.<name>.building-*`` / ``.<name>.old-*`` folders that earlier versions of
    this stage left beside ``out_dir`` when they were killed (``kill -9``)."""
    if not out_dir.parent.is_dir():
        return
    for role in ("building", "old"):
        for leftover in out_dir.parent.glob(f".{out_dir.name}.{role}-*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _write_index_file(table: pd.DataFrame, path: Path, shown_as: Path) -> None:
    """Write ``index.csv``; a failed write names ``shown_as`` (the final path)."""
    try:
        write_index(table, path)
    except OSError as exc:
        raise DataError(shown_as, f"cannot write: {exc.strerror or exc}") from None


def _write_samples(
    records: Iterable[Sample | Skip | Ignored],
    build_dir: Path,
    out_dir: Path,
    report: PrepareReport,
    *,
    progress: bool,
    desc: str,
) -> list[dict[str, Any]]:
    """Write each sample's PNGs, fill ``report`` and return the index rows.

    Rows carry a ``source`` entry only for samples that name one (composite datasets),
    and flag entries only for samples that have flags. A failed write raises
    :class:`DataError` naming the file under ``out_dir`` (where the user will look).
    """
    rows: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    first_of_hash: dict[str, tuple[str, str]] = {}  # hash -> (id, source) of its first sample
    first_mask: dict[str, str | None] = {}  # image hash -> mask hash of its first sample (None: no mask)
    for record in tqdm(records, desc=desc, unit="img", disable=not progress):
        if isinstance(record, Ignored):
            _add_ignored(report, record)
            continue
        if isinstance(record, Skip):
            _add_skip(report, record.id, record.path, record.reason, record.source)
            continue
        if record.id in seen_ids:
            _add_skip(report, record.id, record.source_image, "duplicate id", record.source)
            continue
        _check_sample(record)
        if not _SAFE_ID.fullmatch(record.id):
            reason = f"id {record.id!r} is not a safe file name (letters, digits, '_', '.', '-')"
            _add_skip(report, record.id, record.source_image, reason, record.source)
            continue
        height, width = record.image.shape
        small = too_small(record.image)
        if small:
            _add_skip(report, record.id, record.source_image, small, record.source)
            continue
        seen_ids.add(record.id)
        image_rel, mask_rel = image_file(record.id), mask_file(record.id)
        try:
            # The build folder is private and renamed into place whole: no per-file temporaries.
            write_png(build_dir / image_rel, record.image, atomic=False)
            if record.mask is not None:
                write_png(build_dir / mask_rel, record.mask, atomic=False)
        except DataError as error:
            raise DataError(out_dir / error.path.relative_to(build_dir), error.problem) from None
        digest = content_hash(record.image)
        mask_digest = content_hash(record.mask) if record.mask is not None else None
        earlier = first_of_hash.get(digest)
        if earlier is not None:
            report.duplicates.append((record.id, earlier[0]))
            report.n_cross_source_duplicates += int(earlier[1] != record.source)
        else:
            first_of_hash[digest] = (record.id, record.source)
            first_mask[digest] = mask_digest
        # An unmasked copy of an outlined image is not "annotated two ways": it has no annotation.
        masks_differ = mask_digest is not None and first_mask.get(digest) not in (None, mask_digest)
        differs = earlier[0] if earlier is not None and masks_differ else None
        for problem in sample_warnings(record, differs):
            report.warnings.append({"id": record.id, "problem": problem})
        row = {
            "id": record.id,
            "image": image_rel,
            "mask": mask_rel if record.mask is not None else "",
            "label": record.label,
            "group": record.group,
            "width": width,
            "height": height,
            "hash": digest,
        }
        if record.source:
            row[SOURCE_COLUMN] = record.source
        row.update({flag: value for flag, value in record.flags.items() if flag in FLAG_COLUMNS})
        rows.append(row)
        _count_sample(report, record)
    _summarise(report, rows)
    return rows


def sample_warnings(sample: Sample, same_image_other_mask: str | None = None) -> list[str]:
    """What looks wrong with a usable sample (it is still written; the report lists it).

    A blank image (one grey level: no scan) whose mask marks a lesion, a mask covering the
    whole image (an inverted or placeholder mask), and, with ``same_image_other_mask``
    (the id of an earlier sample with the same pixels), one image annotated two ways.
    """
    problems = []
    if sample.mask is None:  # an unlabeled scan: no mask to be wrong
        return problems
    if sample.mask.any() and sample.image.min() == sample.image.max():
        problems.append(f"blank image (every pixel {int(sample.image.flat[0])}) with a lesion in its mask")
    if sample.mask.all():
        problems.append("the mask covers the whole image (inverted or a placeholder?)")
    if same_image_other_mask is not None:
        problems.append(f"same image as {same_image_other_mask} but a different mask")
    return problems


def _add_skip(report: PrepareReport, sample_id: str, path: str, reason: str, source: str) -> None:
    """Record one left-out sample (and count it for its source)."""
    entry = {"id": sample_id, "path": path, "reason": reason}
    if source:
        entry["source"] = source
        _source_counts(report, source)["n_skipped"] += 1
    report.skipped.append(entry)


def _add_ignored(report: PrepareReport, record: Ignored) -> None:
    """Record one file that is part of no sample (and count it for its source)."""
    entry = {"path": record.path, "reason": record.reason}
    if record.source:
        entry["source"] = record.source
        _source_counts(report, record.source)["n_ignored"] += 1
    report.ignored.append(entry)


def _count_sample(report: PrepareReport, sample: Sample) -> None:
    """Add a written sample to the report's running counts."""
    converted = int(sample.colour_converted)
    tinted = int(sample.colour == TINTED)
    unmasked = int(sample.mask is None)
    empty = int(not unmasked and not sample.mask.any())
    report.n_empty_masks += empty
    report.n_unmasked += unmasked
    if unmasked:
        report.unmasked_ids.append(sample.id)
    if sample.note:
        report.notes[sample.id] = sample.note
    report.colour_converted += converted
    report.tinted_converted += tinted
    if converted:
        report.colour_converted_ids.append(sample.id)
        report.colour_reasons[sample.id] = _colour_reason(sample)
    if tinted:
        report.tinted_converted_ids.append(sample.id)
    for flag, value in sample.flags.items():
        ids = report.flagged.setdefault(flag, [])
        if value == "yes":
            ids.append(sample.id)
    if sample.source:
        counts = _source_counts(report, sample.source)
        counts["n_images"] += 1
        counts["labels"][sample.label] += 1
        counts["n_empty_masks"] += empty
        counts["n_unmasked"] += unmasked
        counts["colour_converted"] += converted
        counts["tinted_converted"] += tinted


def _colour_reason(sample: Sample) -> str:
    """Why ``sample`` counts as colour: the colour rule's finding, else its metadata flag."""
    if sample.colour_reason:
        return sample.colour_reason
    if sample.flags.get("doppler") == "yes":
        return "the dataset's metadata marks it Doppler (the pixels alone read as greyscale content)"
    return "colour content"


def _source_counts(report: PrepareReport, source: str) -> dict[str, Any]:
    """The per-source counters of ``source``, created at zero on first use."""
    if source not in report.sources:
        report.sources[source] = {
            "n_images": 0,
            "labels": {label: 0 for label in LABELS},
            "n_skipped": 0,
            "n_ignored": 0,
            "n_empty_masks": 0,
            "n_unmasked": 0,
            "colour_converted": 0,
            "tinted_converted": 0,
        }
    return report.sources[source]


def _summarise(report: PrepareReport, rows: list[dict[str, Any]]) -> None:
    """Totals that need every row: image count, class counts, size ranges."""
    labels = Counter(row["label"] for row in rows)
    report.n_images = len(rows)
    report.n_masked = report.n_images - report.n_unmasked
    report.labels = {label: labels.get(label, 0) for label in LABELS}
    report.sources = dict(sorted(report.sources.items()))
    if rows:
        report.width_range = (min(r["width"] for r in rows), max(r["width"] for r in rows))
        report.height_range = (min(r["height"] for r in rows), max(r["height"] for r in rows))


def _index_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The index rows as a table: :data:`INDEX_COLUMNS`, plus ``source`` and the flag
    columns when some rows have them (``unknown`` for rows without, e.g. another source)."""
    columns = list(INDEX_COLUMNS)
    if any(SOURCE_COLUMN in row for row in rows):
        columns.append(SOURCE_COLUMN)
    flags = [flag for flag in FLAG_COLUMNS if any(flag in row for row in rows)]
    table = pd.DataFrame(rows, columns=columns + flags)
    if flags:
        table[flags] = table[flags].fillna("unknown")
    return table


def _check_sample(sample: Sample) -> None:
    """Guard against an importer that breaks the :class:`Sample` contract."""
    image, mask = sample.image, sample.mask
    mask_ok = mask is None or (mask.dtype == bool and mask.shape == image.shape)
    if image.dtype != "uint8" or image.ndim != 2 or not mask_ok:
        raise ValueError(
            f"importer returned a malformed sample {sample.id!r}: image {image.dtype}{image.shape}, "
            f"mask {'None' if mask is None else f'{mask.dtype}{mask.shape}'} "
            "(expected uint8 (H, W) and bool of the same shape, or no mask)"
        )
    if sample.label not in LABELS:
        raise ValueError(f"importer returned label {sample.label!r} for {sample.id!r}")
    if not sample.id:
        raise ValueError("importer returned an empty id")


def _empty_problem(report: PrepareReport) -> str:
    """Why a dataset came out empty, with the first few skip reasons."""
    if not report.skipped:
        return "no usable sample: the importer found no image"
    shown = "; ".join(f"{s['id']}: {s['reason']}" for s in report.skipped[:3])
    more = f" (and {report.n_skipped - 3} more)" if report.n_skipped > 3 else ""
    return f"no usable sample: all {report.n_skipped} skipped: {shown}{more}"
