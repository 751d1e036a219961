"""Overlay pictures for people: image, ground truth (green) and prediction (red)."""
from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

GREEN = np.array([0, 220, 0], dtype=np.uint8)
RED = np.array([255, 40, 40], dtype=np.uint8)


def _outline(rgb: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    if mask.any():
        edge = find_boundaries(mask, mode="inner")
        rgb[edge] = colour


def render_overlay(image: np.ndarray, truth: np.ndarray | None, prediction: np.ndarray | None) -> np.ndarray:
    """Two panels side by side: the plain image, and the image with outlines.

    ``truth`` is drawn in green and ``prediction`` in red; either may be None.
    Returns a uint8 RGB array of shape (H, 2W + 4, 3).
    """
    grey = np.repeat(image[..., None], 3, axis=2)
    outlined = grey.copy()
    if truth is not None:
        _outline(outlined, truth.astype(bool), GREEN)
    if prediction is not None:
        _outline(outlined, prediction.astype(bool), RED)
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([grey, gap, outlined], axis=1)
