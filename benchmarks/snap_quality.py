"""Label quality of a refinement re-label, with and without snapping (``pseudo.refine_snap``).

    python benchmarks/snap_quality.py --prepared data/prepared/toshiba --pseudo data/pseudo/toshiba \
        --teacher models/toshiba/static_teacher.pt --ids data/splits/toshiba/unlabeled.txt \
        --weights models/appearance/loso_toshiba_aplio_300.json --snap 0.3 0.5 0.7

Runs in a project (or benchmark clone) after its warm-up: the teacher re-labels the images of
``--ids`` as a refinement round does (mirror-averaged, largest component), and each label is
snapped to the appearance labeler's best-agreeing candidate at every ``--snap`` threshold.
Prints the Dice against ground truth (images with a lesion; an invalid label counts 0) of the
first-round labels, the teacher's labels and each snapped variant, with the share snapped.
No training: it measures what one re-label gives, for choosing the threshold on a train split.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from busseg.data.prepared import PreparedDataset, PseudoLabels
from busseg.data.split import read_id_list
from busseg.metrics import dice
from busseg.pseudo.appearance import AppearanceLabeler, AppearanceOptions
from busseg.pseudo.base import PseudoLabel
from busseg.pseudo.refine import read_labels, refine_labels
from busseg.pseudo.snap import snap_to_candidate
from busseg.ssl.ema import freeze
from busseg.training.checkpoint import load_model


def mean_dice(labels: dict[str, PseudoLabel], prepared: PreparedDataset, ids: list[str]) -> float:
    scores = [dice(labels[i].mask, prepared.mask(i)) if labels[i].valid else 0.0 for i in ids]
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--pseudo", type=Path, required=True, help="the first round's labels (pseudo_label's output)")
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--ids", type=Path, required=True, help="the images to re-label (a split file)")
    parser.add_argument("--weights", required=True, help="the appearance labeler's weights file (pseudo.appearance.weights)")
    parser.add_argument("--snap", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--min-area-fraction", type=float, default=0.01)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    prepared = PreparedDataset(args.prepared)
    ids = [i for i in read_id_list(args.ids) if prepared.mask(i).any()]
    first = read_labels(PseudoLabels(args.pseudo), ids)
    teacher = freeze(load_model(args.teacher))
    relabeled = refine_labels(teacher, prepared, ids, torch.device("cpu"), args.min_area_fraction, previous=first)
    labeler = AppearanceLabeler(AppearanceOptions(weights=args.weights))
    rows: dict[str, float] = {"n_images": len(ids), "first_round": mean_dice(first, prepared, ids),
                              "teacher": mean_dice(relabeled, prepared, ids)}
    agreements: dict[str, float] = {}
    for sample_id in ids:
        label = relabeled[sample_id]
        snapped = snap_to_candidate(labeler, prepared.image(sample_id), label.mask, 0.0) if label.valid else None
        if snapped is not None:
            agreements[sample_id] = snapped.agreement
            snapped_dice = dice(snapped.mask, prepared.mask(sample_id))
        for threshold in args.snap:
            use = snapped is not None and snapped.agreement >= threshold
            key = f"snap_{threshold:g}"
            score = snapped_dice if use else (dice(label.mask, prepared.mask(sample_id)) if label.valid else 0.0)
            rows[key] = rows.get(key, 0.0) + score / len(ids)
            rows[f"{key}_share"] = rows.get(f"{key}_share", 0.0) + float(use) / len(ids)
    rows = {k: round(v, 4) for k, v in rows.items()}
    print(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
