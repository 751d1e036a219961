"""The segmentation network: a thin wrapper around segmentation-models-pytorch's U-Net.

Student and teachers share this architecture (docs/method.md: ResNet-34-encoder U-Net).
The wrapper adds two things smp lacks: input normalisation for one-channel
ultrasound in [0, 1], and :meth:`SegmentationNet.forward_features`, which also
returns the last decoder feature map that AURCL contrasts.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from busseg.errors import ConfigError
from busseg.model_config import ModelConfig  # noqa: F401  (re-exported: busseg.models.ModelConfig)

ARCHITECTURES = ("unet",)


class SegmentationNet(nn.Module):
    """U-Net taking (B, 1, H, W) images in [0, 1] and returning (B, 1, H, W) logits."""

    # Greyscale statistics of B-mode images in [0, 1]; close enough for all datasets
    # seen so far, and fixed so that checkpoints do not depend on the training data.
    MEAN = 0.3
    STD = 0.25

    def __init__(self, config: ModelConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        self.net = build_smp_model(config if pretrained else replace(config, encoder_weights=None))

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
        raise ConfigError("model.encoder", unknown_encoder_problem(config.encoder, smp.encoders.get_encoder_names()))
    local = is_weights_file(config.encoder_weights)
    try:
        net = smp.Unet(
            encoder_name=config.encoder,
            encoder_weights=None if local else config.encoder_weights,
            in_channels=1,
            classes=1,
            decoder_channels=tuple(config.decoder_channels),
        )
    except (KeyError, ValueError) as exc:
        raise ConfigError("model.encoder_weights", str(exc)) from None
    if local:
        load_encoder_weights(net.encoder, Path(config.encoder_weights))  # type: ignore[arg-type]
    return net


def unknown_encoder_problem(encoder: str, names: list[str]) -> str:
    """The message for an unknown ``model.encoder``: the closest valid names (difflib), or
    every valid name when none is close."""
    close = difflib.get_close_matches(encoder, names, n=5, cutoff=0.6)
    if close:
        return f"unknown encoder '{encoder}'; closest valid names: {', '.join(close)}"
    return f"unknown encoder '{encoder}'; valid names: {', '.join(sorted(names))}"


WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
"""``model.encoder_weights`` values ending so are local files (:func:`load_encoder_weights`)."""


def is_weights_file(encoder_weights: str | None) -> bool:
    """Whether ``model.encoder_weights`` names a local file rather than smp's weight names."""
    return encoder_weights is not None and encoder_weights.endswith(WEIGHT_FILE_SUFFIXES)


def load_encoder_weights(encoder: nn.Module, path: Path) -> None:
    """Load an encoder's pre-trained weights from a local file (offline ``model.encoder_weights``).

    Takes the state dict of the encoder's backbone as torchvision or timm save it (for
    ResNets: ``torchvision.models.resnet34(weights="IMAGENET1K_V1").state_dict()``, the same
    weights smp's ``imagenet`` downloads). The classifier (``fc.*``) is dropped, and RGB
    first-layer filters are summed over their colour channels for one-channel input, which
    is what smp does for ``in_channels=1``. Any other mismatch is a :class:`ConfigError`
    naming the file.
    """
    key = "model.encoder_weights"
    if not path.is_file():
        raise ConfigError(key, f"{path}: file not found (see docs/gpu.md, 'Grounding DINO and SAM weights')")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a foreign file
        raise ConfigError(key, f"{path}: not a readable weights file ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(key, f"{path}: expected a state dict of tensors")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = encoder.state_dict()
    for name, value in list(state.items()):
        if name in own and value.ndim == 4 and value.shape[1] == 3 and own[name].shape[1] == 1:
            state[name] = value.sum(dim=1, keepdim=True)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(key, f"{path}: weights do not fit encoder '{type(encoder).__name__}': {first}") from None


def build_model(config: ModelConfig, pretrained: bool = True) -> SegmentationNet:
    """The one way to build a network from a :class:`ModelConfig`.

    ``pretrained=False`` skips ``model.encoder_weights`` (for networks whose weights are
    loaded from a checkpoint right after).
    """
    return SegmentationNet(config, pretrained)


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """Plain-dict form for checkpoints (JSON- and pickle-friendly)."""
    out = asdict(config)
    out["decoder_channels"] = list(config.decoder_channels)
    return out
