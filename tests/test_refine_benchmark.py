"""benchmarks/refine_benchmark.py: the refinement plan, its params and the per-seed table (no DVC run)."""
from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("refine_benchmark", BENCHMARKS / "refine_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["refine_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def _with_overrides(params: dict, overrides: dict[str, str]) -> dict:
    """``params`` after ``dvc exp run -S key=value`` for each override (values parsed as YAML, as DVC does)."""
    import yaml

    params = copy.deepcopy(params)
    for key, value in overrides.items():
        *sections, leaf = key.split(".")
        node = params
        for section in sections:
            node = node[section]
        assert leaf in node, key  # -S on an unknown key would add it silently; the schema would then refuse it
        node[leaf] = yaml.safe_load(value)
    return params


def test_plan_runs_three_arms_per_seed_each_setting_every_refinement_key_it_needs(bench) -> None:
    experiments = bench.plan([0, 1], ratio=0.025, rounds=2, relabel="student", init="continue", extra={"runtime.threads": "1"})
    assert [e.name for e in experiments] == ["none-s0", "refined-s0", "sup100-s0", "none-s1", "refined-s1", "sup100-s1"]
    by_name = {e.name: e.overrides for e in experiments}
    assert by_name["none-s0"] == {"label_ratio": "0.025", "pseudo.refine_rounds": "0", "runtime.threads": "1", "seed": "0"}
    refined = by_name["refined-s1"]
    assert (refined["pseudo.refine_rounds"], refined["pseudo.refine_relabel"], refined["pseudo.refine_init"],
            refined["pseudo.refine_ground_truth"], refined["seed"]) == ("2", "student", "continue", "true", "1")
    sup = by_name["sup100-s0"]
    assert (sup["label_ratio"], sup["train.method"], sup["pseudo.refine_rounds"]) == ("1.0", "supervised", "0")


@pytest.mark.parametrize("target", ["logiq7", "toshiba"])
def test_every_arm_gives_valid_params_on_each_heldout_target(bench, tmp_path, target) -> None:
    import yaml

    from busseg.config import from_dict
    from busseg.params_schema import validate_params
    from busseg.training.config import TrainConfig
    from busseg.training.methods import get_method

    ssl = sys.modules["ssl_benchmark"]
    params = yaml.safe_load((BENCHMARKS.parent / "params.yaml").read_text())
    heldout = yaml.safe_load((BENCHMARKS / f"heldout_{target}.yaml").read_text())
    merged = ssl.merge_params(params, heldout, tmp_path)
    for experiment in bench.plan([0], relabel="student"):
        arm = _with_overrides(merged, experiment.overrides)
        validate_params(arm)
        train = from_dict(TrainConfig, arm["train"], "train")
        get_method(train.method).requirements(train)  # e.g. supervised under the default's teacher keys


def _refine_metrics(first: float, refined: float, teacher_first: float, teacher_refined: float, accepted: int) -> dict:
    return {"rounds": 1, "accepted_round": accepted,
            "round_0": {"dice": first, "teacher_val_dice": teacher_first},
            "round_1": {"dice": refined, "teacher_val_dice": teacher_refined, "accepted": bool(accepted),
                        "labeler_student_val_dice": 0.6}}


def test_seed_row_reads_the_accepted_round_and_falls_back_to_the_first_when_every_round_was_dropped(bench) -> None:
    kept = bench.seed_row(_refine_metrics(0.40, 0.50, 0.45, 0.55, accepted=1), 0.5, 0.6, 0.8)
    assert kept == {"labels_first": 0.40, "teacher_first": 0.45, "labels_refined": 0.50, "teacher_refined": 0.55,
                    "relabeler_val": 0.6, "student_none": 0.5, "student_refined": 0.6, "sup100": 0.8}
    dropped = bench.seed_row(_refine_metrics(0.40, 0.50, 0.45, 0.44, accepted=0), 0.5, None, None)
    assert dropped["labels_refined"] == 0.40 and dropped["teacher_refined"] == 0.45  # the student trained on round 0
    assert "student_refined" not in dropped and bench.seed_row(None, None, None, None) == {}


def test_seed_row_of_two_rounds_names_the_student_that_made_the_accepted_labels(bench) -> None:
    refine = _refine_metrics(0.40, 0.50, 0.45, 0.55, accepted=1)
    refine.update(rounds=2, accepted_round=2, round_2={"dice": 0.58, "teacher_val_dice": 0.62, "accepted": True,
                                                      "labeler_student_val_dice": 0.65})
    row = bench.seed_row(refine, 0.5, 0.6, 0.8)
    assert row["labels_refined"] == 0.58 and row["teacher_refined"] == 0.62
    assert row["relabeler_val"] == 0.6 and row["relabeler_last_val"] == 0.65
    assert "relabeler_last_val" not in bench.seed_row(_refine_metrics(0.40, 0.50, 0.45, 0.55, accepted=1), 0.5, 0.6, 0.8)


def _exp(name: str, dataset: str, dice: float, refine: dict | None = None) -> dict:
    metrics = {"metrics/summary.json": {"data": {dataset: {"dice": dice, "iou": dice - 0.1, "hd95": 9.0}}}}
    if refine is not None:
        metrics[f"metrics/refine/{dataset}.json"] = {"data": refine}
    return {"name": name, "data": {"metrics": metrics}}


def test_table_pairs_each_seed_and_gives_mean_and_std(bench) -> None:
    show = [{"experiments": [
        _exp("none-s0", "t", 0.50), _exp("refined-s0", "t", 0.56, _refine_metrics(0.40, 0.50, 0.45, 0.55, 1)),
        _exp("sup100-s0", "t", 0.70),
        _exp("none-s1", "t", 0.60), _exp("refined-s1", "t", 0.58, _refine_metrics(0.50, 0.54, 0.50, 0.52, 1)),
    ]}]
    rows = bench.rows_from_show(show, [0, 1], "t")
    lines = {line.split(" | ")[0].lstrip("| "): line for line in bench.table(rows).splitlines()}
    assert lines["gain in labels (points, paired)"] == "| gain in labels (points, paired) | +10.0 | +4.0 | +7.0 +- 4.2 (n=2) |"
    assert lines["gain in student (points, paired)"].endswith("| +6.0 | -2.0 | +2.0 +- 5.7 (n=2) |")
    assert lines["supervised, 100 % labels, test"].endswith("| 0.700 | - | 0.700 (n=1) |")  # seed 1 has no upper bound
    assert lines["student / supervised 100 %, refined"].endswith("| 0.80 | - | 0.80 (n=1) |")


def test_table_reads_runs_named_by_hand(bench) -> None:
    show = [[_exp("t-r0-s2", "t", 0.5)], [_exp("t-student-s2", "t", 0.55, _refine_metrics(0.4, 0.45, 0.4, 0.5, 1))]]
    rows = bench.rows_from_show(show, [2], "t", {"none": "t-r0-s{seed}", "refined": "t-student-s{seed}"})
    assert rows[2]["student_none"] == 0.5 and rows[2]["student_refined"] == 0.55 and rows[2]["labels_refined"] == 0.45


def test_table_refuses_an_unknown_arm_name(bench, capsys) -> None:
    with pytest.raises(SystemExit):
        bench.main(["table", "--dataset", "t", "--work", "/nonexistent", "--name", "bogus=x-s{seed}"])
    assert "unknown arm bogus; available: none, refined, sup100" in capsys.readouterr().err
