"""AURCL: adaptive uncertainty-guided reverse contrastive learning (METHOD.md).

The student's uncertain pixels (mostly lesion boundaries) become a training signal:
their foreground probabilities are reversed (``p -> 1 - p``), patch features are
pooled once with the original and once with the reversed probabilities as weights,
and an InfoNCE loss pulls each uncertain patch's two views together while pushing
it away from the reversed views of the other patches of the same image.

Choices where the paper is silent (METHOD.md DECISIONS, all parameters):

* uncertainty ``u = 1 - |2p - 1|`` of the student probability (1 at p = 0.5, 0 at 0 or 1);
* per image ``tau_i = max(K-th largest u, tau_fix)``, ``K = max(1, round(ratio * h * w))``;
  selected pixels are ``u >= tau_i`` (ties at the threshold are all selected, so
  slightly more than K pixels can be selected);
* probabilities are detached (no gradient reaches the student's output through this
  loss) and resized bilinearly (``align_corners=False``) to the feature map;
* features: the student's last decoder map through a 1x1-conv projection head, L2
  normalised along channels;
* patches: a ``grid x grid`` partition of the feature map as made by
  ``adaptive_avg_pool2d`` (cells of near-equal size when h, w are not multiples of
  ``grid``); a patch feature is ``sum(f * w) / (sum(w) + eps)`` over the cell, with the
  weights ``w = p`` (view 1) or ``w = p_rev`` (view 2), then L2 normalised again;
* anchors: patches holding at least one selected pixel; for anchor i the positive is
  its reversed-view feature, the negatives are the reversed-view features of all
  other ``grid**2 - 1`` patches of the same image (anchors or not); logits are cosine
  similarities divided by ``temperature``;
* reduction: mean over the anchors of an image, then mean over the images that have
  anchors; when no image has one, the loss is ``0 * features.sum()`` (exactly 0 and
  still connected to the graph, so ``backward()`` works unconditionally).

All arithmetic is float32, so the loss is safe under autocast.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def uncertainty(probs: Tensor) -> Tensor:
    """``u = 1 - |2p - 1|``: 1 for p = 0.5, 0 for p in {0, 1}."""
    return 1.0 - (2.0 * probs - 1.0).abs()


def select_uncertain(probs: Tensor, ratio: float = 0.1, tau_fix: float = 0.2) -> Tensor:
    """Boolean mask of the low-confidence pixels AURCL reverses, shape of ``probs``.

    Per image, ``tau_i = max(K-th largest u, tau_fix)`` with ``K = max(1, round(ratio * h * w))``
    and the selection is ``u >= tau_i``: at most about ``ratio`` of the pixels (more only
    on ties), and never a pixel with ``u < tau_fix``.

    Args:
        probs: foreground probabilities, shape (B, 1, h, w), in [0, 1].
        ratio: r, the fraction of pixels selected when enough of them are uncertain.
        tau_fix: floor of the threshold.
    """
    _check_ratio_and_tau(ratio, tau_fix)
    u = uncertainty(probs.float()).flatten(1)
    k = max(1, round(ratio * u.shape[1]))
    kth_largest = torch.topk(u, k, dim=1).values[:, -1:]
    tau = kth_largest.clamp_min(tau_fix)
    return (u >= tau).view_as(probs)


def _check_ratio_and_tau(ratio: float, tau_fix: float) -> None:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if not 0.0 <= tau_fix <= 1.0:
        raise ValueError(f"tau_fix must be in [0, 1], got {tau_fix}")


def _check_inputs(features: Tensor, probs: Tensor) -> None:
    if features.dim() != 4:
        raise ValueError(f"features must have shape (B, C, h, w), got {tuple(features.shape)}")
    if probs.dim() != 4 or probs.shape[1] != 1 or probs.shape[0] != features.shape[0]:
        raise ValueError(
            f"probs must have shape (B, 1, H, W) with the batch size of features, got probs "
            f"{tuple(probs.shape)} and features {tuple(features.shape)}"
        )
    if bool(((probs < 0) | (probs > 1) | torch.isnan(probs)).any()):
        raise ValueError("probs must hold probabilities in [0, 1]; apply sigmoid to logits first")


def _weighted_patch_features(features: Tensor, weights: Tensor, grid: int, eps: float) -> Tensor:
    """Weighted mean feature of every grid cell, L2 normalised: (B, D, h, w) -> (B, grid*grid, D)."""
    # The ratio of two average pools is the ratio of the two cell sums (the cell size cancels).
    weighted = F.adaptive_avg_pool2d(features * weights, grid)
    total_weight = F.adaptive_avg_pool2d(weights, grid)
    pooled = weighted / (total_weight + eps)
    return F.normalize(pooled.flatten(2).transpose(1, 2), dim=-1)


def aurcl_loss(
    proj_features: Tensor,
    probs: Tensor,
    ratio: float = 0.1,
    tau_fix: float = 0.2,
    grid: int = 8,
    temperature: float = 0.1,
    eps: float = 1e-6,
) -> Tensor:
    """AURCL InfoNCE loss on already projected features (see the module docstring).

    Args:
        proj_features: projected student features, shape (B, D, h, w); they are L2
            normalised along channels here (a no-op if they already are).
        probs: the student's foreground probabilities, shape (B, 1, H, W), in [0, 1];
            detached and resized to (h, w) here.
        ratio: r of the adaptive threshold.
        tau_fix: floor of the adaptive threshold.
        grid: g, the patch grid is g x g over the feature map.
        temperature: InfoNCE temperature on cosine similarities.
        eps: stabiliser of the weighted patch average.

    Returns:
        A scalar float32 tensor; exactly 0 (connected to ``proj_features``) when no
        image has a selected pixel.
    """
    _check_inputs(proj_features, probs)
    _check_ratio_and_tau(ratio, tau_fix)
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    features = F.normalize(proj_features.float(), dim=1)
    p = probs.detach().float()
    if p.shape[-2:] != features.shape[-2:]:
        p = F.interpolate(p, size=features.shape[-2:], mode="bilinear", align_corners=False)
    selected = select_uncertain(p, ratio, tau_fix)
    p_rev = torch.where(selected, 1.0 - p, p)

    anchors = F.adaptive_max_pool2d(selected.float(), grid).flatten(1) > 0  # (B, G)
    if not bool(anchors.any()):
        return proj_features.float().sum() * 0.0

    original = _weighted_patch_features(features, p, grid, eps)  # (B, G, D)
    reversed_ = _weighted_patch_features(features, p_rev, grid, eps)  # (B, G, D)
    logits = torch.bmm(original, reversed_.transpose(1, 2)) / temperature  # (B, G, G)
    # Row i: positive at column i (same patch, reversed view), negatives at the others.
    per_patch = -torch.diagonal(F.log_softmax(logits, dim=-1), dim1=1, dim2=2)  # (B, G)

    anchor_count = anchors.sum(dim=1)
    per_image = (per_patch * anchors).sum(dim=1) / anchor_count.clamp_min(1)
    return per_image[anchor_count > 0].mean()


class AURCLLoss(nn.Module):
    """AURCL with its projection head (METHOD.md defaults).

    The 1x1-conv projection head has parameters: add this module's parameters to the
    student's optimizer, and move the module to the student's device.

    Args:
        in_channels: channels of the student's last decoder feature map.
        proj_dim: output channels of the projection head.
        ratio: r of the adaptive threshold ``tau_i = max(K-th largest u, tau_fix)``.
        tau_fix: floor of that threshold.
        grid: the feature map is split into a grid x grid set of patches.
        temperature: InfoNCE temperature.

    Example:
        >>> criterion = AURCLLoss(in_channels=16)
        >>> loss = criterion(decoder_features, torch.sigmoid(logits))  # doctest: +SKIP
    """

    def __init__(
        self,
        in_channels: int,
        proj_dim: int = 64,
        ratio: float = 0.1,
        tau_fix: float = 0.2,
        grid: int = 8,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("proj_dim", proj_dim), ("grid", grid)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        _check_ratio_and_tau(ratio, tau_fix)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.projection = nn.Conv2d(in_channels, proj_dim, kernel_size=1)
        self.ratio = ratio
        self.tau_fix = tau_fix
        self.grid = grid
        self.temperature = temperature

    def forward(self, features: Tensor, probs: Tensor) -> Tensor:
        """Loss for decoder ``features`` (B, C, h, w) and student probabilities ``probs`` (B, 1, H, W)."""
        if features.dim() != 4 or features.shape[1] != self.projection.in_channels:
            raise ValueError(
                f"features must have shape (B, {self.projection.in_channels}, h, w), got {tuple(features.shape)}"
            )
        return aurcl_loss(
            self.projection(features),
            probs,
            ratio=self.ratio,
            tau_fix=self.tau_fix,
            grid=self.grid,
            temperature=self.temperature,
        )

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, tau_fix={self.tau_fix}, grid={self.grid}, temperature={self.temperature}"
