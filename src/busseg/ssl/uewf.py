"""UEWF: uncertainty-entropy weighted fusion of two teachers' probabilities.

Exactly the definition of docs/method.md: for each teacher, the binary entropy of its
foreground probability is averaged over non-overlapping ``kernel x kernel``
patches and broadcast back to the patch's pixels; each teacher is weighted by the
inverse of its smoothed entropy, so the locally more certain teacher dominates.
Nothing is learned. ``kernel = 1`` is the pixel-wise variant.

All computation is in float32 (safe under autocast); the fused target is float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_probabilities(p: Tensor, name: str) -> None:
    if p.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(p.shape)}")
    if bool(((p < 0) | (p > 1) | torch.isnan(p)).any()):
        raise ValueError(f"{name} must hold probabilities in [0, 1]; apply sigmoid to logits first")


def _check_kernel(kernel: int) -> None:
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1:
        raise ValueError(f"kernel must be an integer >= 1, got {kernel!r}")


def binary_entropy(p: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-pixel binary entropy ``-(p log(p + eps) + (1 - p) log(1 - p + eps))`` in nats, float32.

    The result is clamped at 0: the ``eps`` inside the logs makes the formula dip
    slightly below 0 (down to ``-log(1 + eps)``) for p at or very near 0 or 1, and
    in float32 rounding ``E + eps`` could then vanish or turn negative for some
    ``eps``, giving an infinite or negative UEWF weight. True entropy is never
    negative, and for p in roughly [1e-5, 1 - 1e-5] the clamp changes nothing.
    """
    p = p.float()
    entropy = -(p * torch.log(p + eps) + (1.0 - p) * torch.log(1.0 - p + eps))
    return entropy.clamp_min(0.0)


def patch_smooth(x: Tensor, kernel: int) -> Tensor:
    """Mean of ``x`` over non-overlapping ``kernel x kernel`` patches, broadcast back to each pixel.

    ``x`` has shape (B, C, H, W); H and W need not be multiples of ``kernel``: the
    last row/column of patches is partial (``ceil_mode``) and averages only its real
    pixels, never zero padding. ``kernel = 1`` returns ``x`` unchanged.
    """
    _check_kernel(kernel)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    if kernel == 1:
        return x
    height, width = x.shape[-2:]
    # With padding=0, avg_pool2d divides an overhanging ceil_mode window by its in-image
    # pixel count; count_include_pad=False states that intent (tested for partial patches).
    pooled = F.avg_pool2d(x, kernel, stride=kernel, ceil_mode=True, count_include_pad=False)
    # Nearest upsampling by an integer factor == repeating each patch value k times per axis.
    upsampled = pooled.repeat_interleave(kernel, dim=-2).repeat_interleave(kernel, dim=-1)
    return upsampled[..., :height, :width]


def uewf(p_a: Tensor, p_b: Tensor, kernel: int = 14, eps: float = 1e-6, weight_a: float = 1.0) -> Tensor:
    """Fuse two teachers' foreground probabilities into a soft target (docs/method.md, UEWF).

    ``E_s = patch_smooth(binary_entropy(p))``, ``w = 1 / (E_s + eps)`` per teacher, and
    ``y = (w_a * p_a + w_b * p_b) / (w_a + w_b + eps)``.

    Args:
        p_a: probabilities of teacher A (the static teacher), shape (B, 1, H, W), in [0, 1].
        p_b: probabilities of teacher B (the EMA teacher), same shape.
        kernel: patch size k for entropy smoothing; 1 means pixel-wise.
        eps: stabiliser in the logs, in the weights and in the normaliser.
        weight_a: extra factor on teacher A's weight ``w_a`` (1: docs/method.md's UEWF; towards 0
            the static teacher fades out, see ``train.static_anneal``; 0: the target is ``p_b``
            up to ``eps``).

    Returns:
        The fused soft target, float32, shape (B, 1, H, W), values in [0, 1]. Not
        differentiable in intent: pass detached teacher outputs.

    Raises:
        ValueError: shapes differ or are not 4-D, values lie outside [0, 1], or kernel < 1.
    """
    if p_a.shape != p_b.shape:
        raise ValueError(
            f"p_a and p_b must have the same shape, got p_a {tuple(p_a.shape)} and p_b {tuple(p_b.shape)}"
        )
    _check_probabilities(p_a, "p_a")
    _check_probabilities(p_b, "p_b")
    _check_kernel(kernel)
    if not 0.0 <= weight_a <= 1.0:
        raise ValueError(f"weight_a must be in [0, 1], got {weight_a}")
    p_a, p_b = p_a.float(), p_b.float()
    w_a = weight_a / (patch_smooth(binary_entropy(p_a, eps), kernel) + eps)
    w_b = 1.0 / (patch_smooth(binary_entropy(p_b, eps), kernel) + eps)
    return (w_a * p_a + w_b * p_b) / (w_a + w_b + eps)
