"""Labeling a prepared dataset with a backend: masks, a per-image table, quality metrics.

Resumable without breaking DVC's run cache: every finished image is stored in a
scratch cache outside the DVC outputs, under a key made of the backend parameters and
the image's content hash. A rerun (after an interruption, or of an unchanged image with
the same parameters) reads the cache instead of labeling again, and the models are only
loaded when at least one image is missing from it.

A two-pass backend (:class:`busseg.pseudo.base.TwoPassLabeler`, e.g. ``appearance``)
adapts to the dataset: its per-image first pass is what the cache keeps, the dataset
prior is estimated from all first passes, and the cheap second pass runs every time.
The prior is written beside the labels (``prior.json``).
"""
from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from busseg.atomic import atomic_dir, atomic_path, write_json
from busseg.data.index import has_mask
from busseg.data.prepared import PreparedDataset, PseudoLabels
from busseg.metrics import dice, iou
from busseg.pseudo.base import BatchLabeler, PseudoLabel, PseudoLabeler, TwoPassLabeler
from busseg.scratch import inputs_key
from busseg.visualize import render_overlay

# Data only: per-image timings go to the stage's metrics, or every re-run would change the
# output's hash and invalidate every downstream stage (see label_dataset).
LABEL_COLUMNS = ("id", "valid", "score", "reason", "area_fraction", "box")


def options_key(backend: str, options: Mapping[str, Any], files: Iterable[str | Path] = ()) -> str:
    """A short stable hash of the backend, its options and the content of ``files`` (the
    backend's other inputs, :func:`busseg.pseudo.registry.input_files`): the scratch-cache
    namespace, so that results of other options or other weights are never reused."""
    return inputs_key({"backend": backend, "options": options}, files)


class LabelCache:
    """Content-addressed per-image results under ``root/<options key>/<image hash>.npz``."""

    def __init__(self, root: str | Path, key: str) -> None:
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, image_hash: str) -> Path:
        return self.dir / f"{image_hash}.npz"

    def get_arrays(self, image_hash: str) -> dict[str, np.ndarray] | None:
        """The arrays stored for one image, or ``None`` (missing or unreadable)."""
        path = self._path(image_hash)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError, KeyError):
            return None  # a torn or foreign file: analyse the image again

    def put_arrays(self, image_hash: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Store one image's arrays; the file appears whole or not at all."""
        with atomic_path(self._path(image_hash)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def get(self, image_hash: str, shape: tuple[int, int]) -> tuple[PseudoLabel, float] | None:
        path = self._path(image_hash)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                mask = np.unpackbits(data["mask"])[: shape[0] * shape[1]].reshape(shape).astype(bool)
                box = tuple(int(v) for v in data["box"]) if data["box"].size == 4 else None
                label = PseudoLabel(mask, float(data["score"]), bool(data["valid"]), str(data["reason"]), box)  # type: ignore[arg-type]
                return label, float(data["seconds"])
        except (OSError, ValueError, KeyError):
            return None  # a torn or foreign file: label the image again

    def put(self, image_hash: str, label: PseudoLabel, seconds: float) -> None:
        """Store one image's result; the file appears whole or not at all (a killed run
        leaves no torn entry for the next one to trip over)."""
        # An open handle: np.savez would append ".npz" to a temporary path's name.
        with atomic_path(self._path(image_hash)) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                mask=np.packbits(label.mask.astype(bool).ravel()),
                score=label.score,
                valid=label.valid,
                reason=label.reason,
                box=np.asarray(label.box if label.box is not None else [], dtype=np.int64),
                seconds=seconds,
            )


def label_table(labels: Iterable[tuple[str, PseudoLabel]]) -> pd.DataFrame:
    """The per-image table of :data:`busseg.pseudo.run.LABEL_COLUMNS`."""
    rows = [
        {
            "id": sample_id,
            "valid": bool(label.valid),
            "score": round(float(label.score), 6),
            "reason": label.reason,
            "area_fraction": round(float(label.mask.mean()), 6),
            "box": "" if label.box is None else " ".join(str(v) for v in label.box),
        }
        for sample_id, label in labels
    ]
    return pd.DataFrame(rows, columns=list(LABEL_COLUMNS))


def label_dataset(
    make_labeler: Callable[[], PseudoLabeler],
    prepared_dir: str | Path,
    index: pd.DataFrame,
    out_dir: str | Path,
    cache: LabelCache | None = None,
    *,
    two_pass: bool = False,
    prior: Any = None,
    progress: bool = True,
    workers: int = 1,
) -> tuple[pd.DataFrame, list[float]]:
    """Label every image of ``index``; write ``out_dir/masks/<id>.png`` and ``labels.csv``.

    Invalid labels are written as empty masks and marked ``valid = False`` with the
    backend's reason. With ``two_pass`` the labeler must be a :class:`TwoPassLabeler`
    (the cache then holds first passes) and ``out_dir/prior.json`` records the dataset
    prior it adapted, or ``prior`` when given (few-shot calibration: measured on ground
    truth). ``workers`` processes share a two-pass labeler's first passes (the labels are the
    same for any count). The output folder appears only when every image is done. Returns
    the label table and the seconds each image took (when first labeled), which belong
    in logs, not in the output.
    """
    prepared = PreparedDataset(prepared_dir)
    if two_pass:
        labels_and_seconds, prior = _two_pass_labels(make_labeler, prepared, index, cache, progress, prior, workers)
    else:
        labels_and_seconds, prior = _one_pass_labels(make_labeler, prepared, index, cache, progress), None
    with atomic_dir(out_dir) as tmp:
        labels = PseudoLabels(tmp)
        labels.masks_dir.mkdir()
        for record, (label, _) in zip(index.itertuples(index=False), labels_and_seconds):
            Image.fromarray(label.mask.astype(np.uint8) * 255).save(labels.mask_path(record.id))
        table = label_table(zip(index["id"], (label for label, _ in labels_and_seconds)))
        table.to_csv(labels.table_path, index=False)
        if two_pass:
            write_json(Path(tmp) / "prior.json", prior.as_dict() if prior is not None else {"source": "none"})
    return table, [seconds for _, seconds in labels_and_seconds]


def _one_pass_labels(
    make_labeler: Callable[[], PseudoLabeler], prepared: PreparedDataset, index: pd.DataFrame, cache: LabelCache | None, progress: bool
) -> list[tuple[PseudoLabel, float]]:
    """Each image's label (from the cache where it has one) and the seconds it took.

    The images missing from the cache go to a :class:`BatchLabeler` ``batch_size`` at a time
    (one model batch each; the labels are those of one image at a time), each image taking
    its share of its batch's seconds; other labelers label them one by one. Each batch is
    cached as it finishes, so an interrupted run resumes after the last whole batch.
    """
    records = list(index.itertuples(index=False))
    out: list[tuple[PseudoLabel, float] | None] = [None] * len(records)
    pending: list[tuple[int, str, np.ndarray]] = []  # (position, image hash, image) to label
    labeler: PseudoLabeler | None = None
    batch_size = 1
    bar = tqdm(total=len(records), desc="pseudo labels", disable=not progress)
    for position, record in enumerate(records):
        image = prepared.image(record.id)
        cached = cache.get(record.hash, image.shape) if cache is not None else None
        if cached is not None:
            out[position] = cached
            bar.update()
            continue
        if labeler is None:  # the models load only when an image is missing from the cache
            labeler = make_labeler()
            batch_size = max(1, int(labeler.batch_size)) if isinstance(labeler, BatchLabeler) else 1
        pending.append((position, record.hash, image))
        if len(pending) >= batch_size:
            _label_pending(labeler, pending, out, cache)
            bar.update(len(pending))
            pending.clear()
    if pending:
        _label_pending(labeler, pending, out, cache)  # type: ignore[arg-type]
        bar.update(len(pending))
    bar.close()
    return out  # type: ignore[return-value]


def _label_pending(
    labeler: PseudoLabeler,
    pending: list[tuple[int, str, np.ndarray]],
    out: list[tuple[PseudoLabel, float] | None],
    cache: LabelCache | None,
) -> None:
    """Label ``pending`` (one batch, or one image), fill ``out`` and the cache."""
    images = [image for _, _, image in pending]
    start = time.perf_counter()
    if isinstance(labeler, BatchLabeler):
        labels = labeler.label_batch(images)
    else:
        labels = [labeler.label(image) for image in images]
    seconds = (time.perf_counter() - start) / len(images)
    for (position, image_hash, _), label in zip(pending, labels, strict=True):
        out[position] = label, seconds
        if cache is not None:
            cache.put(image_hash, label, seconds)


def _two_pass_labels(
    make_labeler: Callable[[], PseudoLabeler],
    prepared: PreparedDataset,
    index: pd.DataFrame,
    cache: LabelCache | None,
    progress: bool,
    prior: Any = None,
    workers: int = 1,
) -> tuple[list[tuple[PseudoLabel, float]], Any]:
    """First pass per image (cached), the dataset prior (unless given), then every image's label."""
    labeler = make_labeler()
    if not isinstance(labeler, TwoPassLabeler):
        raise TypeError(f"{type(labeler).__name__} has no analyse/fit_prior/decide: it cannot label in two passes")
    records = list(index.itertuples(index=False))
    done: dict[str, tuple[Any, float]] = {}
    for record in records:
        arrays = cache.get_arrays(record.hash) if cache is not None else None
        if arrays is not None:
            try:
                done[record.id] = labeler.load_analysis(arrays), float(arrays["seconds"])
            except (KeyError, ValueError):
                pass  # written by another version: analyse again
    missing = [record for record in records if record.id not in done]
    for record, (analysis, took) in zip(missing, _first_passes(labeler, make_labeler, prepared, missing, workers, progress)):
        done[record.id] = analysis, took
        if cache is not None:  # stored as each image finishes: an interrupted run resumes here
            cache.put_arrays(record.hash, {**analysis.to_arrays(), "seconds": np.float64(took)})
    analyses = [done[record.id][0] for record in records]
    seconds = [done[record.id][1] for record in records]
    if prior is None:
        prior = labeler.fit_prior(analyses)
    return [(labeler.decide(a, prior), s) for a, s in zip(analyses, seconds)], prior


MIN_IMAGES_PER_WORKER = 8
"""A first-pass worker process is started for at least this many images (its start-up is ~1 s)."""

# The labeler and prepared dataset of a first-pass worker process (set by _start_first_pass_worker).
_WORKER_STATE: dict[str, Any] = {}


def _start_first_pass_worker(make_labeler: Callable[[], PseudoLabeler], prepared: PreparedDataset) -> None:
    """Pool initialiser: one labeler per process, OpenCV on one thread (the processes share the cores)."""
    import cv2

    cv2.setNumThreads(1)
    _WORKER_STATE.update(labeler=make_labeler(), prepared=prepared)


def _first_pass_in_worker(image_id: str) -> tuple[Any, float]:
    return _analyse_timed(_WORKER_STATE["labeler"], _WORKER_STATE["prepared"], image_id)


def _analyse_timed(labeler: Any, prepared: PreparedDataset, image_id: str) -> tuple[Any, float]:
    """One image's first pass and its wall seconds."""
    image = prepared.image(image_id)
    start = time.perf_counter()
    analysis = labeler.analyse(image)
    return analysis, time.perf_counter() - start


def _first_passes(
    labeler: Any,
    make_labeler: Callable[[], PseudoLabeler],
    prepared: PreparedDataset,
    records: list[Any],
    workers: int,
    progress: bool,
) -> Iterator[tuple[Any, float]]:
    """(analysis, seconds) of each record, in order; ``workers`` > 1 processes share the images.

    A first pass depends on its image only, so the processes give the same analyses as one
    (they cross the process boundary pickled, exactly). The workers are spawned, not forked
    (a fork of a process with threads, tqdm's monitor for one, can deadlock), so
    ``make_labeler`` must pickle: a class or a ``functools.partial``, not a lambda. Each
    worker costs a fresh interpreter (about a second), so a handful of images stays in-process.
    """
    bar = tqdm(total=len(records), desc="pseudo labels", disable=not progress)
    ids = [record.id for record in records]
    if workers > 1 and len(ids) >= MIN_IMAGES_PER_WORKER * 2:
        workers = min(workers, len(ids) // MIN_IMAGES_PER_WORKER)
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, _start_first_pass_worker, (make_labeler, prepared)) as pool:
            for result in pool.imap(_first_pass_in_worker, ids, chunksize=4):
                bar.update()
                yield result
    else:
        for image_id in ids:
            bar.update()
            yield _analyse_timed(labeler, prepared, image_id)
    bar.close()


def centroid_hit(pseudo: np.ndarray, truth: np.ndarray) -> bool:
    """Whether the centroid of ``pseudo`` lies inside ``truth`` (False when either is empty)."""
    if not (pseudo.any() and truth.any()):
        return False
    ys, xs = np.nonzero(pseudo)
    return bool(truth[int(round(ys.mean())), int(round(xs.mean()))])


def score_against_truth(prepared_dir: str | Path, index: pd.DataFrame, out_dir: str | Path) -> pd.DataFrame:
    """Per-image Dice, IoU and hit (pseudo centroid inside the lesion) against ground truth,
    for the images of ``index`` that have a mask (an unlabeled scan has nothing to score)."""
    prepared, labels = PreparedDataset(prepared_dir), PseudoLabels(out_dir)
    table = pd.read_csv(labels.table_path, keep_default_na=False)
    table["valid"] = table["valid"].astype(str) == "True"
    records = []
    for record in index[has_mask(index)].itertuples(index=False):
        truth = prepared.mask(record.id)
        pseudo = labels.mask(record.id)
        hit = centroid_hit(pseudo, truth)
        records.append({"id": record.id, "dice": dice(pseudo, truth), "iou": iou(pseudo, truth), "hit": hit, "has_lesion": bool(truth.any())})
    scored = pd.DataFrame(records, columns=["id", "dice", "iou", "hit", "has_lesion"])
    return table.merge(scored, on="id")


def quality_summary(scored: pd.DataFrame) -> dict[str, float]:
    """Pseudo-label quality over masked images with a lesion (invalid labels count 0);
    ``n_images`` counts the masked images scored (``scored`` holds only those)."""
    lesion = scored[scored["has_lesion"]]
    valid = lesion[lesion["valid"]]
    all_dice = np.where(lesion["valid"], lesion["dice"], 0.0)
    all_iou = np.where(lesion["valid"], lesion["iou"], 0.0)
    return {
        "n_images": int(len(scored)),
        "n_lesion_images": int(len(lesion)),
        "coverage": float(np.round(scored["valid"].mean(), 6)) if len(scored) else 0.0,
        "dice": float(np.round(all_dice.mean(), 6)) if len(lesion) else float("nan"),
        "iou": float(np.round(all_iou.mean(), 6)) if len(lesion) else float("nan"),
        "dice_valid": float(np.round(valid["dice"].mean(), 6)) if len(valid) else 0.0,
        "iou_valid": float(np.round(valid["iou"].mean(), 6)) if len(valid) else 0.0,
        "hit_rate": float(np.round((lesion["valid"] & lesion["hit"]).mean(), 6)) if len(lesion) else float("nan"),
    }


def dice_vs_coverage(scored: pd.DataFrame, points: int = 20) -> pd.DataFrame:
    """Mean Dice of the labels kept by ``min_score`` thresholds, against the kept fraction.

    Thresholds are score quantiles of the valid labels of lesion images, so the curve
    shows how much better confident labels are than the average one.
    """
    lesion = scored[scored["has_lesion"] & scored["valid"]].sort_values("score", ascending=False)
    rows = []
    n_all = int(scored["has_lesion"].sum())
    for k in np.unique(np.linspace(1, len(lesion), num=min(points, max(len(lesion), 1))).round().astype(int)):
        if k < 1:
            continue
        kept = lesion.iloc[:k]
        rows.append({"min_score": float(kept["score"].iloc[-1]), "coverage": k / max(n_all, 1), "dice": float(kept["dice"].mean())})
    return pd.DataFrame(rows, columns=["min_score", "coverage", "dice"])


def render_pseudo_overlays(prepared_dir: str | Path, index: pd.DataFrame, out_dir: str | Path, overlay_dir: str | Path, n: int) -> None:
    """Overlays (truth green, pseudo label red) of the first ``n`` masked images of ``index``."""
    prepared, labels, overlay_dir = PreparedDataset(prepared_dir), PseudoLabels(out_dir), Path(overlay_dir)
    overlay_dir.mkdir(parents=True, exist_ok=True)
    for record in index[has_mask(index)].head(n).itertuples(index=False):
        image = prepared.image(record.id)
        truth = prepared.mask(record.id)
        pseudo = labels.mask(record.id)
        Image.fromarray(render_overlay(image, truth, pseudo)).save(overlay_dir / f"{record.id}.png")
