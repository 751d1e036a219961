"""Refinement rounds as self-training: relabel, re-train, keep a round only if it validates better.

The stage (``stages/refine.py``) supplies what a round does — how the best teacher so far
re-labels the train split, how a new teacher is trained on those labels — and this module
decides which rounds count. It has no torch in it, so the acceptance rule is tested with
stand-ins for the two steps.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busseg.errors import DataError
from busseg.pseudo.base import PseudoLabel

Labels = Mapping[str, PseudoLabel]
#: (best teacher so far, its labels) -> the candidate labels of the next round
Relabel = Callable[[Path, Labels], Labels]
#: (round number, candidate labels, best teacher so far) -> (the new teacher's checkpoint, its
#: validation Dice); the best teacher is where a teacher that continues training starts from
Retrain = Callable[[int, Labels, Path], tuple[Path, float]]


@dataclass
class RoundsResult:
    """What the rounds leave: the teacher and labels to keep, and one record per round run."""

    teacher: Path
    labels: Labels
    accepted_round: int
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""


def run_rounds(
    teacher: Path,
    teacher_val_dice: float,
    labels: Labels,
    relabel: Relabel,
    retrain: Retrain,
    max_rounds: int,
    min_gain: float = 0.0,
    describe: Callable[[Labels], dict[str, Any]] | None = None,
) -> RoundsResult:
    """Up to ``max_rounds`` rounds of relabel -> retrain, starting from ``teacher`` and its ``labels``.

    A round is accepted when its teacher's validation Dice beats the best so far by more than
    ``min_gain``; the first round that does not is rejected (its teacher and labels are
    dropped, the best ones stay) and ends the rounds, since the next one would start from the
    same teacher and labels and repeat it. ``describe`` adds label-quality figures to each
    round's record (the stage measures them against ground truth; training never sees them).
    """
    result = RoundsResult(teacher=teacher, labels=labels, accepted_round=0)
    best_val = teacher_val_dice
    for round_ in range(1, max_rounds + 1):
        candidate = relabel(result.teacher, result.labels)
        new_teacher, val_dice = retrain(round_, candidate, result.teacher)
        accepted = val_dice > best_val + min_gain
        record: dict[str, Any] = dict(describe(candidate)) if describe is not None else {}
        record.update(round=round_, teacher_val_dice=round(float(val_dice), 6), accepted=accepted)
        result.history.append(record)
        if not accepted:
            result.stopped = (
                f"round {round_}: teacher validation Dice {val_dice:.4f} is not above {best_val:.4f} + {min_gain:g} "
                f"(round {result.accepted_round}); round {result.accepted_round}'s teacher and labels are kept"
            )
            break
        result.teacher, result.labels, result.accepted_round, best_val = new_teacher, candidate, round_, val_dice
    return result


def refinement_inputs(
    options: Any, labeled: list[str], unlabeled: list[str], train_section: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What the refinement rounds read from the labeled split and the ``train`` section, and only that.

    ``options`` are the ``pseudo`` parameters (:class:`busseg.params_schema.PseudoParams`).
    The ``refine`` stage depends on this record instead of on ``labeled.txt``, ``unlabeled.txt``
    and ``train`` directly: it is empty without rounds, holds the labeled ids only when their
    ground truth enters the labels or a student trains, and the unlabeled ids and the
    ``train`` section only when a student re-labels. A ``label_ratio`` or ``train.method``
    sweep therefore re-runs the refinement only when the refinement really reads them (DVC
    compares dependencies by content: the record is rewritten, byte-identical).
    """
    if options.refine_rounds == 0:
        return {}
    student = options.refine_relabel == "student"
    out: dict[str, Any] = {}
    if options.refine_ground_truth or student:
        out["labeled"] = sorted(labeled)
    if student:
        out["unlabeled"] = sorted(unlabeled)
        out["train"] = dict(sorted((train_section or {}).items()))
    return out


def read_refinement_inputs(path: str | Path) -> dict[str, Any]:
    """The record :func:`refinement_inputs` wrote (stage ``refine_inputs``)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "not found; run the refine_inputs stage first") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise DataError(path, f"expected a JSON object, got {type(record).__name__}")
    return record
