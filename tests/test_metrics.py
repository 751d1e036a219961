from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from busseg.metrics import (
    METRIC_NAMES,
    dice,
    hd95,
    iou,
    pixel_accuracy,
    segmentation_metrics,
)


def square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def empty(shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


# Two 2x2 squares in a 4x4 image, the second one pixel to the right:
# |A| = |B| = 4, |A & B| = 2, |A | B| = 6, 4 of 16 pixels disagree.
A = square((4, 4), 0, 0, 2)
B = square((4, 4), 0, 1, 2)


@pytest.mark.parametrize(
    ("metric", "expected"),
    [(dice, 0.5), (iou, 2 / 6), (pixel_accuracy, 12 / 16), (hd95, 1.0)],
)
def test_offset_squares_hand_computed(metric, expected):
    assert metric(A, B) == pytest.approx(expected)
    assert metric(B, A) == pytest.approx(expected)


@pytest.mark.parametrize(("metric", "expected"), [(dice, 1.0), (iou, 1.0), (pixel_accuracy, 1.0), (hd95, 0.0)])
def test_mask_against_itself_is_perfect(metric, expected):
    mask = square((9, 7), 2, 1, 4)
    assert metric(mask, mask) == expected


def test_disjoint_single_pixels():
    pred, target = empty((8, 8)), empty((8, 8))
    pred[1, 1] = True
    target[4, 5] = True  # 3 rows and 4 columns away: distance 5
    assert dice(pred, target) == 0.0
    assert iou(pred, target) == 0.0
    assert pixel_accuracy(pred, target) == pytest.approx(62 / 64)
    assert hd95(pred, target) == pytest.approx(5.0)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("axis", [0, 1])
def test_hd95_of_squares_offset_by_k_is_k(k, axis):
    top, left = (4 + k, 4) if axis == 0 else (4, 4 + k)
    assert hd95(square((20, 20), 4, 4, 6), square((20, 20), top, left, 6)) == pytest.approx(k)


def test_hd95_counts_image_border_pixels_as_surface():
    # A mask filling the whole image has every border pixel on its surface.
    full = np.ones((5, 5), dtype=bool)
    inner = square((5, 5), 1, 1, 3)
    # full's surface is the outer ring; inner's surface is its own 3x3 ring (all but the centre).
    # Ring pixels of full: distance 1 (edge midpoints) or sqrt(2) (corners) from inner's ring.
    distances = [1.0] * 12 + [math.sqrt(2)] * 4 + [1.0] * 8
    assert hd95(full, inner) == pytest.approx(np.percentile(distances, 95))


def _brute_force_hd95(pred: np.ndarray, target: np.ndarray) -> float:
    """Pairwise distances between surface pixels, without distance transforms."""
    from scipy import ndimage

    def surface(mask):
        return np.argwhere(mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(2, 1)))

    d = cdist(surface(pred), surface(target))
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_brute_force_and_is_symmetric(seed):
    rng = np.random.default_rng(seed)
    pred = rng.random((16, 12)) > 0.6
    target = rng.random((16, 12)) > 0.7
    assert hd95(pred, target) == pytest.approx(_brute_force_hd95(pred, target))
    for metric in (dice, iou, pixel_accuracy, hd95):
        assert metric(pred, target) == pytest.approx(metric(target, pred))


# --- empty-mask policy (docs/method.md) ---------------------------------------------------------

DIAGONAL_4x6 = math.sqrt(4**2 + 6**2)
ONE = square((4, 6), 1, 1, 2)


@pytest.mark.parametrize(
    ("metric", "both_empty", "one_empty"),
    [(dice, 1.0, 0.0), (iou, 1.0, 0.0), (hd95, 0.0, DIAGONAL_4x6)],
)
def test_empty_mask_policy(metric, both_empty, one_empty):
    assert metric(empty((4, 6)), empty((4, 6))) == both_empty
    assert metric(empty((4, 6)), ONE) == pytest.approx(one_empty)
    assert metric(ONE, empty((4, 6))) == pytest.approx(one_empty)


def test_pixel_accuracy_with_empty_masks():
    assert pixel_accuracy(empty((4, 6)), empty((4, 6))) == 1.0
    assert pixel_accuracy(empty((4, 6)), ONE) == pytest.approx(20 / 24)


# --- input checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [dice, iou, pixel_accuracy, hd95, segmentation_metrics])
def test_shape_mismatch_names_both_shapes(metric):
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        metric(empty((4, 4)), empty((4, 5)))


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 3), dtype=bool), np.zeros((0, 3), dtype=bool)])
def test_non_2d_or_empty_arrays_are_rejected(bad):
    with pytest.raises(ValueError, match="2-D"):
        dice(bad, bad)


def test_probabilities_are_rejected_but_zero_one_integers_accepted():
    probs = np.full((3, 3), 0.7)
    with pytest.raises(ValueError, match="binary"):
        dice(probs, probs > 0.5)
    assert dice(A.astype(np.uint8), B.astype(np.int64)) == pytest.approx(0.5)
    assert dice(probs > 0.5, np.ones((3, 3), dtype=bool)) == 1.0


# --- aggregate helpers -----------------------------------------------------------------------


def test_segmentation_metrics_returns_all_metrics_as_floats():
    result = segmentation_metrics(A, B)
    assert tuple(result) == METRIC_NAMES
    assert all(isinstance(value, float) for value in result.values())
    assert result == pytest.approx({"dice": 0.5, "iou": 1 / 3, "accuracy": 0.75, "hd95": 1.0})
