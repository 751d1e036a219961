"""Stage warmup@<dataset>: the static teacher, trained on the train pool's valid pseudo labels.

    python stages/warmup.py --prepared data/prepared/NAME --pseudo data/pseudo/NAME \
        --train-ids data/splits/NAME/train.txt --val-ids data/splits/NAME/val.txt \
        --out models/NAME/static_teacher.pt --live reports/warmup/NAME
No ground truth is used for training (docs/method.md DECISION), so the teacher does not depend
on label_ratio; the validation split's ground truth picks the best epoch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _params import load_params, main_guard, setup_runtime

from busseg.config import from_dict
from busseg.data.dataset import SegmentationDataset
from busseg.distributed import destroy_process_group, init_process_group, rank_device
from busseg.data.prepared import PreparedDataset, PseudoLabels
from busseg.data.split import read_id_list
from busseg.models import ModelConfig, build_model
from busseg.pseudo.selection import select_training_labels
from busseg.runtime import seed_everything
from busseg.scratch import inputs_key, release, scratch_dir, usage_note
from busseg.training.config import warmup_config
from busseg.training.live import LiveLogger
from busseg.training.loop import TrainData, fit
from busseg.training.methods import Supervised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--prepared", "--pseudo", "--train-ids", "--val-ids", "--out", "--live"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    device, progress = setup_runtime(params)
    # Under torchrun (runtime.nproc > 1, see busseg.launch) this process is one rank of several.
    context = init_process_group(device)
    device, progress = rank_device(device, context), progress and context.is_main
    seed = int(params.get("seed", 0))
    seed_everything(seed)
    model_config = from_dict(ModelConfig, params.get("model"), "model")
    config = warmup_config(params.get("warmup"))
    min_score = float(params["pseudo"].get("min_score", 0.0))
    prepared, pseudo = PreparedDataset(args.prepared), PseudoLabels(args.pseudo)
    ids = select_training_labels(pseudo.table_path, read_id_list(args.train_ids), min_score)
    size = model_config.image_size
    data = TrainData(
        labeled=SegmentationDataset(prepared, ids, size, masks=pseudo, progress=progress),
        val=SegmentationDataset(prepared, read_id_list(args.val_ids), size, masks=prepared),
    )
    key = inputs_key(
        {"model": params.get("model"), "warmup": params.get("warmup"), "min_score": min_score, "seed": seed},
        [pseudo.table_path, args.train_ids, args.val_ids, prepared.index_path],
    )
    scratch = scratch_dir(f"warmup-{args.out.parent.name}", key)
    if context.is_main and (note := usage_note()) is not None:
        print(note)
    logger = LiveLogger(args.live) if context.is_main else None  # only rank 0 writes
    result = fit(
        Supervised(build_model(model_config), config, section="warmup"),
        data,
        config,
        device=device,
        seed=seed,
        best_path=args.out,
        scratch_dir=scratch,
        logger=logger,
        progress=progress,
        context=context,
        compile_model=bool((params.get("runtime") or {}).get("compile", False)),
        desc="warmup",
    )
    destroy_process_group()
    if not context.is_main:
        return
    logger.close()  # type: ignore[union-attr]
    release(scratch)
    print(f"static teacher: {len(ids)} pseudo-labeled images, best val dice {result.best_val_dice:.4f} (epoch {result.best_epoch + 1})")


if __name__ == "__main__":
    main_guard(main)
