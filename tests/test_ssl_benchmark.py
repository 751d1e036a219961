"""benchmarks/ssl_benchmark.py: the experiment plan and the mean +- std table (no DVC run)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from busseg.training.config import TrainConfig

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ssl_benchmark.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ssl_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ssl_benchmark"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_plan_covers_methods_ratios_seeds_upper_bound_and_ladder(bench) -> None:
    experiments = bench.plan(["supervised", "dual_teacher"], [0.1, 0.025], [0, 1], ladder=True, extra={"train.augment": "strong"})
    names = [e.name for e in experiments]
    assert len(names) == len(set(names))
    groups = list(dict.fromkeys(e.group for e in experiments))
    assert groups[:5] == ["supervised-2.5", "dual_teacher-2.5", "supervised-10", "dual_teacher-10", "supervised-100"]
    assert len(groups) == 5 + len(bench.LADDER)
    assert all(g.endswith("-2.5") for g in groups[5:])  # the ladder at the smallest ratio
    first = experiments[0]
    assert first.name == "supervised-2.5-s0"
    assert first.command() == ["dvc", "exp", "run", "--queue", "-n", "supervised-2.5-s0", "-S", "label_ratio=0.025",
                               "-S", "train.method=supervised", "-S", "train.augment=strong", "-S", "seed=0"]
    assert all(e.overrides["seed"] in {"0", "1"} for e in experiments)
    assert not bench.plan(["supervised"], [0.1], [0], ladder=False)[-1].group.startswith("lad")


def test_variants_set_their_method_and_settings(bench) -> None:
    experiments = {e.group: e for e in bench.plan(["dual_teacher", "dual_teacher_paper", "bcp"], [0.025], [0], ladder=False)}
    tuned, paper, bcp = experiments["dual_teacher-2.5"], experiments["dual_teacher_paper-2.5"], experiments["bcp-2.5"]
    assert tuned.overrides["train.method"] == paper.overrides["train.method"] == "dual_teacher"
    assert tuned.overrides["train.aurcl_variant"] == "prototype" and "train.init" not in tuned.overrides  # the common start
    assert paper.overrides["train.augment"] == "none" and paper.overrides["train.aurcl_variant"] == "paper"
    assert bcp.overrides == {"label_ratio": "0.025", "train.method": "bcp", "seed": "0"}


def test_ladder_starts_from_the_paper_setting_and_adds_one_change_per_rung(bench) -> None:
    rungs = [e for e in bench.plan(["supervised"], [0.025], [0]) if e.group.startswith("lad-")]
    assert [e.group for e in rungs] == [f"{name}-2.5" for name, _, _ in bench.LADDER]
    assert rungs[0].overrides["train.augment"] == "none"  # the paper's setting, not the benchmark's strong default
    augment = [e.overrides["train.augment"] for e in rungs]
    assert augment.index("strong") == [name for name, _, _ in bench.LADDER].index("lad-aug")
    assert all(a == "strong" for a in augment[augment.index("strong"):])  # cumulative from there on


def test_ladder_and_variant_overrides_are_valid_train_keys(bench) -> None:
    import dataclasses

    from busseg.training.config import TrainConfig

    keys = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = [o for _, _, o in bench.LADDER] + [o for _, o in bench.VARIANTS.values()]
    for override in overrides:
        assert {k.removeprefix("train.") for k in override} <= keys


def test_table_gives_mean_and_std_over_seeds(bench) -> None:
    experiments = bench.plan(["supervised"], [0.1], [0, 1, 2], ladder=False)

    def exp(name: str, dice: float) -> dict:
        return {"rev": "x", "name": name, "data": {"metrics": {"metrics/summary.json": {"data": {"busbra": {"dice": dice, "iou": dice - 0.1, "hd95": 10.0}}}}}}

    # dvc 3 nests experiments under the baseline; the parser does not depend on the exact nesting.
    show = [{"rev": "workspace", "data": {}, "experiments": [{"revs": [exp("supervised-10-s0", 0.7), exp("supervised-10-s1", 0.8),
                                                                       exp("supervised-10-s2", 0.9)]},
                                                            {"revs": [exp("supervised-100-s0", 0.85)]}]}]
    text = bench.table(show, experiments, "busbra")
    rows = text.splitlines()
    assert rows[2] == "| supervised, 10 % | 3 | 0.800 +- 0.100 | 0.700 +- 0.100 | 10.000 +- 0.000 |"
    assert rows[3] == "| supervised, 100 % (upper bound) | 1 | 0.850 | 0.750 | 10.000 |"
    assert bench.table([], experiments).splitlines()[2].endswith("| 0 | - | - | - |")


def test_a_running_or_failed_experiment_is_not_read(bench) -> None:
    """dvc exp show lists a running experiment under its name with the workspace's (stale) metrics."""
    experiments = bench.plan(["supervised"], [0.1], [0, 1], ladder=False, upper_bound=False)

    def exp(name: str, dice: float, state: str | None) -> dict:
        rev = {"rev": "workspace" if state else "abc", "name": name,
               "data": {"metrics": {"metrics/summary.json": {"data": {"busbra": {"dice": dice}}}}}}
        return {"revs": [rev], "name": name, "executor": {"state": state, "name": "workspace"} if state else None}

    show = [{"experiments": [exp("supervised-10-s0", 0.7, None), exp("supervised-10-s1", 0.2, "running")]}]
    assert [name for name, _ in bench.iter_experiments(show)] == ["supervised-10-s0"]
    assert "| supervised, 10 % | 1 | 0.700 |" in bench.table(show, experiments)
    show[0]["experiments"][1]["executor"]["state"] = "failed"
    assert [name for name, _ in bench.iter_experiments(show)] == ["supervised-10-s0"]


@pytest.mark.parametrize("sequential", [False, True])
def test_params_are_restored_after_every_run_in_the_workspace(bench, tmp_path, capsys, sequential) -> None:
    """A workspace run leaves its -S values in params.yaml; the next experiment must not start from them."""
    experiments = bench.plan(["supervised_random", "supervised"], [0.025], [0], ladder=False, upper_bound=False)
    bench.run_experiments(tmp_path, experiments, jobs=2, dry_run=True, sequential=sequential)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("+ ")]
    runs = [i for i, line in enumerate(lines) if line.startswith("+ dvc exp run")]
    workspace_runs = runs if sequential else runs[:1]
    assert all(lines[i + 1] == "+ git checkout -- params.yaml" for i in workspace_runs)
    assert "--queue" in lines[runs[1]] if not sequential else "--queue" not in lines[runs[1]]


def test_every_row_has_the_same_start_and_total_steps(bench) -> None:
    """Issue 19: one initialisation policy and one step budget, warm-up counted."""
    import yaml

    params = yaml.safe_load((PATH.parent / "ssl_busbra.yaml").read_text())
    assert params["train"]["init"] == "static_teacher"
    warmup_steps = params["warmup"]["epochs"] * params["warmup"]["steps_per_epoch"]
    train_steps = params["train"]["epochs"] * params["train"]["steps_per_epoch"]
    for experiment in bench.plan(list(bench.DEFAULT_METHODS), [0.025], [0], ladder=True):
        init = experiment.overrides.get("train.init", params["train"]["init"])
        epochs = int(experiment.overrides.get("train.epochs", params["train"]["epochs"]))
        steps = epochs * params["train"]["steps_per_epoch"] + (warmup_steps if init == "static_teacher" else 0)
        assert steps == warmup_steps + train_steps, experiment.name
    random_row = bench.plan(["supervised_random"], [0.025], [0], ladder=False, upper_bound=False)
    assert [e.overrides["train.init"] for e in random_row] == ["none"]


def test_paired_table_differences_against_the_reference(bench) -> None:
    experiments = bench.plan(["supervised", "dual_teacher"], [0.025], [0, 1], ladder=False, upper_bound=False)
    dice = {"supervised-2.5-s0": 0.70, "supervised-2.5-s1": 0.60, "dual_teacher-2.5-s0": 0.75, "dual_teacher-2.5-s1": 0.68}
    show = [{"name": name, "data": {"metrics": {"metrics/summary.json": {"data": {"busbra": {"dice": d}}}}}}
            for name, d in dice.items()]
    table = bench.paired_table(show, experiments)
    row = next(line for line in table.splitlines() if line.startswith("| dual_teacher"))
    assert "| 2 | +6.5 +- 2.1 | 0.750 / 0.680 |" in row


@pytest.mark.parametrize(("name", "target", "device", "weights"), [
    ("heldout_logiq7.yaml", "logiq7", "GE Logiq 7", "models/appearance/loso_ge_logiq_7.json"),
    ("heldout_toshiba.yaml", "toshiba", "Toshiba Aplio 300", "models/appearance/loso_toshiba_aplio_300.json"),
])
def test_heldout_params_select_the_scanner_and_its_loso_weights(bench, tmp_path, name, target, device, weights) -> None:
    """Issue 20: the merged params hold one BUS-BRA entry of that scanner, at the given root,
    labeled by the weights that never saw it, with ssl_busbra.yaml's budget; and they validate."""
    import yaml

    from busseg.params_schema import validate_params
    from busseg.pseudo.appearance_weights import load_appearance_weights

    repo = PATH.parents[1]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    heldout = yaml.safe_load((repo / "benchmarks" / name).read_text())
    merged = bench.merge_params(params, heldout, tmp_path / "BUS-BRA")
    assert merged["datasets"] == {target: {"kind": "busbra", "root": str(tmp_path / "BUS-BRA"), "devices": [device]}}
    assert merged["pseudo"]["appearance"]["weights"] == weights
    assert merged["pseudo"]["prompts"] == params["pseudo"]["prompts"]  # the rest of pseudo kept
    budget = yaml.safe_load((repo / "benchmarks" / "ssl_busbra.yaml").read_text())
    for section in ("model", "warmup", "train", "evaluate", "runtime"):
        assert heldout[section] == budget[section]
    assert heldout["datasets"][target]["root"] == "../shared/data/BUS-BRA"  # before the merge
    validate_params(merged)
    weights_file = load_appearance_weights(repo / weights)
    assert weights_file.fit["held_out"] == device and device not in weights_file.fit["devices"]


def test_merge_params_rewrites_every_busbra_root(bench, tmp_path) -> None:
    params = {"datasets": {"synthetic": {"kind": "synthetic"}}, "pseudo": {"appearance": {"working_size": 160}}, "seed": 0}
    extra = {
        "datasets": {"a": {"kind": "busbra", "root": "x", "devices": ["GE Logiq 7"]}, "b": {"kind": "busbra", "root": "y"},
                     "s": {"kind": "stu", "root": "z"}},
        "pseudo": {"appearance": {"weights": "w.json"}},
        "seed": 1,
    }
    merged = bench.merge_params(params, extra, tmp_path)
    assert [merged["datasets"][k]["root"] for k in "abs"] == [str(tmp_path), str(tmp_path), "z"]
    assert merged["pseudo"]["appearance"] == {"working_size": 160, "weights": "w.json"}
    assert merged["seed"] == 1 and extra["datasets"]["a"]["root"] == "x" and "weights" not in params["pseudo"]["appearance"]


def _train_config_of(experiment, bench) -> TrainConfig:
    """The train section one experiment runs with: params.yaml, the benchmark budget, then its overrides."""
    import dataclasses

    import yaml

    from busseg.config import from_dict
    from busseg.training.config import TrainConfig

    repo = PATH.parents[1]
    train = dict(yaml.safe_load((repo / "params.yaml").read_text())["train"])
    train.update(yaml.safe_load((repo / "benchmarks" / "ssl_busbra.yaml").read_text())["train"])
    for key, value in experiment.overrides.items():
        if key.startswith("train."):
            train[key.removeprefix("train.")] = yaml.safe_load(value)  # as `dvc exp run -S` parses it
    assert set(train) <= {f.name for f in dataclasses.fields(TrainConfig)}
    return from_dict(TrainConfig, train, "train")


def test_every_row_and_rung_is_a_valid_setting_of_its_method(bench) -> None:
    """A rung that switches a teacher off must also switch off what needs it (static_anneal)."""
    from busseg.training.methods import get_method

    for experiment in bench.plan(list(bench.DEFAULT_METHODS), [0.025], [0], ladder=True):
        config = _train_config_of(experiment, bench)
        get_method(config.method).requirements(config)  # raises ConfigError on a contradiction


def test_the_default_is_the_last_ladder_rung_and_the_paper_row_has_none_of_its_additions(bench) -> None:
    """params.yaml's default dual_teacher, the benchmark's dual_teacher row and the top rung agree."""
    import dataclasses

    import yaml

    plan = {e.group: e for e in bench.plan(list(bench.DEFAULT_METHODS), [0.025], [0], ladder=True)}
    tuned = _train_config_of(plan["dual_teacher-2.5"], bench)
    assert tuned == _train_config_of(plan["lad-anneal-2.5"], bench)
    defaults = yaml.safe_load((PATH.parents[1] / "params.yaml").read_text())["train"]
    for key in ("method", "aurcl_variant", "augment", "confidence_threshold", "static_anneal", "init", "uewf_kernel"):
        assert defaults[key] == getattr(tuned, key), key
    paper = _train_config_of(plan["dual_teacher_paper-2.5"], bench)
    assert (paper.confidence_threshold, paper.static_anneal, paper.augment) == (0.0, 0.0, "none")
    assert dataclasses.replace(paper, aurcl_variant="prototype", augment="strong") == _train_config_of(plan["lad-aug-2.5"], bench)
