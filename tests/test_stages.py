"""Stage scripts: bad parameters end in one clear line and exit code 1, no traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def run_stage(cwd: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / script), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def write_params(cwd: Path, **overrides) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(overrides)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))


def test_unknown_dataset_kind(tmp_path: Path) -> None:
    write_params(tmp_path, datasets={"mine": {"kind": "dicom", "root": "x"}})
    proc = run_stage(tmp_path, "prepare.py", "--dataset", "mine", "--out", "data/prepared/mine", "--report", "r.json")
    assert proc.returncode == 1
    assert "datasets.mine.kind" in proc.stderr and "available:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data/prepared/mine").exists()


def test_missing_root(tmp_path: Path) -> None:
    write_params(tmp_path, datasets={"bra": {"kind": "busbra", "root": str(tmp_path / "nowhere")}})
    proc = run_stage(tmp_path, "prepare.py", "--dataset", "bra", "--out", "out", "--report", "r.json")
    assert proc.returncode == 1 and "nowhere" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("ratio", [0, 1.5, -0.2])
def test_label_ratio_out_of_range(tmp_path: Path, tiny_prepared: Path, ratio: float) -> None:
    write_params(tmp_path, label_ratio=ratio)
    proc = run_stage(tmp_path, "split.py", "--index", str(tiny_prepared / "index.csv"), "--out", "splits",
                     "--metrics", "split.json")
    assert proc.returncode == 1
    assert "label_ratio" in proc.stderr and "Traceback" not in proc.stderr
