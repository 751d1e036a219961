"""Stage split@<dataset>: train/val/test split and the labeled subset of train.

    python stages/split.py --index data/prepared/NAME/index.csv --out data/splits/NAME
Writes train.txt, val.txt, test.txt, labeled.txt, unlabeled.txt (one id per line) so that
stages needing only train.txt stay cached when only label_ratio changes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _params import load_params, main_guard

from busseg.config import from_dict
from busseg.data.index import read_index
from busseg.data.split import SplitConfig, choose_labeled, split_dataset, write_id_list


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    seed = int(params.get("seed", 0))
    index = read_index(args.index)
    config = from_dict(SplitConfig, params.get("split"), "split")
    parts = split_dataset(index, config, seed)
    if not parts["val"]:  # split.val > 0 (params check), but too few images or patients for it
        print(
            f"warning: {args.index}: the validation split is empty ({len(index)} images, split.val "
            f"{config.val:g}); warmup, refine and train will keep their last epoch, not their best",
            file=sys.stderr,
        )
    labeled = choose_labeled(index, parts["train"], float(params["label_ratio"]), seed)
    unlabeled = sorted(set(parts["train"]) - set(labeled))
    for name, ids in {**parts, "labeled": labeled, "unlabeled": unlabeled}.items():
        write_id_list(args.out / f"{name}.txt", ids)
    print(f"split: train {len(parts['train'])} (labeled {len(labeled)}), val {len(parts['val'])}, test {len(parts['test'])}")


if __name__ == "__main__":
    main_guard(main)
