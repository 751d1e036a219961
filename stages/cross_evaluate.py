"""Stage cross_evaluate@<dataset>: the dataset's student on every other dataset's test split.

    python stages/cross_evaluate.py --dataset NAME --model models/NAME/student.pt \
        --prepared-root data/prepared --splits-root data/splits --out metrics/cross/NAME.json
Writes {test_dataset: {dice, iou, accuracy, hd95, n_images}} (train on NAME, test on each
other dataset); `evaluate.cross_dataset: false` writes an empty mapping.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _params import load_params, main_guard, setup_runtime

from busseg.data.dataset import read_id_list
from busseg.evaluation import evaluate_split, summarize
from busseg.runtime import write_json
from busseg.training.checkpoint import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    for flag in ("--model", "--prepared-root", "--splits-root", "--out"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    device, progress = setup_runtime(params)
    options = params.get("evaluate") or {}
    others = [name for name in params["datasets"] if name != args.dataset] if options.get("cross_dataset", True) else []
    results = {}
    if others:
        model = load_model(args.model, device)
        for name in others:
            per_image = evaluate_split(
                model,
                args.prepared_root / name,
                read_id_list(args.splits_root / name / "test.txt"),
                device,
                threshold=float(options.get("threshold", 0.5)),
                progress=progress,
            )
            results[name] = summarize(per_image)
            print(f"train {args.dataset} -> test {name}: dice {results[name]['dice']:.4f}")
    write_json(args.out, results)


if __name__ == "__main__":
    main_guard(main)
