"""Evaluating a trained student on a split: per-image metrics, their means, overlays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

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
    progress: bool = True,
) -> pd.DataFrame:
    """Per-image Dice, IoU, accuracy and HD95 of ``model`` on ``ids`` at full resolution.

    Overlays of the first ``n_overlays`` ids (sorted) go to ``overlay_dir``.
    """
    prepared = PreparedDataset(prepared_dir)
    images = (prepared.image(i) for i in ids)
    rows = []
    probs = predict_probability_maps(model, images, device)
    for n, (image_id, prob) in enumerate(tqdm(zip(ids, probs), total=len(ids), desc="evaluate", disable=not progress)):
        truth = prepared.mask(image_id)
        pred = prob > threshold
        rows.append({"id": image_id, **segmentation_metrics(pred, truth)})
        if overlay_dir is not None and n < n_overlays:
            image = prepared.image(image_id)
            Path(overlay_dir).mkdir(parents=True, exist_ok=True)
            Image.fromarray(render_overlay(image, truth, pred)).save(Path(overlay_dir) / f"{image_id}.png")
    return pd.DataFrame(rows, columns=["id", *METRIC_NAMES])


def summarize(per_image: pd.DataFrame) -> dict[str, float]:
    """Means over images of every metric, plus the image count."""
    summary = {name: float(np.round(per_image[name].mean(), 6)) for name in METRIC_NAMES}
    summary["n_images"] = int(len(per_image))
    return summary
