"""Process-wide runtime settings: device, threads, seeds.

torch is imported inside the functions that use it: every stage imports this module (through
``stages/_params.py``), and the stages without a network (prepare, split, calibrate, report)
would otherwise spend seconds loading torch for nothing.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from busseg.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is passed to torch."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError("runtime.device", f"{exc}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device", "cuda was asked for but torch sees no CUDA device; use auto or cpu")
    return device


def in_queued_experiment(cwd: str | Path | None = None) -> bool:
    """Whether this process runs inside a ``dvc queue`` worker's temporary copy of the repo.

    DVC runs queued experiments in ``.dvc/tmp/exps/...`` copies, usually several at once.
    """
    return "/.dvc/tmp/exps/" in Path(cwd or os.getcwd()).resolve().as_posix() + "/"


def resolve_threads(threads: int | str) -> int:
    """``runtime.threads`` as a count: ``auto`` = every core this process may use, except in a
    ``dvc queue`` worker, where one thread per worker is the rule (the workers share the cores)."""
    if threads == "auto":
        return 1 if in_queued_experiment() else len(os.sched_getaffinity(0))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError("runtime.threads", f"must be an integer >= 0 or auto, got {threads!r}")
    return threads


def set_threads(threads: int | str) -> int:
    """Fix torch's intra-op thread count (``auto`` see :func:`resolve_threads`; 0 = torch's
    default); return the count in use.

    On small shared machines an explicit count is faster and far more repeatable than torch's
    default of one thread per core. Results depend on it: a convolution summed over 2 threads
    rounds differently from one summed over 1, so the committed results hold for one count.
    """
    import torch

    count = resolve_threads(threads)
    if count:
        torch.set_num_threads(count)
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
