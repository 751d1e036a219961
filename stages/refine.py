"""Stage refine@<dataset>: label refinement rounds, and the teacher the student learns from.

    python stages/refine.py --prepared data/prepared/NAME --pseudo data/pseudo/NAME \
        --static-teacher models/NAME/static_teacher.pt \
        --train-ids data/splits/NAME/train.txt --val-ids data/splits/NAME/val.txt \
        --inputs data/refine_inputs/NAME.json \
        --labels data/refined/NAME --out models/NAME/teacher.pt \
        --metrics metrics/refine/NAME.json

Each of at most ``pseudo.refine_rounds`` rounds: the best teacher so far re-labels the train
split, or (``pseudo.refine_relabel: student``) a student trained from it with the ``train``
settings does (busseg.pseudo.refine; an image it finds nothing on keeps its label), the labeled
split's ground truth replaces its labels (``pseudo.refine_ground_truth``), and a new teacher
is warmed up on those labels with the ``warmup`` settings (leaving out the re-labeled pixels
whose certainty is below ``pseudo.refine_pixel_certainty``; with ``pseudo.refine_snap`` each
re-labeled image's label is first snapped to the appearance labeler's best-agreeing candidate), from the warm-up's initialisation
or from the best teacher (``pseudo.refine_init``). A round whose teacher does not validate
better than the best so far (by more than ``pseudo.refine_min_gain``) is rejected: the best
teacher and its labels are kept, and the rounds stop. With 0 rounds the warm-up's teacher
passes through unchanged (without loading torch). The validation split picks each teacher's
best epoch and judges the rounds. The metrics compare each round's labels with the first
round's on the train images whose labels are pseudo labels (the unlabeled ones when ground
truth is used).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from _params import load_params, main_guard, setup_runtime

from busseg.atomic import copy_file, write_json
from busseg.config import from_dict
from busseg.data.prepared import PreparedDataset, PseudoLabels
from busseg.data.split import read_id_list
from busseg.params_schema import PseudoParams
from busseg.pseudo.refine import Snapper, label_quality, read_labels, write_labels
from busseg.pseudo.rounds import Labels, read_refinement_inputs, run_rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--prepared", "--pseudo", "--static-teacher", "--train-ids", "--val-ids", "--inputs", "--labels", "--out",
                 "--metrics"):
        parser.add_argument(flag, type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    pseudo = params["pseudo"]
    options = from_dict(PseudoParams, {k: v for k, v in pseudo.items() if not isinstance(v, dict)}, "pseudo")
    if options.refine_rounds == 0:
        pass_through(args)
    else:
        refine(args, params, options)


def pass_through(args: argparse.Namespace) -> None:
    """0 rounds: the warm-up's teacher and the first labels as they are, and their quality.

    The same outputs as :func:`refine` would give with 0 rounds, without loading torch
    (seconds of start-up on a small machine). Under torchrun (``runtime.nproc`` > 1) rank 0
    alone writes them.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return
    prepared = PreparedDataset(args.prepared)
    labels = read_labels(PseudoLabels(args.pseudo), read_id_list(args.train_ids))
    quality: dict[str, Any] = {"rounds": 0, "accepted_round": 0, "max_rounds": 0, "quality_images": "train",
                               "round_0": label_quality(labels, prepared)}
    write_labels(args.labels, labels)
    copy_file(args.static_teacher, args.out)
    write_json(args.metrics, quality)
    _print_quality(quality)


def make_snapper(pseudo: dict[str, Any], options: PseudoParams) -> Snapper:
    """``pseudo.refine_snap``: the appearance labeler (``pseudo.appearance`` options and weights file,
    whatever the first round's backend) snaps each re-labeled image's label to its best-agreeing
    candidate region (:func:`busseg.pseudo.snap.snap_to_candidate`)."""
    from busseg.pseudo.appearance import AppearanceLabeler
    from busseg.pseudo.snap import snap_to_candidate

    appearance = AppearanceLabeler.from_section(
        {"prompts": list(options.prompts), "min_area_fraction": options.min_area_fraction, **(pseudo.get("appearance") or {})}
    )

    def snap(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
        snapped = snap_to_candidate(appearance, image, mask, options.refine_snap)  # type: ignore[arg-type]
        return snapped.mask if snapped is not None else None

    return snap


def _print_quality(quality: dict[str, Any]) -> None:
    for name, row in quality.items():
        if isinstance(row, dict) and "dice" in row:
            print(f"{name}: label dice {row['dice']:.4f} (top 50 % {row['dice_top50']:.4f}), coverage {row['coverage']:.3f}")


def refine(args: argparse.Namespace, params: dict[str, Any], options: PseudoParams) -> None:
    """``pseudo.refine_rounds`` >= 1 self-training rounds (see the module docstring)."""
    from busseg.data.dataset import SegmentationDataset
    from busseg.distributed import destroy_process_group, init_process_group, rank_device
    from busseg.models import ModelConfig, build_model
    from busseg.pseudo.refine import InMemoryLabels, certain_fraction, ground_truth_labels, refine_labels
    from busseg.runtime import seed_everything
    from busseg.scratch import inputs_key, release, scratch_dir, usage_note
    from busseg.ssl.ema import freeze
    from busseg.training.checkpoint import load_model
    from busseg.training.config import warmup_config
    from busseg.training.loop import TrainData, fit, validate
    from busseg.training.methods import Supervised
    from busseg.training.student import StudentSplits, train_student

    device, progress = setup_runtime(params)
    context = init_process_group(device)
    device, progress = rank_device(device, context), progress and context.is_main
    seed = int(params.get("seed", 0))
    pseudo = params["pseudo"]
    rounds, min_area, min_score = options.refine_rounds, options.min_area_fraction, options.min_score
    min_certainty = options.refine_pixel_certainty
    model_config = from_dict(ModelConfig, params.get("model"), "model")
    config = warmup_config(params.get("warmup"))
    prepared = PreparedDataset(args.prepared)
    train_ids, val_ids = read_id_list(args.train_ids), read_id_list(args.val_ids)
    # What this stage may read of the labeled split and of train (stages/refine_inputs.py).
    inputs = read_refinement_inputs(args.inputs)
    labeled_ids = sorted(set(inputs.get("labeled", [])) & set(train_ids)) if options.refine_ground_truth else []
    student_splits = StudentSplits(labeled=inputs.get("labeled", []), unlabeled=inputs.get("unlabeled", []), val=val_ids)
    student_params = {**params, "train": inputs.get("train")}
    # Label quality is measured where the labels are pseudo labels: ground truth would flatter it.
    scored_ids = sorted(set(train_ids) - set(labeled_ids))
    labels = read_labels(PseudoLabels(args.pseudo), train_ids)
    # Ground truth measures the labels here; it trains nothing but the labeled split's own labels.
    quality: dict[str, object] = {"rounds": 0, "accepted_round": 0, "max_rounds": rounds,
                                  "quality_images": "unlabeled train" if labeled_ids else "train",
                                  "round_0": label_quality({i: labels[i] for i in scored_ids}, prepared)}
    val_data = SegmentationDataset(prepared, val_ids, model_config.image_size, masks=prepared)
    key = inputs_key(
        {"model": params.get("model"), "warmup": params.get("warmup"), "pseudo": pseudo, "seed": seed},
        [args.static_teacher, args.train_ids, args.val_ids, args.inputs, prepared.index_path],
    )
    scratch = scratch_dir(f"refine-{args.out.parent.name}", key)
    compile_model = bool((params.get("runtime") or {}).get("compile", False))

    student_val_dice: list[float] = []
    snapper = make_snapper(pseudo, options) if options.refine_snap > 0.0 else None

    def relabel(teacher_path: Path, previous: Labels) -> Labels:
        labeler_path = teacher_path
        if options.refine_relabel == "student":  # noisy student: the student learns from this teacher, then labels
            labeler_path = scratch / f"student_of_{teacher_path.stem}.pt"
            result = train_student(student_params, prepared, student_splits, teacher_path, labeler_path,
                                   scratch / f"student_of_{teacher_path.stem}", device=device, context=context, progress=progress)
            context.barrier()  # rank 0 wrote the student; every rank labels with it
            student_val_dice.append(round(float(result.best_val_dice), 6))
            if context.is_main:
                print(f"refine: student of {teacher_path.stem}, val dice {result.best_val_dice:.4f}")
        labeler = freeze(load_model(labeler_path)).to(device)
        candidate = refine_labels(labeler, prepared, train_ids, device, min_area, previous=previous,
                                  pixel_certainty=min_certainty > 0.0, snap=snapper)
        candidate.update(ground_truth_labels(prepared, labeled_ids))
        return candidate

    def retrain(round_: int, labels: Labels, best_teacher: Path) -> tuple[Path, float]:
        source = InMemoryLabels(labels, min_certainty)
        trainable = source.trainable(min_score)
        seed_everything(seed)  # a fresh teacher starts from the warm-up's initialisation
        fresh = options.refine_init == "fresh"
        network = build_model(model_config) if fresh else load_model(best_teacher).train()
        data = TrainData(
            labeled=SegmentationDataset(prepared, trainable, model_config.image_size, masks=source, progress=progress,
                                        weights=source if min_certainty > 0.0 else None),
            val=val_data,
        )
        round_path = scratch / f"teacher_round{round_}.pt"
        result = fit(
            Supervised(network, config, section="warmup"), data, config, device=device, seed=seed,
            best_path=round_path, scratch_dir=scratch / f"round{round_}", logger=None, progress=progress,
            context=context, compile_model=compile_model, desc=f"refine {round_}",
        )
        context.barrier()  # rank 0 wrote the round's teacher; every rank relabels with it next
        if context.is_main:
            print(f"refine round {round_}: {len(trainable)} labels, teacher val dice {result.best_val_dice:.4f}")
        return round_path, float(result.best_val_dice)

    def describe(labels: Labels) -> dict[str, object]:
        row: dict[str, object] = dict(label_quality({i: labels[i] for i in scored_ids}, prepared))
        row["kept_previous"] = sum(label.reason.startswith("kept_previous") for label in labels.values())
        if snapper is not None:
            row["snapped"] = sum(label.reason == "snapped" for label in labels.values())
        if min_certainty > 0.0:  # how much of the re-labeled images the next warm-up trains on
            row["certain_pixels"] = certain_fraction([labels[i] for i in scored_ids], min_certainty)
        return row

    if context.is_main and (note := usage_note()) is not None:
        print(note)
    start_val = validate(load_model(args.static_teacher), val_data, device)
    quality["round_0"]["teacher_val_dice"] = round(start_val, 6)  # type: ignore[index]
    outcome = run_rounds(args.static_teacher, start_val, labels, relabel, retrain, rounds, options.refine_min_gain, describe)
    quality.update(rounds=len(outcome.history), accepted_round=outcome.accepted_round)
    for record, student_dice in zip(outcome.history, student_val_dice or [None] * len(outcome.history)):
        if student_dice is not None:
            record["labeler_student_val_dice"] = student_dice
        quality[f"round_{record.pop('round')}"] = record
    if outcome.stopped:
        quality["stopped"] = outcome.stopped
        if context.is_main:
            print(f"refine: {outcome.stopped}")
    destroy_process_group()
    if not context.is_main:
        return
    write_labels(args.labels, dict(outcome.labels))
    copy_file(outcome.teacher, args.out)
    write_json(args.metrics, quality)
    release(scratch)
    _print_quality(quality)


if __name__ == "__main__":
    main_guard(main)
