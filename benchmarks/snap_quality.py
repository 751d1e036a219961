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

import numpy as np
import torch
from relabel_inputs import add_relabel_arguments, label_dice, load_relabel_inputs, report

from busseg.data.prepared import PreparedDataset
from busseg.metrics import dice
from busseg.pseudo.appearance import AppearanceLabeler, AppearanceOptions
from busseg.pseudo.base import PseudoLabel
from busseg.pseudo.refine import refine_labels
from busseg.pseudo.snap import snap_to_candidate


def mean_dice(labels: dict[str, PseudoLabel], prepared: PreparedDataset, ids: list[str]) -> float:
    return float(np.mean([label_dice(labels[i], prepared.mask(i)) for i in ids]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_relabel_arguments(parser)
    parser.add_argument("--weights", required=True, help="the appearance labeler's weights file (pseudo.appearance.weights)")
    parser.add_argument("--snap", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    args = parser.parse_args()
    inputs = load_relabel_inputs(args)
    prepared, ids, first = inputs.prepared, inputs.ids, inputs.first
    relabeled = refine_labels(inputs.teacher, prepared, ids, torch.device("cpu"), args.min_area_fraction, previous=first)
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
            score = snapped_dice if use else label_dice(label, prepared.mask(sample_id))
            rows[key] = rows.get(key, 0.0) + score / len(ids)
            rows[f"{key}_share"] = rows.get(f"{key}_share", 0.0) + float(use) / len(ids)
    report({k: round(v, 4) for k, v in rows.items()}, args.json)


if __name__ == "__main__":
    main()
