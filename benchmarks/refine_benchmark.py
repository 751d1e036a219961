"""Label refinement on a held-out target (issue 20): no round against refinement rounds, x seeds.

Usage::

    python benchmarks/refine_benchmark.py run   --params benchmarks/heldout_logiq7.yaml --dataset logiq7
                                                [--work /tmp/busseg-refine-logiq7] [--seeds 0 1 2] [--ratio 0.025]
                                                [--rounds 1] [--relabel student] [--init fresh] [--set KEY=VALUE ...]
                                                [--jobs 2] [--dry-run] [--sequential]
    python benchmarks/refine_benchmark.py table --work /tmp/busseg-refine-logiq7 [more clones...] --dataset logiq7
                                                [--seeds 0 1 2] [--name refined=logiq7-refst-s{seed} ...]

``run`` clones this repository into ``--work`` and merges the held-out target's parameter file
into its params.yaml (as ``ssl_benchmark.py`` does), then runs three experiments per seed:

* ``none-s<seed>``: the default pipeline without refinement (``pseudo.refine_rounds: 0``);
* ``refined-s<seed>``: the same with ``--rounds`` rounds re-labeled by ``--relabel`` (``student``:
  noisy-student rounds, student -> labels -> teacher -> student), the labeled split's ground
  truth in every round and each round's teacher started as ``--init``;
* ``sup100-s<seed>``: ``supervised`` on 100 % of the labels, the same budget and start (the
  upper bound the student is compared with).

``none`` runs first, in the workspace, so that prepare, pseudo labels and the warm-up of that
seed are in DVC's run cache before the other two need them. ``table`` reads ``dvc exp show
--json`` in ``--work`` and prints the per-seed table of docs/benchmarks.md, "Label
refinement" (``--results-out`` also writes it as a result file): the labels of the unlabeled train images before and after the
rounds, the teachers' validation Dice, the re-labeling student's, the student's test Dice with
and without refinement, fully supervised, and each paired gain (mean +- sample std over seeds).
``table`` also reads runs made by hand: several ``--work`` clones (one per seed, say) and
``--name ARM=PATTERN`` for experiments named otherwise (``{seed}`` stands for the seed).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_io  # noqa: E402  (--results-out)
import ssl_benchmark as ssl  # noqa: E402  (the clone, the experiment and the exp-show helpers)

from busseg.params_schema import REFINE_INITS, REFINE_RELABELERS  # noqa: E402

ARMS = ("none", "refined", "sup100")


def plan(
    seeds: Iterable[int] = ssl.DEFAULT_SEEDS,
    ratio: float = 0.025,
    rounds: int = 1,
    relabel: str = "student",
    init: str = "fresh",
    extra: dict[str, str] | None = None,
) -> list[ssl.Experiment]:
    """The experiments of the refinement benchmark, ``none`` first within each seed.

    Every arm sets every refinement key it depends on, so a workspace left at another
    experiment's values (``dvc exp run`` applies the last one) cannot leak into it.
    """
    common = {"label_ratio": str(ratio), "pseudo.refine_rounds": "0"}
    arms = {
        "none": ("no refinement", common),
        "refined": (f"{rounds} round(s) re-labeled by the {relabel}, init {init}",
                    {**common, "pseudo.refine_rounds": str(rounds), "pseudo.refine_relabel": relabel,
                     "pseudo.refine_init": init, "pseudo.refine_ground_truth": "true"}),
        "sup100": ("supervised, 100 % labels", {**common, "label_ratio": "1.0", "train.method": "supervised"}),
    }
    return [
        ssl.Experiment(f"{arm}-s{seed}", arm, label, {**overrides, **(extra or {}), "seed": str(seed)})
        for seed in seeds
        for arm, (label, overrides) in arms.items()
    ]


def seed_row(refine: dict[str, Any] | None, none: float | None, refined: float | None, sup100: float | None) -> dict[str, float]:
    """One seed's figures: ``refine`` is the refined arm's ``metrics/refine/<ds>.json``, the rest test Dice."""
    row: dict[str, float] = {}
    if refine and "round_0" in refine:
        first = refine["round_0"]
        # The accepted round is what the student gets; round 0 when every round was dropped.
        best = refine.get(f"round_{refine.get('accepted_round', 0)}") or first
        row["labels_first"], row["teacher_first"] = first["dice"], first["teacher_val_dice"]
        row["labels_refined"], row["teacher_refined"] = best["dice"], best["teacher_val_dice"]
        relabeler = (refine.get("round_1") or {}).get("labeler_student_val_dice")
        if relabeler is not None:
            row["relabeler_val"] = relabeler
        # With several rounds, the student that made the accepted labels is a later one.
        if refine.get("accepted_round", 0) > 1 and (last := best.get("labeler_student_val_dice")) is not None:
            row["relabeler_last_val"] = last
    for key, value in (("student_none", none), ("student_refined", refined), ("sup100", sup100)):
        if value is not None:
            row[key] = value
    return row


ROWS = (
    ("labels_first", "first-round labels (unlabeled train images)"),
    ("labels_refined", "labels after the rounds"),
    (("labels_refined", "labels_first"), "gain in labels (points, paired)"),
    ("teacher_first", "first teacher, val"),
    ("teacher_refined", "teacher after the rounds, val"),
    (("teacher_refined", "teacher_first"), "gain in teacher (points, paired)"),
    ("relabeler_val", "the re-labeling student, val"),
    ("relabeler_last_val", "the accepted round's re-labeling student, val (several rounds)"),
    ("student_none", "student test, no refinement"),
    ("student_refined", "student test, after the rounds"),
    (("student_refined", "student_none"), "gain in student (points, paired)"),
    ("sup100", "supervised, 100 % labels, test"),
    (("student_none", "sup100", "ratio"), "student / supervised 100 %, no refinement"),
    (("student_refined", "sup100", "ratio"), "student / supervised 100 %, refined"),
)


def _cell(row: dict[str, float], spec: str | tuple[str, ...]) -> float | None:
    """A figure (``spec`` a key), a paired gain in points (two keys) or a ratio (two keys and "ratio")."""
    if isinstance(spec, str):
        return row.get(spec)
    a, b = row.get(spec[0]), row.get(spec[1])
    if a is None or b is None:
        return None
    return a / b if len(spec) == 3 else 100 * (a - b)


def _format(spec: str | tuple[str, ...]) -> str:
    return ".3f" if isinstance(spec, str) else "+.1f" if len(spec) == 2 else ".2f"


def table(rows: dict[int, dict[str, float]]) -> str:
    """Markdown table, one column per seed and mean +- sample std over the seeds that have the figure."""
    seeds = sorted(rows)
    lines = ["| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean +- std |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for spec, label in ROWS:
        values = [_cell(rows[s], spec) for s in seeds]
        present = [v for v in values if v is not None]
        if not present:
            continue
        fmt = _format(spec)
        summary = f"{statistics.mean(present):{fmt}}"
        if len(present) > 1:
            summary += f" +- {statistics.stdev(present):{fmt.lstrip('+')}}"
        cells = " | ".join("-" if v is None else f"{v:{fmt}}" for v in values)
        lines.append(f"| {label} | {cells} | {summary} (n={len(present)}) |")
    return "\n".join(lines)


def rows_from_show(show: Any, seeds: Iterable[int], dataset: str, names: dict[str, str] | None = None) -> dict[int, dict[str, float]]:
    """Per-seed figures from ``dvc exp show --json``; ``names`` maps an arm to another experiment name pattern.

    ``names`` (for runs made by hand, e.g. ``{"refined": "logiq7-refst-s{seed}"}``) defaults to
    this script's own names, ``<arm>-s<seed>``.
    """
    data = dict(ssl.iter_experiments(show))
    patterns = {arm: f"{arm}-s{{seed}}" for arm in ARMS} | (names or {})

    def get(arm: str, seed: int) -> dict[str, Any] | None:
        return data.get(patterns[arm].format(seed=seed))

    def test_dice(arm: str, seed: int) -> float | None:
        metrics = ssl.experiment_metrics(get(arm, seed) or {}, dataset)
        return metrics.get("dice") if metrics else None

    rows = {}
    for seed in seeds:
        refined = get("refined", seed) or {}
        refine = ((refined.get("metrics") or {}).get(f"metrics/refine/{dataset}.json") or {}).get("data")
        rows[seed] = seed_row(refine, test_dice("none", seed), test_dice("refined", seed), test_dice("sup100", seed))
    return rows


def write_results(path: Path, rows: dict[int, dict[str, float]], args: argparse.Namespace, commit: str | None) -> None:
    """``--results-out``: the per-seed table as a result file (layout ``seeds``; gains are rendered as paired rows)."""
    seeds = sorted(rows)
    out = []
    for spec, label in ROWS:
        if isinstance(spec, str):
            values = [rows[s].get(spec) for s in seeds]
            if any(v is not None for v in values):
                out.append({"key": spec, "label": label, "per_seed": values})
        elif len(spec) == 2 and all(any(r["key"] == k for r in out) for k in spec):
            out.append({"key": f"{spec[0]}-{spec[1]}", "label": label, "paired": list(spec)})
    results_io.write_result(path, title=f"Label refinement on {args.dataset}", rows=out, commit=commit,
                            layout="seeds", seeds=seeds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "table"):
        p = sub.add_parser(name)
        p.add_argument("--dataset", required=True, help="the target's dataset name in --params (logiq7, toshiba)")
        p.add_argument("--seeds", nargs="+", type=int, default=list(ssl.DEFAULT_SEEDS))
    run_parser, table_parser = sub.choices["run"], sub.choices["table"]
    run_parser.add_argument("--work", type=Path, default=Path("/tmp/busseg-refine"))
    table_parser.add_argument("--work", type=Path, nargs="+", default=[Path("/tmp/busseg-refine")])
    table_parser.add_argument("--name", action="append", default=[], metavar="ARM=PATTERN",
                              help=f"experiment name of an arm ({', '.join(ARMS)}), {{seed}} for the seed")
    for p in (run_parser, table_parser):
        p.add_argument("--results-out", type=Path, default=None, metavar="PATH",
                       help="also write the table as a result file (benchmarks/results/<suite>/<name>.json)")
    run_parser.add_argument("--params", type=Path, required=True, help="e.g. benchmarks/heldout_logiq7.yaml")
    run_parser.add_argument("--ratio", type=float, default=0.025)
    run_parser.add_argument("--rounds", type=int, default=1)
    run_parser.add_argument("--relabel", default="student", choices=REFINE_RELABELERS, help="pseudo.refine_relabel of the refined arm")
    run_parser.add_argument("--init", default="fresh", choices=REFINE_INITS, help="pseudo.refine_init of the refined arm")
    run_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every experiment")
    run_parser.add_argument("--jobs", type=int, default=2)
    run_parser.add_argument("--busbra-root", type=Path, default=ssl.REPO / ".." / "shared" / "data" / "BUS-BRA")
    run_parser.add_argument("--dry-run", action="store_true")
    run_parser.add_argument("--sequential", action="store_true", help="run the experiments one by one, without dvc's queue")
    args = parser.parse_args(argv)
    names = None
    if args.command == "run":
        extra = dict(item.split("=", 1) for item in args.set)
        experiments = plan(args.seeds, args.ratio, args.rounds, args.relabel, args.init, extra)
        print(f"{len(experiments)} experiments, {args.jobs} at a time")
        ssl.prepare_clone(args.work, args.params, args.busbra_root.resolve(), args.dry_run)
        # Each seed's 'none' fills the run cache that seed's other two arms reuse.
        ordered = [e for e in experiments if e.group == "none"] + [e for e in experiments if e.group != "none"]
        show = ssl.run_experiments(args.work, ordered, args.jobs, args.dry_run, args.sequential)
        if show is None:
            return
    else:
        names = dict(item.split("=", 1) for item in args.name)
        unknown = sorted(set(names) - set(ARMS))
        if unknown:
            parser.error(f"--name: unknown arm {', '.join(unknown)}; available: {', '.join(ARMS)}")
        show = [ssl.exp_show(work) for work in args.work]
    rows = rows_from_show(show, args.seeds, args.dataset, names)
    print(table(rows))
    if args.results_out:
        works = [args.work] if isinstance(args.work, Path) else list(args.work)
        commits = {results_io.git_commit(w) for w in works}
        write_results(args.results_out, rows, args, commits.pop() if len(commits) == 1 else None)


if __name__ == "__main__":
    sys.exit(main())
