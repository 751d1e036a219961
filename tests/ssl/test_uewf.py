from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from busseg.ssl.uewf import binary_entropy, patch_smooth, uewf

torch.set_num_threads(1)

EPS = 1e-6


def rand_probs(*shape: int, seed: int = 0, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(*shape, generator=generator)


def entropy64(p: np.ndarray) -> np.ndarray:
    """docs/method.md's entropy formula in float64, written out independently."""
    return -(p * np.log(p + EPS) + (1 - p) * np.log(1 - p + EPS))


def block_mean64(x: np.ndarray, k: int) -> np.ndarray:
    """Each pixel gets the mean of the real pixels of its k x k block (loop reference)."""
    out = np.empty_like(x)
    height, width = x.shape
    for top in range(0, height, k):
        for left in range(0, width, k):
            block = x[top : top + k, left : left + k]
            out[top : top + k, left : left + k] = block.mean()
    return out


def fuse64(p_a: np.ndarray, p_b: np.ndarray, k: int) -> np.ndarray:
    w_a = 1 / (block_mean64(entropy64(p_a), k) + EPS)
    w_b = 1 / (block_mean64(entropy64(p_b), k) + EPS)
    return (w_a * p_a + w_b * p_b) / (w_a + w_b + EPS)


# --- binary_entropy ----------------------------------------------------------------------------


def test_binary_entropy_values():
    p = torch.tensor([0.0, 0.5, 1.0, 0.2, 0.8])
    e = binary_entropy(p)
    assert e[1].item() == pytest.approx(math.log(2), abs=1e-5)
    assert e[0].item() == 0.0 and e[2].item() == 0.0  # clamped, never negative
    assert e[3].item() == pytest.approx(e[4].item(), abs=1e-6)  # symmetric in p <-> 1 - p
    assert e.dtype == torch.float32


def test_binary_entropy_is_never_negative_near_the_ends():
    p = torch.tensor([0.0, 1e-9, 1e-7, 1 - 1e-7, 1.0])
    assert (binary_entropy(p) >= 0).all()


# --- patch_smooth ------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "k"), [((28, 28), 14), ((30, 17), 14), ((5, 7), 2), ((3, 4), 14)])
def test_patch_smooth_partial_patches_average_real_pixels_only(shape, k):
    x = rand_probs(1, 1, *shape, seed=3).double()
    expected = block_mean64(x[0, 0].numpy(), k)
    result = patch_smooth(x, k)
    assert result.shape == x.shape
    np.testing.assert_allclose(result[0, 0].numpy(), expected, rtol=1e-12)


def test_patch_smooth_kernel_one_is_identity():
    x = rand_probs(2, 1, 5, 6)
    assert patch_smooth(x, 1) is x


@pytest.mark.parametrize("kernel", [0, -3, 2.0, True])
def test_patch_smooth_rejects_bad_kernel(kernel):
    with pytest.raises(ValueError, match="kernel"):
        patch_smooth(torch.zeros(1, 1, 4, 4), kernel)


# --- uewf --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [1, 3, 14])
def test_equal_inputs_return_the_input(kernel):
    p = rand_probs(2, 1, 30, 17, seed=1)
    torch.testing.assert_close(uewf(p, p, kernel=kernel), p, atol=1e-5, rtol=0)


def test_confident_teacher_dominates_an_uncertain_one():
    confident = torch.full((1, 1, 14, 14), 0.99)
    uncertain = torch.full((1, 1, 14, 14), 0.5)
    for fused in (uewf(confident, uncertain), uewf(uncertain, confident)):
        # E(0.99) = 0.056, E(0.5) = 0.693: weights about 12.4 : 1.
        assert fused.mean().item() == pytest.approx((12.38 * 0.99 + 0.5) / 13.38, abs=2e-3)
        assert (fused > 0.9).all()


def test_each_region_follows_its_locally_confident_teacher():
    # Teacher A is sure on the left 14 columns, teacher B on the right 14; k = 14 keeps them apart.
    p_a = torch.full((1, 1, 14, 28), 0.5)
    p_b = torch.full((1, 1, 14, 28), 0.5)
    p_a[..., :14] = 0.02
    p_b[..., 14:] = 0.97
    fused = uewf(p_a, p_b, kernel=14)
    # E(0.02) = 0.098 and E(0.97) = 0.135 against E(0.5) = 0.693: about 0.08 and 0.89.
    assert (fused[..., :14] < 0.1).all()
    assert (fused[..., 14:] > 0.85).all()


def test_kernel_one_is_the_pixel_wise_formula():
    p_a = rand_probs(2, 1, 9, 11, seed=4, low=0.01, high=0.99)
    p_b = rand_probs(2, 1, 9, 11, seed=5, low=0.01, high=0.99)
    fused = uewf(p_a, p_b, kernel=1).double().numpy()
    a, b = p_a.double().numpy(), p_b.double().numpy()
    w_a, w_b = 1 / (entropy64(a) + EPS), 1 / (entropy64(b) + EPS)
    np.testing.assert_allclose(fused, (w_a * a + w_b * b) / (w_a + w_b + EPS), rtol=1e-5)


@pytest.mark.parametrize(("shape", "kernel"), [((30, 17), 14), ((30, 17), 4), ((20, 20), 14)])
def test_patch_weights_match_reference_on_shapes_not_divisible_by_k(shape, kernel):
    p_a = rand_probs(1, 1, *shape, seed=6, low=0.01, high=0.99)
    p_b = rand_probs(1, 1, *shape, seed=7, low=0.01, high=0.99)
    fused = uewf(p_a, p_b, kernel=kernel)
    assert fused.shape == (1, 1, *shape)
    expected = fuse64(p_a[0, 0].double().numpy(), p_b[0, 0].double().numpy(), kernel)
    np.testing.assert_allclose(fused[0, 0].double().numpy(), expected, rtol=1e-5)


def test_patch_smoothing_differs_from_pixel_wise():
    p_a = rand_probs(1, 1, 28, 28, seed=8)
    p_b = rand_probs(1, 1, 28, 28, seed=9)
    assert not torch.allclose(uewf(p_a, p_b, kernel=14), uewf(p_a, p_b, kernel=1))


@pytest.mark.parametrize("kernel", [1, 14])
def test_values_stay_in_unit_interval_even_with_hard_probabilities(kernel):
    p_a = (rand_probs(2, 1, 30, 17, seed=10) > 0.5).float()  # exact 0s and 1s
    p_b = rand_probs(2, 1, 30, 17, seed=11, low=0.05, high=0.95)
    fused = uewf(p_a, p_b, kernel=kernel)
    assert torch.isfinite(fused).all()
    assert fused.min() >= 0 and fused.max() <= 1
    if kernel == 1:  # a hard (zero-entropy, weight 1/eps) teacher wins its pixels outright
        torch.testing.assert_close(fused, p_a, atol=1e-5, rtol=0)
    p_b[0, 0, 0, 0] = 0.0  # both hard and disagreeing: an even split, not NaN
    p_a[0, 0, 0, 0] = 1.0
    assert uewf(p_a, p_b, kernel=1)[0, 0, 0, 0].item() == pytest.approx(0.5)


def test_half_precision_inputs_give_float32():
    p = rand_probs(1, 1, 8, 8).half()
    assert uewf(p, p).dtype == torch.float32


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 4\).*\(1, 1, 4, 5\)"):
        uewf(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


@pytest.mark.parametrize("bad_value", [-0.01, 1.01, float("nan")])
@pytest.mark.parametrize("which", ["p_a", "p_b"])
def test_values_outside_unit_interval_are_rejected(bad_value, which):
    good = torch.full((1, 1, 4, 4), 0.5)
    bad = good.clone()
    bad[0, 0, 1, 1] = bad_value
    args = (bad, good) if which == "p_a" else (good, bad)
    with pytest.raises(ValueError, match=which):
        uewf(*args)


def test_non_4d_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        uewf(torch.zeros(4, 4), torch.zeros(4, 4))
