"""Training hyper-parameters (the ``train`` and ``warmup`` sections of params.yaml)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

from busseg.config import check_range, from_dict
from busseg.errors import ConfigError

S = TypeVar("S")

AUGMENT_MODES = ("none", "weak", "strong")
"""Values of ``train.augment`` / ``warmup.augment`` (see :mod:`busseg.training.augment`)."""

INIT_CHOICES = ("none", "static_teacher")
"""Named values of ``train.init``; any other value is the path of a busseg checkpoint."""


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section as params.yaml spells it; saved in each checkpoint.

    Two kinds of keys, all flat so that ``dvc exp run -S train.<knob>=...`` paths stay
    short and stable:

    * the loop's, which every method shares (checked by :meth:`check`). One budget for
      every method: ``epochs`` x ``steps_per_epoch`` optimizer steps, each on a full batch
      of ``batch_size`` labeled images, to which methods with unlabeled data add a batch of
      ``unlabeled_batch`` unlabeled images (so they see as many labeled images as
      ``supervised``). ``steps_per_epoch: null`` means ``ceil(n_train / batch_size)`` with
      ``n_train`` the whole train split (labeled + unlabeled pool) for every method, so all
      methods at one label ratio take the same number of optimizer steps;
    * each method's knobs, which only that method reads, through its own section
      (:meth:`section`: a dataclass in the method's module documents and checks them, e.g.
      :class:`busseg.training.methods.dual_teacher.DualTeacherConfig`). The values here are
      the defaults.

    Field order is part of every checkpoint's bytes (``asdict`` of this class is stored):
    append new keys at the end.
    """

    # The loop (busseg.training.loop), every method
    method: str = "supervised"
    epochs: int = 20
    steps_per_epoch: int | None = None
    batch_size: int = 8
    unlabeled_batch: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    # Methods with an EMA teacher (mean_teacher, dual_teacher)
    ema_decay: float = 0.99
    lambda_u: float = 1.0
    # dual_teacher (docs/method.md: 1.0 and 0.5)
    lambda_c: float = 0.5
    # mean_teacher: sigmoid ramp-up of the consistency weight, in epochs
    rampup_epochs: float = 5.0
    # dual_teacher ablation switches (docs/method.md ladder)
    use_static_teacher: bool = True
    use_ema_teacher: bool = True
    use_uewf: bool = True
    uewf_kernel: int = 14
    use_aurcl: bool = True
    # dual_teacher: AURCL (docs/method.md DECISIONS)
    aurcl_ratio: float = 0.1
    aurcl_tau_fix: float = 0.2
    aurcl_grid: int = 8
    aurcl_temperature: float = 0.1
    aurcl_proj_dim: int = 64
    # Perturbation (busseg.training.augment): none | weak | strong. Labeled batches get the
    # weak view; the student's view of unlabeled images the weak or strong one; teachers
    # always see the clean image and their target is warped into the student's view.
    augment: str = "none"
    # mean_teacher, dual_teacher: leave pixels whose teacher target is less confident than
    # this (max(p, 1 - p) < threshold) out of the unlabeled loss; 0 = every pixel counts.
    confidence_threshold: float = 0.0
    # dual_teacher: the static teacher's fusion weight decays linearly from 1 to 0 over this
    # fraction of the run (0 = constant weight 1, the paper's setting).
    static_anneal: float = 0.0
    # dual_teacher: AURCL as docs/method.md reads the paper (paper) or against class prototypes (prototype)
    aurcl_variant: str = "paper"
    # bcp: weight of the unlabeled image's region in each mixed image (BCP's u_weight)
    bcp_u_weight: float = 0.5
    # unimatch: confidence threshold of the pseudo labels and dropout of the feature perturbation
    unimatch_threshold: float = 0.95
    unimatch_dropout: float = 0.5
    # Every method: where the student (and so any EMA teacher) starts. ``none``: the random
    # initialisation of ``seed`` (with ``model.encoder_weights`` if set); ``static_teacher``: the
    # static teacher's weights (pseudo-label pre-training, the stage's teacher checkpoint); any
    # other value: the path of a busseg checkpoint. See :data:`INIT_CHOICES`.
    init: str = "none"
    # bcp: fraction of the optimizer steps spent on BCP's labeled copy-paste pre-training
    # (labeled images only) before self-training; 0 = none
    bcp_pretrain_fraction: float = 0.25

    def check(self, section: str = "train") -> None:
        """Range checks of the loop's keys, with errors that name ``section.key``.

        A method's own knobs are checked when its section is built (:meth:`section`); the
        train stage builds every method's (:func:`busseg.training.student.student_config`).
        """
        for key in ("epochs", "batch_size", "plateau_patience"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{section}.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"{section}.steps_per_epoch", f"must be >= 1 or null, got {self.steps_per_epoch}")
        if self.unlabeled_batch < 0:
            raise ConfigError(f"{section}.unlabeled_batch", f"must be >= 0, got {self.unlabeled_batch}")
        check_range(f"{section}.lr", self.lr, 0.0, 10.0, low_open=True)
        if self.augment not in AUGMENT_MODES:
            raise ConfigError(
                f"{section}.augment", f"unknown augmentation '{self.augment}'; available: {', '.join(AUGMENT_MODES)}"
            )
        check_range(f"{section}.plateau_factor", self.plateau_factor, 0.0, 1.0, low_open=True)
        if not self.init.strip():
            raise ConfigError(
                f"{section}.init", f"must be one of {', '.join(INIT_CHOICES)} or the path of a busseg checkpoint, got ''"
            )

    @property
    def init_path(self) -> str | None:
        """The checkpoint path of ``init``, or None when it names ``none`` / ``static_teacher``."""
        return None if self.init in INIT_CHOICES else self.init

    def section(self, cls: type[S], section: str = "train") -> S:
        """A method's section ``cls`` built from this config's keys of the same names.

        ``cls`` is a dataclass whose fields are keys of this config; its checks run here,
        and their errors name ``section.key`` (:func:`busseg.config.from_dict`).
        """
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        return from_dict(cls, {name: getattr(self, name) for name in names}, section)


WARMUP_FIXED = {"method": "supervised", "unlabeled_batch": 0, "init": "none"}
"""Keys of the ``warmup`` section that the warm-up sets itself: a supervised run on labeled
batches only, from the random initialisation (it trains the static teacher that ``train.init:
static_teacher`` starts from)."""


def warmup_config(section: dict | None) -> TrainConfig:
    """The static teacher's :class:`TrainConfig` from the ``warmup`` section of params.yaml.

    A warm-up is always ``supervised`` training without unlabeled images from the random
    initialisation (:data:`WARMUP_FIXED`; the warm-up and refine stages both train one); the loop's keys are checked, naming ``warmup.<key>``.
    """
    config = from_dict(TrainConfig, {**(section or {}), **WARMUP_FIXED}, "warmup")
    config.check("warmup")
    return config
