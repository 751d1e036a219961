"""Segmenting images with a trained network, at each image's own resolution."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from busseg.imageio import resize_image
from busseg.models import SegmentationNet

K = TypeVar("K")


@torch.inference_mode()
def probabilities(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch: int = 16) -> torch.Tensor:
    """Sigmoid probabilities (float32, on the CPU) of ``images`` (N, 1, S, S) in [0, 1].

    The one place a network's logits become probabilities: validation during training
    and prediction at full resolution both call it. The network runs in eval mode on
    ``batch`` images at a time and is put back in the mode it was in.
    """
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        out.append(torch.sigmoid(model(images[start : start + batch].to(device)).float()).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@torch.inference_mode()
def predict_keyed(
    model: SegmentationNet,
    items: Iterable[tuple[K, np.ndarray]],
    device: torch.device,
    batch_size: int = 8,
) -> Iterator[tuple[K, np.ndarray, np.ndarray]]:
    """Yield ``(key, image, probability map)`` for each ``(key, image)``, in input order.

    Images are uint8 greyscale (H, W); each map is float32 (H, W). ``items`` is read
    lazily, one batch at a time, so a caller can skip unreadable files while reading
    them without losing track of which map belongs to which file (the key says).
    Each image is resized to the network's input size, and the probabilities are
    resized back (bilinear) to the image's own size, where metrics are computed.
    """
    model.eval()
    size = model.config.image_size
    pending: list[tuple[K, np.ndarray]] = []

    def flush() -> Iterator[tuple[K, np.ndarray, np.ndarray]]:
        x = torch.from_numpy(np.stack([resize_image(im, size) for _, im in pending])).float().div_(255.0).unsqueeze(1)
        # One network call per pending batch: the batch a convolution runs on can change the
        # last bits of its result, and evaluation metrics must not depend on a refactoring.
        probs = probabilities(model, x, device, batch=len(pending))
        for (key, image), prob in zip(pending, probs):
            full = F.interpolate(prob[None], size=image.shape, mode="bilinear", align_corners=False)[0, 0]
            yield key, image, full.numpy()

    for item in items:
        pending.append(item)
        if len(pending) == batch_size:
            yield from flush()
            pending = []
    if pending:
        yield from flush()


def predict_probability_maps(
    model: SegmentationNet,
    images: Iterable[np.ndarray],
    device: torch.device,
    batch_size: int = 8,
) -> Iterator[np.ndarray]:
    """Yield one float32 probability map (H, W) per uint8 greyscale image (H, W).

    See :func:`predict_keyed`, which this wraps for callers that need no keys.
    """
    for _, _, prob in predict_keyed(model, ((None, image) for image in images), device, batch_size):
        yield prob
