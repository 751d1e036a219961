"""Scratch folders of resumable stages: keyed by inputs, params and code; released after success."""
from __future__ import annotations

from pathlib import Path

import pytest

from busseg import scratch


def test_key_changes_with_params_and_file_contents(tmp_path: Path) -> None:
    data = tmp_path / "labels.csv"
    data.write_text("a\n")
    key = scratch.inputs_key({"lr": 1e-3}, [data])
    assert scratch.inputs_key({"lr": 1e-3}, [data]) == key
    assert scratch.inputs_key({"lr": 1e-4}, [data]) != key
    data.write_text("b\n")
    assert scratch.inputs_key({"lr": 1e-3}, [data]) != key


def test_folder_name_carries_the_code_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = scratch.scratch_dir("train@x", "abc", root=tmp_path)
    assert first.parent == tmp_path / "train-x" and first.name.startswith("abc-")
    # State of an interrupted run of other code is never found by this code.
    monkeypatch.setattr(scratch, "code_fingerprint", lambda: "0ther000")
    assert scratch.scratch_dir("train@x", "abc", root=tmp_path) != first


def test_release_removes_the_folder_and_empty_parents_and_usage_is_visible(tmp_path: Path) -> None:
    folder = scratch.scratch_dir("warmup-x", "k", root=tmp_path)
    (folder / "last.pt").write_bytes(b"x" * 2048)
    assert scratch.usage(tmp_path) == 2048
    assert "MB of unfinished runs' resume state" in scratch.usage_note(tmp_path)
    scratch.release(folder, root=tmp_path)
    assert tmp_path.is_dir() and list(tmp_path.iterdir()) == []
    assert scratch.usage_note(tmp_path) is None


def test_a_new_run_removes_empty_run_folders_and_keeps_state(tmp_path: Path) -> None:
    """A run killed (kill -9) before it saved anything leaves an empty folder (issue 21)."""
    abandoned = scratch.scratch_dir("train-a", "killed", root=tmp_path)
    holding = scratch.scratch_dir("train-b", "resumable", root=tmp_path)
    (holding / "last.pt").write_bytes(b"state")
    mine = scratch.scratch_dir("train-c", "new", root=tmp_path)
    assert not abandoned.exists() and not abandoned.parent.exists()  # its stage folder went too
    assert (holding / "last.pt").read_bytes() == b"state" and mine.is_dir()
    assert scratch.scratch_dir("train-c", "new", root=tmp_path) == mine and mine.is_dir()
