"""Bad-input corpus for params.yaml: each case is the committed file with one hostile edit.

Every case runs a real stage script in a fresh folder and must end in exit code 1, one
``error:`` line naming the key, no traceback and no file left behind; the one tolerated
spelling (``lr: 1e-3``, a number to DVC) must run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMMITTED = (REPO / "params.yaml").read_text()


def edited(old: str, new: str) -> str:
    """The committed params.yaml with the first ``old`` replaced by ``new`` (which must exist)."""
    assert old in COMMITTED, f"the committed params.yaml no longer has {old!r}; update this corpus"
    return COMMITTED.replace(old, new, 1)


def replaced(key: str, value: object) -> str:
    """The committed parameters with top-level ``key`` set to ``value`` (dumped as YAML)."""
    params = yaml.safe_load(COMMITTED)
    params[key] = value
    return yaml.safe_dump(params, sort_keys=False)


def run_stage(cwd: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def split_args(tiny_prepared: Path) -> tuple[str, ...]:
    return ("--index", str(tiny_prepared / "index.csv"), "--out", "splits", "--metrics", "split.json")


# (case id, params.yaml text, the key the error must name)
CASES = [
    ("pseudo.promts", edited("  prompts: [", "  promts: ["), "pseudo.promts"),
    ("top-level label_ration", edited("label_ratio: 0.1", "label_ration: 0.1"), "label_ration"),
    ("runtime.thread", edited("  threads: 2 ", "  thread: 2 "), "runtime.thread"),
    ("evaluate.treshold", edited("  threshold: 0.5", "  treshold: 0.5"), "evaluate.treshold"),
    ("warmup.method (set by the stage)", edited("warmup:\n", "warmup:\n  method: mean_teacher\n"), "warmup.method"),
    ("label_ratio abc", edited("label_ratio: 0.1", "label_ratio: abc"), "label_ratio"),
    ("label_ratio null", edited("label_ratio: 0.1", "label_ratio: null"), "label_ratio"),
    ("label_ratio 1e-3 tolerated, 0 not", edited("label_ratio: 0.1", "label_ratio: 0e-3"), "label_ratio"),
    ("seed x", edited("seed: 0\n", "seed: x\n"), "seed"),
    ("seed -1", edited("seed: 0\n", "seed: -1\n"), "seed"),
    ("lr not a number", edited("  lr: 0.001", "  lr: fast"), "warmup.lr"),
    ("nested option type", edited("  appearance:\n", "  appearance:\n    working_size: big\n"), "pseudo.appearance.working_size"),
    # Issue 20: the confidence map moved into the weights file with the weights it was fitted with.
    ("moved option", edited("  appearance:\n", "  appearance:\n    confidence_centre: 30\n"), "pseudo.appearance.confidence_centre"),
    # Issue 20: two BUS-BRA entries of one folder must select disjoint scanners.
    (
        "two BUS-BRA entries, overlapping scanners",
        replaced(
            "datasets",
            {
                "logiq7": {"kind": "busbra", "root": "data_in", "devices": ["GE Logiq 7"]},
                "rest": {"kind": "busbra", "root": "data_in", "devices": ["GE Logiq 5", "GE Logiq 7"]},
            },
        ),
        "datasets.rest.root",
    ),
    ("unknown BUS-BRA scanner", replaced("datasets", {"b": {"kind": "busbra", "root": "d", "devices": ["Logiq"]}}), "datasets.b.devices[0]"),
    ("nested option range", edited("    box_threshold: 0.25", "    box_threshold: 3"), "pseudo.grounded_sam.box_threshold"),
    ("datasets empty", replaced("datasets", {}), "datasets"),
    ("datasets null", replaced("datasets", None), "datasets"),
    ("dataset entry not a mapping", replaced("datasets", {"synthetic": "src/busseg/data/synthetic.py"}), "datasets.synthetic"),
    ("section not a mapping", replaced("evaluate", 0.5), "evaluate"),
    # Issue 21: no validation images would make training choose and schedule on nan.
    ("split.val 0", edited("  train: 0.7\n  val: 0.1", "  train: 0.8\n  val: 0"), "split.val"),
    # Issue 21: one folder twice shows in-domain results as cross-dataset ones.
    (
        "two entries, one root",
        replaced("datasets", {"a": {"kind": "busbra", "root": "data_in"}, "b": {"kind": "auto", "root": "./data_in/"}}),
        "datasets.b.root",
    ),
    (
        "a composite source and an entry, one root",
        replaced(
            "datasets",
            {
                "bra": {"kind": "busbra", "root": "/data/BUS-BRA"},
                "mix": {"kind": "composite", "root": "/data", "sources": {"bra": {"kind": "busbra", "root": "BUS-BRA"}}},
            },
        ),
        "datasets.mix.sources.bra.root",
    ),
]


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_params_fail_the_split_stage_with_one_error_line(tmp_path: Path, tiny_prepared: Path, text: str, key: str) -> None:
    (tmp_path / "params.yaml").write_text(text)
    proc = run_stage(tmp_path, "split.py", *split_args(tiny_prepared))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert f"parameter '{key}'" in errors[0]
    assert sorted(os.listdir(tmp_path)) == ["params.yaml"]  # no split, nothing half-written


@pytest.mark.parametrize("datasets", [{}, None])
def test_no_dataset_fails_the_report_stage(tmp_path: Path, datasets: object) -> None:
    (tmp_path / "params.yaml").write_text(replaced("datasets", datasets))
    args = ("--eval", "e", "--pseudo", "p", "--refine", "r", "--cross", "c", "--summary", "summary.json", "--table", "summary.md",
            "--train-live", "t", "--warmup-live", "w", "--pseudo-reports", "pr", "--eval-reports", "er", "--html", "index.html")
    proc = run_stage(tmp_path, "report.py", *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: parameter 'datasets': no dataset declared" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["params.yaml"]


def test_the_entry_suggested_for_an_empty_datasets_works_as_written(tmp_path: Path, tiny_prepared: Path) -> None:
    """The error's example, pasted into params.yaml, passes every stage's check and prepares."""
    import re

    (tmp_path / "params.yaml").write_text(replaced("datasets", {}))
    proc = run_stage(tmp_path, "split.py", *split_args(tiny_prepared))
    (example,) = re.findall(r"`([^`]+)`", proc.stderr)
    (tmp_path / "params.yaml").write_text(replaced("datasets", yaml.safe_load(example)))
    # dvc.yaml's `foreach: ${datasets}` stages read these keys of every entry: the example needs each.
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    per_entry = [yaml.safe_dump(stage) for stage in stages.values() if stage.get("foreach") == "${datasets}"]
    used = {key for text in per_entry for key in re.findall(r"\$\{item\.(\w+)\}", text)}
    assert "root" in used
    (entry,) = yaml.safe_load(example).values()
    assert used <= set(entry), used - set(entry)
    name = next(iter(yaml.safe_load(example)))
    proc = run_stage(tmp_path, "prepare.py", "--dataset", name, "--out", f"data/prepared/{name}", "--report", "r.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "data" / "prepared" / name / "index.csv").is_file()


def test_unknown_key_in_a_dataset_entry_fails_prepare(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(edited("    size: 128", "    sise: 128"))
    proc = run_stage(tmp_path, "prepare.py", "--dataset", "synthetic", "--out", "data/prepared/synthetic", "--report", "r.json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "parameter 'datasets.synthetic.sise': unknown key" in proc.stderr
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "params.yaml"]
    assert leftovers == []


def test_broken_yaml_is_one_error_line(tmp_path: Path, tiny_prepared: Path) -> None:
    (tmp_path / "params.yaml").write_text(edited("label_ratio: 0.1", "label_ratio: [0.1"))
    proc = run_stage(tmp_path, "split.py", *split_args(tiny_prepared))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: params.yaml: not valid YAML" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["params.yaml"]


def test_exponent_without_a_dot_is_read_as_the_number_dvc_reads(tmp_path: Path, tiny_prepared: Path) -> None:
    """``lr: 1e-3`` is a string to PyYAML (YAML 1.1) and a number to DVC (YAML 1.2): accepted."""
    text = COMMITTED.replace("  lr: 0.001", "  lr: 1e-3").replace("label_ratio: 0.1", "label_ratio: 25e-2")
    (tmp_path / "params.yaml").write_text(text)
    proc = run_stage(tmp_path, "split.py", *split_args(tiny_prepared))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "splits" / "labeled.txt").read_text().strip()


def test_the_report_library_refuses_an_empty_dataset_list(tmp_path: Path) -> None:
    from busseg.errors import ConfigError
    from busseg.report import build_summary

    with pytest.raises(ConfigError, match="no dataset declared"):
        build_summary(tmp_path, tmp_path, [])


def test_two_synthetic_entries_share_the_generator_as_root(tmp_path: Path, tiny_prepared: Path) -> None:
    """``root`` of a synthetic entry is the generator module: two seeds are two datasets."""
    params = yaml.safe_load(COMMITTED)
    entry = params["datasets"]["synthetic"]
    params["datasets"] = {"one": entry, "two": {**entry, "seed": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_stage(tmp_path, "split.py", *split_args(tiny_prepared))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_empty_validation_split_is_a_warning_saying_what_replaces_it(tmp_path: Path, tiny_prepared: Path) -> None:
    """split.val > 0 but too small for the dataset: the split is written, and the warning says
    that training keeps its last epoch (the loop's rule without validation images)."""
    (tmp_path / "params.yaml").write_text(edited("  train: 0.7\n  val: 0.1", "  train: 0.79\n  val: 0.01"))
    proc = run_stage(tmp_path, "split.py", *split_args(tiny_prepared))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"warning: {tiny_prepared / 'index.csv'}: the validation split is empty (16 images")
    assert "keep their last epoch" in proc.stderr
    assert (tmp_path / "splits" / "val.txt").read_text() == ""


@pytest.mark.parametrize("content", [None, "{not json", '{"format": "busseg-appearance-weights"}'], ids=["missing", "not JSON", "incomplete"])
def test_a_bad_weights_file_fails_pseudo_label_naming_the_file(tmp_path: Path, tiny_prepared: Path, content: str | None) -> None:
    """Issue 20: ``pseudo.appearance.weights`` missing or malformed: one ``error: <file>: ...`` line."""
    (tmp_path / "params.yaml").write_text(edited("    weights: models/appearance/default.json", "    weights: w.json"))
    if content is not None:
        (tmp_path / "w.json").write_text(content)
    (tmp_path / "calibration.json").write_text('{"calibration": "none"}')
    args = ("--prepared", str(tiny_prepared), "--out", "pseudo", "--metrics", "m.json", "--curve", "c.csv",
            "--overlays", "overlays", "--calibration", "calibration.json")
    env_scratch = {"BUSSEG_SCRATCH": str(tmp_path / "scratch")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "pseudo_label.py"), *args], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1", **env_scratch},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: w.json: "), proc.stderr
    assert not (tmp_path / "pseudo").exists() and not (tmp_path / "m.json").exists()
