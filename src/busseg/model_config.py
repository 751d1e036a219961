"""The network's configuration (``model`` in params.yaml), apart from the network itself.

A module without torch, so that checking params.yaml (every stage does, see
:mod:`busseg.params_schema`) does not load torch in the stages that do not need it.
:mod:`busseg.models` re-exports :class:`ModelConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Network choice; saved inside every checkpoint so a model can be rebuilt from it alone."""

    arch: str = "unet"
    encoder: str = "resnet34"
    # None = random initialisation; "imagenet" = smp's ImageNet weights (a network on first
    # use); a path (ending .pth / .pt / .bin / .safetensors) = a local file of encoder weights.
    encoder_weights: str | None = None
    image_size: int = 224
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
