"""Control of the teachers' influence (confidence mask, ramp-up, static anneal) and perturbed views in the SSL methods."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from busseg.errors import ConfigError
from busseg.losses import bce_dice_loss, masked_bce_dice_loss
from busseg.models import ModelConfig
from busseg.ssl import uewf
from busseg.training.augment import warp
from busseg.training.methods import DualTeacher, MeanTeacher
from busseg.training.methods.base import confident

from .test_ssl_methods import CONFIG, batches, dual, make_net


@pytest.fixture
def model_config(tiny_model_config: ModelConfig) -> ModelConfig:
    return tiny_model_config


def test_confident_excludes_the_uncertain_band() -> None:
    target = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]).view(1, 1, 1, 7)
    assert confident(target, 0.8).flatten().tolist() == [True, True, False, False, False, True, True]
    assert bool(confident(target, 0.0).all())  # 0: off


def test_masked_loss_ignores_left_out_pixels_and_equals_the_plain_loss_on_all() -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    everything = torch.ones_like(target, dtype=torch.bool)
    torch.testing.assert_close(masked_bce_dice_loss(logits, target, everything), bce_dice_loss(logits, target))
    keep = torch.zeros_like(everything)
    keep[..., :4] = True
    changed = logits.clone()
    changed[..., 4:] = 50.0  # whatever the student says where the mask is off
    torch.testing.assert_close(masked_bce_dice_loss(changed, target, keep), masked_bce_dice_loss(logits, target, keep))
    assert float(masked_bce_dice_loss(logits, target, torch.zeros_like(keep))) == 0.0


def test_dual_teacher_confidence_mask_matches_a_hand_computed_loss(model_config: ModelConfig) -> None:
    method = dual(model_config, confidence_threshold=0.6)
    method.eval()
    labeled, unlabeled = batches()
    _, parts = method.loss(labeled, unlabeled, progress=0.5)
    x_u = unlabeled["image"]
    with torch.no_grad():
        target = uewf(torch.sigmoid(method.static_teacher(x_u)), torch.sigmoid(method.ema_teacher(x_u)), kernel=CONFIG.uewf_kernel)
        keep = torch.maximum(target, 1 - target) >= 0.6
        assert 0 < int(keep.sum()) < keep.numel()  # the mask does something on this batch
        expected = masked_bce_dice_loss(method.student(x_u), target, keep)
        unmasked = bce_dice_loss(method.student(x_u), target)
    assert parts["loss_u"] == pytest.approx(float(expected), rel=1e-4)
    assert parts["loss_u"] != pytest.approx(float(unmasked), rel=1e-3)


def test_dual_teacher_ramps_lambda_u_up(model_config: ModelConfig) -> None:
    method = dual(model_config, rampup_epochs=1.0, epochs=2, lambda_u=2.0)
    assert method.unlabeled_weight(0.0) == pytest.approx(2.0 * math.exp(-5.0))
    assert method.unlabeled_weight(0.5) == pytest.approx(2.0)
    method.eval()
    loss, parts = method.loss(*batches(), progress=0.0)
    assert parts["weight_u"] == pytest.approx(2.0 * math.exp(-5.0))
    expected = parts["loss_s"] + parts["weight_u"] * parts["loss_u"] + CONFIG.lambda_c * parts["loss_c"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_static_teacher_is_annealed_out(model_config: ModelConfig) -> None:
    method = dual(model_config, static_anneal=0.5)
    assert [method.static_weight(p) for p in (0.0, 0.25, 0.5, 0.9)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    x = batches()[1]["image"]
    with torch.no_grad():
        p_a, p_b = torch.sigmoid(method.static_teacher(x)), torch.sigmoid(method.ema_teacher(x))
    torch.testing.assert_close(method.teacher_target(x, 0.0), uewf(p_a, p_b, kernel=CONFIG.uewf_kernel))
    half = method.teacher_target(x, 0.25)
    torch.testing.assert_close(half, uewf(p_a, p_b, kernel=CONFIG.uewf_kernel, weight_a=0.5))
    assert not torch.allclose(half, method.teacher_target(x, 0.0))

    # Once annealed out, the static teacher is not even run and the target is the EMA teacher's.
    def fail(*args, **kwargs):
        raise AssertionError("the annealed-out static teacher ran")

    method.static_teacher.forward = fail
    torch.testing.assert_close(method.teacher_target(x, 0.75), p_b)
    constant = dual(model_config)
    assert constant.static_weight(0.99) == 1.0


@pytest.mark.parametrize(("key", "value"), [("confidence_threshold", 1.5), ("static_anneal", -0.1), ("aurcl_variant", "nope")])
def test_new_keys_are_checked(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        DualTeacher.requirements(replace(CONFIG, **{key: value}))
    assert info.value.key == f"train.{key}"


def test_static_anneal_needs_both_teachers() -> None:
    with pytest.raises(ConfigError, match="both teachers"):
        DualTeacher.requirements(replace(CONFIG, static_anneal=0.5, use_ema_teacher=False))


@pytest.mark.parametrize("method_name", ["mean_teacher", "dual_teacher"])
def test_augmented_student_learns_from_the_aligned_teacher_target(model_config: ModelConfig, method_name: str) -> None:
    config = replace(CONFIG, method=method_name, augment="strong")
    method = MeanTeacher(make_net(model_config, 0), config) if method_name == "mean_teacher" else dual(model_config, augment="strong")
    method.eval()
    labeled, unlabeled = batches()
    method.begin_step(11)
    loss, parts = method.loss(labeled, unlabeled, progress=0.5)
    assert math.isfinite(float(loss.detach()))
    # Recompute by hand with the same step seed: the teacher on the clean image, warped with the student's affine.
    method.begin_step(11)
    aug_labeled, view = method.views(labeled, unlabeled)
    assert view.theta is not None and not torch.equal(view.images, unlabeled["image"])
    x_u = unlabeled["image"]
    with torch.no_grad():
        if method_name == "mean_teacher":
            clean = torch.sigmoid(method.ema_teacher(x_u))
        else:
            clean = uewf(torch.sigmoid(method.static_teacher(x_u)), torch.sigmoid(method.ema_teacher(x_u)), kernel=CONFIG.uewf_kernel)
        target = warp(clean, view.theta)
        student = method.student(view.images)
        valid = view.valid
        if method_name == "mean_teacher":
            expected = (((torch.sigmoid(student) - target) ** 2) * valid).sum() / valid.sum()
        else:
            expected = masked_bce_dice_loss(student, target, valid)
        expected_s = bce_dice_loss(method.student(aug_labeled["image"]), aug_labeled["mask"])
    assert parts["loss_u"] == pytest.approx(float(expected), rel=1e-4)
    assert parts["loss_s"] == pytest.approx(float(expected_s), rel=1e-4)
    # A different step seed gives a different view (the perturbation is not frozen).
    method.begin_step(12)
    assert not torch.equal(method.views(labeled, unlabeled)[1].images, view.images)


def test_mean_teacher_confidence_mask(model_config: ModelConfig) -> None:
    method = MeanTeacher(make_net(model_config, 0), replace(CONFIG, method="mean_teacher", confidence_threshold=0.55))
    method.eval()
    with torch.no_grad():  # a teacher that is not (yet) the student's copy
        for p in method.ema_teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    labeled, unlabeled = batches()
    x_u = unlabeled["image"]
    with torch.no_grad():
        target = torch.sigmoid(method.ema_teacher(x_u))
    # A threshold that splits the pixels in two halves, whatever this random teacher predicts.
    threshold = float(torch.maximum(target, 1 - target).median())
    method.options = replace(method.options, confidence_threshold=threshold)
    _, parts = method.loss(labeled, unlabeled, progress=0.5)
    with torch.no_grad():
        keep = torch.maximum(target, 1 - target) >= threshold
        assert 0 < int(keep.sum()) < keep.numel()
        squared = (torch.sigmoid(method.student(x_u)) - target) ** 2
    assert parts["loss_u"] == pytest.approx(float((squared * keep).sum() / keep.sum()), rel=1e-4)
    assert parts["loss_u"] != pytest.approx(float(squared.mean()), rel=1e-3)


def test_static_teacher_probabilities_are_remembered_per_image_with_the_same_bits(
    model_config: ModelConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of images seen before does not run the frozen static teacher again, and gets the
    very values it would have computed; beyond the memory bound it computes as before."""
    import busseg.training.methods.dual_teacher as dual_teacher_module

    method = dual(model_config)
    method.eval()
    g = torch.Generator().manual_seed(3)
    images = torch.rand(6, 1, model_config.image_size, model_config.image_size, generator=g)
    calls: list[int] = []
    method.static_teacher.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    first, second = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 2, 5, 0])
    method.static_probabilities(images[first], first)
    fresh = method.static_probabilities(images[second], second)  # 4 and 5 are new: computed
    assert calls == [4, 4]
    for order in (torch.tensor([2, 0, 5, 1]), torch.tensor([3, 4, 1, 2])):
        remembered = method.static_probabilities(images[order], order)
        assert calls == [4, 4]
        with torch.no_grad():
            direct = torch.sigmoid(method.static_teacher(images[order]).float())
        calls.pop()
        assert torch.equal(remembered, direct)
    assert torch.equal(method.teacher_target(images[second], 0.0, second), method.teacher_target(images[second], 0.0))
    calls.clear()
    # Bounded memory: a method that may remember one image computes every batch holding another.
    monkeypatch.setattr(dual_teacher_module, "STATIC_MEMORY_BYTES", fresh[0].nbytes)
    bounded = dual(model_config)
    bounded.eval()
    bounded.static_teacher.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    bounded.static_probabilities(images[first], first)
    bounded.static_probabilities(images[first], first)
    bounded.static_probabilities(images[:1], torch.tensor([0]))
    assert calls == [4, 4] and len(bounded._static_memory) == 1
