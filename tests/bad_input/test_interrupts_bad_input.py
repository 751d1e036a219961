"""Interrupts of the real stage commands: Ctrl-C (SIGINT) and ``kill -9`` (issue 21).

Ctrl-C during ``dvc repro`` reaches the stage as SIGINT: it must end in one line,
``interrupted``, exit code 130 (128 + SIGINT, what a shell reports) and nothing
half-written, whether the stage runs directly or through ``busseg.launch`` (the training
stages' command). ``kill -9`` cannot be caught: the next run must resume from the last
finished epoch and say which one, counted as the per-epoch lines count, and a run killed
before it saved anything must not leave an empty scratch folder behind for good.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bad_input.test_prepare_bad_input import OUT, PREPARED, REPORT, STAGE_ARGS, leftovers, write_params

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    # Unbuffered: a test reads the stage's progress lines from a file while it runs.
    return {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1"}


def interruptible() -> None:
    """``preexec_fn`` of a child that a test sends SIGINT: the default disposition, as under a terminal.

    A shell starts background jobs (``cmd &``, CI runners, nohup) with SIGINT ignored, children
    inherit that, and Python then never raises KeyboardInterrupt: the test would measure the
    shell, not the stage.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 240) -> None:
    """Poll ``condition()`` until it holds; fail if the process ends or time runs out first."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, "the stage ended before it could be interrupted"
        assert time.monotonic() < deadline, "the stage never got there"
        time.sleep(0.01)


@pytest.mark.parametrize("through_launch", [False, True], ids=["stage", "busseg.launch"])
def test_ctrl_c_during_prepare_is_one_line_exit_130_and_nothing_written(tmp_path: Path, through_launch: bool) -> None:
    write_params(tmp_path, {"kind": "synthetic", "count": 3000, "size": 96, "seed": 0})
    script = str(REPO / "stages" / "prepare.py")
    launcher = ["-m", "busseg.launch", "--nproc", "1", "--device", "cpu"] if through_launch else []
    proc = subprocess.Popen(
        [sys.executable, *launcher, script, *STAGE_ARGS],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible,
    )
    building = tmp_path / ".busseg" / "scratch" / f".prepared-mine.{proc.pid}.tmp" / "images"  # built in the scratch folder
    _wait_for(lambda: building.is_dir() and any(building.iterdir()), proc)  # mid-way through writing
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr == "interrupted\n", stderr
    assert leftovers(tmp_path) == []
    assert not (tmp_path / OUT).exists() and not (tmp_path / REPORT).exists()


def test_ctrl_c_while_a_stage_still_imports_is_the_same_line() -> None:
    """Before ``main_guard`` runs (importing torch takes seconds) the hook of ``_params`` answers."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import _params; raise KeyboardInterrupt"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "stages")], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 130 and proc.stderr == "interrupted\n", proc.stderr


# --- kill -9 of a training stage: the resume message and the scratch folder ------------------


def _train_params(cwd: Path, seed: int) -> None:
    """The committed params with a tiny supervised run: 3 epochs of 25 steps at 64 px."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["seed"] = seed
    params["model"].update({"encoder": "resnet18", "image_size": 64, "decoder_channels": [32, 16, 16, 8, 8], "encoder_weights": None})
    params["train"].update({"method": "supervised", "epochs": 3, "steps_per_epoch": 25, "batch_size": 2, "init": "none"})
    params.setdefault("runtime", {}).update({"progress": False, "threads": 1, "device": "cpu"})
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _train_command(prepared: Path) -> list[str]:
    """The train stage as dvc.yaml runs it (through busseg.launch), on ``prepared``."""
    return [
        sys.executable, "-m", "busseg.launch", "--nproc", "1", "--device", "cpu", str(REPO / "stages" / "train.py"),
        "--prepared", str(prepared), "--splits", "splits", "--static-teacher", "models/teacher.pt",
        "--out", "models/student.pt", "--live", "reports/train",
    ]


def _write_splits(cwd: Path) -> None:
    ids = [f"syn_{i:04d}" for i in range(16)]
    parts = {"labeled": ids[:6], "unlabeled": ids[6:12], "val": ids[12:14], "test": ids[14:]}
    parts["train"] = ids[:12]
    (cwd / "splits").mkdir()
    for name, part in parts.items():
        (cwd / "splits" / f"{name}.txt").write_text("".join(f"{i}\n" for i in part))


def _run_folders(cwd: Path) -> list[Path]:
    """The train stage's run folders under the scratch root."""
    return sorted((cwd / ".busseg" / "scratch").glob("train-*/*"))


@pytest.mark.slow
def test_kill_9_in_epoch_2_resumes_after_epoch_1_and_no_empty_scratch_folder_stays(
    tmp_path: Path, tiny_prepared: Path
) -> None:
    _write_splits(tmp_path)
    command = _train_command(tiny_prepared)
    log = tmp_path / "stdout.txt"

    # 1. A run killed before its first epoch leaves an empty folder (nothing can run on kill -9).
    _train_params(tmp_path, seed=1)
    with log.open("w") as handle:
        proc = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=handle, stderr=subprocess.STDOUT)
        _wait_for(lambda: bool(_run_folders(tmp_path)), proc)
        proc.kill()
        proc.wait()
    (abandoned,) = _run_folders(tmp_path)
    assert list(abandoned.iterdir()) == []

    # 2. Another run, killed in epoch 2 of 3: the empty folder of run 1 is gone once it starts.
    _train_params(tmp_path, seed=0)
    with log.open("w") as handle:
        proc = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=handle, stderr=subprocess.STDOUT)
        _wait_for(lambda: "epoch 1/3:" in log.read_text(), proc)
        proc.kill()
        proc.wait()
    # Epochs that finished before the kill (1, unless the machine was slow to poll).
    finished = sum(f"epoch {n}/3:" in log.read_text() for n in (1, 2, 3))
    assert finished in (1, 2), log.read_text()
    (kept,) = _run_folders(tmp_path)
    assert kept != abandoned and (kept / "last.pt").is_file()

    # 3. The re-run says where it resumes, counted as the epoch lines count; then cleans up.
    proc = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = Path(".busseg/scratch") / kept.relative_to(tmp_path / ".busseg" / "scratch") / "last.pt"
    assert f"supervised: resuming after epoch {finished}/3 from {state}" in proc.stdout, proc.stdout
    for n in (1, 2, 3):
        assert (f"epoch {n}/3:" in proc.stdout) == (n > finished), proc.stdout
    assert (tmp_path / "models" / "student.pt").is_file()
    assert not (tmp_path / ".busseg" / "scratch").exists() or _run_folders(tmp_path) == []


_WAITING_STAGE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from _params import main_guard

def main():
    print("ready", flush=True)
    time.sleep(300)

main_guard(main)
"""


@pytest.mark.slow
def test_ctrl_c_of_a_two_rank_run_is_one_line_for_all_ranks(tmp_path: Path) -> None:
    """runtime.nproc 2: the terminal's SIGINT reaches torchrun's agent and both ranks; one line."""
    script = tmp_path / "stage.py"
    script.write_text(_WAITING_STAGE)
    command = [sys.executable, "-m", "busseg.launch", "--nproc", "2", "--device", "cpu", str(script), str(REPO / "stages")]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=interruptible,
    )
    ready = 0
    while ready < 2:
        line = proc.stdout.readline()
        assert line, "the ranks did not start"
        ready += "ready" in line
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr == "interrupted\n" and stdout == ""
