"""Stage refine@<dataset>: label refinement rounds, and the teacher the student learns from.

    python stages/refine.py --prepared data/prepared/NAME --pseudo data/pseudo/NAME \
        --static-teacher models/NAME/static_teacher.pt \
        --train-ids data/splits/NAME/train.txt --val-ids data/splits/NAME/val.txt \
        --labels data/refined/NAME --out models/NAME/teacher.pt \
        --metrics metrics/refine/NAME.json

Each of ``pseudo.refine_rounds`` rounds: the current teacher re-labels the train split
(busseg.pseudo.refine), and a new static teacher is warmed up on those labels with the
``warmup`` settings. With 0 rounds the warm-up's teacher passes through unchanged (without
loading torch). As in
warm-up, no ground truth trains anything (the validation split picks the best epoch), so
nothing here depends on ``label_ratio``. The metrics compare each round's labels with
the first round's on the train split.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from _params import load_params, main_guard, setup_runtime

from busseg.atomic import copy_file, write_json
from busseg.data.prepared import PreparedDataset, PseudoLabels
from busseg.data.split import read_id_list
from busseg.pseudo.refine import label_quality, read_labels, write_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--prepared", "--pseudo", "--static-teacher", "--train-ids", "--val-ids", "--labels", "--out", "--metrics"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    if int(params["pseudo"].get("refine_rounds", 0)) == 0:
        pass_through(args)
    else:
        refine(args, params)


def pass_through(args: argparse.Namespace) -> None:
    """0 rounds: the warm-up's teacher and the first labels as they are, and their quality.

    The same outputs as :func:`refine` with 0 rounds, without loading torch (seconds of start-up
    on a small machine). Under torchrun (``runtime.nproc`` > 1) rank 0 alone writes them.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return
    prepared = PreparedDataset(args.prepared)
    labels = read_labels(PseudoLabels(args.pseudo), read_id_list(args.train_ids))
    quality: dict[str, Any] = {"rounds": 0, "round_0": label_quality(labels, prepared)}
    write_labels(args.labels, labels)
    copy_file(args.static_teacher, args.out)
    write_json(args.metrics, quality)
    _print_quality(quality)


def _print_quality(quality: dict[str, Any]) -> None:
    for name, row in quality.items():
        if isinstance(row, dict) and "dice" in row:
            print(f"{name}: label dice {row['dice']:.4f} (top 50 % {row['dice_top50']:.4f}), coverage {row['coverage']:.3f}")


def refine(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """``pseudo.refine_rounds`` >= 1 rounds of re-labelling and warming up a new teacher."""
    from busseg.config import from_dict
    from busseg.data.dataset import SegmentationDataset
    from busseg.distributed import destroy_process_group, init_process_group, rank_device
    from busseg.models import ModelConfig, build_model
    from busseg.pseudo.refine import InMemoryLabels, refine_labels
    from busseg.runtime import seed_everything
    from busseg.scratch import inputs_key, release, scratch_dir, usage_note
    from busseg.ssl.ema import freeze
    from busseg.training.checkpoint import load_model
    from busseg.training.config import warmup_config
    from busseg.training.loop import TrainData, fit
    from busseg.training.methods import Supervised

    device, progress = setup_runtime(params)
    context = init_process_group(device)
    device, progress = rank_device(device, context), progress and context.is_main
    seed = int(params.get("seed", 0))
    pseudo = params["pseudo"]
    rounds = int(pseudo.get("refine_rounds", 0))
    min_area, min_score = float(pseudo["min_area_fraction"]), float(pseudo.get("min_score", 0.0))
    model_config = from_dict(ModelConfig, params.get("model"), "model")
    config = warmup_config(params.get("warmup"))
    prepared = PreparedDataset(args.prepared)
    train_ids, val_ids = read_id_list(args.train_ids), read_id_list(args.val_ids)
    labels = read_labels(PseudoLabels(args.pseudo), train_ids)
    # Ground truth measures the labels here; it trains nothing.
    quality: dict[str, object] = {"rounds": rounds, "round_0": label_quality(labels, prepared)}
    teacher_path = args.static_teacher
    key = inputs_key(
        {"model": params.get("model"), "warmup": params.get("warmup"), "pseudo": pseudo, "seed": seed},
        [args.static_teacher, args.train_ids, args.val_ids, prepared.index_path],
    )
    scratch = scratch_dir(f"refine-{args.out.parent.name}", key)
    if context.is_main and rounds and (note := usage_note()) is not None:
        print(note)
    for round_ in range(1, rounds + 1):
        teacher = freeze(load_model(teacher_path)).to(device)
        labels = refine_labels(teacher, prepared, train_ids, device, min_area)
        source = InMemoryLabels(labels)
        trainable = source.trainable(min_score)
        quality[f"round_{round_}"] = label_quality(labels, prepared)
        seed_everything(seed)  # every round's student starts from the warm-up's initialisation
        data = TrainData(
            labeled=SegmentationDataset(prepared, trainable, model_config.image_size, masks=source, progress=progress),
            val=SegmentationDataset(prepared, val_ids, model_config.image_size, masks=prepared),
        )
        round_path = scratch / f"teacher_round{round_}.pt"
        result = fit(
            Supervised(build_model(model_config), config, section="warmup"),
            data,
            config,
            device=device,
            seed=seed,
            best_path=round_path,
            scratch_dir=scratch / f"round{round_}",
            logger=None,
            progress=progress,
            context=context,
            compile_model=bool((params.get("runtime") or {}).get("compile", False)),
            desc=f"refine {round_}",
        )
        context.barrier()  # rank 0 wrote the round's teacher; every rank relabels with it next
        quality[f"round_{round_}"]["teacher_val_dice"] = round(float(result.best_val_dice), 6)  # type: ignore[index]
        teacher_path = round_path
        if context.is_main:
            print(f"refine round {round_}: {len(trainable)} labels, teacher val dice {result.best_val_dice:.4f}")
    destroy_process_group()
    if not context.is_main:
        return
    write_labels(args.labels, labels)
    copy_file(teacher_path, args.out)
    write_json(args.metrics, quality)
    release(scratch)
    _print_quality(quality)


if __name__ == "__main__":
    main_guard(main)
