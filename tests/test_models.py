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


def test_encoder_weights_from_a_local_file_work_offline(tmp_path) -> None:
    """``model.encoder_weights: <file>``: torchvision-style RGB ResNet weights, no network (issue 19)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    rgb = smp.encoders.get_encoder("resnet18", in_channels=3, weights=None).state_dict()
    rgb = {**rgb, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}  # as torchvision saves it
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(rgb, path)
    config = ModelConfig(encoder="resnet18", encoder_weights=str(path), image_size=64, decoder_channels=(32, 16, 16, 8, 8))
    encoder = build_model(config).net.encoder.state_dict()
    torch.testing.assert_close(encoder["conv1.weight"], rgb["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(encoder["layer4.1.conv2.weight"], rgb["layer4.1.conv2.weight"])
    # A checkpoint of such a model loads without the file (its weights are in the checkpoint).
    from busseg.training.checkpoint import load_model, save_model_checkpoint
    from busseg.training.config import TrainConfig

    save_model_checkpoint(tmp_path / "student.pt", build_model(config), TrainConfig(), epoch=0, val_dice=0.5)
    path.unlink()
    assert load_model(tmp_path / "student.pt").config.encoder_weights == str(path)


@pytest.mark.parametrize("content", ["missing", "garbage", "wrong"])
def test_bad_encoder_weight_files_name_the_file(tmp_path, content: str) -> None:
    path = tmp_path / "weights.pth"
    if content == "garbage":
        path.write_bytes(b"not a weights file")
    elif content == "wrong":
        torch.save({"conv1.weight": torch.zeros(3, 3, 3, 3)}, path)
    config = ModelConfig(encoder="resnet18", encoder_weights=str(path), image_size=64, decoder_channels=(32, 16, 16, 8, 8))
    with pytest.raises(ConfigError, match="weights.pth") as info:
        build_model(config)
    assert info.value.key == "model.encoder_weights"
