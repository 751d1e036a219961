"""``unimatch``: UniMatch (Yang et al., "Revisiting Weak-to-Strong Consistency in Semi-Supervised
Semantic Segmentation", CVPR 2023), binary version of its medical (ACDC) recipe.

Per step, for the unlabeled images:

* a weak view ``x_w`` (``train.augment`` weak geometry; the clean image under ``none``) is
  segmented by the student itself, in the same pass as the labeled images; its detached
  prediction is the pseudo label (``p > 0.5``) and its confidence ``max(p, 1 - p)``;
* the same pass decodes ``x_w``'s encoder features once more after channel dropout
  (``unimatch_dropout``, 0.5): the feature-perturbation stream, trained towards the pseudo label;
* two strong views: independent intensity changes of ``x_w`` (gamma, contrast, speckle,
  blur: :func:`busseg.training.augment.intensity`), each with its own CutMix box taken from
  another image of the batch (pseudo label and confidence mixed alike).

Unlabeled losses are BCE + Dice over the pixels whose confidence reaches
``unimatch_threshold`` (0.95), and UniMatch's weights:
``L = (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2``. The strong views share ``x_w``'s
geometry, so the pseudo label needs no warping; pixels that the weak affine brought in
from outside the image are left out.

Differences from the paper: the CutMix partner is another image of the same unlabeled
batch (UniMatch draws a second unlabeled batch; under DDP, of the rank's slice), and there
is no colour jitter or grey-scale conversion (greyscale ultrasound; see
:mod:`busseg.training.augment`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from busseg.config import check_range
from busseg.errors import ConfigError
from busseg.losses import bce_dice_loss, masked_bce_dice_loss
from busseg.models import SegmentationNet
from busseg.training.augment import cutmix_boxes, intensity
from busseg.training.config import TrainConfig
from busseg.training.methods.base import Batch, Requirements, TrainingMethod, require_unlabeled

#: UniMatch's weights of the two strong views and of the feature-perturbation stream.
STRONG_WEIGHT, FP_WEIGHT = 0.25, 0.5


@dataclass(frozen=True)
class UniMatchConfig:
    """``unimatch``'s section: ``unimatch_threshold`` in [0, 1] (0.95) and ``unimatch_dropout`` in [0, 1) (0.5)."""

    unimatch_threshold: float
    unimatch_dropout: float

    def __post_init__(self) -> None:
        check_range("unimatch_threshold", self.unimatch_threshold, 0.0, 1.0)
        check_range("unimatch_dropout", self.unimatch_dropout, 0.0, 1.0)
        if self.unimatch_dropout == 1.0:  # every feature dropped: the perturbed stream sees nothing
            raise ConfigError("unimatch_dropout", "must be below 1, got 1.0")


class UniMatch(TrainingMethod):
    """UniMatch: weak-to-strong consistency with two strong views and feature perturbation."""

    name = "unimatch"

    def __init__(
        self,
        student: SegmentationNet,
        config: TrainConfig,
        static_teacher: SegmentationNet | None = None,
        *,
        section: str = "train",
    ) -> None:
        self.options = config.section(UniMatchConfig, section)
        # No teacher network at all: the student's own weak-view prediction is the target.
        super().__init__(student, config, None, section=section)

    @classmethod
    def requirements(cls, config: TrainConfig, section: str = "train") -> Requirements:
        """Unlabeled batches every step; no static teacher."""
        super().requirements(config, section)
        config.section(UniMatchConfig, section)
        return Requirements(unlabeled=True)

    def strong_views(self, weak: Tensor, pseudo: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One strong view of ``weak``: intensity changes plus CutMix with the next image of the batch.

        Returns the view, its pseudo label and its mask of kept pixels (both mixed like the image).
        """
        generator, shard = self.generator, self.shard
        strong = intensity(weak, generator, self.augment.spec, shard)
        box = cutmix_boxes(weak.shape[0], *weak.shape[-2:], generator, shard=shard).to(weak.device)
        mixed = torch.where(box, strong.roll(1, dims=0), strong)
        return mixed, torch.where(box, pseudo.roll(1, dims=0), pseudo), torch.where(box, keep.roll(1, dims=0), keep)

    def loss(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[Tensor, dict[str, float]]:
        unlabeled = require_unlabeled(self.name, unlabeled)
        generator, shard = self.generator, self.shard
        labeled = self.augment.labeled(labeled, generator, shard)
        weak = self.augment.student_view(unlabeled["image"], generator, strong=False, shard=shard)
        n_l = labeled["image"].shape[0]
        logits, logits_fp = self.student.forward_feature_perturbation(
            torch.cat([labeled["image"], weak.images]), n_l, self.options.unimatch_dropout
        )
        logits_l, logits_w = logits[:n_l], logits[n_l:]
        with torch.no_grad():
            probs_w = torch.sigmoid(logits_w.detach().float())
            pseudo = (probs_w > 0.5).float()
            keep = (torch.maximum(probs_w, 1.0 - probs_w) >= self.options.unimatch_threshold) & weak.valid
        s1, pseudo_1, keep_1 = self.strong_views(weak.images, pseudo, keep)
        s2, pseudo_2, keep_2 = self.strong_views(weak.images, pseudo, keep)
        logits_s1, logits_s2 = self.student(torch.cat([s1, s2])).chunk(2)
        loss_x = bce_dice_loss(logits_l, labeled["mask"])
        loss_s1 = masked_bce_dice_loss(logits_s1, pseudo_1, keep_1)
        loss_s2 = masked_bce_dice_loss(logits_s2, pseudo_2, keep_2)
        loss_fp = masked_bce_dice_loss(logits_fp, pseudo, keep)
        total = (loss_x + STRONG_WEIGHT * (loss_s1 + loss_s2) + FP_WEIGHT * loss_fp) / 2.0
        parts = {
            "loss_s": float(loss_x.detach()),
            "loss_u": float((0.5 * (loss_s1 + loss_s2)).detach()),
            "loss_fp": float(loss_fp.detach()),
            "confident": float(keep.float().mean()),
        }
        return total, parts


methods = {UniMatch.name: UniMatch}
"""This module's entry of :data:`busseg.training.methods.METHODS`."""
