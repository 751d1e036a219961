"""Atomic writes: complete or absent, ordinary permissions, no temporaries left behind."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from busseg import atomic
from busseg.errors import DataError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_get_the_usual_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a" / "x.json", "{}\n")
        with atomic.atomic_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("1")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a" / "x.json") == 0o644
    assert mode(tmp_path / "out") == 0o755


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_failed_folder_keeps_the_old_folder(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(KeyError):
        with atomic.atomic_dir(tmp_path / "out") as tmp:
            (tmp / "new.txt").write_text("new")
            raise KeyError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]


def test_the_temporary_name_is_fixed_per_process(tmp_path: Path) -> None:
    # Writers that record the name they write to (torch.save) must see the same name every run.
    assert atomic.temporary_path(tmp_path / "x.pt") == tmp_path / f".x.pt.{os.getpid()}.tmp"


def test_temporaries_of_killed_processes_are_removed_on_the_next_write(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".data.{dead_pid}.tmp").mkdir()  # a folder left by `kill -9`
    (tmp_path / f".data.{dead_pid}.tmp" / "half.png").write_bytes(b"x")
    live = tmp_path / f".data.{os.getppid()}.tmp"  # a live writer's temporary stays
    live.write_bytes(b"busy")
    with atomic.atomic_dir(tmp_path / "data") as tmp:
        (tmp / "ok").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data", live.name])


def test_copy_file_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    source = tmp_path / "best.pt"
    source.write_bytes(b"weights")
    atomic.copy_file(source, tmp_path / "out" / "student.pt")
    assert (tmp_path / "out" / "student.pt").read_bytes() == b"weights"

    def full(src, dst, *args, **kwargs):
        Path(dst).write_bytes(b"par")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(DataError, match=r"teacher\.pt: cannot write: No space left on device$"):
        atomic.copy_file(source, tmp_path / "out" / "teacher.pt")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["student.pt"]
