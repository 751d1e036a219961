"""Turning one dataset spec into a prepared folder: ``images/``, ``masks/``, ``index.csv``.

The prepared folder is the only form of a dataset that later stages read: every image
an 8-bit greyscale PNG, every mask a 0/255 PNG of the same size, and an index (see
:mod:`busseg.data.index`) with label, patient group and content hash per sample.
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

from busseg.data.importers import Sample, Skip, get_importer
from busseg.data.index import INDEX_COLUMNS, LABELS, write_index
from busseg.errors import ConfigError, DataError
from busseg.imageio import content_hash, write_png


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` wrote and what it left out.

    ``duplicates`` pairs each sample whose image equals an earlier one with that
    earlier id; duplicates stay in the index (their equal ``hash`` lets the split keep
    them together). ``width_range``/``height_range`` are ``(min, max)`` in pixels.
    """

    name: str
    kind: str
    root: str | None
    n_images: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    n_empty_masks: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
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
    report = PrepareReport(name=name, kind=str(kind), root=None if root is None else str(root))
    try:
        rows = _write_samples(records, build_dir, report, progress=progress, desc=f"prepare {name}")
        if not rows:
            raise DataError(root if root is not None else section, _empty_problem(report))
        write_index(pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), build_dir / "index.csv")
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
    """Write each sample's PNGs, fill ``report`` and return the index rows."""
    rows: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    first_id_of_hash: dict[str, str] = {}
    labels: Counter[str] = Counter()
    for record in tqdm(records, desc=desc, unit="img", disable=not progress):
        if isinstance(record, Skip):
            report.skipped.append({"id": record.id, "path": record.path, "reason": record.reason})
            continue
        if record.id in seen_ids:
            report.skipped.append({"id": record.id, "path": record.source_image, "reason": "duplicate id"})
            continue
        _check_sample(record)
        seen_ids.add(record.id)
        image_rel, mask_rel = f"images/{record.id}.png", f"masks/{record.id}.png"
        write_png(build_dir / image_rel, record.image)
        write_png(build_dir / mask_rel, record.mask)
        digest = content_hash(record.image)
        if digest in first_id_of_hash:
            report.duplicates.append((record.id, first_id_of_hash[digest]))
        else:
            first_id_of_hash[digest] = record.id
        height, width = record.image.shape
        labels[record.label] += 1
        report.n_empty_masks += int(not record.mask.any())
        rows.append(
            {
                "id": record.id,
                "image": image_rel,
                "mask": mask_rel,
                "label": record.label,
                "group": record.group,
                "width": width,
                "height": height,
                "hash": digest,
            }
        )
    report.n_images = len(rows)
    report.labels = {label: labels.get(label, 0) for label in LABELS}
    if rows:
        report.width_range = (min(r["width"] for r in rows), max(r["width"] for r in rows))
        report.height_range = (min(r["height"] for r in rows), max(r["height"] for r in rows))
    return rows


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
