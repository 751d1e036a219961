"""End to end: `dvc repro` on a tiny configuration, and which stages a change re-runs.

The repository's pipeline files are copied into a fresh git + DVC repository in a temp
folder with tiny parameters, so the test exercises exactly the committed dvc.yaml and
stage scripts (the package itself is the installed one).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "label_ratio": 0.25,
    "datasets": {"synthetic": {"kind": "synthetic", "root": "src/busseg/data/synthetic.py", "count": 30, "size": 64, "seed": 0}},
    "pseudo": {"n_overlays": 2, "refine_rounds": 1},  # the refinement round runs end to end
    "model": {"image_size": 64},
    "warmup": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4},
    "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "unlabeled_batch": 2},
    "evaluate": {"n_overlays": 2},
    "runtime": {"device": "cpu", "threads": 1, "progress": False},
}


def deep_update(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{output[-4000:]}"
    return output


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def init_repository(root: Path, runner) -> None:
    """A git + DVC repository at ``root`` with everything committed (dvclive needs a commit)."""
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "test@example.com"],
        ["git", "config", "user.name", "test"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "pipeline"],
    ):
        runner(cmd, root)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "models" / "weights").mkdir(parents=True)
    shutil.copy(REPO / "models/weights/README.md", root / "models/weights/README.md")
    shutil.copytree(REPO / "models/appearance", root / "models/appearance")  # the labeler's weights (in git)
    params = deep_update(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_repository(root, run)
    # Scratch state of this test stays inside its temp folder.
    os.environ["BUSSEG_SCRATCH"] = str(root / ".busseg" / "scratch")
    return root


@pytest.fixture(scope="module")
def first_repro(project: Path) -> str:
    output = run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline"], project)
    return output


def test_repro_runs_every_stage_and_writes_the_results(project: Path, first_repro: str) -> None:
    import torch

    assert torch.load(project / "models/synthetic/student.pt", weights_only=True)["method"] == "dual_teacher"
    stages = {"prepare", "split", "calibrate", "pseudo_label", "warmup", "refine_inputs", "refine", "train", "evaluate"}
    assert ran_stages(first_repro) == {f"{s}@synthetic" for s in stages} | {"cross_evaluate@synthetic-synthetic", "report"}
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert set(summary) == {"synthetic"}
    for key in ("dice", "iou", "accuracy", "hd95", "pseudo_dice", "pseudo_coverage"):
        assert key in summary["synthetic"]
    assert 0.0 <= summary["synthetic"]["dice"] <= 1.0
    per_image = pd.read_csv(project / "reports/eval/synthetic/per_image.csv")
    assert len(per_image) == summary["synthetic"]["n_images"] > 0
    assert len(list((project / "reports/eval/synthetic/overlays").glob("*.png"))) == 2
    assert (project / "models/synthetic/student.pt").is_file()
    assert (project / "models/synthetic/static_teacher.pt").is_file()
    assert (project / "models/synthetic/teacher.pt").is_file()  # after one refinement round
    refined = json.loads((project / "metrics/refine/synthetic.json").read_text())
    assert refined["rounds"] == 1 and 0.0 <= refined["round_1"]["dice"] <= 1.0
    assert refined["accepted_round"] == int(refined["round_1"]["accepted"])  # a worse round keeps the warm-up's teacher
    assert refined["quality_images"] == "unlabeled train"
    assert {"train_labels_dice", "refined_labels_dice"} <= set(summary["synthetic"])  # TINY runs one round
    assert (project / "reports/train/synthetic/plots/metrics/val_dice.tsv").is_file()
    assert "synthetic" in (project / "reports/summary.md").read_text()
    assert json.loads((project / "metrics/prepare/synthetic.json").read_text())["n_images"] == 30
    cases = json.loads((project / "reports/eval/synthetic/cases/cases.json").read_text())
    assert list(cases) == ["best", "median", "worst"]
    # best and worst among the test images with a lesion (a lesion-free one predicted empty scores 1.0)
    from busseg.data.prepared import PreparedDataset

    prepared = PreparedDataset(project / "data/prepared/synthetic")
    with_lesion = per_image[[bool(prepared.mask(i).any()) for i in per_image["id"]]]
    assert len(with_lesion) > 0
    assert cases["best"]["dice"] == with_lesion["dice"].max().round(6) and cases["worst"]["dice"] == with_lesion["dice"].min().round(6)
    page = (project / "reports/index.html").read_text()
    for section in ("Summary", "Warm-up", "Training (student)", "Dice against coverage", "Label refinement", "best: "):
        assert section in page, section
    assert "<script" not in page and page.count("data:image/png;base64,") == 3


def test_metrics_diff_prints_dataset_rows(project: Path, first_repro: str) -> None:
    output = run(["dvc", "metrics", "show", "--json"], project)
    assert "synthetic" in output and "dice" in output


def test_forced_rerun_of_every_stage_gives_byte_identical_outputs(project: Path, first_repro: str) -> None:
    # dvc.lock records the hash of every output, metrics and plots included: an identical
    # lock after re-running every stage from scratch means byte-identical outputs.
    lock_before = (project / "dvc.lock").read_text()
    output = run(["dvc", "repro", "-f"], project)
    assert "report" in ran_stages(output)
    assert (project / "dvc.lock").read_text() == lock_before
    assert run(["git", "status", "--porcelain"], project).strip() == ""
    # Resume state is deleted once a stage's outputs are written.
    scratch = project / ".busseg" / "scratch"
    assert not [p for p in scratch.rglob("*") if p.is_file()] if scratch.exists() else True


def test_forced_pseudo_label_leaves_everything_downstream_unchanged(project: Path, first_repro: str) -> None:
    run(["dvc", "repro", "-f", "-s", "pseudo_label@synthetic"], project)
    output = run(["dvc", "repro"], project)
    assert ran_stages(output) == set(), output


def test_a_second_machine_pulls_every_output_from_a_remote_and_recomputes_nothing(
    project: Path, first_repro: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    remote = tmp_path_factory.mktemp("remote")
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], project)
    run(["git", "add", ".dvc/config"], project)
    run(["git", "commit", "-qm", "shared remote"], project)
    run(["dvc", "push"], project)
    clone = tmp_path_factory.mktemp("second_machine") / "busseg"
    run(["git", "clone", "-q", str(project), str(clone)], clone.parent)
    run(["dvc", "pull"], clone)
    # Prepared data, pseudo labels, both teachers and the student are there; nothing re-runs.
    for path in ("data/prepared/synthetic/index.csv", "data/pseudo/synthetic/labels.csv",
                 "models/synthetic/static_teacher.pt", "models/synthetic/teacher.pt",
                 "data/refined/synthetic/labels.csv", "models/synthetic/student.pt"):
        assert (clone / path).read_bytes() == (project / path).read_bytes(), path
    output = run(["dvc", "repro"], clone)
    assert ran_stages(output) == set(), output
    assert "changed" not in run(["dvc", "status"], clone)


def test_label_ratio_change_reruns_only_split_train_evaluate_report(project: Path, first_repro: str) -> None:
    output = run(["dvc", "exp", "run", "-S", "label_ratio=0.5"], project)
    evaluation = {"evaluate@synthetic", "cross_evaluate@synthetic-synthetic"}
    # calibrate reads the labeled split but, with pseudo.calibration: none, writes the same
    # bytes: pseudo labels and warm-up stay cached. TINY's refinement round puts the labeled
    # split's ground truth into its labels (pseudo.refine_ground_truth), so refine re-runs.
    assert ran_stages(output) == {"split@synthetic", "calibrate@synthetic", "refine_inputs@synthetic", "refine@synthetic",
                                  "train@synthetic", "report"} | evaluation
    labeled = (project / "data/splits/synthetic/labeled.txt").read_text().split()
    train = (project / "data/splits/synthetic/train.txt").read_text().split()
    assert len(labeled) == round(0.5 * len(train))


def test_returning_to_a_previous_label_ratio_is_served_from_the_run_cache(project: Path, first_repro: str) -> None:
    output = run(["dvc", "exp", "run", "-S", "label_ratio=0.25"], project)
    assert "train@synthetic" not in ran_stages(output), output


def test_pseudo_label_change_reruns_pseudo_label_and_everything_after(project: Path, first_repro: str) -> None:
    import hashlib

    def teacher_hash() -> str:
        return hashlib.md5((project / "models/synthetic/static_teacher.pt").read_bytes()).hexdigest()

    labels = pd.read_csv(project / "data/pseudo/synthetic/labels.csv")
    train = set((project / "data/splits/synthetic/train.txt").read_text().split())
    # Half of the train split's labels are at most this large: they change or become invalid.
    threshold = float(labels.loc[labels["valid"] & labels["id"].isin(train), "area_fraction"].median())
    before = teacher_hash()
    output = run(["dvc", "exp", "run", "-S", f"pseudo.min_area_fraction={threshold:.6f}"], project)
    ran = ran_stages(output)
    assert {"pseudo_label@synthetic", "warmup@synthetic", "report"} <= ran
    assert not ran & {"prepare@synthetic", "split@synthetic"}
    # The static teacher learns from these labels; the default student (dual_teacher) learns
    # from the static teacher, so it and the evaluation re-run. (A label change that leaves the
    # teacher byte-identical would stop at warmup: checkpoints are reproducible to the byte.)
    assert teacher_hash() != before
    assert {"train@synthetic", "evaluate@synthetic", "cross_evaluate@synthetic-synthetic"} <= ran


def test_no_refinement_round_passes_the_warm_up_teacher_through(project: Path, first_repro: str) -> None:
    one_round = json.loads((project / "metrics/refine/synthetic.json").read_text())
    output = run(["dvc", "exp", "run", "-S", "pseudo.refine_rounds=0"], project)
    ran = ran_stages(output)
    assert "refine@synthetic" in ran
    # A kept round changed the teacher, so the student re-trains; a rejected one had already
    # kept the warm-up's teacher, byte for byte, and the student stays cached.
    assert ("train@synthetic" in ran) == (one_round["accepted_round"] == 1)
    assert not ran & {"pseudo_label@synthetic", "warmup@synthetic", "split@synthetic"}
    models = project / "models/synthetic"
    assert (models / "teacher.pt").read_bytes() == (models / "static_teacher.pt").read_bytes()
    assert json.loads((project / "metrics/refine/synthetic.json").read_text())["rounds"] == 0
    run(["dvc", "exp", "run", "-S", "pseudo.refine_rounds=1"], project)


def test_a_student_relabels_in_the_rounds_when_asked(project: Path, first_repro: str) -> None:
    output = run(["dvc", "exp", "run", "-S", "pseudo.refine_relabel=student"], project)
    ran = ran_stages(output)
    assert {"refine_inputs@synthetic", "refine@synthetic"} <= ran
    assert not ran & {"pseudo_label@synthetic", "warmup@synthetic", "split@synthetic"}
    record = json.loads((project / "data/refine_inputs/synthetic.json").read_text())
    assert set(record) == {"labeled", "unlabeled", "train"}  # the student's inputs now reach refine
    refined = json.loads((project / "metrics/refine/synthetic.json").read_text())
    assert 0.0 <= refined["round_1"]["labeler_student_val_dice"] <= 1.0
    run(["dvc", "exp", "run", "-S", "pseudo.refine_relabel=teacher"], project)


def test_pixel_certainty_and_snapping_in_a_round(project: Path, first_repro: str) -> None:
    output = run(["dvc", "exp", "run", "-S", "pseudo.refine_pixel_certainty=0.5", "-S", "pseudo.refine_snap=0.5",
                  "refine@synthetic"], project)
    ran = ran_stages(output)
    assert "refine@synthetic" in ran and not ran & {"pseudo_label@synthetic", "warmup@synthetic", "refine_inputs@synthetic"}
    refined = json.loads((project / "metrics/refine/synthetic.json").read_text())
    assert 0.0 < refined["round_1"]["certain_pixels"] < 1.0  # some boundary pixels were left out
    assert refined["round_1"]["snapped"] > 0  # the synthetic lesions are dark regions the labeler finds
    certainty = project / "data/refined/synthetic/certainty"
    if refined["accepted_round"] == 1:  # the kept labels are the round's: each re-labeled one has its map
        table = pd.read_csv(project / "data/refined/synthetic/labels.csv", keep_default_na=False, dtype={"id": str})
        relabeled = table[(table["valid"].astype(str) == "True") & table["reason"].isin(["", "snapped"])]  # not GT, not kept
        assert sorted(p.stem for p in certainty.iterdir()) == sorted(relabeled["id"])
    else:  # a rejected round leaves the first-round labels, which have no certainty maps
        assert not certainty.exists()
    run(["dvc", "exp", "run", "-S", "pseudo.refine_pixel_certainty=0.0", "-S", "pseudo.refine_snap=0.0", "refine@synthetic"],
        project)
    assert not certainty.exists()


@pytest.mark.parametrize("method", ["supervised", "mean_teacher"])
def test_other_methods_run_through_dvc(project: Path, first_repro: str, method: str) -> None:
    output = run(["dvc", "exp", "run", "-S", f"train.method={method}"], project)
    ran = ran_stages(output)
    assert "train@synthetic" in ran and not ran & {"prepare@synthetic", "pseudo_label@synthetic", "warmup@synthetic", "refine@synthetic"}
    checkpoint = __import__("torch").load(project / "models/synthetic/student.pt", weights_only=True)
    assert checkpoint["method"] == method
    assert ("loss_u" in (project / "reports/train/synthetic/metrics.json").read_text()) == (method != "supervised")


def test_two_ddp_ranks_rerun_only_the_training_stages_and_write_one_checkpoint(project: Path, first_repro: str) -> None:
    output = run(["dvc", "exp", "run", "-S", "runtime.nproc=2"], project)
    ran = ran_stages(output)
    # runtime.nproc is a parameter of the training stages only: DDP changes their results by float
    # rounding (so they re-run), and nothing upstream.
    assert {"warmup@synthetic", "refine@synthetic", "train@synthetic"} <= ran
    assert not ran & {"prepare@synthetic", "split@synthetic", "pseudo_label@synthetic"}
    assert "error" not in output.lower()
    assert sorted(p.name for p in (project / "models/synthetic").iterdir()) == ["static_teacher.pt", "student.pt", "teacher.pt"]
    run(["dvc", "exp", "run", "-S", "runtime.nproc=1"], project)


def test_adding_a_dataset_is_a_params_entry_and_gives_the_cross_table(project: Path, first_repro: str) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"]["other"] = {**params["datasets"]["synthetic"], "seed": 1, "count": 24}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run(["dvc", "repro"], project)
    ran = ran_stages(output)
    assert {"prepare@other", "train@other", "cross_evaluate@other-synthetic", "cross_evaluate@synthetic-other", "report"} <= ran
    # Each pair depends only on the model and test split it reads: synthetic's own pair stays cached.
    assert not ran & {"prepare@synthetic", "warmup@synthetic", "cross_evaluate@synthetic-synthetic"}
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert set(summary) == {"synthetic", "other"}
    cross = json.loads((project / "metrics/cross/synthetic/other.json").read_text())
    assert 0.0 <= cross["dice"] <= 1.0 and cross["n_images"] > 0
    assert "train on the row, test on the column" in (project / "reports/summary.md").read_text()
