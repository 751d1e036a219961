"""Checkpoints that carry their own configuration (nanoGPT style).

A checkpoint is a dict: ``model`` (state dict of :class:`~busseg.models.SegmentationNet`),
``model_config``, ``train_config``, ``method``, ``epoch``, ``val_dice`` and ``busseg_version``;
:func:`load_model` rebuilds the network from the file alone.
"""
from __future__ import annotations

import io
import re
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from busseg import __version__
from busseg.atomic import write_bytes
from busseg.config import from_dict
from busseg.errors import ConfigError, DataError
from busseg.models import ModelConfig, SegmentationNet, build_model, model_config_to_dict
from busseg.training.config import TrainConfig


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a buffer, then an atomic write: no half checkpoint, same bytes.

    ``torch.save`` to a file names the zip's root folder after that file, so saving to a
    temporary name would make identical tensors differ byte-wise between runs; a buffer's
    archive is always named ``archive``.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_model_checkpoint(
    path: str | Path,
    model: SegmentationNet,
    train_config: TrainConfig,
    *,
    epoch: int,
    val_dice: float,
    extra: dict[str, Any] | None = None,
) -> None:
    """Save the network with everything needed to rebuild and describe it."""
    save_atomic(
        {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model_config": model_config_to_dict(model.config),
            "train_config": asdict(train_config),
            "method": train_config.method,
            "epoch": epoch,
            "val_dice": float(val_dice),
            "busseg_version": __version__,
            **(extra or {}),
        },
        path,
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU, with a clear error for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found; run the stage that trains it (dvc repro)")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise DataError(path, _unreadable_checkpoint(exc, _is_pickle(path))) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_config" not in checkpoint:
        raise DataError(path, "not a busseg checkpoint (no 'model' / 'model_config' entries)")
    return checkpoint


def _is_pickle(path: Path) -> bool:
    """Whether ``path`` starts as a bare Python pickle does (protocol 2-5), not as PyTorch's zip."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _unreadable_checkpoint(exc: Exception, is_pickle: bool = False) -> str:
    """One line on why ``torch.load`` refused a file, without torch's advice.

    For a file holding pickled Python objects (a whole ``nn.Module``, another program's
    checkpoint, a crafted pickle) torch's message runs to 8 lines and suggests
    ``weights_only=False``: that would run whatever code the file carries, so busseg never
    repeats it, and says instead that the file holds objects busseg does not load.
    """
    text = " ".join(str(exc).split())
    if "weights only load failed" in text.lower():
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found or is_pickle:
            named = f" ({found.group(1)})" if found else ""
            return (
                f"not a busseg checkpoint: it holds pickled Python objects{named}, which busseg does not load "
                "(a busseg checkpoint holds only tensors and plain values; loading objects could run code "
                "from the file)"
            )
        return "not a readable busseg checkpoint (not a PyTorch file, or a damaged one)"
    if isinstance(exc, EOFError) or not text:
        return "not a readable busseg checkpoint (empty or truncated file)"
    first_sentence = text.split(". ")[0].rstrip(".")[:200]
    return f"not a readable busseg checkpoint ({type(exc).__name__}: {first_sentence})"


def load_model(path: str | Path, device: torch.device | str = "cpu") -> SegmentationNet:
    """Rebuild the network stored in ``path`` (eval mode, on ``device``).

    The stored weights replace any pre-trained encoder weights, so none are fetched or read
    (``model.encoder_weights`` stays in the config as a record of how it was trained).
    """
    checkpoint = read_checkpoint(path)
    config = from_dict(ModelConfig, checkpoint["model_config"], "model")
    model = build_model(config, pretrained=False)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise DataError(path, f"weights do not fit the stored model config: {exc}") from None
    # channels_last: the layout oneDNN's CPU convolutions (and tensor cores) are fastest in.
    return model.to(device, memory_format=torch.channels_last).eval()


def check_init_file(path: str | Path | None, key: str = "train.init") -> None:
    """``key`` naming a checkpoint file that does not exist is a :class:`ConfigError` naming
    ``key``: a user's own path in params.yaml, which no stage makes (so no ``dvc repro``
    advice). Called before any image is loaded, so the run fails at once, not after them."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(
            key,
            f"no checkpoint file at {path}; name an existing busseg checkpoint (.pt), or use "
            "'static_teacher' or 'none'",
        )


def initialise_from(student: SegmentationNet, path: str | Path, key: str = "train.init") -> None:
    """Copy the weights of the busseg checkpoint ``path`` into ``student`` (``train.init``).

    The checkpoint's network must be the student's (architecture, encoder, image size,
    decoder); a mismatch is a :class:`~busseg.errors.ConfigError` naming ``key`` and both
    configs, not a shape error from deep inside PyTorch.
    """
    checkpoint = read_checkpoint(path)
    stored = from_dict(ModelConfig, checkpoint["model_config"], "model")
    if replace(stored, encoder_weights=None) != replace(student.config, encoder_weights=None):
        raise ConfigError(
            key, f"{path} holds a different network ({stored}) from the student's model section ({student.config})"
        )
    try:
        student.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise DataError(path, f"weights do not fit the stored model config: {exc}") from None
