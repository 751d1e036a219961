"""Evaluating a trained student on a split: per-image metrics, their means, overlays.

Besides the overlays of the first test images (by id), :func:`evaluate_split` can draw the
split's best, median and worst cases by Dice among its images with a lesion
(:func:`busseg.cases.select_cases`), which the HTML report (:mod:`busseg.report_html`) shows
with their ids and Dice read back from the per-image CSV.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from busseg.atomic import atomic_path, write_json
from busseg.cases import select_cases
from busseg.data.prepared import PreparedDataset
from busseg.inference import predict_probability_maps
from busseg.metrics import METRIC_NAMES, segmentation_metrics
from busseg.models import SegmentationNet
from busseg.visualize import render_overlay


def evaluate_split(
    model: SegmentationNet,
    prepared_dir: str | Path,
    ids: list[str],
    device: torch.device,
    *,
    threshold: float = 0.5,
    overlay_dir: str | Path | None = None,
    n_overlays: int = 0,
    case_dir: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Per-image Dice, IoU, accuracy and HD95 of ``model`` on ``ids`` at full resolution.

    Overlays of the first ``n_overlays`` ids (sorted) go to ``overlay_dir``. With ``case_dir``,
    the best, median and worst cases by Dice among the images with a lesion
    (:func:`busseg.cases.select_cases`) go there as
    ``best.png``, ``median.png`` and ``worst.png``, drawn from the very masks that were measured
    (kept bit-packed meanwhile, not predicted again), with ``cases.json`` naming each one's id
    and Dice for the HTML report.
    """
    prepared = PreparedDataset(prepared_dir)
    images = (prepared.image(i) for i in ids)
    rows = []
    packed: dict[str, tuple[np.ndarray, tuple[int, int]]] = {}
    lesion_ids: set[str] = set()
    probs = predict_probability_maps(model, images, device)
    for n, (image_id, prob) in enumerate(tqdm(zip(ids, probs), total=len(ids), desc="evaluate", disable=not progress)):
        truth = prepared.mask(image_id)
        pred = prob > threshold
        rows.append({"id": image_id, **segmentation_metrics(pred, truth)})
        if case_dir is not None:
            packed[image_id] = (np.packbits(pred), pred.shape)
            if truth.any():
                lesion_ids.add(str(image_id))
        if overlay_dir is not None and n < n_overlays:
            _save_overlay(prepared, image_id, pred, Path(overlay_dir) / f"{image_id}.png")
    per_image = pd.DataFrame(rows, columns=["id", *METRIC_NAMES])
    if case_dir is not None:
        _save_cases(prepared, per_image, packed, lesion_ids, Path(case_dir))
    return per_image


def _save_cases(
    prepared: PreparedDataset,
    per_image: pd.DataFrame,
    packed: dict[str, tuple[np.ndarray, tuple[int, int]]],
    lesion_ids: set[str],
    case_dir: Path,
) -> None:
    """``<case>.png`` overlays and ``cases.json`` (case -> id, dice) of the best, median, worst.

    Ranked among ``lesion_ids`` (the images with a lesion) when there are any, see
    :func:`busseg.cases.select_cases`.
    """
    dice = {str(i): round(float(d), 6) for i, d in zip(per_image["id"], per_image["dice"])}
    cases = select_cases(dice, lesion_ids)
    for case, image_id in cases.items():
        bits, shape = packed[image_id]
        pred = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        _save_overlay(prepared, image_id, pred, case_dir / f"{case}.png")
    listing = {case: {"id": image_id, "dice": dice[image_id]} for case, image_id in cases.items()}
    write_json(case_dir / "cases.json", listing)


def _save_overlay(prepared: PreparedDataset, image_id: str, pred: np.ndarray, path: Path) -> None:
    """The overlay of ``image_id`` (ground truth green, ``pred`` red) as a PNG at ``path``.

    Written atomically: a full disk raises :class:`~busseg.errors.DataError` naming ``path``
    (Pillow's own error would be three chained tracebacks) and leaves no partial PNG.
    """
    overlay = Image.fromarray(render_overlay(prepared.image(image_id), prepared.mask(image_id), pred))
    with atomic_path(path) as tmp:
        overlay.save(tmp, format="PNG")


def summarize(per_image: pd.DataFrame) -> dict[str, float]:
    """Means over images of every metric, plus the image count."""
    summary = {name: float(np.round(per_image[name].mean(), 6)) for name in METRIC_NAMES}
    summary["n_images"] = int(len(per_image))
    return summary
