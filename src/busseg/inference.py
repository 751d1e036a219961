"""Segmenting images with a trained network, at each image's own resolution."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from busseg.data.dataset import resize_image
from busseg.models import SegmentationNet


@torch.inference_mode()
def predict_probability_maps(
    model: SegmentationNet,
    images: Iterable[np.ndarray],
    device: torch.device,
    batch_size: int = 8,
) -> Iterator[np.ndarray]:
    """Yield one float32 probability map (H, W) per uint8 greyscale image (H, W).

    Each image is resized to the network's input size, and the probabilities are
    resized back (bilinear) to the image's own size, where metrics are computed.
    """
    model.eval()
    size = model.config.image_size
    pending: list[np.ndarray] = []

    def flush() -> Iterator[np.ndarray]:
        x = torch.from_numpy(np.stack([resize_image(im, size) for im in pending])).float().div_(255.0).unsqueeze(1)
        probs = torch.sigmoid(model(x.to(device)).float())
        for image, prob in zip(pending, probs):
            full = F.interpolate(prob[None], size=image.shape, mode="bilinear", align_corners=False)[0, 0]
            yield full.cpu().numpy()

    for image in images:
        pending.append(image)
        if len(pending) == batch_size:
            yield from flush()
            pending = []
    if pending:
        yield from flush()
