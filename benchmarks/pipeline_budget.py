"""Wall time and peak memory of a full `dvc repro`, in a throw-away copy of the project.

    python benchmarks/pipeline_budget.py                      # the default params (synthetic)
    python benchmarks/pipeline_budget.py --set label_ratio=0.025 --set train.method=dual_teacher
    python benchmarks/pipeline_budget.py --params-file benchmarks/busbra.yaml

The copy gets a fresh git + DVC repository and an empty DVC cache and scratch folder, as
on a new clone. Prints per-stage wall times (from DVC's output), the total, the peak
resident memory of the largest stage process, and metrics/summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def set_key(params: dict, dotted: str, value: str) -> None:
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = yaml.safe_load(value)


def deep_update(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "datasets":
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def make_copy(root: Path, params: dict, env: dict[str, str]) -> None:
    """Copy what `dvc repro` needs into ``root``, with a fresh git + DVC repository there.

    Without git on the PATH (a bare GPU image) the copy is a DVC repository without SCM
    (``dvc init --no-scm``): the stages and their outputs are the same.
    """
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    for folder in ("stages", "src"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "models" / "weights").mkdir(parents=True)
    shutil.copy(REPO / "models/weights/README.md", root / "models/weights/README.md")
    # The appearance labeler's committed weights files (pseudo.appearance.weights, a stage dependency).
    shutil.copytree(REPO / "models" / "appearance", root / "models" / "appearance")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if shutil.which("git", path=env["PATH"]):
        commands = [["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                    ["git", "add", "-A"], ["git", "-c", "user.email=b@x", "-c", "user.name=bench", "commit", "-qm", "bench"]]
    else:
        print("no git on the PATH: the copy is a DVC repository without SCM (dvc init --no-scm)")
        commands = [["dvc", "init", "-q", "--no-scm"], ["dvc", "config", "core.analytics", "false"]]
    for cmd in commands:
        subprocess.run(cmd, cwd=root, check=True, env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter (dotted key)")
    parser.add_argument("--params-file", type=Path, help="YAML merged over params.yaml (datasets replaced whole)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    parser.add_argument("--results-out", type=Path, default=None, metavar="PATH",
                        help="also write the stage times as a result file (benchmarks/results/<suite>/<name>.json)")
    args = parser.parse_args()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if args.params_file:
        deep_update(params, yaml.safe_load(args.params_file.read_text()))
    for item in args.set:
        key, _, value = item.partition("=")
        set_key(params, key, value)
    # Real-data roots in params are relative to the repository: make them absolute for the copy.
    for spec in params["datasets"].values():
        root_path = REPO / spec["root"]
        if not spec["root"].startswith("src/") and root_path.exists():
            spec["root"] = str(root_path.resolve())
    root = Path(tempfile.mkdtemp(prefix="busseg-bench-"))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "BUSSEG_SCRATCH": str(root / ".busseg" / "scratch")}
    try:
        make_copy(root, params, env)  # the same PATH as the stages: dvc from this interpreter's bin folder
        start = time.perf_counter()
        proc = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stage_start, stage_name, stage_times = time.perf_counter(), None, {}
        for line in proc.stdout:  # type: ignore[union-attr]
            match = re.match(r"Running stage '([^']+)'", line)
            if match:
                now = time.perf_counter()
                if stage_name:
                    stage_times[stage_name] = now - stage_start
                stage_name, stage_start = match.group(1), now
            if not line.startswith(("\r",)) and "it/s" not in line and "s/it" not in line:
                print(line, end="")
        proc.wait()
        total = time.perf_counter() - start
        if stage_name:
            stage_times[stage_name] = time.perf_counter() - stage_start
        if proc.returncode:
            sys.exit(f"dvc repro failed (exit {proc.returncode})")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print("\n## Budget")
        for name, seconds in stage_times.items():
            print(f"  {name:28s} {seconds:7.1f} s")
        print(f"  total wall {total:.1f} s, peak RSS of the largest process {peak_mb:.0f} MB")
        print("## metrics/summary.json")
        summary = json.loads((root / "metrics/summary.json").read_text())
        print(json.dumps(summary, indent=2))
        if args.results_out is not None:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import results_io

            table = [[name, f"{seconds:.1f} s"] for name, seconds in stage_times.items()]
            table += [["**total wall**", f"**{total:.1f} s**"], ["peak RSS of the largest process", f"{peak_mb:.0f} MB"]]
            for dataset, metrics in summary.items():
                if isinstance(metrics, dict) and "dice" in metrics:
                    table.append([f"{dataset}: test Dice", f"{metrics['dice']:.3f}"])
            results_io.write_result(args.results_out, title="The pipeline's budget", header=["stage", "time"],
                                    table=table, overrides={"set": args.set, "params_file": str(args.params_file or "")})
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
