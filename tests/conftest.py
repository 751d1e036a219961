"""Shared fixtures: tiny datasets and models built offline, once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One thread: tests must behave the same on a loaded two-core machine.
torch.set_num_threads(1)
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic dataset of 16 images at 64 px (images/, masks/, index.csv)."""
    from busseg.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "tiny"
    prepare_dataset("tiny", {"kind": "synthetic", "count": 16, "size": 64, "seed": 3}, out, progress=False)
    return out


@pytest.fixture
def tiny_model_config():
    """A U-Net small enough for CPU unit tests (64 px, narrow decoder)."""
    from busseg.models import ModelConfig

    return ModelConfig(encoder="resnet18", image_size=64, decoder_channels=(32, 16, 16, 8, 8))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random U-Net checkpoint (64 px), built offline (``busseg predict`` tests)."""
    from busseg.models import ModelConfig, build_model
    from busseg.training.checkpoint import save_model_checkpoint
    from busseg.training.config import TrainConfig

    config = ModelConfig(encoder="resnet18", image_size=64, decoder_channels=(32, 16, 16, 8, 8))
    path = tmp_path_factory.mktemp("model") / "student.pt"
    save_model_checkpoint(path, build_model(config), TrainConfig(), epoch=0, val_dice=0.5)
    return path
