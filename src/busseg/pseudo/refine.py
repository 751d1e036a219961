"""Label refinement: a warmed-up teacher re-labels the images its pseudo labels came from.

The paper's title promises "label refinement". A network trained on many noisy labels
averages their noise out, so its prediction is often a better label than the one it was
trained on; re-training on those predictions is one round of self-training. The rules a
refined label obeys are the first round's (:func:`busseg.pseudo.base.apply_area_filter`),
and its confidence says how sure the teacher was about the lesion and its boundary.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from busseg.atomic import atomic_dir
from busseg.data.prepared import PreparedDataset, PseudoLabels
from busseg.pseudo.base import PseudoLabel, apply_area_filter, invalid_label
from busseg.pseudo.run import centroid_hit, label_table

if TYPE_CHECKING:  # only refine_labels runs a network; the label I/O and quality need no torch
    import torch

    from busseg.models import SegmentationNet

#: (image, the network's label mask) -> the region that replaces the label, or None to keep it
Snapper = Callable[[np.ndarray, np.ndarray], "np.ndarray | None"]

# The lesion's box is widened by this fraction of its size on every side when measuring
# how certain the teacher is: the uncertain band sits at the boundary, just outside it too.
_BOX_MARGIN = 0.25

#: Where :func:`write_labels` puts the per-pixel certainty maps of refined labels.
CERTAINTY_DIR = "certainty"


def label_from_probabilities(
    prob: np.ndarray, min_area_fraction: float, threshold: float = 0.5, pixel_certainty: bool = False
) -> PseudoLabel:
    """A pseudo label from a teacher's probability map ``prob`` (H, W) in [0, 1].

    The lesion is the largest connected component at ``threshold`` with its holes filled
    (a BUS image shows one lesion; docs/method.md's labels are single regions too). The
    confidence is the mean certainty ``|2p - 1|`` over the lesion's widened box, low when
    the teacher hesitates about the boundary or about the lesion itself. Labels whose
    area is <= ``min_area_fraction`` of the image are invalid (``area_below_min``); an
    empty prediction is invalid (``teacher_empty``). With ``pixel_certainty`` the label
    carries :func:`pixel_certainty_map` (which pixels the next warm-up may trust).
    """
    foreground = (prob >= threshold).astype(np.uint8)
    count, components, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    if count <= 1:
        return invalid_label(prob.shape, "teacher_empty")
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (components == largest).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(region)
    cv2.drawContours(filled, contours, -1, 1, -1)  # fills holes as well
    mask = filled.astype(bool)
    x, y, w, h = (int(v) for v in stats[largest, :4])
    dx, dy = int(np.ceil(_BOX_MARGIN * w)), int(np.ceil(_BOX_MARGIN * h))
    box_prob = prob[max(0, y - dy) : y + h + dy, max(0, x - dx) : x + w + dx]
    confidence = float(np.abs(2.0 * box_prob.astype(np.float64) - 1.0).mean())
    certainty = pixel_certainty_map(prob, mask) if pixel_certainty else None
    label = PseudoLabel(mask=mask, score=round(confidence, 6), valid=True, box=(x, y, x + w, y + h), certainty=certainty)
    return apply_area_filter(label, min_area_fraction)


def pixel_certainty_map(prob: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """How sure the network is of each pixel's label, ``uint8`` (H, W): ``255 * max(0, 2p - 1)``
    inside ``mask``, ``255 * max(0, 1 - 2p)`` outside.

    Near 255 where the probability is near the label's side (0 or 1), near 0 in the band
    where it hesitates, at the boundary. A pixel whose label contradicts the probability
    (a second blob dropped by the largest-component rule, a hole filled) gets 0, so a
    certainty threshold leaves it out instead of training it as a sure label.
    """
    p = prob.astype(np.float64)
    agreement = np.where(mask, 2.0 * p - 1.0, 1.0 - 2.0 * p)
    return np.round(255.0 * np.clip(agreement, 0.0, 1.0)).astype(np.uint8)


def certain_pixels(certainty: np.ndarray | None, min_certainty: float) -> np.ndarray | None:
    """The pixels a warm-up trains on (``bool`` (H, W)): certainty >= ``min_certainty`` (in [0, 1]).

    ``None`` (every pixel) when the label has no certainty map (ground truth, first-round
    labels) or ``min_certainty`` is 0.
    """
    if certainty is None or min_certainty <= 0.0:
        return None
    return certainty >= round(255.0 * min_certainty)


def refine_labels(
    teacher: SegmentationNet,
    prepared: PreparedDataset,
    ids: Sequence[str],
    device: torch.device,
    min_area_fraction: float,
    batch_size: int = 16,
    previous: Mapping[str, PseudoLabel] | None = None,
    pixel_certainty: bool = False,
    snap: Snapper | None = None,
) -> dict[str, PseudoLabel]:
    """The teacher's label for each image of ``ids``, at the image's own size.

    The probability map is the mean of the teacher's maps of the image and of its mirror
    image (left-right flip: a breast lesion has no handedness), which costs one more forward
    pass and smooths the teacher's own noise. Where the teacher finds nothing usable
    (``teacher_empty``, ``area_below_min``) but ``previous`` holds a valid label, that label
    is kept (see :func:`keep_previous_where_invalid`). ``pixel_certainty``: each new label
    carries its per-pixel certainty (:func:`pixel_certainty_map`). ``snap`` (image, label
    mask) -> a region of the image that replaces a valid label (``reason: snapped``; see
    :mod:`busseg.pseudo.snap`), or ``None`` to keep it.
    """
    from busseg.inference import predict_keyed  # torch: here, not at the module's top

    def both_views() -> Iterator[tuple[tuple[str, bool], np.ndarray]]:
        for sample_id in ids:  # each image read once; the mirror follows it in the same stream
            image = prepared.image(sample_id)
            yield (sample_id, False), image
            yield (sample_id, True), np.ascontiguousarray(image[:, ::-1])

    out: dict[str, PseudoLabel] = {}
    pending: tuple[np.ndarray, np.ndarray] | None = None
    for (sample_id, mirrored), image, prob in predict_keyed(teacher, both_views(), device, 2 * batch_size):
        if not mirrored:
            pending = image, prob
            continue
        assert pending is not None  # the mirror view always follows its image
        image, mean_prob = pending[0], 0.5 * (pending[1] + prob[:, ::-1])
        label = label_from_probabilities(mean_prob, min_area_fraction, pixel_certainty=pixel_certainty)
        if snap is not None and label.valid and (snapped := snap(image, label.mask)) is not None:
            label = snapped_label(snapped, label.score, mean_prob if pixel_certainty else None, min_area_fraction)
        out[sample_id] = label
    return keep_previous_where_invalid(out, previous) if previous is not None else out


def snapped_label(mask: np.ndarray, score: float, prob: np.ndarray | None, min_area_fraction: float) -> PseudoLabel:
    """The label of a snapped region ``mask`` (reason ``snapped``), with the network's ``score``
    and, given its probabilities ``prob``, the per-pixel certainty of the new mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    certainty = pixel_certainty_map(prob, mask) if prob is not None else None
    return apply_area_filter(PseudoLabel(mask, score, True, "snapped", box, certainty), min_area_fraction)


def keep_previous_where_invalid(new: Mapping[str, PseudoLabel], previous: Mapping[str, PseudoLabel]) -> dict[str, PseudoLabel]:
    """``new`` with each invalid label replaced by the valid ``previous`` one, if there is one.

    A teacher that predicts nothing on an image says nothing about its lesion; dropping the
    image's label would shrink the next warm-up's training set for no reason. The kept label
    records why in ``reason`` (``kept_previous:<why the new one was invalid>``), so the
    label table shows which images the teacher did not re-label.
    """
    out = dict(new)
    for sample_id, label in new.items():
        before = previous.get(sample_id)
        if not label.valid and before is not None and before.valid:
            out[sample_id] = PseudoLabel(before.mask, before.score, True, f"kept_previous:{label.reason}", before.box, before.certainty)
    return out


def ground_truth_labels(prepared: PreparedDataset, ids: Sequence[str]) -> dict[str, PseudoLabel]:
    """The ground truth of ``ids`` (the labeled split) as labels: valid, score 1, reason ``ground_truth``.

    An image without a lesion keeps its empty mask as a valid label: it is a true negative,
    unlike an empty pseudo label, which only says the labeler found nothing.
    """
    out: dict[str, PseudoLabel] = {}
    for sample_id in ids:
        mask = prepared.mask(sample_id).astype(bool)
        box = None
        if mask.any():
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        out[sample_id] = PseudoLabel(mask, 1.0, True, "ground_truth", box)
    return out


def certain_fraction(labels: Sequence[PseudoLabel], min_certainty: float) -> float:
    """The share of the valid labels' pixels that train at ``min_certainty`` (1.0 without labels)."""
    kept = total = 0
    for label in labels:
        if not label.valid:
            continue
        keep = certain_pixels(label.certainty, min_certainty)
        kept += int(keep.sum()) if keep is not None else label.mask.size
        total += label.mask.size
    return round(kept / total, 6) if total else 1.0


class InMemoryLabels:
    """Refined labels as a mask source for :class:`busseg.data.dataset.SegmentationDataset`.

    With ``min_certainty`` > 0 it is a weight source too: :meth:`weight` keeps the pixels
    whose certainty reaches it (``pseudo.refine_pixel_certainty``).
    """

    def __init__(self, labels: Mapping[str, PseudoLabel], min_certainty: float = 0.0) -> None:
        self.labels = dict(labels)
        self.min_certainty = min_certainty

    def mask(self, sample_id: str) -> np.ndarray:
        return self.labels[sample_id].mask

    def weight(self, sample_id: str) -> np.ndarray | None:
        """The pixels of ``sample_id``'s label that train (``bool`` (H, W)), ``None`` for all of them."""
        return certain_pixels(self.labels[sample_id].certainty, self.min_certainty)

    def trainable(self, min_score: float) -> list[str]:
        """Ids of valid labels scoring at least ``min_score`` (sorted, as for the first round).

        Ground-truth labels (score 1) always pass."""
        return sorted(i for i, label in self.labels.items() if label.valid and label.score >= min_score)


def write_labels(out_dir: str | Path, labels: Mapping[str, PseudoLabel]) -> None:
    """Write labels in the first round's layout (``masks/<id>.png`` and ``labels.csv``), atomically.

    Labels with a per-pixel certainty also get ``certainty/<id>.png`` (0-255), to look at.
    """
    with atomic_dir(out_dir) as tmp:
        folder = PseudoLabels(tmp)
        folder.masks_dir.mkdir()
        for sample_id, label in labels.items():
            Image.fromarray(label.mask.astype(np.uint8) * 255).save(folder.mask_path(sample_id))
            if label.certainty is not None:
                (tmp / CERTAINTY_DIR).mkdir(exist_ok=True)
                Image.fromarray(label.certainty).save(tmp / CERTAINTY_DIR / f"{sample_id}.png")
        label_table(labels.items()).to_csv(folder.table_path, index=False)


def read_labels(folder: PseudoLabels, ids: Sequence[str]) -> dict[str, PseudoLabel]:
    """Stored labels of ``ids`` (the first round's, for instance) as :class:`PseudoLabel` objects."""
    table = pd.read_csv(folder.table_path, keep_default_na=False, dtype={"id": str}).set_index("id")
    out = {}
    for sample_id in ids:
        row = table.loc[sample_id]
        box = tuple(int(v) for v in str(row["box"]).split()) if str(row["box"]) else None
        out[sample_id] = PseudoLabel(folder.mask(sample_id), float(row["score"]), str(row["valid"]) == "True", str(row["reason"]), box)  # type: ignore[arg-type]
    return out


def label_quality(labels: Mapping[str, PseudoLabel], truth: PreparedDataset) -> dict[str, float]:
    """Dice (invalid = 0), Dice of the most confident half, coverage and hit rate of ``labels``
    against the ground truth, over masked images with a lesion. Used for metrics only.

    Images without a ground-truth mask (unlabeled scans) cannot be scored: they are left
    out and counted as ``n_unmasked`` (present only when there are any)."""
    from busseg.metrics import dice

    masked = set(truth.masked_ids)
    unmasked = [sample_id for sample_id in labels if sample_id not in masked]
    rows = []
    for sample_id, label in labels.items():
        if sample_id not in masked:
            continue
        gt = truth.mask(sample_id)
        if not gt.any():
            continue
        hit = label.valid and centroid_hit(label.mask, gt)
        rows.append((dice(label.mask, gt) if label.valid else 0.0, label.score if label.valid else -1.0, label.valid, hit))
    counted = {"n_unmasked": len(unmasked)} if unmasked else {}
    if not rows:
        return {"n_lesion_images": 0, **counted}
    d, score, valid, hit = (np.asarray(v) for v in zip(*rows))
    top = np.argsort(-score, kind="stable")[: max(1, len(d) // 2)]
    return {
        "n_lesion_images": int(len(d)),
        "dice": round(float(d.mean()), 6),
        "dice_top50": round(float(d[top].mean()), 6),
        "coverage": round(float(valid.mean()), 6),
        "hit_rate": round(float(hit.mean()), 6),
        **counted,
    }
