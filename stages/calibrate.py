"""Stage calibrate@<dataset>: optional few-shot calibration of the pseudo labels.

    python stages/calibrate.py --prepared data/prepared/NAME \
        --labeled-ids data/splits/NAME/labeled.txt --out data/calibration/NAME.json

With ``pseudo.calibration: labeled`` (appearance backend), the dataset prior (where lesions
sit and how large they are; busseg.pseudo.appearance.DatasetPrior) is measured on the
labeled split's ground truth instead of being estimated from the dataset's own most
confident labels. The pseudo labels then depend on ``label_ratio``: changing it re-runs
pseudo_label and everything after it. With ``none`` (the default) this stage writes the
same bytes whatever the labeled split is, so DVC finds pseudo_label's inputs unchanged and
a new ``label_ratio`` re-runs only this two-second stage upstream of training.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _params import load_params, main_guard

from busseg.atomic import write_json
from busseg.data.prepared import PreparedDataset
from busseg.data.split import read_id_list
from busseg.errors import ConfigError
from busseg.pseudo.registry import build_labeler

CALIBRATIONS = ("none", "labeled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--prepared", "--labeled-ids", "--out"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()  # the appearance prior needs no torch (runtime.* does not apply)
    pseudo = params["pseudo"]
    calibration, backend = str(pseudo.get("calibration", "none")), str(pseudo["backend"])
    if calibration not in CALIBRATIONS:
        raise ConfigError("pseudo.calibration", f"unknown calibration '{calibration}'; available: {', '.join(CALIBRATIONS)}")
    if calibration == "none":
        write_json(args.out, {"calibration": "none"})
        return
    if backend != "appearance":
        raise ConfigError("pseudo.calibration", f"'labeled' calibrates the appearance backend's prior; backend '{backend}' has none (use none)")
    options = {"prompts": list(pseudo["prompts"]), "min_area_fraction": float(pseudo["min_area_fraction"]), **(pseudo.get("appearance") or {})}
    labeler = build_labeler(backend, options)
    prepared = PreparedDataset(args.prepared)
    ids = read_id_list(args.labeled_ids)
    prior = labeler.prior_from_masks((prepared.image(i), prepared.mask(i)) for i in ids)  # type: ignore[attr-defined]
    if prior is None:
        raise ConfigError("pseudo.calibration", f"none of the {len(ids)} labeled images has a lesion to calibrate on; use none")
    write_json(args.out, {"calibration": "labeled", "prior": prior.as_dict()})
    print(f"calibrated on {prior.n_images} labeled images: {prior.as_dict()}")


if __name__ == "__main__":
    main_guard(main)
