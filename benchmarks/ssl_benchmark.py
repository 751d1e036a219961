"""The SSL comparison of issues 11 and 19: methods x label ratios x seeds on BUS-BRA, mean +- std.

Usage::

    python benchmarks/ssl_benchmark.py run   [--work /tmp/busseg-ssl] [--jobs 2] [--seeds 0 1 2]
                                             [--ratios 0.025 0.1] [--methods supervised supervised_random mean_teacher bcp unimatch dual_teacher dual_teacher_paper]
                                             [--no-ladder] [--no-upper-bound] [--set train.augment=strong ...] [--params benchmarks/ssl_busbra.yaml]
                                             [--dataset busbra] [--dry-run] [--sequential]
    python benchmarks/ssl_benchmark.py table [--work /tmp/busseg-ssl] [--dataset busbra]

``run`` clones this repository into ``--work``, merges the benchmark parameters
(``benchmarks/ssl_busbra.yaml``: one budget for every method, same encoder, image size and
optimizer steps) into its params.yaml, runs the first experiment directly (so that prepare,
pseudo labels and the static teacher of that seed land in DVC's run cache), queues the
others with ``dvc exp run --queue``, runs them ``--jobs`` at a time (two workers on the two
cores; each run uses one thread) and prints the table. ``--set KEY=VALUE`` adds an override to
every experiment (for example the same ``train.augment`` for every method, which keeps the
comparison fair). ``--dry-run`` prints the plan and the commands and runs nothing;
``--sequential`` runs the experiments one after the other without DVC's queue (the smoke
run of ``benchmarks/ssl_smoke.yaml``: a tiny synthetic set, minutes, not a result).

The plan: every method of ``--methods`` at every ratio of ``--ratios``, ``supervised`` at
100 % (the upper bound, unless ``--no-upper-bound``), and, unless ``--no-ladder``, the
dual-teacher ablation ladder at the smallest ratio. A method is a registered ``train.method``
or a named setting of ``VARIANTS`` (``dual_teacher``: the best measured setting;
``dual_teacher_paper``: the paper's components; ``supervised_random``: supervised from random
weights).

One initialisation policy and one step budget for every row (issue 19): the benchmark
parameters start every method from the static teacher (``train.init: static_teacher``, the
warm-up's 480 steps on pseudo labels, no ground truth) and give it 480 training steps, so
every row costs 480 + 480 optimizer steps; ``supervised_random`` is the one row without
pseudo-label pre-training and gets all 960 steps itself. Every method gets strong augmentation.
The ladder starts from the paper's components and switches parts off (static teacher only;
+ EMA teacher, plain average; + UEWF pixel-wise; + patch smoothing; + AURCL =
``dual_teacher_paper``), then adds the issue-11 changes one at a time (prototype AURCL; +
strong augmentation; + a confidence mask; + static-teacher anneal = ``dual_teacher``). Every experiment runs once per seed of
``--seeds``; ``seed`` also changes the split and the static teacher, so the spread covers the
data draw too.

``table`` reads ``dvc exp show --json`` in ``--work`` and prints one markdown row per
experiment group: test Dice, IoU and HD95 as mean +- sample std over the seeds (n given).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = ("supervised", "supervised_random", "mean_teacher", "bcp", "unimatch", "dual_teacher", "dual_teacher_paper")
DEFAULT_RATIOS = (0.025, 0.1)
DEFAULT_SEEDS = (0, 1, 2)
METRICS = ("dice", "iou", "hd95")

#: Named settings of the comparison: name -> (``train.method``, overrides). Every method not
#: named here runs with the benchmark parameters as they are (``train.augment: strong`` and
#: ``train.init: static_teacher`` for all, so every method gets the same perturbation and the
#: same start). ``dual_teacher`` is the setting measured best (params.yaml's default; docs/method.md,
#: "The ablation ladder");
#: ``dual_teacher_paper`` has the paper's components (clean views, the paper's AURCL);
#: ``supervised_random`` starts from random weights and takes the warm-up's steps as training
#: steps too (:data:`RANDOM_INIT_EPOCHS`), so its total optimizer steps equal every other row's.
RANDOM_INIT_EPOCHS = "24"
#: The two teacher-control keys the default adds to the issue-11 setting (docs/method.md, "The ablation ladder").
TEACHER_CONTROL: dict[str, str] = {"train.confidence_threshold": "0.8", "train.static_anneal": "1.0"}
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "dual_teacher": ("dual_teacher", {"train.aurcl_variant": "prototype", **TEACHER_CONTROL}),
    # The paper has no confidence mask and keeps the static teacher's weight (params.yaml's default has both).
    "dual_teacher_paper": ("dual_teacher", {"train.augment": "none", "train.aurcl_variant": "paper",
                                            "train.confidence_threshold": "0.0", "train.static_anneal": "0.0"}),
    "supervised_random": ("supervised", {"train.init": "none", "train.epochs": RANDOM_INIT_EPOCHS}),
}

#: The paper's components that every ladder rung starts from (the benchmark parameters add
#: ``train.augment: strong``, which the paper does not use, and the common initialisation).
LADDER_BASE: dict[str, str] = VARIANTS["dual_teacher_paper"][1]

#: The ablation ladder at the smallest ratio: (group name, label, overrides on LADDER_BASE).
#: The paper's rungs switch parts off; from "+ AURCL" (= ``dual_teacher_paper``) on they are
#: cumulative: prototype AURCL, strong augmentation (the issue-11 setting), then the confidence
#: mask and the static teacher's anneal (= ``dual_teacher``, the default).
_ISSUE11 = {"train.aurcl_variant": "prototype", "train.augment": "strong"}
LADDER: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("lad-static", "static teacher only", {"train.use_ema_teacher": "false", "train.use_aurcl": "false"}),
    ("lad-ema", "+ EMA teacher (plain average)", {"train.use_uewf": "false", "train.use_aurcl": "false"}),
    ("lad-uewf-k1", "+ UEWF, pixel-wise", {"train.uewf_kernel": "1", "train.use_aurcl": "false"}),
    ("lad-uewf", "+ patch smoothing (k = 14)", {"train.use_aurcl": "false"}),
    ("lad-proto", "+ AURCL, prototype variant", {"train.aurcl_variant": "prototype"}),
    ("lad-aug", "+ strong augmentation", _ISSUE11),
    ("lad-conf", "+ confidence mask 0.8", {**_ISSUE11, "train.confidence_threshold": "0.8"}),
    ("lad-anneal", "+ static teacher annealed over the run (= dual_teacher)", {**_ISSUE11, **TEACHER_CONTROL}),
)


@dataclass(frozen=True)
class Experiment:
    """One queued run: ``name`` is unique, ``group`` is the name without the seed (a table row)."""

    name: str
    group: str
    label: str
    overrides: dict[str, str] = field(default_factory=dict)

    def command(self, queue: bool = True) -> list[str]:
        """The ``dvc exp run`` command line of this experiment."""
        cmd = ["dvc", "exp", "run", *(["--queue"] if queue else []), "-n", self.name]
        for key, value in self.overrides.items():
            cmd += ["-S", f"{key}={value}"]
        return cmd


def ratio_tag(ratio: float) -> str:
    """``0.025`` -> ``2.5``: the label ratio in percent, as used in experiment names."""
    return f"{100 * ratio:g}"


def plan(
    methods: Iterable[str] = DEFAULT_METHODS,
    ratios: Iterable[float] = DEFAULT_RATIOS,
    seeds: Iterable[int] = DEFAULT_SEEDS,
    ladder: bool = True,
    extra: dict[str, str] | None = None,
    upper_bound: bool = True,
) -> list[Experiment]:
    """Every experiment of the benchmark, seeds innermost so that a partial run covers groups evenly.

    ``methods`` are registered ``train.method`` names or names of :data:`VARIANTS`. ``extra``
    overrides every experiment (it wins over a variant's and a rung's settings).
    """
    ratios, seeds, extra = sorted(ratios), list(seeds), dict(extra or {})
    groups: list[tuple[str, str, dict[str, str]]] = []
    for ratio in ratios:
        for name in methods:
            method, overrides = VARIANTS.get(name, (name, {}))
            groups.append((f"{name}-{ratio_tag(ratio)}", f"{name}, {ratio_tag(ratio)} %",
                           {"label_ratio": str(ratio), "train.method": method, **overrides}))
    if upper_bound:
        groups.append(("supervised-100", "supervised, 100 % (upper bound)", {"label_ratio": "1.0", "train.method": "supervised"}))
    if ladder and ratios:
        low = ratios[0]
        for name, label, overrides in LADDER:
            groups.append((f"{name}-{ratio_tag(low)}", f"{label}, {ratio_tag(low)} %",
                           {"label_ratio": str(low), "train.method": "dual_teacher", **LADDER_BASE, **overrides}))
    return [
        Experiment(f"{group}-s{seed}", group, label, {**overrides, **extra, "seed": str(seed)})
        for group, label, overrides in groups
        for seed in seeds
    ]


def iter_experiments(show: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, data) of every finished experiment in ``dvc exp show --json`` output, whatever its nesting.

    A queued, running or failed experiment (an ``executor`` with a state) is left out: while an
    experiment runs in the workspace, ``dvc exp show`` lists it under its name with the
    workspace's metrics files, which still hold the previous experiment's figures.
    """
    if isinstance(show, list):
        for item in show:
            yield from iter_experiments(item)
    elif isinstance(show, dict):
        executor = show.get("executor")
        if isinstance(executor, dict) and executor.get("state") not in (None, "success"):
            return
        if isinstance(show.get("name"), str) and isinstance(show.get("data"), dict):
            yield show["name"], show["data"]
        for value in show.values():
            if isinstance(value, (list, dict)):
                yield from iter_experiments(value)


def experiment_metrics(data: dict[str, Any], dataset: str) -> dict[str, float] | None:
    """Test metrics of ``dataset`` from one experiment's data (``metrics/summary.json``), or None."""
    files = data.get("metrics") or {}
    summary = (files.get("metrics/summary.json") or {}).get("data") or {}
    values = summary.get(dataset)
    if not isinstance(values, dict):
        return None
    return {m: float(values[m]) for m in METRICS if m in values}


def mean_std(values: list[float]) -> str:
    """``mean +- std`` (sample std; just the mean for one value)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def table(show: Any, experiments: list[Experiment], dataset: str = "busbra") -> str:
    """Markdown table: one row per group of ``experiments`` with results, mean +- std over seeds."""
    results: dict[str, dict[str, float]] = {}
    for name, data in iter_experiments(show):
        metrics = experiment_metrics(data, dataset)
        if metrics:
            results[name] = metrics
    lines = ["| experiment | n seeds | Dice | IoU | HD95 (px) |", "|---|---|---|---|---|"]
    seen: list[str] = []
    for experiment in experiments:
        if experiment.group in seen:
            continue
        seen.append(experiment.group)
        runs = [results[e.name] for e in experiments if e.group == experiment.group and e.name in results]
        if not runs:
            lines.append(f"| {experiment.label} | 0 | - | - | - |")
            continue
        cells = [mean_std([r[m] for r in runs if m in r and math.isfinite(r[m])]) if any(m in r for r in runs) else "-"
                 for m in METRICS]
        lines.append(f"| {experiment.label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_by_name(show: Any, dataset: str) -> dict[str, dict[str, float]]:
    """Test metrics of every experiment of ``dvc exp show --json`` output that has them, by name."""
    return {name: metrics for name, data in iter_experiments(show) if (metrics := experiment_metrics(data, dataset))}


def paired_table(show: Any, experiments: list[Experiment], reference: str = "supervised", dataset: str = "busbra") -> str:
    """Markdown table of paired Dice differences (points) against ``reference`` at the same ratio.

    For each group and each seed that both it and ``<reference>-<ratio>`` finished, the Dice
    difference; mean +- sample std over those seeds, and the per-seed Dice of the group.
    """
    results = results_by_name(show, dataset)
    lines = [f"| experiment | n paired | paired vs {reference} (Dice points) | Dice per seed |", "|---|---|---|---|"]
    for group in dict.fromkeys(e.group for e in experiments):
        members = [e for e in experiments if e.group == group]
        ratio = members[0].overrides.get("label_ratio")
        ref_group = f"{reference}-{ratio_tag(float(ratio))}" if ratio else None
        per_seed = {e.overrides["seed"]: results[e.name]["dice"] for e in members if e.name in results}
        if not per_seed:
            continue
        ref = {e.overrides["seed"]: results[e.name]["dice"] for e in experiments
               if e.group == ref_group and e.name in results}
        diffs = [100 * (per_seed[s] - ref[s]) for s in sorted(per_seed) if s in ref]
        paired = "" if group == ref_group or not diffs else (
            f"{diffs[0]:+.1f}" if len(diffs) == 1 else f"{statistics.mean(diffs):+.1f} +- {statistics.stdev(diffs):.1f}")
        seeds = " / ".join(f"{per_seed[s]:.3f}" for s in sorted(per_seed))
        lines.append(f"| {members[0].label} | {len(diffs) if paired else 0} | {paired} | {seeds} |")
    return "\n".join(lines)


def result_rows(show: Any, experiments: list[Experiment], dataset: str = "busbra") -> list[dict[str, Any]]:
    """Rows of a result file (``benchmarks/results_io.py``): per-seed Dice, IoU and HD95 of each group."""
    results = results_by_name(show, dataset)
    rows = []
    for group in dict.fromkeys(e.group for e in experiments):
        members = sorted((e for e in experiments if e.group == group), key=lambda e: int(e.overrides["seed"]))
        if not any(e.name in results for e in members):
            continue
        per_seed = {m: [results.get(e.name, {}).get(m) for e in members] for m in METRICS}
        rows.append({"key": group, "label": members[0].label, "seeds": [int(e.overrides["seed"]) for e in members],
                     "overrides": {k: v for k, v in members[0].overrides.items() if k != "seed"}, "per_seed": per_seed})
    return rows


def write_results(path: Path, show: Any, experiments: list[Experiment], args: argparse.Namespace, work: Path) -> None:
    """``--results-out``: the table as a result file, with the measured clone's commit."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import results_io

    rows = result_rows(show, experiments, args.dataset)
    ratios = sorted({r["overrides"].get("label_ratio") for r in rows} - {None})
    reference = f"{args.reference}-{ratio_tag(float(ratios[0]))}" if len(ratios) == 1 else None
    results_io.write_result(
        path, title=f"{args.dataset}: {', '.join(args.methods)} at {', '.join(ratio_tag(float(r)) + ' %' for r in ratios)}",
        rows=rows, overrides=dict(item.split("=", 1) for item in args.set), commit=results_io.git_commit(work),
        metric="dice", seeds=list(args.seeds), columns=["iou", "hd95"],
        reference=reference if any(r["key"] == reference for r in rows) else None)


def clone_env(work: Path) -> dict[str, str]:
    """Environment of the runs: stages import busseg from the clone (the commit measured), dvc from this venv."""
    env = dict(os.environ, PYTHONPATH=str(work / "src"), DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def sh(cmd: list[str], cwd: Path, dry_run: bool) -> None:
    print("+", shlex.join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, cwd=cwd, check=True, env=clone_env(cwd))


def merge_params(params: dict[str, Any], bench: dict[str, Any], busbra_root: Path) -> dict[str, Any]:
    """``params`` with the benchmark's sections merged in (a new dict; the inputs are left alone).

    ``datasets`` is replaced whole; every other section is merged one level deep, and one
    level further for the ``pseudo`` backends' options (``pseudo.appearance.weights`` keeps
    the committed file's other appearance options). Every ``busbra`` entry's root becomes
    ``busbra_root`` (absolute: queued runs happen in temporary copies), whatever its name:
    the held-out-scanner files (``heldout_*.yaml``) name their entry after the scanner.
    """
    merged = copy.deepcopy(params)
    bench = copy.deepcopy(bench)
    for spec in (bench.get("datasets") or {}).values():
        if isinstance(spec, dict) and spec.get("kind") == "busbra":
            spec["root"] = str(busbra_root)
    for key, value in bench.items():
        if isinstance(value, dict) and key != "datasets":
            section = merged.setdefault(key, {})
            for name, item in value.items():
                if isinstance(item, dict) and isinstance(section.get(name), dict):
                    section[name] = {**section[name], **item}
                else:
                    section[name] = item
        else:
            merged[key] = value
    return merged


def prepare_clone(work: Path, params_file: Path, busbra_root: Path, dry_run: bool) -> None:
    """Clone this repository into ``work`` and merge ``params_file`` into its params.yaml (committed)."""
    print(f"+ git clone {REPO} {work}; merge {params_file} into params.yaml (a busbra entry's root: {busbra_root})")
    if dry_run:
        return
    import yaml

    subprocess.run(["rm", "-rf", str(work)], check=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    params = yaml.safe_load((work / "params.yaml").read_text())
    bench = yaml.safe_load(params_file.read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(merge_params(params, bench, busbra_root), sort_keys=False))
    subprocess.run(["git", "-c", "user.email=bench@busseg", "-c", "user.name=bench", "commit", "-qam",
                    "SSL benchmark parameters"], cwd=work, check=True)


def exp_show(work: Path) -> Any:
    out = subprocess.run(["dvc", "exp", "show", "--json", "--no-pager"], cwd=work, check=True, capture_output=True, text=True,
                         env=clone_env(work))
    return json.loads(out.stdout)


def run_experiments(work: Path, experiments: list[Experiment], jobs: int, dry_run: bool, sequential: bool) -> Any:
    """Run ``experiments`` in the clone ``work``; ``dvc exp show --json`` afterwards (None on a dry run).

    The first one runs in the workspace, so that the stages every experiment shares (prepare,
    pseudo labels, the static teacher of that seed) land in DVC's run cache; the others run
    one by one (``sequential``) or through DVC's queue, ``jobs`` at a time. A run in the
    workspace leaves its values in params.yaml, and the next experiment (queued or not) would
    start from them, so the committed params.yaml is restored after every such run.
    """
    restore = ["git", "checkout", "--", "params.yaml"]
    sh(experiments[0].command(queue=False), work, dry_run)
    sh(restore, work, dry_run)
    if sequential:  # one after the other, no queue workers (small smoke runs)
        for experiment in experiments[1:]:
            sh(experiment.command(queue=False), work, dry_run)
            sh(restore, work, dry_run)
        return None if dry_run else exp_show(work)
    for experiment in experiments[1:]:
        sh(experiment.command(), work, dry_run)
    sh(["dvc", "queue", "start", "-j", str(jobs)], work, dry_run)
    if dry_run:
        return None
    while True:
        status = subprocess.run(["dvc", "queue", "status"], cwd=work, capture_output=True, text=True,
                                env=clone_env(work)).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(60)
    print(status)
    return exp_show(work)


def run(args: argparse.Namespace) -> None:
    extra = dict(item.split("=", 1) for item in args.set)
    experiments = plan(args.methods, args.ratios, args.seeds, not args.no_ladder, extra, not args.no_upper_bound)
    print(f"{len(experiments)} experiments in {len({e.group for e in experiments})} groups, {args.jobs} at a time")
    prepare_clone(args.work, args.params, args.busbra_root.resolve(), args.dry_run)
    show = run_experiments(args.work, experiments, args.jobs, args.dry_run, args.sequential)
    if show is None:
        return
    print(table(show, experiments, args.dataset))
    if not args.sequential:
        print()
        print(paired_table(show, experiments, args.reference, args.dataset))
    if args.results_out:
        write_results(args.results_out, show, experiments, args, args.work)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "table"):
        p = sub.add_parser(name)
        p.add_argument("--work", type=Path, default=Path("/tmp/busseg-ssl"))
        p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
        p.add_argument("--ratios", nargs="+", type=float, default=list(DEFAULT_RATIOS))
        p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
        p.add_argument("--no-ladder", action="store_true")
        p.add_argument("--no-upper-bound", action="store_true", help="leave out supervised at 100 %% labels")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every experiment")
        p.add_argument("--dataset", default="busbra")
        p.add_argument("--reference", default="supervised", help="the method paired differences are taken against")
        p.add_argument("--results-out", type=Path, default=None, metavar="PATH",
                       help="also write the table as a result file (benchmarks/results/<suite>/<name>.json)")
    run_parser = sub.choices["run"]
    run_parser.add_argument("--jobs", type=int, default=2)
    run_parser.add_argument("--params", type=Path, default=REPO / "benchmarks" / "ssl_busbra.yaml")
    run_parser.add_argument("--busbra-root", type=Path, default=REPO / ".." / "shared" / "data" / "BUS-BRA")
    run_parser.add_argument("--dry-run", action="store_true")
    run_parser.add_argument("--sequential", action="store_true", help="run the experiments one by one, without dvc's queue")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args)
    else:
        extra = dict(item.split("=", 1) for item in args.set)
        experiments = plan(args.methods, args.ratios, args.seeds, not args.no_ladder, extra, not args.no_upper_bound)
        show = exp_show(args.work)
        print(table(show, experiments, args.dataset))
        print()
        print(paired_table(show, experiments, args.reference, args.dataset))
        if args.results_out:
            write_results(args.results_out, show, experiments, args, args.work)


if __name__ == "__main__":
    sys.exit(main())
