from __future__ import annotations

import math

import pytest
import torch

from busseg.losses import bce_dice_loss

torch.set_num_threads(1)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Dice term of :func:`bce_dice_loss` alone."""
    return bce_dice_loss(logits, target, bce_weight=0.0)


def random_mask(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=generator) > 0.5).float()


def test_soft_dice_hand_computed():
    # p = 0.5 everywhere, t = [1, 0, 1, 1]: sum(p t) = 1.5, sum(p) + sum(t) = 5,
    # dice = (2 * 1.5 + 1) / (5 + 1) = 2/3.
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 / 3)


def test_soft_dice_is_per_image_then_mean():
    logits = torch.randn(3, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    target = random_mask(3, 1, 5, 5)
    target[2] = 0  # an empty image weighs as much as the others
    per_image = [soft_dice_loss(logits[i : i + 1], target[i : i + 1]) for i in range(3)]
    assert soft_dice_loss(logits, target).item() == pytest.approx(torch.stack(per_image).mean().item())


@pytest.mark.parametrize("empty", [False, True])
def test_perfect_prediction_has_zero_dice_loss(empty):
    target = torch.zeros(2, 1, 6, 6) if empty else random_mask(2, 1, 6, 6)
    logits = (2 * target - 1) * 50
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert bce_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_wrong_prediction_has_high_dice_loss():
    target = random_mask(2, 1, 6, 6, seed=3)
    logits = (1 - 2 * target) * 50
    assert soft_dice_loss(logits, target).item() > 0.9


def test_bce_part_matches_hand_computed_formula():
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.3, 0.0]]]])
    sig = [1 / (1 + math.exp(-x)) for x in (2.0, -1.0, 0.0, 3.0)]
    tgt = [1.0, 0.0, 0.3, 0.0]
    bce = -sum(t * math.log(p) + (1 - t) * math.log(1 - p) for p, t in zip(sig, tgt)) / 4
    assert bce_dice_loss(logits, target, dice_weight=0.0).item() == pytest.approx(bce, rel=1e-6)
    dice_part = soft_dice_loss(logits, target).item()
    assert bce_dice_loss(logits, target).item() == pytest.approx(bce + dice_part, rel=1e-6)


def test_soft_targets_are_accepted_and_bce_is_minimal_at_their_logit():
    target = torch.full((1, 1, 4, 4), 0.3)
    logits = torch.full_like(target, math.log(0.3 / 0.7), requires_grad=True)
    loss = bce_dice_loss(logits, target, dice_weight=0.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad.abs().max().item() < 1e-6


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_gradients_are_finite_even_for_saturated_logits(scale):
    logits = (torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * scale).requires_grad_()
    target = random_mask(2, 1, 8, 8)
    bce_dice_loss(logits, target).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_half_precision_logits_give_a_float32_loss():
    logits = torch.randn(2, 1, 4, 4).half()
    target = random_mask(2, 1, 4, 4)
    loss = bce_dice_loss(logits, target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(bce_dice_loss(logits.float(), target).item(), rel=1e-5)


@pytest.mark.parametrize("loss_fn", [soft_dice_loss, bce_dice_loss])
def test_shape_mismatch_names_both_shapes(loss_fn):
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\).*\(2, 4, 4\)"):
        loss_fn(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))


@pytest.mark.parametrize("bad_value", [-0.1, 1.5, float("nan")])
def test_targets_outside_unit_interval_are_rejected(bad_value):
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 0, 0] = bad_value
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bce_dice_loss(torch.zeros(1, 1, 2, 2), target)
