"""Stage train@<dataset>: the student, with the method named by train.method.

    python stages/train.py --prepared data/prepared/NAME --splits data/splits/NAME \
        --static-teacher models/NAME/static_teacher.pt --out models/NAME/student.pt --live reports/train/NAME
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _params import load_params, main_guard, setup_runtime

from busseg.data.prepared import PreparedDataset
from busseg.data.split import read_id_list
from busseg.distributed import destroy_process_group, init_process_group, rank_device
from busseg.scratch import inputs_key, release, scratch_dir, usage_note
from busseg.training.live import LiveLogger
from busseg.training.methods import get_method
from busseg.training.student import StudentSplits, student_config, train_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--prepared", "--splits", "--static-teacher", "--out", "--live"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    device, progress = setup_runtime(params)
    # Under torchrun (runtime.nproc > 1, see busseg.launch) this process is one rank of several.
    context = init_process_group(device)
    device, progress = rank_device(device, context), progress and context.is_main
    config = student_config(params)
    uses_static_teacher = get_method(config.method).requirements(config).static_teacher or config.init == "static_teacher"
    prepared = PreparedDataset(args.prepared)
    splits = StudentSplits(
        labeled=read_id_list(args.splits / "labeled.txt"),
        unlabeled=read_id_list(args.splits / "unlabeled.txt"),
        val=read_id_list(args.splits / "val.txt"),
    )
    key = inputs_key(
        {"model": params.get("model"), "train": params.get("train"), "seed": int(params.get("seed", 0)),
         "label_ratio": params.get("label_ratio")},
        [args.splits, prepared.index_path]
        + ([args.static_teacher] if uses_static_teacher else [])
        + ([Path(config.init_path)] if config.init_path is not None else []),
    )
    scratch = scratch_dir(f"train-{args.out.parent.name}", key)
    if context.is_main and (note := usage_note()) is not None:
        print(note)
    logger = LiveLogger(args.live) if context.is_main else None  # only rank 0 writes
    result = train_student(params, prepared, splits, args.static_teacher, args.out, scratch,
                           device=device, context=context, progress=progress, logger=logger)
    destroy_process_group()
    if not context.is_main:
        return
    logger.close()  # type: ignore[union-attr]
    release(scratch)
    print(f"{config.method}: {len(splits.labeled)} labeled images, best val dice {result.best_val_dice:.4f} "
          f"(epoch {result.best_epoch + 1})")


if __name__ == "__main__":
    main_guard(main)
