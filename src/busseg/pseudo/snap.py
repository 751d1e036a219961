"""Label snapping: the network says where the lesion is, the image says where its boundary runs.

A teacher (or student) trained on noisy labels finds lesions well but draws soft, blobby
boundaries at the network's resolution. The ``appearance`` labeler's candidates are regions
whose boundary follows the image's grey levels (dark connected components over thresholds
and opening radii), but it often picks the wrong one. Snapping combines the two: among an
image's candidates, take the one that agrees best with the network's label, if it agrees
well enough (``pseudo.refine_snap``); otherwise keep the network's label.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from busseg.pseudo.appearance import AppearanceLabeler


@dataclass(frozen=True)
class Snapped:
    """The candidate mask at the image's size and its Dice agreement with the network's label."""

    mask: np.ndarray
    agreement: float


def snap_to_candidate(labeler: AppearanceLabeler, image: np.ndarray, mask: np.ndarray, min_agreement: float) -> Snapped | None:
    """The ``labeler``'s candidate region of ``image`` that agrees best with ``mask``, or ``None``.

    Agreement is the Dice overlap of a candidate with ``mask``, both at the labeler's working
    resolution (where the candidates are made; the mask is resized with area averaging and
    thresholded at 0.5). The best candidate is returned, smoothed and resized to the image
    as the labeler's own label would be, when its agreement is at least ``min_agreement``;
    ``None`` when it is lower, when ``mask`` is empty, or when the image has no candidate.
    """
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    if not mask.any():
        return None
    work, tissue = labeler.preprocess(image)
    target = cv2.resize(mask.astype(np.float32), (work.shape[1], work.shape[0]), interpolation=cv2.INTER_AREA) >= 0.5
    target_area = int(target.sum())
    best, best_dice = None, -1.0
    for candidate in labeler.candidates(work, tissue):
        y, x = candidate.offset
        h, w = candidate.region.shape
        overlap = int(np.count_nonzero(candidate.region & target[y : y + h, x : x + w]))
        dice = 2.0 * overlap / (int(np.count_nonzero(candidate.region)) + target_area)
        if dice > best_dice:  # first of equal agreements: deterministic
            best, best_dice = candidate, dice
    if best is None or best_dice < min_agreement:
        return None
    snapped = labeler.refine(best, (int(work.shape[0]), int(work.shape[1])), (int(image.shape[0]), int(image.shape[1])))
    return Snapped(snapped, round(best_dice, 6)) if snapped.any() else None
