"""Training curves through dvclive, declared as ``dvc plots`` in dvc.yaml."""
from __future__ import annotations

import math
import os
from pathlib import Path

from dvclive import Live


class LiveLogger:
    """Logs each epoch's scalars with dvclive into ``directory`` (metrics.json, plots/metrics/*.tsv).

    ``dvcyaml=False`` and ``save_dvc_exp=False``: inside a DVC stage, dvc.yaml declares the
    plots and DVC itself records experiments.
    """

    def __init__(self, directory: str | Path) -> None:
        os.environ.setdefault("DVCLIVE_LOGLEVEL", "WARNING")
        self.live = Live(dir=str(directory), dvcyaml=False, save_dvc_exp=False, report=None)

    def log_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        self.live.step = epoch
        for name, value in logs.items():
            if name != "epoch" and not math.isnan(value):
                self.live.log_metric(name, value)
        self.live.next_step()

    def close(self) -> None:
        self.live.end()
