"""``mean_teacher`` (Tarvainen & Valpola, 2017): the classic semi-supervised baseline.

Its section (``train.<knob>``): ``ema_decay`` and ``lambda_u`` (:class:`EMATeacherConfig`),
``rampup_epochs``, the length of the sigmoid ramp-up of the consistency weight, and
``confidence_threshold`` (pixels whose teacher probability is less confident are left out of
the consistency loss). With ``train.augment`` the student sees a perturbed view and the
teacher the clean image, its prediction warped into the student's view (SSL4MIS-style
perturbation; without it the student only chases its own lagged copy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from busseg.losses import bce_dice_loss
from busseg.training.methods.base import (
    Batch,
    EMATeacherConfig,
    StudentAverageMethod,
    check_non_negative,
    check_unit_interval,
    confident,
    require_unlabeled,
    teacher_probabilities,
)


def sigmoid_rampup(progress: float, epochs: int, rampup_epochs: float) -> float:
    """Ramp-up weight ``exp(-5 (1 - t)^2)`` with ``t = min(1, progress * epochs / rampup_epochs)``.

    The classic consistency ramp-up of Laine & Aila (2017) and Tarvainen & Valpola
    (2017): about 0.0067 at the start, 1 once ``rampup_epochs`` epochs are done.
    ``rampup_epochs = 0`` means no ramp-up (always 1).

    Args:
        progress: fraction of training done, in [0, 1].
        epochs: total number of epochs of the run.
        rampup_epochs: length of the ramp-up in epochs (may be fractional).
    """
    if rampup_epochs <= 0:
        return 1.0
    t = min(1.0, max(0.0, progress * epochs / rampup_epochs))
    return math.exp(-5.0 * (1.0 - t) ** 2)


@dataclass(frozen=True)
class MeanTeacherConfig(EMATeacherConfig):
    """``mean_teacher``'s section: the EMA knobs, ``rampup_epochs`` (>= 0, may be fractional) and
    ``confidence_threshold`` in [0, 1] (0: every pixel counts)."""

    rampup_epochs: float
    confidence_threshold: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative(self, "rampup_epochs")
        check_unit_interval(self, "confidence_threshold")


class MeanTeacher(StudentAverageMethod):
    """Mean teacher: ``L = L_s + w(t) * MSE(sigmoid(student(x_u)), sigmoid(teacher(x_u)))``.

    ``w(t) = lambda_u * sigmoid_rampup(progress, epochs, rampup_epochs)``. Under
    ``train.augment: none`` (the paper's setting) the consistency comes from the difference
    between the student and its average alone; with ``weak`` / ``strong`` the student sees
    a perturbed view (MSE over the pixels inside the warped image and above
    ``confidence_threshold``).
    """

    name = "mean_teacher"

    options_type = MeanTeacherConfig
    options: MeanTeacherConfig

    def consistency_weight(self, progress: float) -> float:
        """``lambda_u`` times the sigmoid ramp-up at ``progress``."""
        return self.options.lambda_u * sigmoid_rampup(progress, self.config.epochs, self.options.rampup_epochs)

    def loss(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[Tensor, dict[str, float]]:
        unlabeled = require_unlabeled(self.name, unlabeled)
        labeled, view = self.views(labeled, unlabeled)
        logits_l, logits_u, _ = self.student_outputs(labeled, {"image": view.images})
        loss_s = bce_dice_loss(logits_l, labeled["mask"])
        # The teacher sees the clean image; its prediction is moved into the student's view.
        target = view.align(teacher_probabilities(self.ema_teacher, unlabeled["image"]))  # type: ignore[arg-type]
        probs_u = torch.sigmoid(logits_u.float())
        if view.theta is None and self.options.confidence_threshold <= 0.5:
            loss_u = F.mse_loss(probs_u, target)
        else:
            keep = (view.valid & confident(target, self.options.confidence_threshold)).float()
            loss_u = (((probs_u - target) ** 2) * keep).sum() / keep.sum().clamp_min(1.0)
        weight = self.consistency_weight(progress)
        parts = {"loss_s": float(loss_s.detach()), "loss_u": float(loss_u.detach()), "weight_u": weight}
        return loss_s + weight * loss_u, parts


methods = {MeanTeacher.name: MeanTeacher}
"""This module's entry of :data:`busseg.training.methods.METHODS`."""
