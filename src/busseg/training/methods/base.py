"""What every training method shares: the base class, what a method needs from its stage,
the EMA-teacher base of the semi-supervised methods and the base of those whose
only teacher is that average.

A method is an ``nn.Module`` that owns the student and whatever else it trains or keeps
(an EMA teacher, a projection head), so that ``method.state_dict()`` is everything a
resumed run needs. A frozen static teacher is held outside the module tree on purpose:
it is neither optimised nor saved with the method.

A method declares what it needs from the stage that trains it in one place,
:meth:`TrainingMethod.requirements` (a :class:`Requirements`): whether the loop must feed
unlabeled batches and whether the stage must load the static teacher. The stage asks once and acts on the
answer; it knows no method by name.

Each method's own knobs form its section, a frozen dataclass whose fields are ``train.<knob>``
keys of params.yaml (the keys stay flat there, so ``dvc exp run -S train.<knob>=...`` paths
do not change); :meth:`busseg.training.config.TrainConfig.section` builds and checks it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from busseg.config import check_range
from busseg.errors import ConfigError, TrainingError
from busseg.models import SegmentationNet
from busseg.ssl import ema_update, make_ema_teacher
from busseg.training.augment import Augmenter, View
from busseg.training.config import TrainConfig

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Requirements:
    """What a method needs from the stage that trains it (see :meth:`TrainingMethod.requirements`).

    ``unlabeled``: the loop feeds ``train.unlabeled_batch`` unlabeled images every step;
    ``static_teacher``: the stage loads the warm-up stage's checkpoint and hands it over.
    Where the student starts is not a method's business but the loop's (``train.init``, the
    same for every method).
    """

    unlabeled: bool = False
    static_teacher: bool = False


class TrainingMethod(nn.Module):
    """Base class: subclasses implement :meth:`loss` and may override the hooks.

    ``section`` is the params.yaml section the config came from (``train``, or ``warmup``
    for the static teacher), so that errors name the full key.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        student: SegmentationNet,
        config: TrainConfig,
        static_teacher: SegmentationNet | None = None,
        *,
        section: str = "train",
    ) -> None:
        super().__init__()
        self.student = student
        self.config = config
        #: what this run of the method needs; the loop reads ``needs.unlabeled``
        self.needs = self.requirements(config, section)
        # Kept in a plain attribute list so it is not a sub-module: never optimised, never saved.
        self._static: list[SegmentationNet] = [static_teacher] if static_teacher is not None else []
        #: ``train.augment``: the views of this method's batches (busseg.training.augment)
        self.augment = Augmenter(config.augment, key=f"{section}.augment")
        self._generator: torch.Generator | None = None

    @classmethod
    def requirements(cls, config: TrainConfig, section: str = "train") -> Requirements:
        """What this method needs from its stage under ``config`` (it may depend on switches).

        Raises :class:`ConfigError` for settings the method cannot honour. The base class
        needs labeled batches only.
        """
        return Requirements()

    def begin_step(self, seed: int, rank: int = 0, world_size: int = 1) -> None:
        """Seed the randomness of the next step (augmentation, boxes); the loop calls it before each step.

        The loop derives ``seed`` from (run seed, global step), so a resumed run draws the same
        views as an uninterrupted one. Every DDP rank gets the same seed and its ``(rank,
        world_size)``: random parameters are drawn for the global batch and each rank uses its
        slice (:attr:`shard`), so N ranks augment like one process.
        """
        self._generator = torch.Generator().manual_seed(seed)
        self._shard = (rank, world_size)

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world_size)`` of this step (``(0, 1)`` outside DDP)."""
        return getattr(self, "_shard", (0, 1))

    @property
    def generator(self) -> torch.Generator:
        """The CPU generator of this step's random numbers (seeded 0 when no step was begun)."""
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(0)
        return self._generator

    @property
    def static_teacher(self) -> SegmentationNet | None:
        return self._static[0] if self._static else None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer updates (student, plus any heads of the method)."""
        return [p for p in self.parameters() if p.requires_grad]

    def loss(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss of one step and its named parts (for logging).

        ``progress`` is the fraction of training done, in [0, 1) (for ramp-ups).
        """
        raise NotImplementedError  # intended: the base class's contract; every registered method overrides it

    def forward(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        """:meth:`loss`: the entry point ``DistributedDataParallel`` calls to sync gradients."""
        return self.loss(labeled, unlabeled, progress)

    def after_optimizer_step(self) -> None:
        """Called after every optimizer step (EMA updates go here)."""

    def to(self, *args, **kwargs):  # type: ignore[override]
        super().to(*args, **kwargs)
        self._static = [m.to(*args, **kwargs) for m in self._static]
        return self


@dataclass(frozen=True)
class EMATeacherConfig:
    """The knobs every method with an EMA teacher has (``train.ema_decay``, ``train.lambda_u``).

    ``ema_decay``: weight of the teacher's old value in each update, in [0, 1];
    ``lambda_u``: weight of the unlabeled (teacher-target) loss, >= 0.
    """

    ema_decay: float
    lambda_u: float

    def __post_init__(self) -> None:
        check_range("ema_decay", self.ema_decay, 0.0, 1.0)
        check_non_negative(self, "lambda_u")


def check_non_negative(section: object, *keys: str) -> None:
    """Raise :class:`ConfigError` (bare key; :func:`busseg.config.from_dict` prefixes the
    section) for the first of ``keys`` whose value is negative."""
    for key in keys:
        if getattr(section, key) < 0:
            raise ConfigError(key, f"must be >= 0, got {getattr(section, key)}")


def check_positive_int(section: object, *keys: str) -> None:
    """Raise :class:`ConfigError` (bare key) for the first of ``keys`` below 1."""
    for key in keys:
        if getattr(section, key) < 1:
            raise ConfigError(key, f"must be >= 1, got {getattr(section, key)}")


@torch.no_grad()
def teacher_probabilities(teacher: nn.Module, images: Tensor) -> Tensor:
    """Float32 sigmoid probabilities of a frozen teacher, without a graph.

    ``torch.no_grad()`` rather than ``inference_mode``: inference tensors cannot be saved
    for backward, and the teacher targets are saved by BCE.
    """
    return torch.sigmoid(teacher(images).float())


def confident(target: Tensor, threshold: float) -> Tensor:
    """Boolean mask of the pixels whose soft target is at least ``threshold`` confident.

    A pixel counts when ``max(t, 1 - t) >= threshold``: pixels in the uncertain band
    ``(1 - threshold, threshold)`` are left out; any threshold <= 0.5 keeps every pixel.
    """
    return torch.maximum(target, 1.0 - target) >= threshold


def check_unit_interval(section: object, *keys: str) -> None:
    """Raise :class:`ConfigError` (bare key) for the first of ``keys`` outside [0, 1]."""
    for key in keys:
        check_range(key, getattr(section, key), 0.0, 1.0)


def require_unlabeled(name: str, unlabeled: Batch | None) -> Batch:
    """``unlabeled``, or a :class:`TrainingError` when a semi-supervised step got none."""
    if unlabeled is None or unlabeled["image"].shape[0] == 0:
        raise TrainingError(f"method '{name}' needs a batch of unlabeled images every step (train.unlabeled_batch >= 1)")
    return unlabeled


class EMATeacherMethod(TrainingMethod):
    """Base of the methods with an EMA teacher ``ema_teacher`` (or None when switched off).

    The EMA teacher is a frozen sub-module: saved with the method (a resumed run continues
    the same average) but never optimised, and it stays in eval mode whatever
    ``method.train()`` says, so its batch-norm uses the averaged running statistics. It is
    updated after every optimizer step. The student runs once per step on the labeled and
    unlabeled images together (one concatenated batch: cheaper than two calls, and
    batch-norm sees the whole labeled + unlabeled batch, 8 + 4 by default).
    """

    def __init__(
        self,
        student: SegmentationNet,
        config: TrainConfig,
        static_teacher: SegmentationNet | None = None,
        *,
        ema_decay: float,
        use_ema_teacher: bool = True,
        section: str = "train",
    ) -> None:
        super().__init__(student, config, static_teacher, section=section)
        self.ema_decay = ema_decay
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
            ema_update(self.ema_teacher, self.student, self.ema_decay)

    def views(self, labeled: Batch, unlabeled: Batch) -> tuple[Batch, View]:
        """This step's labeled batch (weak view under ``train.augment``) and the student's view of the unlabeled one."""
        generator, shard = self.generator, self.shard
        return (
            self.augment.labeled(labeled, generator, shard),
            self.augment.student_view(unlabeled["image"], generator, shard=shard),
        )

    def student_outputs(self, labeled: Batch, unlabeled: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """One student pass over labeled + unlabeled images.

        Returns ``(labeled logits, unlabeled logits, unlabeled decoder features)``.
        """
        n_labeled = labeled["image"].shape[0]
        logits, features = self.student.forward_features(torch.cat([labeled["image"], unlabeled["image"]]))
        return logits[:n_labeled], logits[n_labeled:], features[n_labeled:]


class StudentAverageMethod(EMATeacherMethod):
    """Base of the methods whose only teacher is the EMA of the student (``mean_teacher``, ``bcp``).

    A subclass names its section class in ``options_type``; the constructor builds it from
    the config (``self.options``) and takes ``ema_decay`` from it. Such a method needs
    unlabeled batches every step and no static teacher: one handed in by mistake is ignored
    (not kept, not frozen).
    """

    options_type: ClassVar[type[EMATeacherConfig]] = EMATeacherConfig

    def __init__(
        self,
        student: SegmentationNet,
        config: TrainConfig,
        static_teacher: SegmentationNet | None = None,
        *,
        section: str = "train",
    ) -> None:
        options = config.section(self.options_type, section)
        super().__init__(student, config, None, ema_decay=options.ema_decay, section=section)
        self.options = options

    @classmethod
    def requirements(cls, config: TrainConfig, section: str = "train") -> Requirements:
        """Unlabeled batches every step; no static teacher."""
        super().requirements(config, section)
        config.section(cls.options_type, section)
        return Requirements(unlabeled=True)
