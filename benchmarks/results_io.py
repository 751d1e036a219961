"""Write a benchmark's results as a result file (JSON) that tools/render_results.py renders.

Every script that prints a table takes ``--results-out PATH`` and, when given, calls
:func:`write_result` at the end: the table's rows with their per-seed figures, plus what is
needed to trust them later, recorded automatically: the command line, the git commit of this
checkout (with ``-dirty`` when it has uncommitted changes, a warning that the commit alone does
not say what ran), the CPU model and core count, the GPU if torch is already imported and sees
one, the torch version and the date. Fill in ``title`` and ``description`` before rendering;
docs/benchmarks.md ("Adding a result") says how.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: Path = REPO) -> str | None:
    """Short hash of HEAD (``-dirty`` appended when the work tree differs), None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=repo, capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if dirty else head


def cpu_model() -> str:
    """``<model name>, <n> cores`` from /proc/cpuinfo, else what platform knows."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def gpu_model() -> str | None:
    """The first CUDA device's name when torch is already imported and sees one (never imports torch)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken CUDA set-up is simply "no GPU" here
        return None
    return None


def torch_version() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def write_result(path: Path, *, title: str, rows: list[dict[str, Any]] | None = None,
                 header: list[str] | None = None, table: list[list[Any]] | None = None,
                 overrides: dict[str, Any] | None = None, commit: str | None = None, **extra: Any) -> Path:
    """Write one result file; ``rows`` (per-seed figures) or ``header`` + ``table``. Returns the path.

    ``commit`` defaults to this checkout's; a benchmark that measured other checkouts (clones
    made by ``ssl_benchmark.py run``) passes theirs.
    """
    if rows is None and header is None:
        raise ValueError("write_result needs rows or header + table")
    data: dict[str, Any] = {
        "title": title,
        "description": extra.pop("description", None),
        "command": "python " + shlex.join(sys.argv),
        "overrides": overrides or None,
        "commit": commit if commit is not None else git_commit(),
        "machine": {"cpu": cpu_model(), "gpu": gpu_model()},
        "torch": torch_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).date().isoformat(),
        **extra,
    }
    if rows is not None:
        data["rows"] = rows
    else:
        data["header"], data["table"] = header, table or []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path
