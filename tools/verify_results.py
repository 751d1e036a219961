"""Check that the committed dvc.lock and metrics are what the committed code produces.

    python tools/verify_results.py lock      # before `dvc repro`: no stage has a changed dep or param
    python tools/verify_results.py metrics   # after `dvc repro`: metrics/ equal the committed ones
    python tools/verify_results.py record    # after committing new results: note the CPU they came from

`make verify` runs both around `dvc repro`; CI runs it on a fresh clone, so a commit that
changes code or params without re-running the pipeline (and committing dvc.lock and
metrics/ with it) cannot land. Missing outputs are fine for `lock` (a fresh clone has no
data); `metrics` compares every number to 1e-4 on the CPU model that produced the committed
results (recorded in tools/results_cpu.txt by `python tools/verify_results.py record`), where
they are expected to be identical, and lists every difference.

On another CPU model training rounds differently even with the AVX2 cap of
``runtime.portable_kernels`` (oneDNN sizes its blocking from the CPU's caches, so sums are
taken in another order): measured, the default's test Dice 0.7292 on an Intel Xeon and 0.7232
on an AMD EPYC machine from the same code, diverging at the warm-up's first epoch. There
`metrics` checks that every committed number is produced, integers exactly, fractions (Dice,
IoU) within :data:`CROSS_CPU_ABS` and larger values (HD95) within :data:`CROSS_CPU_REL`, and
says that it did so.
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
#: Bands for a CPU model other than the recorded one (see the module docstring): Dice-like
#: values in [0, 1] within 0.03, distances such as HD95 within 25 %.
CROSS_CPU_ABS = 0.03
CROSS_CPU_REL = 0.25
RESULTS_CPU = Path(__file__).resolve().parent / "results_cpu.txt"


def cpu_model(cpuinfo: str | None = None) -> str:
    """This machine's CPU as vendor, family, model and name (``/proc/cpuinfo``), e.g.
    ``AuthenticAMD family 25 model 17 (AMD EPYC)``; ``unknown`` where there is no such file."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown"
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if not key and fields:
            break  # the first processor's block is enough
        fields.setdefault(key, value.strip())
    if "vendor_id" not in fields:
        return "unknown"
    return f"{fields['vendor_id']} family {fields.get('cpu family', '?')} model {fields.get('model', '?')} ({fields.get('model name', '?')})"


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


def _close(x: float, y: float, tolerance: float, relative: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if isinstance(x, int) and isinstance(y, int) and relative:
        return x == y  # counts (images, rounds) do not depend on rounding
    # Fractions (Dice, IoU, accuracy) get the absolute band; distances such as HD95 the relative one.
    limit = tolerance if abs(x) <= 1.0 else max(tolerance, relative * abs(x))
    return abs(x - y) <= limit


def differences(committed: Any, produced: Any, tolerance: float = TOLERANCE, relative: float = 0.0) -> list[str]:
    """Keys whose values differ: numbers beyond ``tolerance`` (values above 1, such as HD95 in
    pixels, beyond ``relative`` of the committed value when that is larger; with ``relative``,
    integers must match exactly), anything else when unequal."""
    a, b = flatten(committed), flatten(produced)
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            out.append(f"{key}: {'missing in the committed file' if key not in a else 'not produced'}")
            continue
        x, y = a[key], b[key]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        if numbers and _close(x, y, tolerance, relative):
            continue
        if not numbers and x == y:
            continue
        out.append(f"{key}: committed {x!r}, produced {y!r}")
    return out


def check_metrics(root: Path = Path("metrics"), reference_cpu: Path = RESULTS_CPU) -> int:
    here = cpu_model()
    recorded = reference_cpu.read_text().strip() if reference_cpu.is_file() else ""
    same_cpu = here == recorded
    tolerance, relative = (TOLERANCE, 0.0) if same_cpu else (CROSS_CPU_ABS, CROSS_CPU_REL)
    if not same_cpu:
        print(f"note: this CPU ({here}) is not the one the committed results were produced on "
              f"({recorded or 'not recorded'}); training rounds differently there, so numbers are "
              f"compared within {CROSS_CPU_ABS:g} or {CROSS_CPU_REL:.0%}, counts exactly")
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
        problems.extend(f"{path}: {d}" for d in differences(committed, json.loads(Path(path).read_text()), tolerance, relative))
    if problems:
        print("error: the pipeline does not reproduce the committed metrics:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    band = f"tolerance {TOLERANCE:g}" if same_cpu else f"within {CROSS_CPU_ABS:g} or {CROSS_CPU_REL:.0%}, another CPU"
    print(f"all {len(committed_files)} committed metrics files reproduced ({band})")
    return 0


def record_cpu(path: Path = RESULTS_CPU) -> int:
    """Write this machine's CPU model as the one the committed results come from."""
    path.write_text(cpu_model() + "\n")
    print(f"{path}: {cpu_model()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=["lock", "metrics", "record"],
                        help="record: write this CPU model as the one the committed results come from")
    args = parser.parse_args(argv)
    return {"lock": check_lock, "metrics": check_metrics, "record": record_cpu}[args.check]()


if __name__ == "__main__":
    sys.exit(main())
