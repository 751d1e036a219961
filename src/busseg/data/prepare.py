"""Turning one dataset spec into a prepared folder: ``images/``, ``masks/``, ``index.csv``.

The prepared folder is the only form of a dataset that later stages read: every image
an 8-bit greyscale PNG, every mask a 0/255 PNG of the same size, and an index (see
:mod:`busseg.data.index`) with label, patient group and content hash per sample (and
the source of each sample, for ``composite`` datasets).
"""
from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from busseg.data.importers import Sample, Skip, detect_kind, get_importer
from busseg.data.index import INDEX_COLUMNS, LABELS, SOURCE_COLUMN, write_index
from busseg.errors import ConfigError, DataError
from busseg.imageio import content_hash, write_png


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
    colour images converted to grey (BUSI's Doppler overlays), listed in
    ``colour_converted_ids``. ``sources`` has, per source of a composite dataset,
    ``n_images``, ``labels``, ``n_skipped``, ``n_empty_masks`` and ``colour_converted``
    (empty for other kinds). ``detected_kind`` is the layout kind ``auto`` found
    (``None`` for other kinds). ``width_range``/``height_range`` are ``(min, max)`` in
    pixels.
    """

    name: str
    kind: str
    root: str | None
    detected_kind: str | None = None
    n_images: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    n_empty_masks: int = 0
    colour_converted: int = 0
    colour_converted_ids: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    n_cross_source_duplicates: int = 0
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    width_range: tuple[int, int] | None = None
    height_range: tuple[int, int] | None = None

    @property
    def n_skipped(self) -> int:
        """Number of samples left out."""
        return len(self.skipped)

    @property
    def n_duplicates(self) -> int:
        """Number of samples whose image repeats an earlier sample's image."""
        return len(self.duplicates)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (counts first, then the lists)."""
        summary = asdict(self)
        summary["n_skipped"] = self.n_skipped
        summary["n_duplicates"] = self.n_duplicates
        summary["duplicates"] = [list(pair) for pair in self.duplicates]
        for key in ("width_range", "height_range"):
            if summary[key] is not None:
                summary[key] = list(summary[key])
        return summary


def prepare_dataset(
    name: str, spec: Mapping[str, Any], out_dir: str | Path, *, progress: bool = True
) -> PrepareReport:
    """Import dataset ``name`` described by ``spec`` and write it to ``out_dir``.

    ``spec`` is the dataset's parameter entry: ``kind`` (see
    :data:`busseg.data.importers.IMPORTERS`), ``root`` (for real kinds; a relative
    path is resolved against the current working directory) and the kind's options.
    The folder is built in a temporary sibling of ``out_dir`` and renamed into place
    at the end, so a failure never leaves a half-written dataset; an existing
    ``out_dir`` is replaced. Raises :class:`DataError` when no sample is usable.
    """
    section = f"datasets.{name}"
    options = dict(spec)
    if "kind" not in options:
        raise ConfigError(f"{section}.kind", "missing; the dataset kind to import")
    kind = options.pop("kind")
    root = _resolve_root(options.pop("root", None), section)
    records = get_importer(kind, section=section)(root, options, section=section)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build_dir = _sibling(out_dir, "building")
    build_dir.mkdir()
    # The root as written in params (not resolved), so the report is the same on every machine.
    report = PrepareReport(name=name, kind=str(kind), root=None if root is None else str(spec.get("root")))
    if kind == "auto" and root is not None:  # the importer has just detected the same
        report.detected_kind = detect_kind(root)
    try:
        rows = _write_samples(records, build_dir, report, progress=progress, desc=f"prepare {name}")
        if not rows:
            raise DataError(root if root is not None else section, _empty_problem(report))
        write_index(_index_table(rows), build_dir / "index.csv")
        _replace_dir(build_dir, out_dir)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    return report


def _resolve_root(root: Any, section: str) -> Path | None:
    """``root`` as an absolute path (relative to the working directory), or None."""
    if root is None:
        return None
    if not isinstance(root, (str, Path)) or not str(root).strip():
        raise ConfigError(f"{section}.root", f"expected a folder path, got {root!r}")
    return Path(root).expanduser().resolve()


def _write_samples(
    records: Iterable[Sample | Skip],
    build_dir: Path,
    report: PrepareReport,
    *,
    progress: bool,
    desc: str,
) -> list[dict[str, Any]]:
    """Write each sample's PNGs, fill ``report`` and return the index rows.

    Rows carry a ``source`` entry only for samples that name one (composite datasets).
    """
    rows: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    first_of_hash: dict[str, tuple[str, str]] = {}  # hash -> (id, source) of its first sample
    for record in tqdm(records, desc=desc, unit="img", disable=not progress):
        if isinstance(record, Skip):
            _add_skip(report, record.id, record.path, record.reason, record.source)
            continue
        if record.id in seen_ids:
            _add_skip(report, record.id, record.source_image, "duplicate id", record.source)
            continue
        _check_sample(record)
        seen_ids.add(record.id)
        image_rel, mask_rel = f"images/{record.id}.png", f"masks/{record.id}.png"
        write_png(build_dir / image_rel, record.image)
        write_png(build_dir / mask_rel, record.mask)
        digest = content_hash(record.image)
        if digest in first_of_hash:
            first_id, first_source = first_of_hash[digest]
            report.duplicates.append((record.id, first_id))
            report.n_cross_source_duplicates += int(first_source != record.source)
        else:
            first_of_hash[digest] = (record.id, record.source)
        height, width = record.image.shape
        row = {
            "id": record.id,
            "image": image_rel,
            "mask": mask_rel,
            "label": record.label,
            "group": record.group,
            "width": width,
            "height": height,
            "hash": digest,
        }
        if record.source:
            row[SOURCE_COLUMN] = record.source
        rows.append(row)
        _count_sample(report, record)
    _summarise(report, rows)
    return rows


def _add_skip(report: PrepareReport, sample_id: str, path: str, reason: str, source: str) -> None:
    """Record one left-out sample (and count it for its source)."""
    entry = {"id": sample_id, "path": path, "reason": reason}
    if source:
        entry["source"] = source
        _source_counts(report, source)["n_skipped"] += 1
    report.skipped.append(entry)


def _count_sample(report: PrepareReport, sample: Sample) -> None:
    """Add a written sample to the report's running counts."""
    converted = int(sample.colour_converted)
    empty = int(not sample.mask.any())
    report.n_empty_masks += empty
    report.colour_converted += converted
    if sample.colour_converted:
        report.colour_converted_ids.append(sample.id)
    if sample.source:
        counts = _source_counts(report, sample.source)
        counts["n_images"] += 1
        counts["labels"][sample.label] += 1
        counts["n_empty_masks"] += empty
        counts["colour_converted"] += converted


def _source_counts(report: PrepareReport, source: str) -> dict[str, Any]:
    """The per-source counters of ``source``, created at zero on first use."""
    if source not in report.sources:
        report.sources[source] = {
            "n_images": 0,
            "labels": {label: 0 for label in LABELS},
            "n_skipped": 0,
            "n_empty_masks": 0,
            "colour_converted": 0,
        }
    return report.sources[source]


def _summarise(report: PrepareReport, rows: list[dict[str, Any]]) -> None:
    """Totals that need every row: image count, class counts, size ranges."""
    labels = Counter(row["label"] for row in rows)
    report.n_images = len(rows)
    report.labels = {label: labels.get(label, 0) for label in LABELS}
    report.sources = dict(sorted(report.sources.items()))
    if rows:
        report.width_range = (min(r["width"] for r in rows), max(r["width"] for r in rows))
        report.height_range = (min(r["height"] for r in rows), max(r["height"] for r in rows))


def _index_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The index rows as a table: :data:`INDEX_COLUMNS`, plus ``source`` when rows have one."""
    columns = list(INDEX_COLUMNS)
    if any(SOURCE_COLUMN in row for row in rows):
        columns.append(SOURCE_COLUMN)
    return pd.DataFrame(rows, columns=columns)


def _check_sample(sample: Sample) -> None:
    """Guard against an importer that breaks the :class:`Sample` contract."""
    image, mask = sample.image, sample.mask
    if image.dtype != "uint8" or image.ndim != 2 or mask.dtype != bool or mask.shape != image.shape:
        raise ValueError(
            f"importer returned a malformed sample {sample.id!r}: image {image.dtype}{image.shape}, "
            f"mask {mask.dtype}{mask.shape} (expected uint8 (H, W) and bool of the same shape)"
        )
    if sample.label not in LABELS:
        raise ValueError(f"importer returned label {sample.label!r} for {sample.id!r}")
    if not sample.id or Path(sample.id).name != sample.id or sample.id.startswith("."):
        raise ValueError(f"importer returned id {sample.id!r}, which is not a plain file stem")


def _empty_problem(report: PrepareReport) -> str:
    """Why a dataset came out empty, with the first few skip reasons."""
    if not report.skipped:
        return "no usable sample: the importer found no image"
    shown = "; ".join(f"{s['id']}: {s['reason']}" for s in report.skipped[:3])
    more = f" (and {report.n_skipped - 3} more)" if report.n_skipped > 3 else ""
    return f"no usable sample: all {report.n_skipped} skipped: {shown}{more}"


def _replace_dir(build_dir: Path, out_dir: Path) -> None:
    """Move the finished ``build_dir`` to ``out_dir``, replacing an older one.

    The old folder is first renamed aside, so that ``out_dir`` is at every moment
    either the complete old dataset, absent, or the complete new one.
    """
    old_dir = None
    if out_dir.exists() or out_dir.is_symlink():
        old_dir = _sibling(out_dir, "old")
        out_dir.rename(old_dir)
    try:
        build_dir.rename(out_dir)
    except BaseException:
        if old_dir is not None:
            old_dir.rename(out_dir)  # put the old dataset back rather than lose it
        raise
    if old_dir is not None:
        if old_dir.is_dir() and not old_dir.is_symlink():
            shutil.rmtree(old_dir)
        else:
            old_dir.unlink()


def _sibling(out_dir: Path, role: str) -> Path:
    """A fresh hidden path next to ``out_dir`` (same file system, so renames are atomic)."""
    return out_dir.with_name(f".{out_dir.name}.{role}-{uuid.uuid4().hex[:12]}")
