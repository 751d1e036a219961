"""``dual_teacher``: the paper's dual-teacher semi-supervised method (docs/method.md).

``L = L_s + lambda_u * L_u + lambda_c * L_c`` with L_s = BCE + Dice on labeled images,
L_u = BCE + Dice of the student on unlabeled images against the UEWF fusion of a static
teacher T_A (trained on pseudo labels by the warm-up stage, frozen, held outside the
module tree) and the EMA teacher T_B, and L_c = AURCL on the student's last decoder
features.

Its section (``train.<knob>``, :class:`DualTeacherConfig`): the EMA knobs (``ema_decay``,
``lambda_u``), ``lambda_c``, the ablation switches ``use_static_teacher``,
``use_ema_teacher``, ``use_uewf``, ``use_aurcl`` (each removes one component; docs/method.md, "the
ablation ladder"), ``uewf_kernel`` and the AURCL knobs ``aurcl_*``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from busseg.config import check_range
from busseg.errors import ConfigError, TrainingError
from busseg.losses import bce_dice_loss, masked_bce_dice_loss
from busseg.models import SegmentationNet
from busseg.ssl import AURCL_VARIANTS, AURCLLoss, PrototypeAURCLLoss, freeze, uewf
from busseg.training.config import TrainConfig
from busseg.training.methods.mean_teacher import sigmoid_rampup
from busseg.training.methods.base import (
    Batch,
    EMATeacherConfig,
    EMATeacherMethod,
    Requirements,
    check_non_negative,
    check_positive_int,
    check_unit_interval,
    confident,
    require_unlabeled,
    teacher_probabilities,
)


@dataclass(frozen=True)
class DualTeacherConfig(EMATeacherConfig):
    """``dual_teacher``'s section.

    * ``lambda_c``: weight of AURCL (>= 0; docs/method.md: 0.5);
    * ``use_static_teacher`` / ``use_ema_teacher``: with one teacher off, the target is the
      other teacher's probability (at least one must stay on);
    * ``use_uewf``: False fuses two teachers by the plain average ``(p_A + p_B) / 2``;
      ``uewf_kernel`` (>= 1) is UEWF's smoothing window, 1 the pixel-wise UEWF;
    * ``use_aurcl``: False drops L_c and the projection head (no parameters, no ``loss_c``
      in the logged parts);
    * ``aurcl_ratio`` (0, 1], ``aurcl_tau_fix`` [0, 1], ``aurcl_grid`` >= 1,
      ``aurcl_temperature`` (0, 100], ``aurcl_proj_dim`` >= 1: AURCL (docs/method.md DECISIONS);
      ``aurcl_variant``: ``paper`` (docs/method.md's reading, patch views) or ``prototype``
      (uncertain pixels against confident fg/bg prototypes, :class:`busseg.ssl.PrototypeAURCLLoss`);
    * ``rampup_epochs`` >= 0: sigmoid ramp-up of lambda_u (0: full weight from step 0, the paper);
    * ``confidence_threshold`` in [0, 1]: target pixels with ``max(y, 1 - y)`` below it are
      left out of L_u (0: every pixel);
    * ``static_anneal`` in [0, 1]: the static teacher's fusion weight falls linearly from 1 to
      0 over this fraction of the run, then the EMA teacher alone gives the target (0: constant).
    """

    lambda_c: float
    use_static_teacher: bool
    use_ema_teacher: bool
    use_uewf: bool
    uewf_kernel: int
    use_aurcl: bool
    aurcl_ratio: float
    aurcl_tau_fix: float
    aurcl_grid: int
    aurcl_temperature: float
    aurcl_proj_dim: int
    aurcl_variant: str
    rampup_epochs: float
    confidence_threshold: float
    static_anneal: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative(self, "lambda_c", "rampup_epochs")
        check_unit_interval(self, "confidence_threshold", "static_anneal")
        if self.aurcl_variant not in AURCL_VARIANTS:
            raise ConfigError(
                "aurcl_variant", f"unknown variant '{self.aurcl_variant}'; available: {', '.join(AURCL_VARIANTS)}"
            )
        if self.static_anneal > 0 and not (self.use_static_teacher and self.use_ema_teacher):
            raise ConfigError(
                "static_anneal", "fades the static teacher out in favour of the EMA teacher: needs both teachers on"
            )
        check_positive_int(self, "uewf_kernel", "aurcl_grid", "aurcl_proj_dim")
        check_range("aurcl_ratio", self.aurcl_ratio, 0.0, 1.0, low_open=True)
        check_range("aurcl_tau_fix", self.aurcl_tau_fix, 0.0, 1.0)
        check_range("aurcl_temperature", self.aurcl_temperature, 0.0, 100.0, low_open=True)
        if not (self.use_static_teacher or self.use_ema_teacher):
            raise ConfigError(
                "use_static_teacher/use_ema_teacher",
                "dual_teacher needs at least one teacher; both are false "
                "(for training on labeled images only use train.method=supervised)",
            )


STATIC_MEMORY_BYTES = 1 << 30
"""At most this many bytes of remembered static-teacher probabilities (1 GiB: 16k images at
128 px, 5k at 224 px, on the training device)."""


class DualTeacher(EMATeacherMethod):
    """The paper's dual-teacher SSL: static teacher + EMA teacher, UEWF fusion, AURCL.

    The static teacher is frozen here (eval mode, no gradients) and held outside the
    module tree, so it is neither optimised nor saved; the AURCL projection head is
    a trained sub-module.
    """

    name = "dual_teacher"

    def __init__(
        self,
        student: SegmentationNet,
        config: TrainConfig,
        static_teacher: SegmentationNet | None = None,
        *,
        section: str = "train",
    ) -> None:
        options = config.section(DualTeacherConfig, section)
        if options.use_static_teacher:
            if static_teacher is None:
                raise TrainingError(
                    "dual_teacher needs the static teacher (train.use_static_teacher is true) but none was given; "
                    "run the warmup stage first (dvc repro warmup), or set train.use_static_teacher=false"
                )
            freeze(static_teacher)
        else:
            static_teacher = None
        super().__init__(
            student,
            config,
            static_teacher,
            ema_decay=options.ema_decay,
            use_ema_teacher=options.use_ema_teacher,
            section=section,
        )
        self.options = options
        # The static teacher's probabilities per unlabeled image (static_probabilities); not
        # state: a resumed run rebuilds it with the same values.
        self._static_memory: dict[int, Tensor] = {}
        self.aurcl: AURCLLoss | PrototypeAURCLLoss | None = None
        if options.use_aurcl and options.aurcl_variant == "paper":
            self.aurcl = AURCLLoss(
                in_channels=student.feature_channels,
                proj_dim=options.aurcl_proj_dim,
                ratio=options.aurcl_ratio,
                tau_fix=options.aurcl_tau_fix,
                grid=options.aurcl_grid,
                temperature=options.aurcl_temperature,
            )
        elif options.use_aurcl:
            self.aurcl = PrototypeAURCLLoss(
                in_channels=student.feature_channels,
                proj_dim=options.aurcl_proj_dim,
                ratio=options.aurcl_ratio,
                tau_fix=options.aurcl_tau_fix,
                temperature=options.aurcl_temperature,
            )

    @classmethod
    def requirements(cls, config: TrainConfig, section: str = "train") -> Requirements:
        """Unlabeled batches; the static teacher (and the init rule) as the switches say."""
        options = config.section(DualTeacherConfig, section)
        return Requirements(unlabeled=True, static_teacher=options.use_static_teacher)

    def static_weight(self, progress: float) -> float:
        """The static teacher's fusion weight at ``progress``: 1, or falling linearly to 0 (``static_anneal``)."""
        if self.options.static_anneal <= 0:
            return 1.0
        return max(0.0, 1.0 - progress / self.options.static_anneal)

    def unlabeled_weight(self, progress: float) -> float:
        """``lambda_u`` times the sigmoid ramp-up over ``rampup_epochs`` (mean_teacher's schedule)."""
        return self.options.lambda_u * sigmoid_rampup(progress, self.config.epochs, self.options.rampup_epochs)

    def fused_target(self, p_a: Tensor | None, p_b: Tensor | None, static_weight: float = 1.0) -> Tensor:
        """The soft target ``y_F`` from the static (``p_a``) and EMA (``p_b``) teachers' probabilities.

        UEWF (``train.uewf_kernel``) when ``train.use_uewf``, else the average; the static
        teacher's weight is multiplied by ``static_weight`` (1: docs/method.md). A switched-off
        teacher is passed as None and the other one's probabilities are the target.
        """
        if p_a is None or p_b is None:
            if p_a is None and p_b is None:
                raise ValueError("fused_target needs at least one teacher's probabilities")
            return (p_a if p_b is None else p_b).float()  # type: ignore[union-attr]
        if self.options.use_uewf:
            return uewf(p_a, p_b, kernel=self.options.uewf_kernel, weight_a=static_weight)
        if static_weight == 1.0:
            return 0.5 * (p_a.float() + p_b.float())
        return (static_weight * p_a.float() + p_b.float()) / (1.0 + static_weight)

    def static_probabilities(self, images: Tensor, index: Tensor | None = None) -> Tensor:
        """The frozen static teacher's probabilities for ``images``, remembered per image ``index``.

        The teacher is frozen and sees the clean image, so an image's probabilities never
        change: a batch whose images were all seen before is served from memory (10 % of a
        default step). Missing images are computed with the whole batch, as without memory,
        and a convolution computes each image of a batch on its own, so the values are the
        same bits either way. Memory is bounded (:data:`STATIC_MEMORY_BYTES`); beyond it,
        new images are computed every time.
        """
        assert self.static_teacher is not None
        if index is None:
            return teacher_probabilities(self.static_teacher, images)
        keys = index.tolist()
        if all(key in self._static_memory for key in keys):
            return torch.stack([self._static_memory[key] for key in keys])
        probs = teacher_probabilities(self.static_teacher, images)
        capacity = STATIC_MEMORY_BYTES // probs[0].nbytes  # every image of a run has the same size
        for key, prob in zip(keys, probs):
            if key not in self._static_memory and len(self._static_memory) < capacity:
                self._static_memory[key] = prob.clone()
        return probs

    def teacher_target(self, images: Tensor, progress: float = 0.0, index: Tensor | None = None) -> Tensor:
        """Fused soft target of the switched-on teachers for unlabeled ``images`` (clean, unaugmented).

        ``index``: the images' positions in the unlabeled set (the batch's ``index``), which
        lets the static teacher's probabilities be remembered (:meth:`static_probabilities`).
        """
        static = self.static_teacher
        weight = self.static_weight(progress)
        if weight == 0.0 and self.ema_teacher is not None:
            static = None  # annealed out: skip its forward pass
        p_a = self.static_probabilities(images, index) if static is not None else None
        p_b = teacher_probabilities(self.ema_teacher, images) if self.ema_teacher is not None else None
        return self.fused_target(p_a, p_b, weight)

    def loss(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[Tensor, dict[str, float]]:
        unlabeled = require_unlabeled(self.name, unlabeled)
        labeled, view = self.views(labeled, unlabeled)
        logits_l, logits_u, features_u = self.student_outputs(labeled, {"image": view.images})
        loss_s = bce_dice_loss(logits_l, labeled["mask"])
        # Teachers see the clean image; the target is warped into the student's view.
        target = view.align(self.teacher_target(unlabeled["image"], progress, unlabeled.get("index")))
        threshold = self.options.confidence_threshold
        if view.theta is None and threshold <= 0.5:
            loss_u = bce_dice_loss(logits_u, target)  # every pixel counts (docs/method.md)
        else:
            keep = view.valid & confident(target, threshold)
            loss_u = masked_bce_dice_loss(logits_u, target, keep)
        weight_u = self.unlabeled_weight(progress)
        total = loss_s + weight_u * loss_u
        parts = {"loss_s": float(loss_s.detach()), "loss_u": float(loss_u.detach()), "weight_u": weight_u}
        if self.aurcl is not None:
            # AURCL detaches the probabilities itself: its gradient reaches the features only.
            probs_u = torch.sigmoid(logits_u.float())
            if isinstance(self.aurcl, PrototypeAURCLLoss):
                # Padding the augmentation brought in is neither a prototype nor an anchor.
                loss_c = self.aurcl(features_u, probs_u, target, None if view.theta is None else view.valid)
            else:
                loss_c = self.aurcl(features_u, probs_u)
            total = total + self.options.lambda_c * loss_c
            parts["loss_c"] = float(loss_c.detach())
        return total, parts


methods = {DualTeacher.name: DualTeacher}
"""This module's entry of :data:`busseg.training.methods.METHODS`."""
