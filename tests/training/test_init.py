"""``train.init``: every method starts from none, the static teacher or a checkpoint (issue 19)."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from busseg.errors import ConfigError, DataError
from busseg.models import ModelConfig, build_model
from busseg.params_schema import validate_params
from busseg.training.checkpoint import initialise_from, read_checkpoint, save_model_checkpoint
from busseg.training.config import TrainConfig, warmup_config
from busseg.training.methods import METHODS

REPO = Path(__file__).resolve().parents[2]


def save_net(path: Path, config: ModelConfig, seed: int) -> Path:
    torch.manual_seed(seed)
    save_model_checkpoint(path, build_model(config), TrainConfig(), epoch=0, val_dice=0.5)
    return path


def test_initialise_from_copies_every_weight(tiny_model_config: ModelConfig, tmp_path: Path) -> None:
    source = save_net(tmp_path / "teacher.pt", tiny_model_config, seed=1)
    torch.manual_seed(2)
    student = build_model(tiny_model_config)
    initialise_from(student, source)
    stored = read_checkpoint(source)["model"]
    for name, value in student.state_dict().items():
        assert torch.equal(value, stored[name]), name


def test_initialise_from_another_network_names_the_key_and_file(tiny_model_config: ModelConfig, tmp_path: Path) -> None:
    source = save_net(tmp_path / "wide.pt", replace(tiny_model_config, decoder_channels=(32, 32, 16, 8, 8)), seed=1)
    with pytest.raises(ConfigError, match="wide.pt holds a different network") as info:
        initialise_from(build_model(tiny_model_config), source)
    assert info.value.key == "train.init"
    with pytest.raises(DataError, match="checkpoint not found"):
        initialise_from(build_model(tiny_model_config), tmp_path / "missing.pt")


@pytest.mark.parametrize("value", ["none", "static_teacher", "models/mine.pt"])
def test_init_is_a_loop_key_every_method_accepts(value: str) -> None:
    config = TrainConfig(init=value)
    config.check()
    assert config.init_path == (None if value in ("none", "static_teacher") else value)
    for cls in METHODS.values():
        cls.requirements(replace(config, method=cls.name))  # no method refuses an initialisation


def test_init_errors_and_the_old_key() -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(init=" ").check()
    assert info.value.key == "train.init"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["init_from_static"] = True
    with pytest.raises(ConfigError, match="replaced by train.init") as info:
        validate_params(params)
    assert info.value.key == "train.init_from_static"
    # The warm-up trains the static teacher: it always starts from the random initialisation.
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["warmup"]["init"] = "static_teacher"
    with pytest.raises(ConfigError) as info:
        validate_params(params)
    assert info.value.key == "warmup.init"
    assert warmup_config({"epochs": 1}).init == "none"


def _train_stage(tmp_path: Path, tiny_prepared: Path, teacher: Path, init: str) -> subprocess.CompletedProcess:
    """stages/train.py (supervised, one step at a vanishing learning rate) in ``tmp_path``."""
    ids = sorted(p.stem for p in (tiny_prepared / "images").glob("*.png"))
    splits = tmp_path / "splits"
    splits.mkdir(exist_ok=True)
    for name, chunk in (("labeled", ids[:4]), ("unlabeled", ids[4:12]), ("val", ids[12:])):
        (splits / f"{name}.txt").write_text("\n".join(chunk) + "\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update(encoder="resnet18", image_size=64, decoder_channels=[32, 16, 16, 8, 8])
    params["train"].update(method="supervised", init=init, epochs=1, steps_per_epoch=1, batch_size=4, lr=1e-12)
    params["runtime"].update(device="cpu", threads=1, progress=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(REPO / "stages/train.py"), "--prepared", str(tiny_prepared), "--splits", str(splits),
           "--static-teacher", str(teacher), "--out", "student.pt", "--live", "live"]
    env_scratch = {"BUSSEG_SCRATCH": str(tmp_path / "scratch")}
    import os

    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, **env_scratch})


@pytest.mark.slow
def test_train_stage_starts_supervised_from_the_static_teacher(tiny_prepared: Path, tmp_path: Path) -> None:
    config = ModelConfig(encoder="resnet18", image_size=64, decoder_channels=(32, 16, 16, 8, 8))
    teacher = save_net(tmp_path / "teacher.pt", config, seed=5)
    result = _train_stage(tmp_path, tiny_prepared, teacher, "static_teacher")
    assert result.returncode == 0, result.stderr[-2000:]
    student, stored = read_checkpoint(tmp_path / "student.pt")["model"], read_checkpoint(teacher)["model"]
    weights = [k for k in stored if k.endswith(".weight") and stored[k].ndim == 4]
    # One step at lr 1e-12 leaves the convolutions where the static teacher had them.
    assert all(torch.allclose(student[k], stored[k], atol=1e-6) for k in weights)
    # A checkpoint path is the same start; "none" is the random initialisation.
    other = tmp_path / "run2"
    other.mkdir()
    assert _train_stage(other, tiny_prepared, teacher, str(teacher)).returncode == 0
    assert all(torch.allclose(read_checkpoint(other / "student.pt")["model"][k], stored[k], atol=1e-6) for k in weights)
    fresh = tmp_path / "run3"
    fresh.mkdir()
    assert _train_stage(fresh, tiny_prepared, teacher, "none").returncode == 0
    assert not all(torch.allclose(read_checkpoint(fresh / "student.pt")["model"][k], stored[k], atol=1e-3) for k in weights)
    # A missing checkpoint is one error line naming the file.
    missing = tmp_path / "run4"
    missing.mkdir()
    result = _train_stage(missing, tiny_prepared, teacher, "nowhere/student.pt")
    assert result.returncode == 1 and "nowhere/student.pt" in result.stderr and "Traceback" not in result.stderr
