"""Label snapping (busseg.pseudo.snap): the network's location, the image's boundary."""
from __future__ import annotations

import numpy as np
import pytest

from busseg.metrics import dice
from busseg.pseudo.appearance import AppearanceLabeler, AppearanceOptions
from busseg.pseudo.snap import snap_to_candidate


def ellipse(shape: tuple[int, int], centre: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) / axes[0]) ** 2 + ((xx - centre[1]) / axes[1]) ** 2 <= 1.0


@pytest.fixture(scope="module")
def scan() -> tuple[np.ndarray, np.ndarray]:
    """A speckled grey scan with one dark oval lesion, and the lesion's true mask."""
    rng = np.random.default_rng(0)
    truth = ellipse((160, 200), (90, 100), (22, 34))
    image = 150.0 + 18.0 * rng.standard_normal(truth.shape)
    image[truth] -= 95.0
    return np.clip(image, 0, 255).astype(np.uint8), truth


@pytest.fixture(scope="module")
def labeler() -> AppearanceLabeler:
    return AppearanceLabeler(AppearanceOptions())


def test_a_blobby_network_label_snaps_to_the_lesion_boundary(scan, labeler) -> None:
    image, truth = scan
    blob = ellipse(truth.shape, (95, 106), (26, 28))  # the right place, a rounder and shifted outline
    snapped = snap_to_candidate(labeler, image, blob, min_agreement=0.5)
    assert snapped is not None and snapped.mask.shape == truth.shape
    assert snapped.agreement >= 0.5
    assert dice(snapped.mask, truth) > dice(blob, truth) + 0.05
    assert dice(snapped.mask, truth) > 0.9


def test_no_snap_when_no_candidate_agrees_enough_or_the_label_is_empty(scan, labeler) -> None:
    image, truth = scan
    elsewhere = ellipse(truth.shape, (25, 30), (10, 12))  # bright tissue: no dark region there
    assert snap_to_candidate(labeler, image, elsewhere, min_agreement=0.5) is None
    assert snap_to_candidate(labeler, image, np.zeros_like(truth), min_agreement=0.1) is None
    with pytest.raises(ValueError, match="differ in size"):
        snap_to_candidate(labeler, image, truth[:-1], min_agreement=0.5)


def test_refine_labels_marks_snapped_labels_and_recomputes_their_certainty(scan) -> None:
    import torch

    from busseg.pseudo.refine import refine_labels

    image, truth = scan

    class Prepared:
        def image(self, sample_id: str) -> np.ndarray:
            return image

    class BlobTeacher(torch.nn.Module):
        """Predicts a fixed blob left-right symmetric about the image centre, at any input size."""

        def __init__(self) -> None:
            super().__init__()
            from busseg.models import ModelConfig

            self.config = ModelConfig(encoder="resnet18", image_size=64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            size = x.shape[-2:]
            blob = torch.from_numpy(ellipse((size[0], size[1]), (size[0] * 90 // 160, size[1] // 2), (size[0] // 6, size[1] // 6)))
            return (blob.float() * 16.0 - 8.0).expand(x.shape[0], 1, *size)

    snapped_to = ellipse(truth.shape, (90, 100), (20, 30))
    labels = refine_labels(BlobTeacher(), Prepared(), ["a"], torch.device("cpu"), 0.01,  # type: ignore[arg-type]
                           pixel_certainty=True, snap=lambda im, mask: snapped_to)
    label = labels["a"]
    assert label.valid and label.reason == "snapped" and np.array_equal(label.mask, snapped_to)
    assert label.box == (70, 70, 131, 111) and label.certainty is not None
    # Judged on the new mask: sure at the centre, 0 in the ring the network calls lesion and the snap does not.
    assert label.certainty[90, 100] > 250 and label.certainty[68, 100] == 0
    unsnapped = refine_labels(BlobTeacher(), Prepared(), ["a"], torch.device("cpu"), 0.01, snap=lambda im, mask: None)
    assert unsnapped["a"].reason == "" and not np.array_equal(unsnapped["a"].mask, snapped_to)
