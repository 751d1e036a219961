"""Stage evaluate@<dataset>: the student on the test split, at each image's own resolution.

    python stages/evaluate.py --prepared data/prepared/NAME --test-ids data/splits/NAME/test.txt \
        --model models/NAME/student.pt --metrics metrics/eval/NAME.json \
        --per-image reports/eval/NAME/per_image.csv --overlays reports/eval/NAME/overlays \
        --cases reports/eval/NAME/cases

--cases gets the overlays of the best, median and worst test images by Dice and cases.json
(their ids and Dice), which the report stage puts in reports/index.html.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _params import load_params, main_guard, setup_runtime

from busseg.data.split import read_id_list
from busseg.evaluation import evaluate_split, summarize
from busseg.atomic import atomic_dir, write_json, write_text
from busseg.training.checkpoint import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--prepared", "--test-ids", "--model", "--metrics", "--per-image", "--overlays", "--cases"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    device, progress = setup_runtime(params)
    options = params.get("evaluate") or {}
    model = load_model(args.model, device)
    with atomic_dir(args.overlays) as overlays, atomic_dir(args.cases) as cases:
        per_image = evaluate_split(
            model,
            args.prepared,
            read_id_list(args.test_ids),
            device,
            threshold=float(options.get("threshold", 0.5)),
            overlay_dir=overlays,
            n_overlays=int(options.get("n_overlays", 8)),
            case_dir=cases,
            progress=progress,
        )
    write_text(args.per_image, per_image.to_csv(index=False, float_format="%.6f"))
    summary = summarize(per_image)
    write_json(args.metrics, summary)
    print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if k != "n_images"))


if __name__ == "__main__":
    main_guard(main)
