"""``bcp``: bidirectional copy-paste (Bai et al., "Bidirectional Copy-Paste for Semi-Supervised
Medical Image Segmentation", CVPR 2023), the paper's strongest prior method at 2.5 %.

Each step pastes a random box of 2/3 of the image side (one box for the batch, at a random
position; BCP's ``generate_mask``) in both directions:

* *unlabeled outside, labeled inside*: the target is the EMA teacher's pseudo label of the
  unlabeled image outside the box and the ground truth inside;
* *labeled outside, unlabeled inside*: ground truth outside, pseudo label inside.

The loss of each mixed image is BCE + Dice per region, the region that came from the
unlabeled image weighted ``bcp_u_weight`` (BCP's ``u_weight``, 0.5) and the labeled one 1
(BCP's ``mix_loss``). Every labeled image of the batch is the outside of one mix and every
unlabeled image the outside of another, so no labeled image is dropped. The pseudo label is
the EMA teacher's prediction on the clean image thresholded at 0.5 (BCP also keeps only the
largest connected component, for ACDC's organs; a breast lesion is one component too, but
this is left out). BCP's pre-training stage (copy-paste among labeled images, whose weights
start the self-training) is not reproduced: every method here starts from the same
initialisation under the same step budget. With ``train.augment`` the unlabeled images are
pasted in the student's view and the pseudo label is warped with them (pixels from outside
the image are left out). Under DDP every rank pastes the same box (one seed per step) and
pairs images within its slice of the batch.

Its section (``train.<knob>``): ``ema_decay`` (the teacher), ``lambda_u`` (weight of the
mixes whose outside is unlabeled, against those whose outside is labeled; BCP: 1) and
``bcp_u_weight`` >= 0. Logged parts: ``loss_s`` (labeled outside) and ``loss_u`` (unlabeled
outside).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from busseg.losses import masked_bce_dice_loss
from busseg.models import SegmentationNet
from busseg.training.config import TrainConfig
from busseg.training.methods.base import (
    Batch,
    EMATeacherConfig,
    EMATeacherMethod,
    Requirements,
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


@dataclass(frozen=True)
class BCPConfig(EMATeacherConfig):
    """``bcp``'s section: the EMA knobs and ``bcp_u_weight`` (>= 0; BCP: 0.5)."""

    bcp_u_weight: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative(self, "bcp_u_weight")


class BCP(EMATeacherMethod):
    """Bidirectional copy-paste with an EMA teacher's pseudo labels (see the module docstring)."""

    name = "bcp"

    def __init__(
        self,
        student: SegmentationNet,
        config: TrainConfig,
        static_teacher: SegmentationNet | None = None,
        *,
        section: str = "train",
    ) -> None:
        options = config.section(BCPConfig, section)
        super().__init__(student, config, None, ema_decay=options.ema_decay, section=section)
        self.options = options

    @classmethod
    def requirements(cls, config: TrainConfig, section: str = "train") -> Requirements:
        """Unlabeled batches every step; no static teacher."""
        super().requirements(config, section)
        config.section(BCPConfig, section)
        return Requirements(unlabeled=True)

    def mixed_loss(self, logits: Tensor, target: Tensor, from_unlabeled: Tensor, valid: Tensor) -> Tensor:
        """BCP's ``mix_loss``: BCE + Dice of each region; the unlabeled image's region weighted ``bcp_u_weight``."""
        labeled_part = masked_bce_dice_loss(logits, target, ~from_unlabeled)
        unlabeled_part = masked_bce_dice_loss(logits, target, from_unlabeled & valid)
        return labeled_part + self.options.bcp_u_weight * unlabeled_part

    def loss(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[Tensor, dict[str, float]]:
        unlabeled = require_unlabeled(self.name, unlabeled)
        labeled, view = self.views(labeled, unlabeled)
        x_l, y_l, x_u = labeled["image"], labeled["mask"].float(), view.images
        n_l, n_u = x_l.shape[0], x_u.shape[0]
        pseudo = (view.align(teacher_probabilities(self.ema_teacher, unlabeled["image"])) > 0.5).float()  # type: ignore[arg-type]
        valid = view.valid
        box = paste_box(*x_l.shape[-2:], self.generator).to(x_l.device)
        # Partners: unlabeled image i gets labeled image i mod n_l pasted in, and vice versa.
        l_of_u = torch.arange(n_u, device=x_l.device) % n_l
        u_of_l = torch.arange(n_l, device=x_l.device) % n_u
        # Unlabeled outside, labeled inside the box.
        mix_u = torch.where(box, x_l[l_of_u], x_u)
        target_u = torch.where(box, y_l[l_of_u], pseudo)
        # Labeled outside, unlabeled inside.
        mix_l = torch.where(box, x_u[u_of_l], x_l)
        target_l = torch.where(box, pseudo[u_of_l], y_l)
        logits = self.student(torch.cat([mix_u, mix_l]))
        logits_u, logits_l = logits[:n_u], logits[n_u:]
        loss_u = self.mixed_loss(logits_u, target_u, ~box.expand_as(target_u), valid)
        loss_l = self.mixed_loss(logits_l, target_l, box.expand_as(target_l), valid[u_of_l])
        total = loss_l + self.options.lambda_u * loss_u
        return total, {"loss_s": float(loss_l.detach()), "loss_u": float(loss_u.detach())}


methods = {BCP.name: BCP}
"""This module's entry of :data:`busseg.training.methods.METHODS`."""
