"""benchmarks/relabel_tta.py: its baseline is the refinement round's own re-label."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import relabel_tta  # noqa: E402
from busseg.data.prepared import PreparedDataset  # noqa: E402
from busseg.metrics import dice  # noqa: E402
from busseg.pseudo.refine import ground_truth_labels, refine_labels  # noqa: E402
from busseg.ssl.ema import freeze  # noqa: E402
from busseg.training.checkpoint import load_model  # noqa: E402


# At 0.02 the random network's labels are all valid; at 0.2 all are too small, and each image
# keeps its first-round label as in a round: both paths must match refine_labels.
@pytest.mark.parametrize("min_area_fraction", [0.02, 0.2])
def test_flip_row_is_what_a_refinement_round_gives_and_sizes_add_rows(
    tiny_prepared: Path, checkpoint: Path, min_area_fraction: float
) -> None:
    prepared = PreparedDataset(tiny_prepared)
    ids = [i for i in prepared.ids if prepared.mask(i).any()][:6]
    net = freeze(load_model(checkpoint))
    first = ground_truth_labels(prepared, ids)  # first-round labels as good as they get: Dice 1
    first[ids[0]] = replace(first[ids[0]], valid=False, reason="area_below_min")  # one the labeler missed

    scores = relabel_tta.relabel_scores(net, prepared, ids, first, [96, 128], min_area_fraction)

    assert set(scores) == {"first_round", "flip", "flip+96", "flip+128", "flip+96,128"}
    assert scores["first_round"] == pytest.approx(5 / 6)
    relabeled = refine_labels(net, prepared, ids, torch.device("cpu"), min_area_fraction, previous=first)
    expected = np.mean([dice(relabeled[i].mask, prepared.mask(i)) if relabeled[i].valid else 0.0 for i in ids])
    assert scores["flip"] == pytest.approx(expected, abs=1e-6)
    assert all(0.0 <= value <= 1.0 for value in scores.values())
