"""Stage split@<dataset>: train/val/test split and the labeled subset of train.

    python stages/split.py --index data/prepared/NAME/index.csv --out data/splits/NAME \
        --metrics metrics/split/NAME.json
Writes train.txt, val.txt, test.txt, labeled.txt, unlabeled.txt (one id per line) so that
stages needing only train.txt stay cached when only label_ratio changes, and the split's
metrics: whether label_ratio simulated the unlabeled images (every image has a mask) or the
dataset's own unmasked images are the unlabeled ones, and how many images each part has.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _params import load_params, main_guard

from busseg.atomic import write_json
from busseg.config import from_dict
from busseg.data.index import read_index
from busseg.data.split import REAL, SplitConfig, plan_split, write_id_list


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    seed = int(params.get("seed", 0))
    label_ratio = float(params["label_ratio"])
    index = read_index(args.index)
    config = from_dict(SplitConfig, params.get("split"), "split")
    plan = plan_split(index, config, label_ratio, seed)
    if not plan.val:  # split.val > 0 (params check), but too few images or patients for it
        print(
            f"warning: {args.index}: the validation split is empty ({len(index)} images, split.val "
            f"{config.val:g}); warmup, refine and train will keep their last epoch, not their best",
            file=sys.stderr,
        )
    for name, ids in plan.files().items():
        write_id_list(args.out / f"{name}.txt", ids)
    write_json(args.metrics, plan.summary(len(index), label_ratio))
    if plan.mode == REAL:
        held = f", {len(plan.held_out)} unmasked images of validation/test patients left out" if plan.held_out else ""
        print(f"split: the dataset's own {len(plan.unlabeled)} unmasked images are the unlabeled ones "
              f"(label_ratio hides no mask){held}")
    print(f"split: train {len(plan.train)} (labeled {len(plan.labeled)}), val {len(plan.val)}, test {len(plan.test)}")


if __name__ == "__main__":
    main_guard(main)
