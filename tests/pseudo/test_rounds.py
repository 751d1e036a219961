"""Refinement rounds: a round is kept only if its teacher validates better than the best so far."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from busseg.pseudo.base import PseudoLabel
from busseg.pseudo.rounds import run_rounds


def labels_of(tag: int) -> dict[str, PseudoLabel]:
    """A one-image label set whose score records which round made it."""
    return {"a": PseudoLabel(np.ones((4, 4), bool), tag / 10, True)}


class Scripted:
    """Stand-ins for relabel and retrain whose teachers validate at the given Dice, round by round."""

    def __init__(self, val_dice: list[float]) -> None:
        self.val_dice, self.relabelled_from, self.started_from = val_dice, [], []

    def relabel(self, teacher: Path, previous: dict[str, PseudoLabel]) -> dict[str, PseudoLabel]:
        self.relabelled_from.append((teacher.name, previous["a"].score))
        return labels_of(len(self.relabelled_from))

    def retrain(self, round_: int, labels: dict[str, PseudoLabel], best: Path) -> tuple[Path, float]:
        self.started_from.append(best.name)
        return Path(f"round{round_}.pt"), self.val_dice[round_ - 1]


def test_improving_rounds_are_all_kept_and_each_relabels_with_the_last_teacher() -> None:
    script = Scripted([0.60, 0.65, 0.70])
    out = run_rounds(Path("static.pt"), 0.55, labels_of(0), script.relabel, script.retrain, max_rounds=3)
    assert (out.teacher.name, out.accepted_round, out.stopped) == ("round3.pt", 3, "")
    assert script.relabelled_from == [("static.pt", 0.0), ("round1.pt", 0.1), ("round2.pt", 0.2)]
    assert script.started_from == ["static.pt", "round1.pt", "round2.pt"]
    assert [r["accepted"] for r in out.history] == [True, True, True]


def test_a_worse_round_keeps_the_previous_teacher_and_labels_and_stops() -> None:
    script = Scripted([0.62, 0.58, 0.90])
    out = run_rounds(Path("static.pt"), 0.55, labels_of(0), script.relabel, script.retrain, max_rounds=3)
    assert (out.teacher.name, out.accepted_round) == ("round1.pt", 1)
    assert out.labels["a"].score == pytest.approx(0.1)  # round 1's labels, not the rejected round 2's
    assert len(out.history) == 2 and out.history[1]["accepted"] is False  # round 3 never ran
    assert "round 2" in out.stopped and "round 1's teacher" in out.stopped


def test_a_first_round_worse_than_the_warm_up_keeps_the_warm_up_teacher() -> None:
    script = Scripted([0.50])
    first = labels_of(0)
    out = run_rounds(Path("static.pt"), 0.55, first, script.relabel, script.retrain, max_rounds=2)
    assert (out.teacher.name, out.accepted_round, out.labels) == ("static.pt", 0, first)


@pytest.mark.parametrize(("gain", "accepted"), [(0.0, True), (0.05, False)])
def test_min_gain_is_the_margin_a_round_must_beat(gain: float, accepted: bool) -> None:
    script = Scripted([0.58])
    out = run_rounds(Path("static.pt"), 0.55, labels_of(0), script.relabel, script.retrain, max_rounds=1, min_gain=gain)
    assert out.history[0]["accepted"] is accepted


def test_describe_adds_label_figures_to_each_round_record() -> None:
    script = Scripted([0.6])
    out = run_rounds(Path("s.pt"), 0.5, labels_of(0), script.relabel, script.retrain, 1,
                     describe=lambda labels: {"n": len(labels)})
    assert out.history == [{"n": 1, "round": 1, "teacher_val_dice": 0.6, "accepted": True}]


def test_zero_rounds_change_nothing() -> None:
    script = Scripted([])
    first = labels_of(0)
    out = run_rounds(Path("static.pt"), 0.5, first, script.relabel, script.retrain, max_rounds=0)
    assert (out.teacher.name, out.labels, out.history) == ("static.pt", first, [])


@pytest.mark.parametrize(
    ("overrides", "keys"),
    [
        ({"refine_rounds": 0}, set()),  # no rounds: nothing, so label_ratio and train sweeps stop before refine
        ({"refine_rounds": 0, "refine_relabel": "student"}, set()),
        ({"refine_rounds": 1}, {"labeled"}),  # ground truth replaces the labeled split's labels
        ({"refine_rounds": 1, "refine_ground_truth": False}, set()),  # the teacher-only path stays cached
        ({"refine_rounds": 2, "refine_relabel": "student"}, {"labeled", "unlabeled", "train"}),
    ],
)
def test_refinement_inputs_hold_only_what_the_rounds_read(overrides: dict, keys: set[str]) -> None:
    from busseg.params_schema import PseudoParams
    from busseg.pseudo.rounds import refinement_inputs

    record = refinement_inputs(PseudoParams(**overrides), ["b", "a"], ["c"], {"method": "dual_teacher", "epochs": 3})
    assert set(record) == keys
    if "labeled" in record:
        assert record["labeled"] == ["a", "b"]
    if "train" in record:
        assert list(record["train"]) == ["epochs", "method"]  # sorted: the same params give the same bytes


def test_a_missing_or_malformed_inputs_record_names_the_file(tmp_path: Path) -> None:
    from busseg.errors import DataError
    from busseg.pseudo.rounds import read_refinement_inputs

    with pytest.raises(DataError, match="refine_inputs stage"):
        read_refinement_inputs(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="JSON object") as info:
        read_refinement_inputs(tmp_path / "bad.json")
    assert "bad.json" in str(info.value)
