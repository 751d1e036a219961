"""What the re-label benchmarks (``snap_quality.py``, ``relabel_tta.py``) read and print.

Both run in a project or benchmark clone after its warm-up: a teacher re-labels a split's
images with a lesion, and its labels are scored against ground truth beside the first round's.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from busseg.data.prepared import PreparedDataset, PseudoLabels
from busseg.data.split import read_id_list
from busseg.metrics import dice
from busseg.models import SegmentationNet
from busseg.pseudo.base import PseudoLabel
from busseg.pseudo.refine import read_labels
from busseg.ssl.ema import freeze
from busseg.training.checkpoint import load_model


def add_relabel_arguments(parser: argparse.ArgumentParser) -> None:
    """The inputs every re-label benchmark takes: ``--prepared --pseudo --teacher --ids``, the area floor and ``--json``."""
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--pseudo", type=Path, required=True, help="the first round's labels (pseudo_label's output)")
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--ids", type=Path, required=True, help="the images to re-label (a split file)")
    parser.add_argument("--min-area-fraction", type=float, default=0.01)
    parser.add_argument("--json", type=Path, help="also write the figures here")


@dataclass(frozen=True)
class RelabelInputs:
    """The prepared dataset, the ids with a lesion, their first-round labels and the frozen teacher."""

    prepared: PreparedDataset
    ids: list[str]
    first: dict[str, PseudoLabel]
    teacher: SegmentationNet


def load_relabel_inputs(args: argparse.Namespace) -> RelabelInputs:
    """Read what :func:`add_relabel_arguments` names; one CPU thread, as every benchmark here."""
    torch.set_num_threads(1)
    prepared = PreparedDataset(args.prepared)
    ids = [i for i in read_id_list(args.ids) if prepared.mask(i).any()]
    return RelabelInputs(prepared, ids, read_labels(PseudoLabels(args.pseudo), ids), freeze(load_model(args.teacher)))


def label_dice(label: PseudoLabel, truth: np.ndarray) -> float:
    """Dice of ``label`` against the ground truth ``truth``; an invalid label counts 0."""
    return dice(label.mask, truth) if label.valid else 0.0


def report(rows: dict[str, Any], json_path: Path | None) -> None:
    """Print ``rows`` as JSON, and write them to ``json_path`` too when given."""
    text = json.dumps(rows, indent=2)
    print(text)
    if json_path:
        json_path.write_text(text + "\n")
