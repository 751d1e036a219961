"""Training curves through dvclive, declared as ``dvc plots`` in dvc.yaml."""
from __future__ import annotations

import math
import os
from pathlib import Path

from dvclive import Live

from busseg.atomic import write_error


class LiveLogger:
    """Logs each epoch's scalars with dvclive into ``directory`` (metrics.json, plots/metrics/*.tsv).

    ``dvcyaml=False`` and ``save_dvc_exp=False``: inside a DVC stage, dvc.yaml declares the
    plots and DVC itself records experiments.
    """

    def __init__(self, directory: str | Path) -> None:
        os.environ.setdefault("DVCLIVE_LOGLEVEL", "WARNING")
        self.directory = Path(directory)
        try:
            self.live = Live(dir=str(directory), dvcyaml=False, save_dvc_exp=False, report=None)
        except OSError as exc:
            raise self._error(exc) from None

    def log_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        """Log one epoch's scalars (NaN ones left out); a failed write is a DataError."""
        try:
            self.live.step = epoch
            for name, value in logs.items():
                if name != "epoch" and not math.isnan(value):
                    self.live.log_metric(name, value)
            self.live.next_step()
        except OSError as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        """Write dvclive's summary; a failed write is a DataError."""
        try:
            self.live.end()
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError):
        """A full disk or ``ulimit -f`` in dvclive's files, naming the file (or the folder)."""
        return write_error(exc.filename or self.directory, exc)
