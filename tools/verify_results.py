"""Check that the committed dvc.lock and metrics are what the committed code produces.

    python tools/verify_results.py lock      # before `dvc repro`: no stage has a changed dep or param
    python tools/verify_results.py metrics   # after `dvc repro`: metrics/ equal the committed ones

`make verify` runs both around `dvc repro`; CI runs it on a fresh clone, so a commit that
changes code or params without re-running the pipeline (and committing dvc.lock and
metrics/ with it) cannot land. Missing outputs are fine for `lock` (a fresh clone has no
data); `metrics` compares every number to 1e-4 (on the same kind of machine, with the same
threads, they are expected to be identical) and lists every difference.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

TOLERANCE = 1e-4


def changed_stages(status: dict[str, Any]) -> list[str]:
    """'stage: path what' for every changed dependency or parameter in `dvc status --json` output."""
    problems = []
    for stage, items in status.items():
        for item in items:
            if not isinstance(item, dict):
                continue
            for kind in ("changed deps", "changed params"):
                for path, what in (item.get(kind) or {}).items():
                    if what != "deleted":  # a missing input (fresh clone) is not a mismatch
                        problems.append(f"{stage}: {path} {what}")
    return problems


def check_lock() -> int:
    proc = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"error: dvc status failed:\n{proc.stderr}", file=sys.stderr)
        return 1
    problems = changed_stages(json.loads(proc.stdout or "{}"))
    if problems:
        print("error: dvc.lock does not match the committed code and params; re-run the pipeline "
              "(dvc repro) and commit dvc.lock and metrics/ together:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print("dvc.lock matches the code and params of every stage")
    return 0


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differences(committed: Any, produced: Any, tolerance: float = TOLERANCE) -> list[str]:
    """Keys whose values differ (numbers beyond ``tolerance``, anything else when unequal)."""
    a, b = flatten(committed), flatten(produced)
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            out.append(f"{key}: {'missing in the committed file' if key not in a else 'not produced'}")
            continue
        x, y = a[key], b[key]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        if numbers and (math.isnan(x) and math.isnan(y) or abs(x - y) <= tolerance):
            continue
        if not numbers and x == y:
            continue
        out.append(f"{key}: committed {x!r}, produced {y!r}")
    return out


def check_metrics(root: Path = Path("metrics")) -> int:
    committed_files = subprocess.run(
        ["git", "ls-files", "--", str(root)], capture_output=True, text=True, check=True
    ).stdout.split()
    produced_files = sorted(str(p) for p in root.rglob("*.json"))
    problems = [f"{path}: produced but not committed" for path in sorted(set(produced_files) - set(committed_files))]
    for path in committed_files:
        if not path.endswith(".json"):
            continue
        committed = json.loads(subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True, check=True).stdout)
        if not Path(path).is_file():
            problems.append(f"{path}: committed but not produced")
            continue
        problems.extend(f"{path}: {d}" for d in differences(committed, json.loads(Path(path).read_text())))
    if problems:
        print("error: the pipeline does not reproduce the committed metrics:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"all {len(committed_files)} committed metrics files reproduced (tolerance {TOLERANCE:g})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=["lock", "metrics"])
    args = parser.parse_args(argv)
    return check_lock() if args.check == "lock" else check_metrics()


if __name__ == "__main__":
    sys.exit(main())
