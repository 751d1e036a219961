"""The segmentation network: a thin wrapper around segmentation-models-pytorch's U-Net.

Student and teachers share this architecture (METHOD.md: ResNet-34-encoder U-Net).
The wrapper adds two things smp lacks: input normalisation for one-channel
ultrasound in [0, 1], and :meth:`SegmentationNet.forward_features`, which also
returns the last decoder feature map that AURCL contrasts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from busseg.errors import ConfigError

ARCHITECTURES = ("unet",)


@dataclass(frozen=True)
class ModelConfig:
    """Network choice; saved inside every checkpoint so a model can be rebuilt from it alone."""

    arch: str = "unet"
    encoder: str = "resnet34"
    # ImageNet weights need a network on first use; None = random initialisation.
    encoder_weights: str | None = None
    image_size: int = 224
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)


class SegmentationNet(nn.Module):
    """U-Net taking (B, 1, H, W) images in [0, 1] and returning (B, 1, H, W) logits."""

    # Greyscale statistics of B-mode images in [0, 1]; close enough for all datasets
    # seen so far, and fixed so that checkpoints do not depend on the training data.
    MEAN = 0.3
    STD = 0.25

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.net = build_smp_model(config)

    @property
    def feature_channels(self) -> int:
        """Channels of the last decoder feature map (input of AURCL's projection head)."""
        return int(self.config.decoder_channels[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits, decoder_features)`` for a batch of images in [0, 1]."""
        x = (x - self.MEAN) / self.STD
        features = self.net.encoder(x)
        decoded = self.net.decoder(features)
        return self.net.segmentation_head(decoded), decoded

    def forward_feature_perturbation(self, x: torch.Tensor, first_perturbed: int, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        """UniMatch's feature-perturbation pass: one encoder pass, two decodings.

        Returns the logits of every image of ``x`` and, for the images from index
        ``first_perturbed`` on, the logits decoded from their encoder features after
        channel dropout (``F.dropout2d`` with probability ``dropout``, always on: it is a
        perturbation, not a regulariser). The encoder runs once; the decoder runs on the
        clean and the perturbed features together, as in UniMatch's ``_decode`` of the
        concatenation. The first feature map (the input itself, which smp's U-Net decoder
        does not use) is not perturbed.
        """
        x = (x - self.MEAN) / self.STD
        features = self.net.encoder(x)
        # The first map only gives the decoder its output size: repeated, not perturbed.
        both = [torch.cat([features[0], features[0][first_perturbed:]])] + [
            torch.cat([f, torch.nn.functional.dropout2d(f[first_perturbed:], dropout, training=True)]) for f in features[1:]
        ]
        logits = self.net.segmentation_head(self.net.decoder(both))
        return logits[: x.shape[0]], logits[x.shape[0] :]


def build_smp_model(config: ModelConfig) -> nn.Module:
    """Build the smp network, turning smp's errors into ones that name the parameter."""
    if config.arch not in ARCHITECTURES:
        raise ConfigError("model.arch", f"unknown architecture '{config.arch}'; available: {', '.join(ARCHITECTURES)}")
    if config.image_size % 32:
        raise ConfigError("model.image_size", f"must be a multiple of 32 (U-Net downsamples 5 times), got {config.image_size}")
    import segmentation_models_pytorch as smp

    if config.encoder not in smp.encoders.get_encoder_names():
        raise ConfigError(
            "model.encoder",
            f"unknown encoder '{config.encoder}'; see segmentation_models_pytorch.encoders.get_encoder_names()",
        )
    try:
        return smp.Unet(
            encoder_name=config.encoder,
            encoder_weights=config.encoder_weights,
            in_channels=1,
            classes=1,
            decoder_channels=tuple(config.decoder_channels),
        )
    except (KeyError, ValueError) as exc:
        raise ConfigError("model.encoder_weights", str(exc)) from None


def build_model(config: ModelConfig) -> SegmentationNet:
    """The one way to build a network from a :class:`ModelConfig`."""
    return SegmentationNet(config)


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """Plain-dict form for checkpoints (JSON- and pickle-friendly)."""
    out = asdict(config)
    out["decoder_channels"] = list(config.decoder_channels)
    return out
