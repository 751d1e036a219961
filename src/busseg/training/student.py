"""Train the student: the method of ``train.method`` on the labeled and unlabeled splits.

Shared by the ``train`` stage (the student the pipeline evaluates) and the ``refine`` stage
(with ``pseudo.refine_relabel: student``, a student per round re-labels the train split).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from busseg.config import from_dict
from busseg.data.dataset import SegmentationDataset
from busseg.data.prepared import PreparedDataset
from busseg.distributed import DistContext
from busseg.models import ModelConfig, build_model
from busseg.runtime import seed_everything
from busseg.ssl.ema import freeze
from busseg.training.checkpoint import check_init_file, initialise_from, load_model
from busseg.training.config import TrainConfig
from busseg.training.loop import EpochLogger, FitResult, TrainData, fit
from busseg.training.methods import BCPConfig, DualTeacherConfig, MeanTeacherConfig, UniMatchConfig, get_method


@dataclass(frozen=True)
class StudentSplits:
    """The image ids a student trains and validates on."""

    labeled: Sequence[str]
    unlabeled: Sequence[str]
    val: Sequence[str]


def student_config(params: dict[str, Any]) -> TrainConfig:
    """The checked ``train`` section of ``params``."""
    config = from_dict(TrainConfig, params.get("train"), "train")
    config.check("train")
    # Every method's own keys, whatever train.method is: a value out of range is a mistake
    # even while another method runs, and would only surface on the next switch of method.
    for options in (MeanTeacherConfig, DualTeacherConfig, BCPConfig, UniMatchConfig):
        config.section(options, "train")
    return config


def train_student(
    params: dict[str, Any],
    prepared: PreparedDataset,
    splits: StudentSplits,
    static_teacher: Path,
    best_path: Path,
    scratch_dir: Path,
    *,
    device: torch.device,
    context: DistContext,
    progress: bool = False,
    logger: EpochLogger | None = None,
) -> FitResult:
    """Train a student with ``params['train']`` and write its best-validating checkpoint to ``best_path``.

    ``static_teacher`` is the checkpoint the methods that use one learn from, and the
    student's start under ``train.init: static_teacher``. The student is built right after
    seeding, before anything else draws random numbers, so that at one seed every method's
    student starts from the same initialisation (``supervised`` vs ``dual_teacher`` is fair).
    """
    seed = int(params.get("seed", 0))
    config = student_config(params)
    check_init_file(config.init_path)  # a user's path: checked before any image is loaded
    seed_everything(seed)
    model_config = from_dict(ModelConfig, params.get("model"), "model")
    student = build_model(model_config)
    method_cls = get_method(config.method)
    needs = method_cls.requirements(config)  # what the method needs, asked once
    size = model_config.image_size
    data = TrainData(
        labeled=SegmentationDataset(prepared, list(splits.labeled), size, masks=prepared, progress=progress),
        unlabeled=SegmentationDataset(prepared, list(splits.unlabeled), size, progress=progress) if needs.unlabeled else None,
        val=SegmentationDataset(prepared, list(splits.val), size, masks=prepared),
        # Counted for every method (supervised too): one step budget per label ratio.
        n_train=len(splits.labeled) + len(splits.unlabeled),
    )
    teacher = freeze(load_model(static_teacher)) if needs.static_teacher else None
    if teacher is not None and teacher.config != model_config and context.is_main:
        print(f"note: the static teacher's model config differs from model: {teacher.config}")
    # train.init, the same for every method: the static teacher (pseudo-label pre-training),
    # a checkpoint of the user's, or (none) the random initialisation built above.
    init_path = static_teacher if config.init == "static_teacher" else config.init_path
    if init_path is not None:
        initialise_from(student, init_path)
    return fit(
        method_cls(student, config, static_teacher=teacher),
        data,
        config,
        device=device,
        seed=seed,
        best_path=best_path,
        scratch_dir=scratch_dir,
        logger=logger,
        progress=progress,
        context=context,
        compile_model=bool((params.get("runtime") or {}).get("compile", False)),
        desc=config.method,
    )
