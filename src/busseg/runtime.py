"""Process-wide runtime settings: device, threads, seeds."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from busseg.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError("runtime.device", f"{exc}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device", "cuda was asked for but torch sees no CUDA device; use auto or cpu")
    return device


def set_threads(threads: int) -> None:
    """Fix torch's intra-op thread count (0 = leave torch's default).

    On small shared machines an explicit count is faster and far more repeatable
    than torch's default of one thread per core.
    """
    if threads < 0:
        raise ConfigError("runtime.threads", f"must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
