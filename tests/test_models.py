"""The U-Net wrapper: shapes, decoder features, parameter errors."""
from __future__ import annotations

import pytest
import torch

from busseg.errors import ConfigError
from busseg.models import ModelConfig, build_model


def test_forward_and_features_shapes(tiny_model_config) -> None:
    model = build_model(tiny_model_config)
    logits, features = model.forward_features(torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 1, 64, 64)
    assert features.shape == (2, model.feature_channels, 64, 64)
    assert torch.equal(model(torch.zeros(1, 1, 64, 64)), model.forward_features(torch.zeros(1, 1, 64, 64))[0])


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (ModelConfig(image_size=100), "model.image_size"),
        (ModelConfig(encoder="resnet999"), "model.encoder"),
        (ModelConfig(arch="segformer"), "model.arch"),
    ],
)
def test_bad_config_names_the_parameter(config: ModelConfig, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model(config)
