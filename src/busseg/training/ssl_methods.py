"""Semi-supervised training methods: ``mean_teacher`` (baseline) and ``dual_teacher`` (the paper).

Both hold an exponential-moving-average (EMA) teacher of the student as a frozen
sub-module: it is saved with the method (a resumed run continues the same average)
but never optimised, and it stays in eval mode whatever ``method.train()`` says, so
its batch-norm uses the averaged running statistics. It is updated after every
optimizer step.

Both run the student once per step on the labeled and unlabeled images together
(one concatenated batch: cheaper than two calls, and batch-norm sees the paper's
4 + 4 batch), and run the teachers under ``torch.no_grad()``. ``inference_mode``
would be marginally faster, but its tensors cannot be saved for backward, and the
teacher targets are saved by BCE.

``dual_teacher`` (METHOD.md): L = L_s + lambda_u * L_u + lambda_c * L_c with
L_s = BCE + Dice on labeled images, L_u = BCE + Dice of the student on unlabeled
images against the UEWF fusion of a static teacher T_A (trained on pseudo labels,
frozen, held outside the module tree) and the EMA teacher T_B, and L_c = AURCL on
the student's last decoder features. Its ablation switches (``train.use_*``) remove
one component each; see :class:`DualTeacher`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from busseg.errors import ConfigError, TrainingError
from busseg.losses import bce_dice_loss
from busseg.models import SegmentationNet
from busseg.ssl import AURCLLoss, ema_update, freeze, make_ema_teacher, uewf
from busseg.training.config import TrainConfig
from busseg.training.methods import Batch, TrainingMethod, register_method


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


@torch.no_grad()
def teacher_probabilities(teacher: nn.Module, images: Tensor) -> Tensor:
    """Float32 sigmoid probabilities of a frozen teacher, without a graph."""
    return torch.sigmoid(teacher(images).float())


def _check_non_negative(config: TrainConfig, *keys: str) -> None:
    for key in keys:
        if getattr(config, key) < 0:
            raise ConfigError(f"train.{key}", f"must be >= 0, got {getattr(config, key)}")


def _require_unlabeled(name: str, unlabeled: Batch | None) -> Batch:
    if unlabeled is None or unlabeled["image"].shape[0] == 0:
        raise TrainingError(f"method '{name}' needs a batch of unlabeled images every step (train.unlabeled_batch >= 1)")
    return unlabeled


class EMATeacherMethod(TrainingMethod):
    """Base of the methods with an EMA teacher ``ema_teacher`` (or None when switched off)."""

    uses_unlabeled = True

    def __init__(
        self,
        student: SegmentationNet,
        config: TrainConfig,
        static_teacher: SegmentationNet | None = None,
        *,
        use_ema_teacher: bool = True,
    ) -> None:
        super().__init__(student, config, static_teacher)
        # A sub-module, so it is saved with the method; frozen, so trainable_parameters() skips it.
        self.ema_teacher: SegmentationNet | None = make_ema_teacher(student) if use_ema_teacher else None

    def train(self, mode: bool = True) -> EMATeacherMethod:
        """Set the train/eval mode of the student and heads; teachers always stay in eval mode."""
        super().train(mode)
        if self.ema_teacher is not None:
            self.ema_teacher.eval()
        return self

    def after_optimizer_step(self) -> None:
        """Move the EMA teacher towards the student (parameters and batch-norm statistics)."""
        if self.ema_teacher is not None:
            ema_update(self.ema_teacher, self.student, self.config.ema_decay)

    def student_outputs(self, labeled: Batch, unlabeled: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """One student pass over labeled + unlabeled images.

        Returns ``(labeled logits, unlabeled logits, unlabeled decoder features)``.
        """
        n_labeled = labeled["image"].shape[0]
        logits, features = self.student.forward_features(torch.cat([labeled["image"], unlabeled["image"]]))
        return logits[:n_labeled], logits[n_labeled:], features[n_labeled:]


@register_method
class MeanTeacher(EMATeacherMethod):
    """Mean teacher (Tarvainen & Valpola, 2017), the classic SSL baseline.

    ``L = L_s + w(t) * MSE(sigmoid(student(x_u)), sigmoid(teacher(x_u)))`` with
    ``w(t) = lambda_u * sigmoid_rampup(progress, epochs, rampup_epochs)``. No data
    augmentation (as in the paper's setting), so the consistency comes from the
    difference between the student and its average alone.
    """

    name = "mean_teacher"
    needs_static_teacher = False

    def __init__(self, student: SegmentationNet, config: TrainConfig, static_teacher: SegmentationNet | None = None) -> None:
        _check_non_negative(config, "lambda_u", "rampup_epochs")
        # A static teacher handed in by mistake is ignored (not kept, not frozen).
        super().__init__(student, config, None)

    def consistency_weight(self, progress: float) -> float:
        """``lambda_u`` times the sigmoid ramp-up at ``progress``."""
        return self.config.lambda_u * sigmoid_rampup(progress, self.config.epochs, self.config.rampup_epochs)

    def loss(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[Tensor, dict[str, float]]:
        unlabeled = _require_unlabeled(self.name, unlabeled)
        logits_l, logits_u, _ = self.student_outputs(labeled, unlabeled)
        loss_s = bce_dice_loss(logits_l, labeled["mask"])
        target = teacher_probabilities(self.ema_teacher, unlabeled["image"])  # type: ignore[arg-type]
        loss_u = F.mse_loss(torch.sigmoid(logits_u.float()), target)
        weight = self.consistency_weight(progress)
        parts = {"loss_s": float(loss_s.detach()), "loss_u": float(loss_u.detach()), "weight_u": weight}
        return loss_s + weight * loss_u, parts


@register_method
class DualTeacher(EMATeacherMethod):
    """The paper's dual-teacher SSL: static teacher + EMA teacher, UEWF fusion, AURCL.

    ``L = L_s + lambda_u * L_u + lambda_c * L_c`` (METHOD.md: 1.0 and 0.5). Ablation
    switches of :class:`~busseg.training.config.TrainConfig`:

    * ``use_static_teacher`` / ``use_ema_teacher``: with one teacher off, the target is
      the other teacher's probability (at least one must stay on);
    * ``use_uewf``: False fuses two teachers by the plain average ``(p_A + p_B) / 2``;
      ``uewf_kernel = 1`` is the pixel-wise (unsmoothed) UEWF;
    * ``use_aurcl``: False drops L_c and the projection head (no parameters, no
      ``loss_c`` in the logged parts).

    The static teacher is frozen here (eval mode, no gradients) and held outside the
    module tree, so it is neither optimised nor saved; the AURCL projection head is
    a trained sub-module.
    """

    name = "dual_teacher"
    needs_static_teacher = True  # default setting; see requires_static_teacher()

    def __init__(self, student: SegmentationNet, config: TrainConfig, static_teacher: SegmentationNet | None = None) -> None:
        if self.requires_static_teacher(config):
            if static_teacher is None:
                raise TrainingError(
                    "dual_teacher needs the static teacher (train.use_static_teacher is true) but none was given; "
                    "run the warmup stage first (dvc repro warmup), or set train.use_static_teacher=false"
                )
            freeze(static_teacher)
        else:
            static_teacher = None
        _check_non_negative(config, "lambda_u", "lambda_c")
        super().__init__(student, config, static_teacher, use_ema_teacher=config.use_ema_teacher)
        self.aurcl: AURCLLoss | None = (
            AURCLLoss(
                in_channels=student.feature_channels,
                proj_dim=config.aurcl_proj_dim,
                ratio=config.aurcl_ratio,
                tau_fix=config.aurcl_tau_fix,
                grid=config.aurcl_grid,
                temperature=config.aurcl_temperature,
            )
            if config.use_aurcl
            else None
        )

    @classmethod
    def requires_static_teacher(cls, config: TrainConfig) -> bool:
        """Whether ``config`` needs the static teacher checkpoint (raises if no teacher is on)."""
        if not (config.use_static_teacher or config.use_ema_teacher):
            raise ConfigError(
                "train.use_static_teacher/use_ema_teacher",
                "dual_teacher needs at least one teacher; both are false "
                "(for training on labeled images only use train.method=supervised)",
            )
        return config.use_static_teacher

    def fused_target(self, p_a: Tensor | None, p_b: Tensor | None) -> Tensor:
        """The soft target ``y_F`` from the static (``p_a``) and EMA (``p_b``) teachers' probabilities.

        UEWF (``train.uewf_kernel``) when ``train.use_uewf``, else the plain average; a
        switched-off teacher is passed as None and the other one's probabilities are the target.
        """
        if p_a is None or p_b is None:
            if p_a is None and p_b is None:
                raise ValueError("fused_target needs at least one teacher's probabilities")
            return (p_a if p_b is None else p_b).float()  # type: ignore[union-attr]
        if self.config.use_uewf:
            return uewf(p_a, p_b, kernel=self.config.uewf_kernel)
        return 0.5 * (p_a.float() + p_b.float())

    def teacher_target(self, images: Tensor) -> Tensor:
        """Fused soft target of the switched-on teachers for unlabeled ``images``."""
        static = self.static_teacher
        p_a = teacher_probabilities(static, images) if static is not None else None
        p_b = teacher_probabilities(self.ema_teacher, images) if self.ema_teacher is not None else None
        return self.fused_target(p_a, p_b)

    def loss(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[Tensor, dict[str, float]]:
        unlabeled = _require_unlabeled(self.name, unlabeled)
        logits_l, logits_u, features_u = self.student_outputs(labeled, unlabeled)
        loss_s = bce_dice_loss(logits_l, labeled["mask"])
        loss_u = bce_dice_loss(logits_u, self.teacher_target(unlabeled["image"]))
        total = loss_s + self.config.lambda_u * loss_u
        parts = {"loss_s": float(loss_s.detach()), "loss_u": float(loss_u.detach())}
        if self.aurcl is not None:
            # AURCL detaches the probabilities itself: its gradient reaches the features only.
            loss_c = self.aurcl(features_u, torch.sigmoid(logits_u.float()))
            total = total + self.config.lambda_c * loss_c
            parts["loss_c"] = float(loss_c.detach())
        return total, parts
