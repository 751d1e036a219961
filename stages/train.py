"""Stage train@<dataset>: the student, with the method named by train.method.

    python stages/train.py --prepared data/prepared/NAME --splits data/splits/NAME \
        --static-teacher models/NAME/static_teacher.pt --out models/NAME/student.pt --live reports/train/NAME
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _params import load_params, main_guard, setup_runtime

from busseg.config import from_dict
from busseg.data.dataset import SegmentationDataset
from busseg.distributed import destroy_process_group, init_process_group, rank_device
from busseg.data.prepared import PreparedDataset
from busseg.data.split import read_id_list
from busseg.models import ModelConfig, build_model
from busseg.runtime import seed_everything
from busseg.scratch import inputs_key, release, scratch_dir, usage_note
from busseg.ssl.ema import freeze
from busseg.training.checkpoint import initialise_from, load_model
from busseg.training.config import TrainConfig
from busseg.training.live import LiveLogger
from busseg.training.loop import TrainData, fit
from busseg.training.methods import get_method


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
    seed = int(params.get("seed", 0))
    seed_everything(seed)
    model_config = from_dict(ModelConfig, params.get("model"), "model")
    # Built first, before loading the static teacher consumes random numbers: at one seed every
    # method's student starts from the same initialisation (supervised vs dual_teacher is fair).
    student = build_model(model_config)
    config = from_dict(TrainConfig, params.get("train"), "train")
    config.check("train")
    method_cls = get_method(config.method)
    needs = method_cls.requirements(config)  # what the method needs from this stage, asked once
    size = model_config.image_size
    prepared = PreparedDataset(args.prepared)
    labeled_ids = read_id_list(args.splits / "labeled.txt")
    unlabeled_ids = read_id_list(args.splits / "unlabeled.txt")
    data = TrainData(
        labeled=SegmentationDataset(prepared, labeled_ids, size, masks=prepared, progress=progress),
        unlabeled=SegmentationDataset(prepared, unlabeled_ids, size, progress=progress) if needs.unlabeled else None,
        val=SegmentationDataset(prepared, read_id_list(args.splits / "val.txt"), size, masks=prepared),
        # Counted for every method (supervised too): one step budget per label ratio.
        n_train=len(labeled_ids) + len(unlabeled_ids),
    )
    static_teacher = freeze(load_model(args.static_teacher)) if needs.static_teacher else None
    if static_teacher is not None and static_teacher.config != model_config:
        print(f"note: the static teacher's model config differs from model: {static_teacher.config}")
    # train.init, the same for every method: the static teacher (pseudo-label pre-training),
    # a checkpoint of the user's, or (none) the random initialisation built above.
    init_path = args.static_teacher if config.init == "static_teacher" else config.init_path
    if init_path is not None:
        initialise_from(student, init_path)
    key = inputs_key(
        {"model": params.get("model"), "train": params.get("train"), "seed": seed, "label_ratio": params.get("label_ratio")},
        [args.splits, prepared.index_path]
        + ([args.static_teacher] if static_teacher is not None or config.init == "static_teacher" else [])
        + ([Path(init_path)] if config.init_path is not None else []),
    )
    scratch = scratch_dir(f"train-{args.out.parent.name}", key)
    if context.is_main and (note := usage_note()) is not None:
        print(note)
    logger = LiveLogger(args.live) if context.is_main else None  # only rank 0 writes
    result = fit(
        method_cls(student, config, static_teacher=static_teacher),
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
        desc=config.method,
    )
    destroy_process_group()
    if not context.is_main:
        return
    logger.close()  # type: ignore[union-attr]
    release(scratch)
    print(f"{config.method}: {len(labeled_ids)} labeled images, best val dice {result.best_val_dice:.4f} (epoch {result.best_epoch + 1})")


if __name__ == "__main__":
    main_guard(main)
