"""Stage pseudo_label@<dataset>: training-free pseudo labels for every image.

    python stages/pseudo_label.py --prepared data/prepared/NAME --out data/pseudo/NAME \
        --metrics metrics/pseudo/NAME.json --curve reports/pseudo/NAME/dice_vs_coverage.csv \
        --overlays reports/pseudo/NAME/overlays --calibration data/calibration/NAME.json
"""
from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np

from _params import cpu_workers, load_params, main_guard, runtime_progress, setup_runtime

from busseg.data.index import has_mask
from busseg.data.prepared import PreparedDataset
from busseg.pseudo.appearance import DatasetPrior
from busseg.pseudo.registry import TORCH_FREE_BACKENDS, TWO_PASS_BACKENDS, build_labeler, input_files
from busseg.pseudo.run import (
    LabelCache,
    dice_vs_coverage,
    label_dataset,
    options_key,
    quality_summary,
    render_pseudo_overlays,
    score_against_truth,
)
from busseg.atomic import write_json, write_text
from busseg.scratch import release, scratch_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--curve", type=Path, required=True)
    parser.add_argument("--overlays", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, required=True, help="the calibrate stage's output")
    args = parser.parse_args()
    params = load_params()
    pseudo = params["pseudo"]
    backend = str(pseudo["backend"])
    if backend in TORCH_FREE_BACKENDS:
        device, progress = None, runtime_progress(params)
    else:
        device, progress = setup_runtime(params)
    options = {
        "prompts": list(pseudo["prompts"]),
        "min_area_fraction": float(pseudo["min_area_fraction"]),
        **(pseudo.get(backend) or {}),
    }
    if backend == "grounded_sam":
        options.setdefault("device", str(device))
    index = PreparedDataset(args.prepared).index
    # The weights file's content, not only its path, keys the resume state (input_files).
    cache_root = scratch_dir(f"pseudo_label-{args.out.name}", options_key(backend, options, input_files(backend, options)))
    two_pass = backend in TWO_PASS_BACKENDS
    calibrated = json.loads(args.calibration.read_text()).get("prior")
    prior = DatasetPrior.from_dict(calibrated) if calibrated is not None else None
    cache = LabelCache(cache_root, "analyses" if two_pass else "labels")
    table, seconds = label_dataset(
        partial(build_labeler, backend, options), args.prepared, index, args.out, cache, two_pass=two_pass, prior=prior,
        progress=progress, workers=cpu_workers(params),
    )
    release(cache_root)  # the labels are written: per-image resume state is no longer needed
    scored = score_against_truth(args.prepared, index, args.out)
    summary = {"backend": backend, **quality_summary(scored)}
    n_unmasked = int((~has_mask(index)).sum())
    if n_unmasked:  # labeled, but without ground truth to score them on
        summary["n_unmasked"] = n_unmasked
    write_json(args.metrics, summary)
    write_text(args.curve, dice_vs_coverage(scored).to_csv(index=False))
    render_pseudo_overlays(args.prepared, index, args.out, args.overlays, int(pseudo.get("n_overlays", 12)))
    # Timings go to the log only: a metrics file is hashed into dvc.lock and read by `report`,
    # so a timing there would make every run's outputs differ.
    median = f"{np.median(seconds):.3f}" if seconds else "n/a"
    print(f"pseudo labels ({backend}): coverage {summary['coverage']:.3f}, dice {summary['dice']:.4f}, median {median} s/image")


if __name__ == "__main__":
    main_guard(main)
