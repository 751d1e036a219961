"""Data augmentation for greyscale ultrasound, on batched tensors (``train.augment``).

Two views, each with its own random parameters per image:

* **weak**: a random horizontal flip and a small affine (rotation, isotropic scale,
  translation). Geometric only, so it is applied with the *same* parameters to the image,
  its mask, and a teacher's probability map (:meth:`View.align`).
* **strong**: the weak view plus intensity changes that suit B-mode ultrasound rather than
  RGB photographs: gamma, contrast, brightness, multiplicative (speckle-like) noise and a
  Gaussian blur. Intensity changes move no pixel, so targets need no change for them.

``train.augment`` (and ``warmup.augment``) selects what a run uses:

``none``    clean images everywhere (the paper's setting);
``weak``    labeled batches and the student's view of unlabeled images get the weak view;
``strong``  labeled batches get the weak view, the student's view of unlabeled images the
            strong one. Teachers always see the clean image, and their prediction is warped
            with the student's affine so that the target lines up with the student's view;
            pixels that the warp moved in from outside the image are left out of the
            unlabeled loss (:attr:`View.valid`).

Why not kornia.augmentation or torchvision.transforms.v2: both draw their random
parameters from torch's global generator (torchvision v2 also draws one parameter set per
call, i.e. per batch, not per image). This project's runs are reproducible and resumable
because every step's randomness comes from a seed keyed by (seed, optimizer step) (see
:meth:`busseg.training.methods.base.TrainingMethod.begin_step`); an explicit
``torch.Generator`` gives that directly, and drawing the parameters of the global batch on
every DDP rank (each using its slice) keeps N ranks equal to one process. The geometric part is one ``affine_grid`` +
``grid_sample`` call (the same primitive kornia's ``warp_affine`` uses); the intensity part is a
few tensor operations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from busseg.errors import ConfigError
from busseg.training.config import AUGMENT_MODES

Shard = tuple[int, int]
"""``(rank, world_size)`` of a DDP run: random parameters are drawn for the global batch and sliced."""


def check_mode(mode: str, key: str = "train.augment") -> None:
    """Raise :class:`ConfigError` naming ``key`` when ``mode`` is not one of :data:`AUGMENT_MODES`."""
    if mode not in AUGMENT_MODES:
        raise ConfigError(key, f"unknown augmentation '{mode}'; available: {', '.join(AUGMENT_MODES)}")


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges of the random parameters (fixed here; the switch is ``train.augment``).

    Geometric: ``flip_p`` probability of a horizontal flip (lesions have no handedness);
    ``rotation`` maximum angle in degrees; ``scale`` range; ``translate`` maximum shift as a
    fraction of the image side. Kept small: the probe's near field (top rows) and the
    depth direction are meaningful, so no vertical flips and no large rotations.
    Intensity (strong view): ``gamma`` range; ``contrast`` factor range around the image
    mean; ``brightness`` maximum additive shift; ``speckle`` maximum standard deviation of
    the multiplicative noise ``x * (1 + s * n)``; ``blur_p`` probability of a Gaussian blur
    with sigma in ``blur_sigma`` pixels.
    """

    flip_p: float = 0.5
    rotation: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.0625
    gamma: tuple[float, float] = (0.7, 1.5)
    contrast: tuple[float, float] = (0.75, 1.25)
    brightness: float = 0.1
    speckle: float = 0.15
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.2)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def sample_affine(n: int, generator: torch.Generator, spec: AugmentSpec = AugmentSpec(), shard: Shard = (0, 1)) -> Tensor:
    """``n`` random sampling matrices (n, 2, 3) for :func:`warp` (float32, on the CPU).

    Each matrix maps output coordinates (normalised to [-1, 1]) to the input coordinates
    to sample: flip, rotation, scale and translation of the weak view. With ``shard =
    (rank, world_size)`` the matrices of the whole global batch (``n * world_size``) are
    drawn and this rank's slice is returned: every rank draws the same numbers, so N ranks
    augment each image exactly as one process would (the loop seeds every rank alike).
    """
    rank, world = shard
    if world > 1:
        return sample_affine(n * world, generator, spec)[rank * n : (rank + 1) * n]
    flip = torch.where(torch.rand(n, generator=generator) < spec.flip_p, -1.0, 1.0)
    angle = _uniform(n, -spec.rotation, spec.rotation, generator) * math.pi / 180.0
    # Sampling with 1/s zooms the content by s.
    inv_scale = 1.0 / _uniform(n, spec.scale[0], spec.scale[1], generator)
    shift = _uniform(2 * n, -spec.translate, spec.translate, generator).view(n, 2) * 2.0  # [-1, 1] spans 2
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    theta = torch.zeros(n, 2, 3)
    # Flip the input x axis (first column) after rotation and scale.
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * flip, -sin, shift[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * flip, cos, shift[:, 1]
    return theta


def identity_affine(n: int) -> Tensor:
    """``n`` identity sampling matrices: :func:`warp` returns its input unchanged."""
    return torch.eye(2, 3).expand(n, 2, 3).clone()


def warp(x: Tensor, theta: Tensor, mode: str = "bilinear") -> Tensor:
    """Resample ``x`` (B, C, H, W) with the sampling matrices ``theta`` (B, 2, 3); zeros outside.

    Images, masks and probability maps of one batch are warped alike by passing the same
    ``theta``; values stay within the input's range (bilinear interpolation is convex).
    """
    if x.dim() != 4 or theta.shape != (x.shape[0], 2, 3):
        raise ValueError(f"expected x (B, C, H, W) and theta (B, 2, 3), got {tuple(x.shape)} and {tuple(theta.shape)}")
    theta = theta.to(device=x.device, dtype=torch.float32)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False).to(x.dtype)


def valid_region(theta: Tensor, like: Tensor) -> Tensor:
    """Boolean (B, 1, H, W): the pixels of a :func:`warp` output interpolated from inside the image only.

    Conservative: a border pixel that bilinear interpolation mixed with the zero padding is
    left out too, so a kept pixel's target is never diluted by the outside.
    """
    ones = torch.ones(like.shape[0], 1, *like.shape[-2:], device=like.device)
    return warp(ones, theta) > 0.999


def _gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Per-image Gaussian blur of (B, 1, H, W) with standard deviations ``sigma`` (B,) (reflect padding)."""
    radius = max(1, int(math.ceil(3.0 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
    b = x.shape[0]
    # One grouped convolution over the batch: images as channels, one kernel per image.
    y = F.pad(x.float().reshape(1, b, *x.shape[-2:]), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(b, 1, 1, -1), groups=b)
    y = F.conv2d(y, kernel.view(b, 1, -1, 1), groups=b)
    return y.view_as(x).to(x.dtype)


def intensity(
    x: Tensor, generator: torch.Generator, spec: AugmentSpec = AugmentSpec(), shard: Shard = (0, 1)
) -> Tensor:
    """The strong view's intensity changes of images ``x`` (B, 1, H, W) in [0, 1]; the result is in [0, 1].

    Per image: gamma, contrast around the image mean, brightness, multiplicative noise, and
    (with probability ``blur_p``) a Gaussian blur. Random numbers come from ``generator``
    (CPU) and are moved to ``x``'s device; with ``shard`` they are drawn for the global batch
    and this rank's slice is used (see :func:`sample_affine`).
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected greyscale images (B, 1, H, W), got {tuple(x.shape)}")
    n, device = x.shape[0], x.device
    rank, world = shard
    mine = slice(rank * n, (rank + 1) * n)

    def per_image(low: float, high: float) -> Tensor:
        return _uniform(n * world, low, high, generator)[mine].to(device).view(n, 1, 1, 1)

    gamma = per_image(*spec.gamma)
    contrast = per_image(*spec.contrast)
    brightness = per_image(-spec.brightness, spec.brightness)
    speckle = per_image(0.0, spec.speckle)
    noise = torch.randn((n * world, *x.shape[1:]), generator=generator)[mine].to(device)
    blur = (torch.rand(n * world, generator=generator) < spec.blur_p)[mine]
    sigma = _uniform(n * world, *spec.blur_sigma, generator)[mine]
    y = x.float().clamp(0.0, 1.0) ** gamma
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = ((y - mean) * contrast + mean + brightness).clamp(0.0, 1.0)
    y = (y * (1.0 + speckle * noise)).clamp(0.0, 1.0)
    if bool(blur.any()):
        blurred = _gaussian_blur(y, sigma.to(device))
        y = torch.where(blur.to(device).view(n, 1, 1, 1), blurred, y)
    return y.clamp(0.0, 1.0).to(x.dtype)


def cutmix_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    shard: Shard = (0, 1),
) -> Tensor:
    """Boolean (n, 1, H, W) CutMix masks: with probability ``p`` one random box per image (else empty).

    UniMatch's recipe: box area a uniform fraction in ``area`` of the image, aspect ratio in
    [0.3, 1/0.3], placed uniformly so that it fits. ``shard``: as :func:`sample_affine`.
    """
    rank, world = shard
    if world > 1:
        return cutmix_boxes(n * world, height, width, generator, p, area)[rank * n : (rank + 1) * n]
    masks = torch.zeros(n, 1, height, width, dtype=torch.bool)
    use = torch.rand(n, generator=generator) < p
    fraction = _uniform(n, *area, generator)
    log_ratio = _uniform(n, math.log(0.3), math.log(1 / 0.3), generator)
    corners = torch.rand(n, 2, generator=generator)
    for i in range(n):
        if not use[i]:
            continue
        ratio = math.exp(float(log_ratio[i]))
        box_h = min(height, max(1, int(round(math.sqrt(float(fraction[i]) * height * width / ratio)))))
        box_w = min(width, max(1, int(round(math.sqrt(float(fraction[i]) * height * width * ratio)))))
        top = int(float(corners[i, 0]) * (height - box_h + 1))
        left = int(float(corners[i, 1]) * (width - box_w + 1))
        masks[i, :, top : top + box_h, left : left + box_w] = True
    return masks


@dataclass
class View:
    """The student's view of a batch: the images and the affine that made them.

    :meth:`align` warps anything computed on the clean images (a teacher's probabilities)
    with the same affine; :attr:`valid` marks the pixels that came from inside the image
    (all True without a geometric change).
    """

    images: Tensor
    theta: Tensor | None = None

    def align(self, target: Tensor) -> Tensor:
        """``target`` (computed on the clean images) in this view's geometry."""
        return target if self.theta is None else warp(target, self.theta)

    @property
    def valid(self) -> Tensor:
        """Boolean (B, 1, H, W): pixels with a real counterpart in the clean image."""
        if self.theta is None:
            return torch.ones(self.images.shape[0], 1, *self.images.shape[-2:], dtype=torch.bool, device=self.images.device)
        return valid_region(self.theta, self.images)


class Augmenter:
    """Applies ``train.augment`` (``none``, ``weak`` or ``strong``) to a method's batches."""

    def __init__(self, mode: str = "none", spec: AugmentSpec = AugmentSpec(), key: str = "train.augment") -> None:
        check_mode(mode, key)
        self.mode = mode
        self.spec = spec

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def labeled(self, batch: dict[str, Tensor], generator: torch.Generator, shard: Shard = (0, 1)) -> dict[str, Tensor]:
        """A labeled batch in the weak view (image, mask and any per-pixel ``weight`` warped
        alike; a weight pixel that mixed with the outside counts less); unchanged under ``none``."""
        if not self.enabled:
            return batch
        theta = sample_affine(batch["image"].shape[0], generator, self.spec, shard)
        out = {**batch, "image": warp(batch["image"], theta), "mask": warp(batch["mask"], theta)}
        if "weight" in batch:
            out["weight"] = warp(batch["weight"], theta)
        return out

    def student_view(
        self, images: Tensor, generator: torch.Generator, strong: bool | None = None, shard: Shard = (0, 1)
    ) -> View:
        """The student's view of unlabeled ``images``: weak or strong as configured (``strong`` overrides)."""
        if not self.enabled:
            return View(images)
        theta = sample_affine(images.shape[0], generator, self.spec, shard)
        view = warp(images, theta)
        use_intensity = self.mode == "strong" if strong is None else strong
        if use_intensity:
            view = intensity(view, generator, self.spec, shard)
        return View(view, theta)
