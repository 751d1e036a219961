"""A full disk (ENOSPC) and ``ulimit -f`` (EFBIG) under the training and evaluate stages.

Each case runs the real stage command as ``dvc repro`` would. It must end with exit code
1 and one ``error: <file>: ... <system message>`` line, no traceback, no temporary left
anywhere and no output of the stage written (the trained model, the overlays, cases.json).
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bad_input.test_prepare_bad_input import _FULL_DISK, leftovers

REPO = Path(__file__).resolve().parents[2]
TRAIN_OUTPUTS = ("--out", "models/student.pt", "--live", "reports/train")


def _env() -> dict[str, str]:
    # No .pyc writes: under `ulimit -f` they would hit the limit before the stage starts.
    return {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _params(cwd: Path) -> None:
    """The committed params with a tiny supervised run (1 epoch of 2 steps at 64 px) on the CPU."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update({"encoder": "resnet18", "image_size": 64, "decoder_channels": [32, 16, 16, 8, 8], "encoder_weights": None})
    params["train"].update({"method": "supervised", "epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "init": "none"})
    params.setdefault("runtime", {}).update({"progress": False, "threads": 1, "device": "cpu"})
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _splits(cwd: Path) -> None:
    ids = [f"syn_{i:04d}" for i in range(16)]
    parts = {"labeled": ids[:6], "unlabeled": ids[6:12], "val": ids[12:14], "test": ids[14:], "train": ids[:12]}
    (cwd / "splits").mkdir()
    for name, part in parts.items():
        (cwd / "splits" / f"{name}.txt").write_text("".join(f"{i}\n" for i in part))


def _train_args(prepared: Path) -> list[str]:
    return [
        str(REPO / "stages" / "train.py"), "--prepared", str(prepared), "--splits", "splits",
        "--static-teacher", "models/teacher.pt", *TRAIN_OUTPUTS,
    ]


def _file_size_limit(kib: int):
    """``preexec_fn``: ``ulimit -f`` of ``kib`` KiB, SIGXFSZ ignored (so a write fails with EFBIG)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))

    return limit


def _one_error_line(proc: subprocess.CompletedProcess, names: str, message: str) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert names in errors[0] and errors[0].endswith(message), errors[0]
    return errors[0]


def test_ulimit_f_during_training_is_one_error_line_naming_the_checkpoint(tmp_path: Path, tiny_prepared: Path) -> None:
    _params(tmp_path)
    _splits(tmp_path)
    command = [sys.executable, "-m", "busseg.launch", "--nproc", "1", "--device", "cpu", *_train_args(tiny_prepared)]
    proc = subprocess.run(
        command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600, preexec_fn=_file_size_limit(1024)
    )
    _one_error_line(proc, ".pt: cannot write", "File too large")
    assert not (tmp_path / "models" / "student.pt").exists()
    assert leftovers(tmp_path) == []


def test_a_full_disk_during_training_is_one_error_line_naming_the_checkpoint(tmp_path: Path, tiny_prepared: Path) -> None:
    _params(tmp_path)
    _splits(tmp_path)
    command = [sys.executable, "-c", _FULL_DISK, "last.pt", *_train_args(tiny_prepared)]
    proc = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    line = _one_error_line(proc, "last.pt: cannot write", "No space left on device")
    assert ".tmp" not in line  # the file's own name, not its temporary's
    assert not (tmp_path / "models" / "student.pt").exists()
    assert leftovers(tmp_path) == []


EVALUATE_OUTPUTS = {
    "--metrics": "metrics/eval.json",
    "--per-image": "reports/eval/per_image.csv",
    "--overlays": "reports/eval/overlays",
    "--cases": "reports/eval/cases",
}


def _evaluate_command(prepared: Path, checkpoint: Path) -> list[str]:
    args = [str(REPO / "stages" / "evaluate.py"), "--prepared", str(prepared), "--test-ids", "test.txt", "--model", str(checkpoint)]
    for flag, path in EVALUATE_OUTPUTS.items():
        args += [flag, path]
    return args


@pytest.mark.parametrize(
    ("fails_on", "names"),
    [(".png", "reports/eval/overlays/syn_0000.png"), ("cases.json", "reports/eval/cases/cases.json")],
    ids=["overlay", "cases.json"],
)
def test_a_full_disk_while_evaluate_writes_is_one_error_line_and_nothing_written(
    tmp_path: Path, tiny_prepared: Path, checkpoint: Path, fails_on: str, names: str
) -> None:
    _params(tmp_path)
    (tmp_path / "test.txt").write_text("".join(f"syn_{i:04d}\n" for i in range(4)))
    command = [sys.executable, "-c", _FULL_DISK, fails_on, *_evaluate_command(tiny_prepared, checkpoint)]
    proc = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    _one_error_line(proc, f"error: {names}: cannot write", "No space left on device")
    assert leftovers(tmp_path) == []
    for path in EVALUATE_OUTPUTS.values():
        assert not (tmp_path / path).exists(), path


def test_ulimit_f_while_evaluate_writes_overlays_is_one_error_line(tmp_path: Path, tiny_prepared: Path, checkpoint: Path) -> None:
    _params(tmp_path)
    (tmp_path / "test.txt").write_text("".join(f"syn_{i:04d}\n" for i in range(4)))
    command = [sys.executable, *_evaluate_command(tiny_prepared, checkpoint)]
    proc = subprocess.run(
        command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600, preexec_fn=_file_size_limit(4)
    )
    _one_error_line(proc, "error: reports/eval/overlays/syn_0000.png: cannot write", "File too large")
    assert leftovers(tmp_path) == []
    for path in EVALUATE_OUTPUTS.values():
        assert not (tmp_path / path).exists(), path


_LIBRARY_WRITE_FAILS = """
import errno, sys
sys.path.insert(0, sys.argv[1])
from _params import main_guard

def main():
    # A write no busseg code wraps (a library's own file) running out of room.
    raise OSError(errno.ENOSPC, "No space left on device", "reports/train/plots/metrics/loss.tsv")

main_guard(main)
"""


def test_an_unwrapped_full_disk_error_is_still_one_line_from_main_guard(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _LIBRARY_WRITE_FAILS, str(REPO / "stages")],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == "error: reports/train/plots/metrics/loss.tsv: No space left on device\n"
