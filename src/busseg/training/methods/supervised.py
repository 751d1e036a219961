"""``supervised``: labeled images only, BCE + Dice. With ``label_ratio: 1.0`` it is the upper
bound; the warm-up stage trains the static teacher with it on pseudo labels. No knobs of
its own (the loop's ``train.*`` keys are all it reads; ``augment`` other than ``none`` trains on
the weak view of each labeled batch)."""
from __future__ import annotations

import torch

from busseg.losses import bce_dice_loss, masked_bce_dice_loss
from busseg.training.methods.base import Batch, TrainingMethod


class Supervised(TrainingMethod):
    """Labeled images only, BCE + Dice; over the pixels a batch's ``weight`` keeps, when it has one
    (a refinement round's warm-up on labels with a per-pixel certainty)."""

    name = "supervised"

    def loss(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        labeled = self.augment.labeled(labeled, self.generator, self.shard)
        logits = self.student(labeled["image"])
        if "weight" in labeled:
            loss = masked_bce_dice_loss(logits, labeled["mask"], labeled["weight"])
        else:
            loss = bce_dice_loss(logits, labeled["mask"])
        return loss, {"loss_s": float(loss.detach())}


methods = {Supervised.name: Supervised}
"""This module's entry of :data:`busseg.training.methods.METHODS`."""
