"""Training hyper-parameters (the ``train`` and ``warmup`` sections of params.yaml)."""
from __future__ import annotations

from dataclasses import dataclass

from busseg.config import check_range
from busseg.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Everything the training loop and the methods need; saved in each checkpoint.

    One budget for every method: ``epochs`` x ``steps_per_epoch`` optimizer steps on
    batches of ``batch_size`` images (SSL methods fill ``unlabeled_batch`` of them with
    unlabeled images). ``steps_per_epoch: null`` means one pass over the train split.
    """

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
    # Teachers (mean_teacher, dual_teacher)
    ema_decay: float = 0.99
    lambda_u: float = 1.0
    lambda_c: float = 0.5
    rampup_epochs: float = 5.0  # sigmoid ramp-up of mean_teacher's consistency weight
    # Ablation switches of dual_teacher (METHOD.md ladder)
    use_static_teacher: bool = True
    use_ema_teacher: bool = True
    use_uewf: bool = True
    uewf_kernel: int = 14
    use_aurcl: bool = True
    # Start the student (and so the EMA teacher) from the static teacher's weights instead of
    # random initialisation. The paper does not say; off by default (see README).
    init_from_static: bool = False
    # AURCL (METHOD.md DECISIONS)
    aurcl_ratio: float = 0.1
    aurcl_tau_fix: float = 0.2
    aurcl_grid: int = 8
    aurcl_temperature: float = 0.1
    aurcl_proj_dim: int = 64

    def check(self, section: str = "train") -> None:
        """Range checks with errors that name ``section.key``."""
        for key in ("epochs", "batch_size", "uewf_kernel", "aurcl_grid", "aurcl_proj_dim", "plateau_patience"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{section}.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"{section}.steps_per_epoch", f"must be >= 1 or null, got {self.steps_per_epoch}")
        if self.unlabeled_batch < 0:
            raise ConfigError(f"{section}.unlabeled_batch", f"must be >= 0, got {self.unlabeled_batch}")
        check_range(f"{section}.lr", self.lr, 0.0, 10.0, low_open=True)
        check_range(f"{section}.ema_decay", self.ema_decay, 0.0, 1.0)
        check_range(f"{section}.plateau_factor", self.plateau_factor, 0.0, 1.0, low_open=True)
        check_range(f"{section}.aurcl_ratio", self.aurcl_ratio, 0.0, 1.0, low_open=True)
        check_range(f"{section}.aurcl_tau_fix", self.aurcl_tau_fix, 0.0, 1.0)
        check_range(f"{section}.aurcl_temperature", self.aurcl_temperature, 0.0, 100.0, low_open=True)
