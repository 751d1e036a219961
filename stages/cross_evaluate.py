"""Stage cross_evaluate@<train>-<test>: the student of one dataset on another dataset's test split.

    python stages/cross_evaluate.py --train NAME --test OTHER --model models/NAME/student.pt \
        --prepared data/prepared/OTHER --test-ids data/splits/OTHER/test.txt \
        --out metrics/cross/NAME/OTHER.json
Writes {dice, iou, accuracy, hd95, n_images}. A DVC matrix over the datasets makes one
stage per (train, test) pair, so each depends on exactly the model and test data it reads.
The diagonal (train == test) is the ordinary evaluation (metrics/eval/NAME.json) and
`evaluate.cross_dataset: false` switches the others off: both write an empty mapping
without loading anything.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _params import load_params, main_guard, setup_runtime

from busseg.atomic import write_json
from busseg.data.split import read_id_list


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", required=True, help="the dataset the student was trained on")
    parser.add_argument("--test", required=True, help="the dataset whose test split it is evaluated on")
    for flag in ("--model", "--prepared", "--test-ids", "--out"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    options = params.get("evaluate") or {}
    result = {}
    if args.train != args.test and options.get("cross_dataset", True):
        # Here, not at the top: the diagonal and a switched-off pair load no torch (seconds).
        from busseg.evaluation import evaluate_split, summarize
        from busseg.training.checkpoint import load_model

        device, progress = setup_runtime(params)
        per_image = evaluate_split(
            load_model(args.model, device),
            args.prepared,
            read_id_list(args.test_ids),
            device,
            threshold=float(options.get("threshold", 0.5)),
            progress=progress,
        )
        result = summarize(per_image)
        print(f"train {args.train} -> test {args.test}: dice {result['dice']:.4f}")
    write_json(args.out, result)


if __name__ == "__main__":
    main_guard(main)
