"""``bcp``: bidirectional copy-paste (Bai et al., "Bidirectional Copy-Paste for Semi-Supervised
Medical Image Segmentation", CVPR 2023), the paper's strongest prior method at 2.5 %, following
the official code (DeepMed-Lab-ECNU/BCP, ``code/ACDC_BCP_train.py``).

Two phases inside the one step budget of every method:

1. **Pre-training** (the first ``bcp_pretrain_fraction`` of the steps; BCP's ``pre_train``):
   copy-paste among labeled images only. Labeled image i gets the box of labeled image
   ``i + n/2`` (cyclically) pasted in, and the target is their ground truths mixed the same
   way; both regions weigh 1. The EMA teacher follows the student exactly (decay 0), so self-
   training starts with teacher = student, as BCP loads both from the pre-trained checkpoint.
2. **Self-training** (BCP's ``self_train``): a box of 2/3 of the image side (one box for the
   batch, at a random position; BCP's ``generate_mask``) is pasted in both directions:

   * *unlabeled outside, labeled inside*: target = the EMA teacher's pseudo label of the
     unlabeled image outside the box, the ground truth inside;
   * *labeled outside, unlabeled inside*: ground truth outside, pseudo label inside.

   Every labeled image of the batch is both the inside of one mix and the outside of another,
   and every unlabeled image is used too: with ``n_l`` labeled and ``n_u`` unlabeled images a
   step makes ``max(n_l, n_u)`` mixes of each kind, cycling the smaller set (BCP pairs them
   1:1 with equal halves). So all of a step's ground truth reaches the loss, inside and
   outside the box, as in ``supervised``. The pseudo label is the EMA teacher's prediction on
   the clean image thresholded at 0.5, reduced to its largest connected component (BCP's
   ``get_ACDC_masks(..., nms=1)``; a breast lesion is one component).

The loss of each mixed image is BCE + Dice per region, the region that came from the
unlabeled image weighted ``bcp_u_weight`` (BCP's ``u_weight``, 0.5) and the labeled one 1
(BCP's ``mix_loss``). With ``train.augment`` the unlabeled images are pasted in the student's
view and the pseudo label is warped with them (pixels from outside the image are left out).
Under DDP every rank pastes the same box (one seed per step) and pairs images within its slice
of the batch.

Deviations from the official code: BCP pre-trains and self-trains for separate iteration
counts (10k + 30k on ACDC) with SGD; here both phases share the loop's optimizer, learning-rate
schedule and step budget. The initialisation before pre-training is ``train.init`` (the same
for every method).

Its section (``train.<knob>``): ``ema_decay`` (the teacher), ``lambda_u`` (weight of the
mixes whose outside is unlabeled, against those whose outside is labeled; BCP: 1),
``bcp_u_weight`` >= 0 and ``bcp_pretrain_fraction`` in [0, 0.95]. Logged parts: ``loss_s``
(labeled outside, or the pre-training mixes) and ``loss_u`` (unlabeled outside; 0 while
pre-training).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from busseg.config import check_range
from busseg.losses import masked_bce_dice_loss
from busseg.ssl import ema_update
from busseg.training.methods.base import (
    Batch,
    EMATeacherConfig,
    StudentAverageMethod,
    check_non_negative,
    require_unlabeled,
    teacher_probabilities,
)


def paste_box(height: int, width: int, generator: torch.Generator, fraction: float = 2 / 3) -> Tensor:
    """Boolean (1, 1, H, W): a box of ``fraction`` of each side at a uniformly random position (BCP)."""
    box_h, box_w = int(height * fraction), int(width * fraction)
    top = int(torch.randint(0, height - box_h + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - box_w + 1, (1,), generator=generator))
    box = torch.zeros(1, 1, height, width, dtype=torch.bool)
    box[..., top : top + box_h, left : left + box_w] = True
    return box


def largest_component(masks: Tensor) -> Tensor:
    """Each binary mask of (B, 1, H, W) reduced to its largest 8-connected component (BCP's ``nms=1``).

    An empty mask stays empty; ties keep the component met first in raster order.
    """
    from scipy import ndimage

    out = torch.zeros_like(masks)
    structure = np.ones((3, 3), dtype=bool)
    for i, mask in enumerate(masks[:, 0].detach().cpu().numpy() > 0.5):
        labels, count = ndimage.label(mask, structure=structure)
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        keep = torch.from_numpy(labels == int(np.argmax(sizes)) + 1)
        out[i, 0] = keep.to(device=masks.device, dtype=masks.dtype)
    return out


@dataclass(frozen=True)
class BCPConfig(EMATeacherConfig):
    """``bcp``'s section: the EMA knobs, ``bcp_u_weight`` (>= 0; BCP: 0.5) and
    ``bcp_pretrain_fraction`` in [0, 0.95] (the share of the steps spent pre-training)."""

    bcp_u_weight: float
    bcp_pretrain_fraction: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative(self, "bcp_u_weight")
        check_range("bcp_pretrain_fraction", self.bcp_pretrain_fraction, 0.0, 0.95)


class BCP(StudentAverageMethod):
    """Bidirectional copy-paste with an EMA teacher's pseudo labels (see the module docstring)."""

    name = "bcp"

    options_type = BCPConfig
    options: BCPConfig

    def mixed_loss(self, logits: Tensor, target: Tensor, from_unlabeled: Tensor, valid: Tensor) -> Tensor:
        """BCP's ``mix_loss``: BCE + Dice of each region; the unlabeled image's region weighted ``bcp_u_weight``."""
        labeled_part = masked_bce_dice_loss(logits, target, ~from_unlabeled)
        unlabeled_part = masked_bce_dice_loss(logits, target, from_unlabeled & valid)
        return labeled_part + self.options.bcp_u_weight * unlabeled_part

    def pretraining(self, progress: float) -> bool:
        """Whether the step at ``progress`` belongs to the labeled copy-paste pre-training."""
        return progress < self.options.bcp_pretrain_fraction

    def pretrain_loss(self, labeled: Batch) -> tuple[Tensor, dict[str, float]]:
        """BCP's ``pre_train``: labeled image i with the box of labeled image i + n/2 pasted in."""
        labeled = self.augment.labeled(labeled, self.generator, self.shard)
        x, y = labeled["image"], labeled["mask"].float()
        n = x.shape[0]
        box = paste_box(*x.shape[-2:], self.generator).to(x.device)
        partner = (torch.arange(n, device=x.device) + n // 2) % n
        mixed = torch.where(box, x[partner], x)
        target = torch.where(box, y[partner], y)
        logits, inside = self.student(mixed), box.expand_as(target)
        # Both regions carry ground truth: weight 1 each (BCP's mix_loss with u_weight=1).
        loss = masked_bce_dice_loss(logits, target, inside) + masked_bce_dice_loss(logits, target, ~inside)
        return loss, {"loss_s": float(loss.detach()), "loss_u": 0.0}

    def pseudo_labels(self, images: Tensor) -> Tensor:
        """The EMA teacher's binary pseudo labels of clean ``images``: > 0.5, largest component."""
        return largest_component((teacher_probabilities(self.ema_teacher, images) > 0.5).float())  # type: ignore[arg-type]

    def loss(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[Tensor, dict[str, float]]:
        self._in_pretraining = self.pretraining(progress)  # read by after_optimizer_step
        if self._in_pretraining:
            return self.pretrain_loss(labeled)
        unlabeled = require_unlabeled(self.name, unlabeled)
        labeled, view = self.views(labeled, unlabeled)
        x_l, y_l, x_u = labeled["image"], labeled["mask"].float(), view.images
        n_l, n_u = x_l.shape[0], x_u.shape[0]
        pseudo = view.align(self.pseudo_labels(unlabeled["image"]))
        valid = view.valid
        box = paste_box(*x_l.shape[-2:], self.generator).to(x_l.device)
        # max(n_l, n_u) mixes of each kind, cycling the smaller set: every labeled image is the
        # inside of one mix and the outside of another, and every unlabeled image is used.
        pairs = torch.arange(max(n_l, n_u), device=x_l.device)
        li, ui = pairs % n_l, pairs % n_u
        # Unlabeled outside, labeled inside the box.
        mix_u = torch.where(box, x_l[li], x_u[ui])
        target_u = torch.where(box, y_l[li], pseudo[ui])
        # Labeled outside, unlabeled inside.
        mix_l = torch.where(box, x_u[ui], x_l[li])
        target_l = torch.where(box, pseudo[ui], y_l[li])
        logits = self.student(torch.cat([mix_u, mix_l]))
        logits_u, logits_l = logits[: len(pairs)], logits[len(pairs) :]
        loss_u = self.mixed_loss(logits_u, target_u, ~box.expand_as(target_u), valid[ui])
        loss_l = self.mixed_loss(logits_l, target_l, box.expand_as(target_l), valid[ui])
        total = loss_l + self.options.lambda_u * loss_u
        return total, {"loss_s": float(loss_l.detach()), "loss_u": float(loss_u.detach())}

    def after_optimizer_step(self) -> None:
        """EMA update; while pre-training the teacher copies the student (BCP starts both from it)."""
        if self.ema_teacher is not None:
            pretraining = getattr(self, "_in_pretraining", False)
            ema_update(self.ema_teacher, self.student, 0.0 if pretraining else self.ema_decay)


methods = {BCP.name: BCP}
"""This module's entry of :data:`busseg.training.methods.METHODS`."""
