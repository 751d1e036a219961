"""A user's own scans end to end: a folder of scans with a few masks, some of them DICOM.

Two checks that run the real entry points:

* nothing leaks: one dataset, once with every mask (``label_ratio`` simulates the unlabeled
  images) and once with the masks of the unlabeled images deleted, given the same labeled,
  validation and test ids, gives byte-identical pseudo labels and bit-identical static
  teacher and student (the stage scripts, on the CPU with portable kernels);
* the README's example: ``dvc repro`` on a ``folder`` dataset whose unmasked scans are the
  unlabeled ones, then ``busseg predict`` on those scans.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from busseg.data.prepare import prepare_dataset
from busseg.dicom import write_dicom
from busseg.data.prepared import PreparedDataset
from busseg.data.split import read_id_list
from tests.test_pipeline import TINY, deep_update, init_repository, run

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 synthetic scans at 64 px, prepared (every mask), the source of both layouts."""
    out = tmp_path_factory.mktemp("source") / "prepared"
    prepare_dataset("sim", {"kind": "synthetic", "count": 30, "size": 64, "seed": 0}, out, progress=False)
    return out


def tiny_params(datasets: dict) -> dict:
    params = deep_update(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    params["pseudo"]["refine_rounds"] = 0
    params["pseudo"]["appearance"]["weights"] = str(REPO / params["pseudo"]["appearance"]["weights"])
    params["datasets"] = datasets
    return params


def stage(workspace: Path, script: str, *args: str) -> str:
    """Run ``stages/<script>`` in ``workspace`` (its params.yaml); its output, or fail with it."""
    env = {**os.environ, "BUSSEG_SCRATCH": str(workspace / ".scratch"), "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "stages" / script), *args], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def train_from(workspace: Path, prepared: Path, splits: Path) -> dict[str, Path]:
    """calibrate, pseudo_label, warmup and train of one dataset, as dvc.yaml runs them."""
    out = {"pseudo": workspace / "pseudo", "teacher": workspace / "static_teacher.pt", "student": workspace / "student.pt"}
    stage(workspace, "calibrate.py", "--prepared", str(prepared), "--labeled-ids", str(splits / "labeled.txt"),
          "--out", "calibration.json")
    stage(workspace, "pseudo_label.py", "--prepared", str(prepared), "--out", str(out["pseudo"]), "--metrics", "pseudo.json",
          "--curve", "curve.csv", "--overlays", "overlays", "--calibration", "calibration.json")
    stage(workspace, "warmup.py", "--prepared", str(prepared), "--pseudo", str(out["pseudo"]),
          "--train-ids", str(splits / "train.txt"), "--val-ids", str(splits / "val.txt"),
          "--out", str(out["teacher"]), "--live", "live_warmup")
    stage(workspace, "train.py", "--prepared", str(prepared), "--splits", str(splits),
          "--static-teacher", str(out["teacher"]), "--out", str(out["student"]), "--live", "live_train")
    return out


def same_weights(a: Path, b: Path) -> bool:
    left, right = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_real_unlabeled_layout_trains_the_same_student_as_the_simulated_one(tmp_path: Path, source: Path) -> None:
    simulated, real = tmp_path / "simulated", tmp_path / "real"
    # The simulated run: every mask present, label_ratio picks the labeled images.
    simulated.mkdir()
    (simulated / "params.yaml").write_text(yaml.safe_dump(tiny_params({"sim": {"kind": "synthetic", "count": 30, "size": 64, "seed": 0}})))
    stage(simulated, "split.py", "--index", str(source / "index.csv"), "--out", "splits", "--metrics", "split.json")
    splits = simulated / "splits"
    assert json.loads((simulated / "split.json").read_text())["mode"] == "simulated"
    # The real layout: the same scans, masks only where the simulated run may see them.
    keep = set(read_id_list(splits / "labeled.txt") + read_id_list(splits / "val.txt") + read_id_list(splits / "test.txt"))
    folder = tmp_path / "clinic"
    shutil.copytree(source / "images", folder / "images")
    (folder / "masks").mkdir()
    for sample_id in keep:
        shutil.copy(source / "masks" / f"{sample_id}.png", folder / "masks")
    real.mkdir()
    (real / "params.yaml").write_text(yaml.safe_dump(tiny_params({"clinic": {"kind": "folder", "root": str(folder)}})))
    stage(real, "prepare.py", "--dataset", "clinic", "--out", "prepared", "--report", "prepare.json")
    prepared_real = PreparedDataset(real / "prepared")
    unlabeled = read_id_list(splits / "unlabeled.txt")
    assert set(prepared_real.ids) - set(prepared_real.masked_ids) == set(unlabeled)

    sim_out = train_from(simulated, source, splits)
    real_out = train_from(real, real / "prepared", splits)  # the same ids, its own prepared folder

    assert (sim_out["pseudo"] / "labels.csv").read_bytes() == (real_out["pseudo"] / "labels.csv").read_bytes()
    assert same_weights(sim_out["teacher"], real_out["teacher"])
    assert same_weights(sim_out["student"], real_out["student"])
    # Pseudo-label quality is scored on masked images only, and says how many had no mask.
    real_pseudo = json.loads((real / "pseudo.json").read_text())
    assert real_pseudo["n_unmasked"] == len(unlabeled) and real_pseudo["n_images"] == len(keep)


def test_readme_example_a_folder_of_scans_with_a_few_masks(tmp_path: Path, source: Path) -> None:
    """A folder of 30 scans (four of them DICOM), 12 outlined: dvc repro, then predict the rest."""
    folder = tmp_path / "clinic"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    prepared = PreparedDataset(source)
    ids = prepared.ids
    for n, sample_id in enumerate(ids):
        if n % 7 == 3:  # a few scans as the scanner exported them
            write_dicom(folder / "images" / f"{sample_id}.dcm", prepared.image(sample_id))
        else:
            shutil.copy(source / "images" / f"{sample_id}.png", folder / "images")
        if n % 5 in (0, 2):
            shutil.copy(source / "masks" / f"{sample_id}.png", folder / "masks")
    outlined = {sample_id for n, sample_id in enumerate(ids) if n % 5 in (0, 2)}

    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "stages", project / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (project / "models" / "weights").mkdir(parents=True)
    shutil.copy(REPO / "models/weights/README.md", project / "models/weights/README.md")
    shutil.copytree(REPO / "models/appearance", project / "models/appearance")
    params = tiny_params({"clinic": {"kind": "folder", "root": str(folder)}})
    params["pseudo"]["appearance"]["weights"] = "models/appearance/default.json"  # inside the project (a dvc dep)
    params["split"] = {"train": 0.7, "val": 2, "test": 3}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_repository(project, run)
    os.environ["BUSSEG_SCRATCH"] = str(project / ".busseg" / "scratch")

    output = run(["dvc", "repro"], project)
    assert "18 without (unlabeled scans)" in output
    split = json.loads((project / "metrics/split/clinic.json").read_text())
    assert (split["mode"], split["n_masked"], split["n_unmasked"], split["n_val"], split["n_test"]) == ("real", 12, 18, 2, 3)
    test_ids = read_id_list(project / "data/splits/clinic/test.txt")
    assert set(test_ids) <= outlined
    summary = json.loads((project / "metrics/summary.json").read_text())["clinic"]
    assert summary["n_images"] == 3 and summary["n_unmasked_scans"] == 18
    assert 0.0 <= summary["dice"] <= 1.0

    unmasked = sorted(p for p in (folder / "images").iterdir() if p.stem not in outlined)
    assert any(p.suffix == ".dcm" for p in unmasked)
    predict = subprocess.run(
        [str(Path(sys.executable).parent / "busseg"), "predict", "--model", str(project / "models/clinic/student.pt"),
         "--out", str(tmp_path / "predictions"), "--no-progress", *map(str, unmasked)],
        capture_output=True, text=True, timeout=300,
    )
    assert predict.returncode == 0, predict.stderr
    assert len(list((tmp_path / "predictions").glob("*.mask.png"))) == len(unmasked) == 18
