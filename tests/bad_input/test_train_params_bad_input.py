"""Parameters of the train stage that must fail at once, with one ``error:`` line naming
the key, before any image is loaded: the stage runs on a prepared folder whose images are
gone, so an error about an image would mean the check came too late."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _run_train(cwd: Path, prepared: Path, edit) -> subprocess.CompletedProcess:
    """The train stage (through busseg.launch, as dvc.yaml runs it) with tiny params edited by ``edit``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update({"encoder": "resnet18", "image_size": 64, "decoder_channels": [32, 16, 16, 8, 8], "encoder_weights": None})
    params["train"].update({"method": "supervised", "epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "init": "none"})
    params.setdefault("runtime", {}).update({"progress": False, "threads": 1, "device": "cpu"})
    edit(params)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ids = [f"syn_{i:04d}" for i in range(16)]
    (cwd / "splits").mkdir()
    for name, part in {"labeled": ids[:6], "unlabeled": ids[6:12], "val": ids[12:14]}.items():
        (cwd / "splits" / f"{name}.txt").write_text("".join(f"{i}\n" for i in part))
    command = [
        sys.executable, "-m", "busseg.launch", "--nproc", "1", "--device", "cpu", str(REPO / "stages" / "train.py"),
        "--prepared", str(prepared), "--splits", "splits", "--static-teacher", "models/teacher.pt",
        "--out", "models/student.pt", "--live", "reports/train",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1", "BUSSEG_SCRATCH": str(cwd / "scratch")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def imageless(tmp_path: Path, tiny_prepared: Path) -> Path:
    """A copy of the tiny prepared dataset without its images (index and masks kept)."""
    copy = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, copy)
    shutil.rmtree(copy / "images")
    return copy


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_train_init_naming_a_missing_file_fails_before_any_image_naming_train_init(tmp_path: Path, imageless: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    line = _error_line(_run_train(work, imageless, lambda p: p["train"].update(init="checkpoints/mine.pt")))
    assert line.startswith("error: parameter 'train.init': no checkpoint file at checkpoints/mine.pt")
    assert "dvc repro" not in line
    assert not (work / "models").exists()


@pytest.mark.parametrize("method", ["dual_teacher", "supervised"])
def test_a_method_key_out_of_range_fails_whatever_the_method(tmp_path: Path, imageless: Path, method: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    line = _error_line(_run_train(work, imageless, lambda p: p["train"].update(method=method, bcp_pretrain_fraction=1.5)))
    assert line == "error: parameter 'train.bcp_pretrain_fraction': must be in [0.0, 0.95], got 1.5"


def test_an_unknown_encoder_lists_the_closest_valid_names(tmp_path: Path, imageless: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    line = _error_line(_run_train(work, imageless, lambda p: p["model"].update(encoder="resnet19")))
    assert line.startswith("error: parameter 'model.encoder': unknown encoder 'resnet19'; closest valid names: resnet18")
    assert "get_encoder_names" not in line
