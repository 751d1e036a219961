"""Run a stage script on ``runtime.nproc`` ranks with torchrun's engine (DDP training stages).

    python -m busseg.launch --nproc N stages/train.py --prepared ... (the script's own arguments)

dvc.yaml calls the training stages through this launcher with ``--nproc ${runtime.nproc}``.
With one process the script simply runs here (no torchrun start-up cost); with N > 1 it is
``torchrun --standalone --nproc_per_node N script ...`` (``torch.distributed.run``), with two
differences a stage needs: a bad ``runtime.nproc`` and a rank that dies are one ``error:``
line naming the parameter or the rank (not torchrun's traceback), and the exit code is 1.
Ctrl-C is one ``interrupted`` line (the ranks, which get the signal too, stay silent) and
exit code 130. Every rank's own output (the stage's messages) goes to the terminal as usual.
"""
from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys

from busseg.errors import BussegError, ConfigError

INTERRUPTED_EXIT_CODE = 130
"""Exit code after Ctrl-C (128 + SIGINT), as the stages' own ``main_guard`` returns it."""


def available_workers(device: str) -> tuple[int, str]:
    """How many ranks this machine can host for ``runtime.device``, and what they are."""
    if device.startswith("cuda") or device == "auto":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count(), "visible CUDA devices"
        if device.startswith("cuda"):
            return 0, "visible CUDA devices"
    return len(os.sched_getaffinity(0)), "CPU cores"


def check_nproc(nproc: int, device: str) -> None:
    """``runtime.nproc`` must be >= 1 and at most the GPUs (CUDA) or cores (CPU) available."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError("runtime.nproc", f"must be an integer >= 1 (processes for DDP training), got {nproc!r}")
    if nproc == 1:
        # One process always fits; and torch must not be imported here before the stage
        # script sets its CPU-kernel environment (stages/_params.py).
        return
    available, what = available_workers(device)
    if nproc > available:
        raise ConfigError(
            "runtime.nproc",
            f"{nproc} ranks asked for but this machine has {available} {what} (runtime.device: {device}); "
            f"use runtime.nproc <= {available}",
        )


def _run_in_process(script: str, args: list[str]) -> None:
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


def _silence_torchrun_logs() -> None:
    """Raise torchrun's loggers to CRITICAL. Each of its modules sets its own logger's level
    when imported (``LOGLEVEL``, default WARNING), so the parent logger's level is not enough."""
    prefixes = ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")
    for name in [*logging.root.manager.loggerDict, *prefixes]:
        if name.startswith(prefixes):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _run_under_torchrun(nproc: int, script: str, args: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    torchrun_args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", script, *args])
    # The ranks print their own `error:` lines; torchrun's agent would add a log record and a
    # summary per failure (and one per Ctrl-C) on top. The one-line summaries below replace them.
    _silence_torchrun_logs()
    # Each rank sets its torch threads from runtime.threads; this only silences torchrun's
    # warning that it would otherwise set OMP_NUM_THREADS=1 itself.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        run(torchrun_args)
    except (KeyboardInterrupt, SignalException):
        # torchrun's agent turns Ctrl-C into SignalException and stops the ranks; each rank
        # got the signal too and left its outputs untouched (busseg.atomic), silently.
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except ChildFailedError as exc:
        failures = ", ".join(f"rank {rank} (exit code {exc.failures[rank].exitcode})" for rank in sorted(exc.failures))
        print(
            f"error: runtime.nproc={nproc}: {failures} failed; no stage output was written, and the next run "
            "resumes from the last finished epoch",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", required=True, help="ranks (runtime.nproc)")
    parser.add_argument("--device", default="auto", help="runtime.device, to check --nproc against")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    try:
        try:
            nproc = int(options.nproc)
        except ValueError:
            raise ConfigError("runtime.nproc", f"must be an integer >= 1, got {options.nproc!r}") from None
        check_nproc(nproc, options.device)
    except BussegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if nproc == 1:  # the script's own main_guard reports Ctrl-C (a SystemExit(130) here)
            _run_in_process(options.script, options.args)
            return 0
        return _run_under_torchrun(nproc, options.script, options.args)
    except KeyboardInterrupt:  # before the script's main_guard runs (e.g. importing torch)
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
