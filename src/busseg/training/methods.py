"""Training methods: how one step's loss is computed from a labeled and an unlabeled batch.

A method is an ``nn.Module`` that owns the student and whatever else it trains or keeps
(an EMA teacher, a projection head), so that ``method.state_dict()`` is everything a
resumed run needs. A frozen static teacher is held outside the module tree on purpose:
it is neither optimised nor saved with the method.

Register a new method with :func:`register_method`; ``train.method`` picks it by name.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from busseg.errors import ConfigError
from busseg.losses import bce_dice_loss
from busseg.models import SegmentationNet
from busseg.training.config import TrainConfig

Batch = dict[str, torch.Tensor]


class TrainingMethod(nn.Module):
    """Base class: subclasses implement :meth:`loss` and may override the hooks."""

    name: ClassVar[str] = ""
    #: whether the loop must feed unlabeled batches (``train.unlabeled_batch`` images per step)
    uses_unlabeled: ClassVar[bool] = False
    #: whether the method needs the static teacher checkpoint (warm-up stage output)
    needs_static_teacher: ClassVar[bool] = False

    def __init__(self, student: SegmentationNet, config: TrainConfig, static_teacher: SegmentationNet | None = None) -> None:
        super().__init__()
        self.student = student
        self.config = config
        # Kept in a plain attribute list so it is not a sub-module: never optimised, never saved.
        self._static: list[SegmentationNet] = [static_teacher] if static_teacher is not None else []

    @classmethod
    def requires_static_teacher(cls, config: TrainConfig) -> bool:
        """Whether this run needs the static teacher checkpoint (it may depend on switches)."""
        return cls.needs_static_teacher

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
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        """Called after every optimizer step (EMA updates go here)."""

    def to(self, *args, **kwargs):  # type: ignore[override]
        super().to(*args, **kwargs)
        self._static = [m.to(*args, **kwargs) for m in self._static]
        return self


class Supervised(TrainingMethod):
    """Labeled images only, BCE + Dice. With ``label_ratio: 1.0`` it is the upper bound."""

    name = "supervised"

    def loss(self, labeled: Batch, unlabeled: Batch | None, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        loss = bce_dice_loss(self.student(labeled["image"]), labeled["mask"])
        return loss, {"loss_s": float(loss.detach())}


MethodFactory = Callable[..., TrainingMethod]
METHODS: dict[str, type[TrainingMethod]] = {}


def register_method(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METHODS[cls.name] = cls
    return cls


register_method(Supervised)


def get_method(name: str) -> type[TrainingMethod]:
    """Look a method up by name, listing the available ones when it is unknown."""
    _import_builtin_methods()
    if name not in METHODS:
        raise ConfigError("train.method", f"unknown method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def _import_builtin_methods() -> None:
    """Import the modules that register the SSL methods (kept apart to keep this file small)."""
    try:
        import busseg.training.ssl_methods  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "busseg.training.ssl_methods":
            raise
