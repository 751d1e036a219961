"""AURCL: adaptive uncertainty-guided reverse contrastive learning (docs/method.md).

The student's uncertain pixels (mostly lesion boundaries) become a training signal:
their foreground probabilities are reversed (``p -> 1 - p``), patch features are
pooled once with the original and once with the reversed probabilities as weights,
and an InfoNCE loss pulls each uncertain patch's two views together while pushing
it away from the reversed views of the other patches of the same image.

Choices where the paper is silent (docs/method.md DECISIONS, all parameters):

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
  still connected to the graph, so ``backward()`` works unconditionally);
* :class:`AURCLLoss` computes the same value as ``aurcl_loss(projection(features))``
  without materialising the projected map (see :func:`_projected_patch_features`).

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


def _no_autocast(tensor: Tensor) -> torch.autocast:
    """Context that runs its block in float32 even inside an autocast region (bmm/einsum would be fp16)."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def _prepare_probs(
    probs: Tensor, size: torch.Size, ratio: float, tau_fix: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Detached float32 probabilities at the feature size, their reversed copy, and the selection."""
    p = probs.detach().float()
    if p.shape[-2:] != size:
        p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
    selected = select_uncertain(p, ratio, tau_fix)
    return p, torch.where(selected, 1.0 - p, p), selected


def _anchor_patches(selected: Tensor, grid: int) -> Tensor:
    """(B, grid*grid) bool: the grid cells that hold at least one selected pixel."""
    # adaptive_max_pool2d uses the same cell boundaries as adaptive_avg_pool2d.
    return F.adaptive_max_pool2d(selected.float(), grid).flatten(1) > 0


def _weighted_patch_features(features: Tensor, weights: Tensor, grid: int, eps: float) -> Tensor:
    """Weighted mean feature of every grid cell, L2 normalised: (B, D, h, w) -> (B, grid*grid, D)."""
    # The ratio of two average pools is the ratio of the two cell sums (the cell size cancels).
    weighted = F.adaptive_avg_pool2d(features * weights, grid)
    total_weight = F.adaptive_avg_pool2d(weights, grid)
    return _normalise_patches(weighted / (total_weight + eps))


def _normalise_patches(pooled: Tensor) -> Tensor:
    """(B, D, g, g) -> (B, g*g, D), unit length along D."""
    return F.normalize(pooled.flatten(2).transpose(1, 2), dim=-1)


def _info_nce(original: Tensor, reversed_: Tensor, anchors: Tensor, temperature: float) -> Tensor:
    """Mean over anchors, then over images with anchors, of the patch InfoNCE loss.

    ``original`` and ``reversed_`` are (B, G, D) unit vectors; ``anchors`` is (B, G) with
    at least one True somewhere.
    """
    logits = torch.bmm(original, reversed_.transpose(1, 2)) / temperature  # (B, G, G)
    # Row i: positive at column i (same patch, reversed view), negatives at the others.
    per_patch = -torch.diagonal(F.log_softmax(logits, dim=-1), dim1=1, dim2=2)  # (B, G)
    anchor_count = anchors.sum(dim=1)
    per_image = (per_patch * anchors).sum(dim=1) / anchor_count.clamp_min(1)
    return per_image[anchor_count > 0].mean()


def _zero_connected_to(*tensors: Tensor) -> Tensor:
    """A float32 scalar 0 whose graph reaches ``tensors`` (backward() works and gives zero gradients)."""
    zero = tensors[0].float().sum() * 0.0
    for tensor in tensors[1:]:
        zero = zero + tensor.float().sum() * 0.0
    return zero


def _check_hyperparameters(ratio: float, tau_fix: float, grid: int, temperature: float) -> None:
    _check_ratio_and_tau(ratio, tau_fix)
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


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
    _check_hyperparameters(ratio, tau_fix, grid, temperature)
    with _no_autocast(proj_features):
        features = F.normalize(proj_features.float(), dim=1)
        p, p_rev, selected = _prepare_probs(probs, features.shape[-2:], ratio, tau_fix)
        anchors = _anchor_patches(selected, grid)
        if not bool(anchors.any()):
            return _zero_connected_to(proj_features)
        original = _weighted_patch_features(features, p, grid, eps)
        reversed_ = _weighted_patch_features(features, p_rev, grid, eps)
        return _info_nce(original, reversed_, anchors, temperature)


def _projected_patch_features(
    features: Tensor, projection: nn.Conv2d, weights: tuple[Tensor, ...], grid: int, eps: float
) -> list[Tensor]:
    """:func:`_weighted_patch_features` of ``normalize(projection(features))``, without building it.

    A 1x1 conv is linear, z = W f + b, and per-pixel normalisation only rescales each
    pixel by s = 1 / ||z||. So the cell average of ``(z * s) * w`` equals
    ``W avg(f * s * w) + b avg(s * w)``, and ``||z||^2 = f.(G f) + 2 (W^T b).f + b.b``
    with ``G = W^T W``. Every pixel-sized tensor then has the C input channels instead
    of the D projected ones (16 vs 64 for a U-Net's last decoder map): about 7x faster
    forward+backward on CPU, equal to the direct route up to float rounding.
    """
    weight = projection.weight.float().flatten(1)  # (D, C)
    bias = projection.bias.float() if projection.bias is not None else weight.new_zeros(weight.shape[0])
    f = features.float()
    gram_f = torch.einsum("dc,bchw->bdhw", weight.T @ weight, f)
    sq_norm = (f * (gram_f + 2.0 * (weight.T @ bias)[:, None, None])).sum(dim=1, keepdim=True) + bias @ bias
    # Same floor as F.normalize; clamp at 0 first because rounding can make the quadratic form < 0.
    inv_norm = 1.0 / sq_norm.clamp_min(0.0).sqrt().clamp_min(1e-12)
    views = []
    for w in weights:
        scaled = inv_norm * w
        pooled_f = F.adaptive_avg_pool2d(f * scaled, grid)
        pooled_scale = F.adaptive_avg_pool2d(scaled, grid)
        pooled_z = torch.einsum("dc,bcij->bdij", weight, pooled_f) + bias[:, None, None] * pooled_scale
        views.append(_normalise_patches(pooled_z / (F.adaptive_avg_pool2d(w, grid) + eps)))
    return views


class AURCLLoss(nn.Module):
    """AURCL with its projection head (docs/method.md defaults).

    ``forward(features, probs)`` equals ``aurcl_loss(self.projection(features), probs, ...)``
    (tested); when ``in_channels <= proj_dim`` it is computed by the cheaper route of
    :func:`_projected_patch_features`. The
    projection head has parameters: add this module's parameters to the student's
    optimizer, and move the module to the student's device. The projection runs in
    float32 even under autocast.

    Args:
        in_channels: channels of the student's last decoder feature map.
        proj_dim: output channels of the 1x1-conv projection head.
        ratio: r of the adaptive threshold ``tau_i = max(K-th largest u, tau_fix)``.
        tau_fix: floor of that threshold.
        grid: the feature map is split into a grid x grid set of patches.
        temperature: InfoNCE temperature.
        eps: stabiliser of the weighted patch average.

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
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("proj_dim", proj_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        _check_hyperparameters(ratio, tau_fix, grid, temperature)
        self.projection = nn.Conv2d(in_channels, proj_dim, kernel_size=1)
        self.ratio = ratio
        self.tau_fix = tau_fix
        self.grid = grid
        self.temperature = temperature
        self.eps = eps

    def forward(self, features: Tensor, probs: Tensor) -> Tensor:
        """Loss for decoder ``features`` (B, C, h, w) and student probabilities ``probs`` (B, 1, H, W)."""
        if features.dim() != 4 or features.shape[1] != self.projection.in_channels:
            raise ValueError(
                f"features must have shape (B, {self.projection.in_channels}, h, w), "
                f"got {tuple(features.shape)}"
            )
        _check_inputs(features, probs)
        if self.projection.in_channels > self.projection.out_channels:
            # The shortcut works on the input channels: it only pays when they are fewer.
            with _no_autocast(features):
                projected = self.projection(features.float())
            return aurcl_loss(projected, probs, self.ratio, self.tau_fix, self.grid, self.temperature, self.eps)
        with _no_autocast(features):
            p, p_rev, selected = _prepare_probs(probs, features.shape[-2:], self.ratio, self.tau_fix)
            anchors = _anchor_patches(selected, self.grid)
            if not bool(anchors.any()):
                # Connected to the head too, so DDP-style "unused parameter" checks stay quiet.
                return _zero_connected_to(features, *self.projection.parameters())
            original, reversed_ = _projected_patch_features(
                features, self.projection, (p, p_rev), self.grid, self.eps
            )
            return _info_nce(original, reversed_, anchors, self.temperature)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, tau_fix={self.tau_fix}, grid={self.grid}, temperature={self.temperature}"


AURCL_VARIANTS = ("paper", "prototype")
"""Values of ``train.aurcl_variant``: docs/method.md's reading of the paper, or :class:`PrototypeAURCLLoss`."""


def prototype_contrast_loss(
    proj_features: Tensor,
    probs: Tensor,
    target: Tensor,
    ratio: float = 0.1,
    tau_fix: float = 0.2,
    temperature: float = 0.1,
    valid: Tensor | None = None,
) -> Tensor:
    """Uncertain pixels against foreground / background prototypes of confident pixels.

    The non-degenerate AURCL variant (docs/method.md "MEASURED FLAW"): pixels are split by the
    student's uncertainty exactly as in the paper's variant (:func:`select_uncertain` on
    ``probs``); the *confident* (unselected) pixels of the batch give two prototypes, the
    mean projected feature of those the teacher ``target`` calls foreground (> 0.5) and of
    those it calls background, L2 normalised and detached (a stop-gradient, like a memory
    bank: the anchors move towards the classes, the classes are not dragged towards them).
    Each uncertain pixel is an anchor whose positive is the prototype of its own class under
    ``target`` and whose only negative is the opposite class's prototype (no negatives from
    the same class, so position within an image cannot lower the loss); InfoNCE on cosine
    similarities over ``temperature``, averaged over the anchors of the batch.

    Args:
        proj_features: projected features (B, D, h, w); L2 normalised here.
        probs: the student's probabilities (B, 1, H, W), detached and resized to (h, w).
        target: the teacher's (fused) soft target (B, 1, H, W) in [0, 1], same handling.
        ratio, tau_fix: the uncertain-pixel selection (as the paper's variant).
        temperature: InfoNCE temperature.
        valid: optional boolean (B, 1, H, W): pixels of the student's view that came from
            inside the image (an augmentation's affine brings in zero padding). Only pixels
            wholly valid at the feature resolution are prototypes or anchors; padding would
            otherwise count as confident background.

    Returns:
        A float32 scalar; exactly 0 (connected to ``proj_features``) when there is no anchor
        or one of the two prototypes has no confident pixel.
    """
    _check_inputs(proj_features, probs)
    _check_inputs(proj_features, target)
    _check_hyperparameters(ratio, tau_fix, 1, temperature)
    with _no_autocast(proj_features):
        features = F.normalize(proj_features.float(), dim=1)
        size = features.shape[-2:]
        p = probs.detach().float()
        t = target.detach().float()
        if p.shape[-2:] != size:
            p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
        if t.shape[-2:] != size:
            t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        inside = torch.ones_like(t[:, 0], dtype=torch.bool) if valid is None else _valid_at(valid, size)
        # Padding gets certainty 0 before the ranking, so it never displaces a real pixel.
        selected = select_uncertain(p.masked_fill(~inside[:, None], 0.0), ratio, tau_fix)[:, 0] & inside  # (B, h, w)
        foreground = t[:, 0] > 0.5
        pixels = features.permute(0, 2, 3, 1)  # (B, h, w, D)
        fg_conf, bg_conf = ~selected & foreground & inside, ~selected & ~foreground & inside
        if not (bool(selected.any()) and bool(fg_conf.any()) and bool(bg_conf.any())):
            return _zero_connected_to(proj_features)
        prototypes = torch.stack([pixels[bg_conf].mean(dim=0), pixels[fg_conf].mean(dim=0)])
        prototypes = F.normalize(prototypes, dim=-1).detach()  # (2, D): background, foreground
        anchors = pixels[selected]  # (N, D)
        logits = anchors @ prototypes.T / temperature  # (N, 2)
        return F.cross_entropy(logits, foreground[selected].long())


def _valid_at(valid: Tensor, size: torch.Size) -> Tensor:
    """(B, h, w) boolean: the pixels of ``valid`` (B, 1, H, W) whose whole area at ``size`` is valid."""
    if valid.shape[-2:] == size:
        return valid[:, 0].bool()
    # Area pooling: a feature pixel counts only when every image pixel under it is valid.
    return F.adaptive_avg_pool2d(valid.float(), size)[:, 0] > 1.0 - 1e-6


class PrototypeAURCLLoss(nn.Module):
    """:func:`prototype_contrast_loss` with a 1x1-conv projection head (``train.aurcl_variant: prototype``).

    ``forward(features, probs, target, valid=None)``: decoder ``features`` (B, C, h, w), the
    student's probabilities and the teacher's aligned soft target (both (B, 1, H, W)), and the
    view's valid pixels (B, 1, H, W) when an augmentation padded the view.
    """

    def __init__(
        self, in_channels: int, proj_dim: int = 64, ratio: float = 0.1, tau_fix: float = 0.2, temperature: float = 0.1
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("proj_dim", proj_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        _check_hyperparameters(ratio, tau_fix, 1, temperature)
        self.projection = nn.Conv2d(in_channels, proj_dim, kernel_size=1)
        self.ratio, self.tau_fix, self.temperature = ratio, tau_fix, temperature

    def forward(self, features: Tensor, probs: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        """The loss; connected to the projection head even when it is 0 (DDP's unused-parameter check)."""
        with _no_autocast(features):
            projected = self.projection(features.float())
        loss = prototype_contrast_loss(projected, probs, target, self.ratio, self.tau_fix, self.temperature, valid)
        return loss + _zero_connected_to(*self.projection.parameters())

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, tau_fix={self.tau_fix}, temperature={self.temperature}"
