"""Per-image segmentation metrics on binary masks (numpy).

Every function takes one predicted and one reference mask of the same 2-D shape
(boolean, or integer/float arrays holding only 0 and 1) and returns a Python float.
Metrics are computed per image; a data set's score is the mean over its images
(:func:`busseg.evaluation.summarize`).

Empty-mask policy (docs/method.md, DECISION), so that no metric is ever NaN:

========  ===================  =====================================
metric    both masks empty     exactly one mask empty
========  ===================  =====================================
dice      1.0                  0.0
iou       1.0                  0.0
hd95      0.0                  image diagonal ``sqrt(H**2 + W**2)``
========  ===================  =====================================

Pixel accuracy needs no special case.

HD95 follows ``medpy.metric.binary.hd95`` (the definition used by most
semi-supervised medical-segmentation papers): the surface of a mask is its pixels
removed by one binary erosion with the 4-connected structuring element (pixels on
the image border count as surface); the distances from each surface pixel of one
mask to the nearest surface pixel of the other are taken in both directions,
pooled, and their 95th percentile (linear interpolation) is the HD95, in pixels at
the image's own resolution. MONAI instead takes the maximum of the two directed
95th percentiles; the two agree on symmetric cases and differ little otherwise.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "accuracy", "hd95")


def _as_mask_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check that both masks are binary, 2-D and of one shape; return them as bool arrays."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got pred {pred.shape} and target {target.shape}"
        )
    if pred.ndim != 2 or pred.size == 0:
        raise ValueError(f"masks must be non-empty 2-D arrays (H, W), got shape {pred.shape}")
    return _as_bool(pred, "pred"), _as_bool(target, "target")


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    """``mask`` as bool; non-binary values are an error rather than silently thresholded."""
    if mask.dtype == bool:
        return mask
    if not np.isin(mask, (0, 1)).all():
        raise ValueError(
            f"{name} must be a binary mask (bool or 0/1 values); threshold probabilities first "
            f"(probs > 0.5)"
        )
    return mask.astype(bool)


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient ``2|P & T| / (|P| + |T|)``; 1 if both masks are empty."""
    pred, target = _as_mask_pair(pred, target)
    total = int(pred.sum()) + int(target.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, target).sum()) / total


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union ``|P & T| / |P | T|`` (Jaccard); 1 if both masks are empty."""
    pred, target = _as_mask_pair(pred, target)
    union = int(np.logical_or(pred, target).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, target).sum()) / union


def pixel_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of pixels whose predicted label equals the reference label."""
    pred, target = _as_mask_pair(pred, target)
    return float(np.mean(pred == target))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that one 4-connected erosion removes (its inner boundary)."""
    structure = ndimage.generate_binary_structure(2, 1)
    # border_value=0: a lesion touching the image edge has its edge pixels on the surface.
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def _surface_distances(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance from every surface pixel of ``source`` to the surface of ``reference``."""
    # distance_transform_edt measures distance to the nearest zero, so zero the reference surface.
    to_reference = ndimage.distance_transform_edt(~_surface(reference))
    return to_reference[_surface(source)]


def hd95(pred: np.ndarray, target: np.ndarray) -> float:
    """95th percentile of the symmetric surface distances, in pixels (medpy's definition).

    0 if both masks are empty; the image diagonal if exactly one is (see module docstring).
    """
    pred, target = _as_mask_pair(pred, target)
    pred_empty, target_empty = not pred.any(), not target.any()
    if pred_empty and target_empty:
        return 0.0
    if pred_empty or target_empty:
        height, width = pred.shape
        return float(np.hypot(height, width))
    distances = np.concatenate([_surface_distances(pred, target), _surface_distances(target, pred)])
    return float(np.percentile(distances, 95))


def segmentation_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """All per-image metrics: ``{"dice", "iou", "accuracy", "hd95"}``."""
    pred, target = _as_mask_pair(pred, target)
    return {
        "dice": dice(pred, target),
        "iou": iou(pred, target),
        "accuracy": pixel_accuracy(pred, target),
        "hd95": hd95(pred, target),
    }
