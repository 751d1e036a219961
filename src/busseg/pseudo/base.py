"""What every pseudo-label backend returns, and the rules shared by all of them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class PseudoLabel:
    """One image's training-free pseudo label.

    ``mask`` is a boolean array of the input image's shape (all False when invalid).
    ``score`` is the backend's confidence in [0, 1]; ``reason`` says why a label is
    invalid (empty string when valid), e.g. ``"no_candidate"`` or ``"area_below_min"``.
    ``box`` is the chosen box ``(x0, y0, x1, y1)`` in pixels, when the backend has one.
    ``certainty`` is a per-pixel certainty map, ``uint8`` (H, W) with 255 = sure, when the
    label comes from a network's probabilities (refinement); ``None`` trusts every pixel.
    """

    mask: np.ndarray
    score: float
    valid: bool
    reason: str = ""
    box: tuple[int, int, int, int] | None = None
    certainty: np.ndarray | None = None


class PseudoLabeler(Protocol):
    """A training-free labeler: a greyscale uint8 image (H, W) in, a :class:`PseudoLabel` out."""

    def label(self, image: np.ndarray) -> PseudoLabel: ...


@runtime_checkable
class BatchLabeler(Protocol):
    """A labeler that labels several images in one model batch (e.g. Grounding DINO + SAM on
    a GPU): :func:`busseg.pseudo.run.label_dataset` gives ``label_batch`` ``batch_size``
    images at a time instead of calling ``label`` per image."""

    batch_size: int

    def label(self, image: np.ndarray) -> PseudoLabel: ...

    def label_batch(self, images: list[np.ndarray]) -> list[PseudoLabel]: ...


@runtime_checkable
class TwoPassLabeler(Protocol):
    """A labeler that adapts to the dataset it labels (see :func:`busseg.pseudo.run.label_dataset`).

    ``analyse`` is the costly per-image first pass (its result has ``to_arrays()`` and is
    rebuilt by ``load_analysis``, for the per-image cache); ``fit_prior`` estimates what the
    dataset's lesions look like from all first passes, without ground truth; ``decide``
    makes one image's label from its first pass and that prior.
    """

    def label(self, image: np.ndarray) -> PseudoLabel: ...

    def analyse(self, image: np.ndarray) -> Any: ...

    def load_analysis(self, arrays: dict[str, np.ndarray]) -> Any: ...

    def fit_prior(self, analyses: list[Any]) -> Any: ...

    def decide(self, analysis: Any, prior: Any) -> PseudoLabel: ...


def invalid_label(shape: tuple[int, int], reason: str, score: float = 0.0) -> PseudoLabel:
    """An invalid (empty) label of ``shape`` with the given reason."""
    return PseudoLabel(mask=np.zeros(shape, dtype=bool), score=float(score), valid=False, reason=reason)


def apply_area_filter(label: PseudoLabel, min_area_fraction: float) -> PseudoLabel:
    """Mark ``label`` invalid when its foreground is <= ``min_area_fraction`` of the image.

    docs/method.md: a mask whose foreground is <= 1 % of the image is discarded. The score
    is kept so that the per-image table still shows how confident the backend was.
    """
    if not label.valid:
        return label
    fraction = float(label.mask.mean()) if label.mask.size else 0.0
    if fraction <= min_area_fraction:
        return PseudoLabel(
            mask=np.zeros_like(label.mask, dtype=bool),
            score=label.score,
            valid=False,
            reason="area_below_min",
            box=label.box,
        )
    return label
