"""Process-wide runtime settings: device, threads, seeds, atomic file writes."""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), creating parent folders."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically (temp file + rename), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` only if the block succeeds.

    A stage that fails half-way therefore never leaves a half-written output folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
