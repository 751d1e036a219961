"""Refinement rounds as self-training: relabel, re-train, keep a round only if it validates better.

The stage (``stages/refine.py``) supplies what a round does — how the best teacher so far
re-labels the train split, how a new teacher is trained on those labels — and this module
decides which rounds count. It has no torch in it, so the acceptance rule is tested with
stand-ins for the two steps.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
