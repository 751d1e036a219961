"""Shared wiring for the stage scripts: reading params.yaml and the runtime section.

This is the only place that parses params.yaml; the library receives plain values.
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

#: Exit code after Ctrl-C: 128 + SIGINT, what a shell reports for a process it interrupted.
INTERRUPTED_EXIT_CODE = 130


def _is_main_rank() -> bool:
    """Whether this process says ``interrupted``: not a rank under torchrun (``runtime.nproc``
    > 1), where every rank gets the signal and ``busseg.launch`` says it once for all."""
    return "TORCHELASTIC_RUN_ID" not in os.environ


def _interrupted_hook(kind, value, traceback) -> None:
    """``sys.excepthook`` for Ctrl-C before :func:`main_guard` runs (during the stage's imports,
    which take seconds with torch): the same one line and exit code as inside it."""
    if not issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    if _is_main_rank():
        print("interrupted", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Nothing is open yet that needs cleaning up; os._exit keeps Python from re-raising SIGINT.
    os._exit(INTERRUPTED_EXIT_CODE)


sys.excepthook = _interrupted_hook

import yaml  # noqa: E402

# DVC and dvclive must never try the network from a stage.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

#: CPU kernels capped at AVX2 (PyTorch's own kernels, oneDNN's convolutions, MKL). Without the
#: cap each library picks the widest instruction set the CPU has, and AVX-512 and AVX2 kernels
#: round differently: the same training then ends in different weights on two machines "of the
#: same kind" (measured: a committed test Dice of 0.613 vs 0.686 and 0.678 on fresh clones).
#: With the cap, the committed dvc.lock and metrics reproduce on any x86-64 CPU with AVX2, at
#: a cost (a ResNet-18 step ~1.6x slower on an AVX-512 machine); `runtime.portable_kernels:
#: false` trades that reproducibility for speed. Set before torch is imported: the libraries
#: read these variables once, when they initialise.
PORTABLE_CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}


def _wants_portable_kernels(path: str | Path = "params.yaml") -> bool:
    """``runtime.portable_kernels`` from the params file (default true), read before torch loads."""
    try:
        with open(path, encoding="utf-8") as handle:
            runtime = (yaml.safe_load(handle) or {}).get("runtime") or {}
        return runtime.get("portable_kernels", True) is not False
    except Exception:  # a broken file is reported properly by load_params below
        return True


if _wants_portable_kernels():
    for _name, _value in PORTABLE_CPU_KERNELS.items():
        os.environ.setdefault(_name, _value)

from busseg.errors import BussegError, ConfigError, DataError  # noqa: E402
from busseg.params_schema import validate_params  # noqa: E402
from busseg.runtime import resolve_device, resolve_threads, set_threads  # noqa: E402


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The whole params file as a dict, after checking every key against the schema.

    Every stage checks the whole file (not only its own sections), so a misspelt key
    anywhere fails the next stage that runs instead of silently meaning the default;
    see :mod:`busseg.params_schema`.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            params = yaml.safe_load(handle)
    except FileNotFoundError:
        raise DataError(path, "parameter file not found; run the stage from the project root") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise DataError(path, f"not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(params, dict):
        raise DataError(path, f"expected a mapping of parameters (key: value), got {params!r}")
    validate_params(params)
    return params


def dataset_spec(params: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``datasets.<name>`` entry, with a clear error when it is missing."""
    datasets = params.get("datasets") or {}
    if name not in datasets:
        raise ConfigError(f"datasets.{name}", f"no such dataset; available: {', '.join(sorted(datasets))}")
    return dict(datasets[name])


def runtime_progress(params: dict[str, Any]) -> bool:
    """``runtime.progress``: for the stages without a network, which need no :func:`setup_runtime`
    (it loads torch, seconds of start-up on a small machine)."""
    return bool((params.get("runtime") or {}).get("progress", True))


def cpu_workers(params: dict[str, Any]) -> int:
    """Processes for a stage's CPU work without a network (the appearance labeler's first passes):
    ``runtime.threads``' count (0: every core this process may use), the same CPU budget the
    training stages get."""
    count = resolve_threads((params.get("runtime") or {}).get("threads", 1))
    return count or len(os.sched_getaffinity(0))


def setup_runtime(params: dict[str, Any]):
    """Apply ``runtime.threads`` (torch's) and return ``(device, progress)``."""
    runtime = params.get("runtime") or {}
    set_threads(runtime.get("threads", 1))
    return resolve_device(str(runtime.get("device", "auto"))), bool(runtime.get("progress", True))


_OUT_OF_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
"""Errors of a write that ran out of room: disk full, ``ulimit -f``, quota."""


def main_guard(main) -> None:
    """Run ``main``: busseg's user errors become one ``error:`` line and exit code 1, Ctrl-C
    (SIGINT, e.g. during ``dvc repro``) one ``interrupted`` line and exit code 130.

    Nothing is half-written either way: every output goes through :mod:`busseg.atomic`, whose
    context managers remove their temporary as the exception passes; resumable stages keep
    their last finished epoch / labeled image in the scratch folder for the next run.
    A full disk or ``ulimit -f`` in a write that no busseg code wraps (a library's own
    file) is one ``error:`` line too, naming the file when the system does.
    """
    try:
        main()
    except BussegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        if exc.errno not in _OUT_OF_SPACE:
            raise
        print(f"error: {exc.filename or 'writing an output'}: {exc.strerror}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        if _is_main_rank():  # one line per run, not one per DDP rank
            print("interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)
