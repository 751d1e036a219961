"""Runtime settings: the thread count, devices."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from busseg.errors import ConfigError
from busseg.runtime import in_queued_experiment, resolve_device, resolve_threads


def test_auto_threads_use_every_core_outside_a_queue_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_threads("auto") == len(os.sched_getaffinity(0))
    assert resolve_threads(3) == 3 and resolve_threads(0) == 0


def test_auto_threads_are_one_per_dvc_queue_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    worker = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    worker.mkdir(parents=True)
    monkeypatch.chdir(worker)
    assert in_queued_experiment()
    assert resolve_threads("auto") == 1


@pytest.mark.parametrize("bad", ["many", -1, 1.5, True])
def test_bad_thread_counts_name_the_parameter(bad) -> None:
    with pytest.raises(ConfigError, match="runtime.threads"):
        resolve_threads(bad)


def test_unknown_device_names_the_parameter() -> None:
    with pytest.raises(ConfigError, match="runtime.device"):
        resolve_device("tpu:7")
