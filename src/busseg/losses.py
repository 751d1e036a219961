"""Segmentation losses on logits (torch): soft Dice and BCE + Dice.

docs/method.md uses BCE + Dice with weights 1:1 for the supervised loss L_s, for the
static teacher's warm-up on pseudo labels, and for the unsupervised loss L_u with
the soft UEWF target. Targets may therefore be soft (any value in [0, 1]).

The functions cast logits and targets to float32 before the sigmoid and the logs,
so they are safe under autocast (fp16/bf16 logits).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_pair(logits: Tensor, target: Tensor) -> None:
    """Shapes must match exactly (no silent broadcasting); targets must lie in [0, 1]."""
    if logits.shape != target.shape:
        raise ValueError(
            f"logits and target must have the same shape, got logits {tuple(logits.shape)} "
            f"and target {tuple(target.shape)}"
        )
    if logits.dim() < 2:
        raise ValueError(
            f"expected a batch (B, ...) with at least 2 dimensions, got shape {tuple(logits.shape)}"
        )
    # One host sync per call; negligible next to a forward/backward pass, and it turns a
    # silently wrong BCE into an error.
    if bool(((target < 0) | (target > 1) | torch.isnan(target)).any()):
        raise ValueError("target values must lie in [0, 1]")


def _soft_dice_loss(logits: Tensor, target: Tensor, eps: float) -> Tensor:
    """``1 - soft Dice`` between ``sigmoid(logits)`` and a (possibly soft) target; inputs checked by the caller.

    Dice is computed per image over all non-batch dimensions,
    ``(2 * sum(p * t) + eps) / (sum(p) + sum(t) + eps)``, then averaged over the
    batch. ``eps = 1`` (additive smoothing) makes an empty target predicted as empty
    score a loss of 0 instead of 0/0. Returns a scalar float32 tensor.
    """
    probs = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    intersection = (probs * target).sum(dim=1)
    denominator = probs.sum(dim=1) + target.sum(dim=1)
    dice = (2.0 * intersection + eps) / (denominator + eps)
    return (1.0 - dice).mean()


def bce_dice_loss(
    logits: Tensor,
    target: Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    eps: float = 1.0,
) -> Tensor:
    """``bce_weight * BCE-with-logits + dice_weight * soft Dice loss`` (1:1 by default).

    BCE is the mean over all pixels of the batch; Dice is ``1 - soft Dice`` per image,
    averaged over the batch (``dice_weight`` alone with ``bce_weight=0`` gives it). Both
    accept soft targets in [0, 1].
    """
    _check_pair(logits, target)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return bce_weight * bce + dice_weight * _soft_dice_loss(logits, target, eps)


def masked_bce_dice_loss(logits: Tensor, target: Tensor, weight: Tensor, eps: float = 1.0) -> Tensor:
    """:func:`bce_dice_loss` over the pixels that ``weight`` keeps (per-pixel weights in [0, 1]).

    ``weight`` has the shape of ``logits`` (bool or float). BCE is the weighted mean over
    the batch's pixels; Dice is computed per image on ``p * w`` and ``t * w`` and averaged
    over the batch. Pixels of weight 0 get no gradient; with every weight 0 the loss is 0.
    Used for unlabeled losses that leave out unconfident pixels or pixels a geometric
    augmentation moved in from outside the image, and for BCP's region-weighted mixes.
    """
    _check_pair(logits, target)
    if weight.shape != logits.shape:
        raise ValueError(f"weight must have the shape of logits {tuple(logits.shape)}, got {tuple(weight.shape)}")
    w = weight.float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    bce = (bce * w).sum() / w.sum().clamp_min(1e-6)
    probs = torch.sigmoid(logits.float()).flatten(1) * w.flatten(1)
    t = target.float().flatten(1) * w.flatten(1)
    dice = (2.0 * (probs * t).sum(dim=1) + eps) / (probs.sum(dim=1) + t.sum(dim=1) + eps)
    return bce + (1.0 - dice).mean()
