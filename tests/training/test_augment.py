"""Augmentation (busseg.training.augment): alignment of image, mask and target; determinism; ranges."""
from __future__ import annotations

import math

import pytest
import torch

from busseg.errors import ConfigError
from busseg.training.augment import (
    AugmentSpec,
    Augmenter,
    cutmix_boxes,
    identity_affine,
    intensity,
    sample_affine,
    valid_region,
    warp,
)


def square_batch(n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a bright off-centre square on a mid-grey textured background, and its mask."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, 6:16, 9:21] = 1.0
    image = 0.3 + 0.1 * torch.rand(n, 1, size, size, generator=g) + 0.5 * mask
    return image, mask


def test_identity_parameters_change_nothing() -> None:
    image, mask = square_batch()
    theta = identity_affine(4)
    torch.testing.assert_close(warp(image, theta), image)
    torch.testing.assert_close(warp(mask, theta), mask)
    assert bool(valid_region(theta, image).all())


def test_image_and_mask_warped_with_the_same_parameters_stay_aligned() -> None:
    image, mask = square_batch()
    theta = sample_affine(4, torch.Generator().manual_seed(1), AugmentSpec(rotation=20, translate=0.1, flip_p=0.5))
    assert not torch.allclose(theta, identity_affine(4))
    warped_image, warped_mask = warp(image, theta), warp(mask, theta)
    # The square is where the bright pixels went: thresholding the warped image gives the warped mask.
    bright = warped_image > 0.6
    inside = warped_mask > 0.5
    agreement = (bright == inside).float().mean(dim=(1, 2, 3))
    assert bool((agreement > 0.97).all()), agreement
    # And the square did move (a test that a no-op would also pass is no test).
    assert bool(((warped_mask > 0.5) != (mask > 0.5)).any())


def test_a_known_flip_moves_the_square_to_the_mirror_position() -> None:
    _, mask = square_batch(n=1)
    spec = AugmentSpec(flip_p=1.0, rotation=0.0, scale=(1.0, 1.0), translate=0.0)
    flipped = warp(mask, sample_affine(1, torch.Generator().manual_seed(0), spec))
    torch.testing.assert_close(flipped, mask.flip(-1))


def test_student_view_aligns_a_teacher_target_and_marks_the_outside() -> None:
    image, mask = square_batch()
    view = Augmenter("strong").student_view(image, torch.Generator().manual_seed(2))
    assert view.theta is not None
    aligned = view.align(mask)  # a "teacher" that predicts the mask perfectly on the clean image
    torch.testing.assert_close(aligned, warp(mask, view.theta))
    valid = view.valid
    assert valid.dtype == torch.bool and valid.shape == (4, 1, 32, 32)
    assert bool(valid.any()) and not bool(valid.all())  # rotation/scale pull in pixels from outside
    # Valid pixels are interpolated from the image alone (background >= 0.3), the black ones are invalid.
    geometric = warp(image, view.theta)
    assert float(geometric[valid].min()) >= 0.3 - 1e-5
    assert bool((~valid[geometric < 1e-3]).all())


def test_views_are_deterministic_under_a_seed_and_differ_across_seeds() -> None:
    image, _ = square_batch()
    augmenter = Augmenter("strong")
    a = augmenter.student_view(image, torch.Generator().manual_seed(5))
    b = augmenter.student_view(image, torch.Generator().manual_seed(5))
    c = augmenter.student_view(image, torch.Generator().manual_seed(6))
    assert torch.equal(a.images, b.images) and torch.equal(a.theta, b.theta)
    assert not torch.equal(a.images, c.images)
    # Per-image parameters: the images of one batch are not transformed alike.
    assert not torch.allclose(a.theta[0], a.theta[1])


def test_intensity_stays_in_range_and_keeps_geometry() -> None:
    image, mask = square_batch()
    out = intensity(image, torch.Generator().manual_seed(3))
    assert out.shape == image.shape and out.dtype == image.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, image)
    # The lesion stays brighter than its surroundings, where it was.
    inside = (out * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3))
    outside = (out * (1 - mask)).sum(dim=(1, 2, 3)) / (1 - mask).sum(dim=(1, 2, 3))
    assert bool((inside > outside).all())


def test_none_returns_the_clean_batch_and_weak_keeps_intensities() -> None:
    image, mask = square_batch()
    batch = {"image": image, "mask": mask}
    g = torch.Generator().manual_seed(0)
    assert Augmenter("none").labeled(batch, g) is batch
    view = Augmenter("none").student_view(image, g)
    assert view.images is image and view.theta is None and bool(view.valid.all())
    weak = Augmenter("weak").student_view(image, torch.Generator().manual_seed(4))
    torch.testing.assert_close(weak.images, warp(image, weak.theta))  # geometric only
    labeled = Augmenter("weak").labeled(batch, torch.Generator().manual_seed(4))
    assert float(labeled["mask"].min()) >= 0.0 and float(labeled["mask"].max()) <= 1.0


def test_unknown_mode_names_the_key_and_the_options() -> None:
    with pytest.raises(ConfigError, match=r"warmup\.augment.*available: none, weak, strong"):
        Augmenter("heavy", key="warmup.augment")


def test_cutmix_boxes_are_rectangles_of_bounded_area() -> None:
    boxes = cutmix_boxes(64, 32, 32, torch.Generator().manual_seed(0), p=0.5)
    areas = boxes.float().mean(dim=(1, 2, 3))
    used = areas > 0
    assert 10 < int(used.sum()) < 54  # about half the images get a box
    assert float(areas[used].max()) <= 0.45 and float(areas[used].min()) >= 0.005
    for box in boxes[used][:, 0]:
        rows, cols = box.any(dim=1).nonzero(), box.any(dim=0).nonzero()
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(box.sum()) == height * width  # one filled rectangle
    assert math.isclose(float(cutmix_boxes(8, 32, 32, torch.Generator(), p=0.0).float().sum()), 0.0)


def test_train_config_check_rejects_an_unknown_augmentation() -> None:
    from busseg.training.config import TrainConfig

    with pytest.raises(ConfigError, match="available: none, weak, strong") as info:
        TrainConfig(augment="heavy").check("warmup")
    assert info.value.key == "warmup.augment"


def test_supervised_trains_on_the_weak_view_of_its_labeled_batch(tiny_model_config) -> None:
    from busseg.losses import bce_dice_loss
    from busseg.models import build_model
    from busseg.training.config import TrainConfig
    from busseg.training.methods import Supervised

    torch.manual_seed(0)
    method = Supervised(build_model(tiny_model_config), TrainConfig(augment="weak")).eval()
    image, mask = square_batch(n=2, size=64)
    method.begin_step(3)
    loss, _ = method.loss({"image": image, "mask": mask}, None, 0.0)
    theta = sample_affine(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = bce_dice_loss(method.student(warp(image, theta)), warp(mask, theta))
        clean = bce_dice_loss(method.student(image), mask)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss.detach()) != pytest.approx(float(clean), rel=1e-4)


def test_shards_of_a_global_batch_get_the_one_process_parameters() -> None:
    image, mask = square_batch(n=4)
    augmenter = Augmenter("strong")
    whole = augmenter.student_view(image, torch.Generator().manual_seed(9))
    for rank in (0, 1):
        part = augmenter.student_view(image[2 * rank : 2 * rank + 2], torch.Generator().manual_seed(9), shard=(rank, 2))
        torch.testing.assert_close(part.theta, whole.theta[2 * rank : 2 * rank + 2])
        torch.testing.assert_close(part.images, whole.images[2 * rank : 2 * rank + 2])
    boxes = cutmix_boxes(4, 32, 32, torch.Generator().manual_seed(1))
    assert torch.equal(cutmix_boxes(2, 32, 32, torch.Generator().manual_seed(1), shard=(1, 2)), boxes[2:])


def test_supervised_leaves_out_the_pixels_a_weight_drops_and_warps_the_weight_with_the_mask(tiny_model_config) -> None:
    from busseg.losses import masked_bce_dice_loss
    from busseg.models import build_model
    from busseg.training.config import TrainConfig
    from busseg.training.methods import Supervised

    torch.manual_seed(0)
    image, mask = square_batch(n=2, size=64)
    weight = torch.ones_like(mask)
    weight[..., :, 40:] = 0.0
    wrong = mask.clone()
    wrong[..., :, 40:] = 1.0  # a label that is wrong only where the weight drops it
    clean = Supervised(build_model(tiny_model_config), TrainConfig(augment="none")).eval()
    loss_right, _ = clean.loss({"image": image, "mask": mask, "weight": weight}, None, 0.0)
    loss_wrong, _ = clean.loss({"image": image, "mask": wrong, "weight": weight}, None, 0.0)
    unweighted, _ = clean.loss({"image": image, "mask": wrong}, None, 0.0)
    assert float(loss_right.detach()) == pytest.approx(float(loss_wrong.detach()), rel=1e-6)
    assert float(unweighted.detach()) != pytest.approx(float(loss_wrong.detach()), rel=1e-3)
    weak = Supervised(clean.student, TrainConfig(augment="weak")).eval()
    weak.begin_step(3)
    loss, _ = weak.loss({"image": image, "mask": mask, "weight": weight}, None, 0.0)
    theta = sample_affine(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = masked_bce_dice_loss(weak.student(warp(image, theta)), warp(mask, theta), warp(weight, theta))
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
