"""End to end: `dvc repro` with ``pseudo.backend: grounded_sam`` on tiny random models.

As in test_pipeline.py, the committed pipeline is copied into a fresh git + DVC
repository with tiny parameters. The Grounding DINO and SAM checkpoints are tiny
random models in the official file formats (tests/pseudo/tiny_vlm.py), written to
``models/weights``. Their architectures are not the official ones, so the stage
subprocesses get them from tests/pseudo/tiny_vlm_site/sitecustomize.py (first on
PYTHONPATH, switched on by BUSSEG_TEST_TINY_VLM=1); the stage itself runs the
production path: weight verification, torch.load, load_state_dict, labeling.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pseudo.tiny_vlm import TINY_SAM_TYPE, tiny_swin, write_tiny_dino, write_tiny_sam
from test_pipeline import REPO, TINY, deep_update, init_repository, ran_stages

pytestmark = pytest.mark.slow

TINY_VLM_SITE = REPO / "tests" / "pseudo" / "tiny_vlm_site"
WEIGHTS = Path("models/weights")
OFFICIAL_DINO_NAME = "groundingdino_swint_ogc.pth"

GROUNDED_SAM = {
    "label_ratio": 0.25,
    "datasets": {"synthetic": {"count": 16, "size": 64}},
    "pseudo": {
        "backend": "grounded_sam",
        "min_area_fraction": 0.0,  # random SAM masks: keep every non-empty one
        "grounded_sam": {
            "dino_config": str(WEIGHTS / "tiny_dino" / "tiny_dino_cfg.py"),
            "dino_checkpoint": str(WEIGHTS / "tiny_dino" / "tiny_groundingdino.pth"),
            "text_encoder": str(WEIGHTS / "tiny_dino" / "bert"),
            "sam_model_type": TINY_SAM_TYPE,
            "sam_checkpoint": str(WEIGHTS / "tiny_sam.pth"),
            "dino_image_size": 64,
            "dino_max_size": 64,
            "box_threshold": 0.0,  # random weights: let every query through
            "text_threshold": 0.0,
            "verify_checksums": False,  # tiny files: existence only
            "device": "cpu",
        },
    },
    "train": {"method": "supervised"},
}


def stage_env(project: Path) -> dict[str, str]:
    """Environment of `dvc`: the venv first on PATH, the tiny architectures switched on."""
    python_path = os.pathsep.join(p for p in (str(TINY_VLM_SITE), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": python_path,
        "BUSSEG_TEST_TINY_VLM": "1",
        "BUSSEG_SCRATCH": str(project / ".busseg" / "scratch"),
        "DVC_NO_ANALYTICS": "1",
    }


def run(cmd: list[str], project: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=project, env=stage_env(project), capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc


def write_params(project: Path, params: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project_grounded_sam")
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / WEIGHTS).mkdir(parents=True)
    shutil.copy(REPO / WEIGHTS / "README.md", root / WEIGHTS / "README.md")
    # calibrate depends on the appearance labeler's weights file (pseudo.appearance.weights)
    # whatever the backend: dvc.yaml's deps are static.
    shutil.copytree(REPO / "models/appearance", root / "models/appearance")
    with tiny_swin():
        write_tiny_dino(root / WEIGHTS / "tiny_dino")
    write_tiny_sam(root / WEIGHTS)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    write_params(root, deep_update(deep_update(params, TINY), GROUNDED_SAM))
    init_repository(root, run)
    return root


def test_repro_with_grounded_sam_labels_every_image_and_reaches_the_summary(project: Path) -> None:
    output = run(["dvc", "repro"], project).stdout
    assert {"pseudo_label@synthetic", "warmup@synthetic", "train@synthetic", "report"} <= ran_stages(output)
    metrics = json.loads((project / "metrics/pseudo/synthetic.json").read_text())
    assert metrics["backend"] == "grounded_sam"
    for key in ("coverage", "dice", "dice_valid", "hit_rate"):
        assert key in metrics
    assert 0.0 < metrics["coverage"] <= 1.0  # thresholds 0: every image gets a box
    labels = pd.read_csv(project / "data/pseudo/synthetic/labels.csv", keep_default_na=False)
    prepared = pd.read_csv(project / "data/prepared/synthetic/index.csv")
    assert sorted(labels["id"]) == sorted(prepared["id"])
    assert {"valid", "score", "reason"} <= set(labels.columns)
    assert labels["score"].between(0.0, 1.0).all()
    assert (labels.loc[labels["valid"].astype(str) == "True", "box"] != "").all()  # SAM was prompted with a box
    assert set(labels.loc[labels["valid"].astype(str) == "False", "reason"]) <= {"area_below_min"}
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert summary["synthetic"]["pseudo_coverage"] == pytest.approx(metrics["coverage"])


def test_missing_dino_checkpoint_fails_the_stage_with_one_line_naming_file_and_url(project: Path) -> None:
    from busseg.pseudo.weights import OFFICIAL_WEIGHTS

    params_file = project / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    missing = str(WEIGHTS / OFFICIAL_DINO_NAME)
    params["pseudo"]["grounded_sam"]["dino_checkpoint"] = missing
    write_params(project, params)
    try:
        proc = run(["dvc", "repro", "pseudo_label"], project, check=False)
    finally:
        params_file.write_text(original)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    assert missing in errors[0] and "missing" in errors[0]
    assert OFFICIAL_WEIGHTS[OFFICIAL_DINO_NAME].url in errors[0]
    assert "Traceback" not in output
