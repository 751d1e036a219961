"""Label refinement: a teacher's probability maps become labels under the first round's rules."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from busseg.data.prepared import PreparedDataset, PseudoLabels
from busseg.imageio import resize_image, resize_mask
from busseg.metrics import dice
from busseg.models import ModelConfig
from busseg.pseudo.base import PseudoLabel
from busseg.pseudo.refine import InMemoryLabels, label_from_probabilities, label_quality, read_labels, refine_labels, write_labels


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_the_largest_component_with_its_holes_filled_is_the_label() -> None:
    prob = np.zeros((80, 80), np.float32)
    prob[disc((80, 80), (40, 40), 15)] = 0.95
    prob[disc((80, 80), (40, 40), 4)] = 0.2  # a hole
    prob[disc((80, 80), (10, 70), 3)] = 0.9  # a speck elsewhere
    label = label_from_probabilities(prob, min_area_fraction=0.01)
    assert label.valid and label.mask[40, 40] and not label.mask[10, 70]
    assert label.box == (25, 25, 56, 56)
    assert 0.0 < label.score <= 1.0


def test_a_hesitant_teacher_is_less_confident() -> None:
    sure, unsure = np.zeros((64, 64), np.float32), np.full((64, 64), 0.35, np.float32)
    sure[disc((64, 64), (32, 32), 12)] = 0.99
    unsure[disc((64, 64), (32, 32), 12)] = 0.6
    assert label_from_probabilities(sure, 0.01).score > label_from_probabilities(unsure, 0.01).score


def test_empty_and_tiny_predictions_are_invalid_with_a_reason() -> None:
    assert label_from_probabilities(np.zeros((50, 50), np.float32), 0.01).reason == "teacher_empty"
    tiny = np.zeros((50, 50), np.float32)
    tiny[disc((50, 50), (25, 25), 2)] = 0.9
    label = label_from_probabilities(tiny, 0.01)
    assert not label.valid and label.reason == "area_below_min" and not label.mask.any()


class LookupTeacher(nn.Module):
    """A 'teacher' that knows the truth of the images it was given (better than any labeler)."""

    def __init__(self, prepared: PreparedDataset, size: int) -> None:
        super().__init__()
        self.config = ModelConfig(encoder="resnet18", image_size=size)
        self.truth = {}
        for sample_id in prepared.ids:
            image, mask = prepared.image(sample_id), prepared.mask(sample_id)
            for im, gt in ((image, mask), (image[:, ::-1], mask[:, ::-1])):  # refinement also looks at mirror images
                key = hashlib.md5(resize_image(np.ascontiguousarray(im), size).tobytes()).hexdigest()
                self.truth[key] = torch.from_numpy(resize_mask(np.ascontiguousarray(gt), (size, size))).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for image in x[:, 0]:
            pixels = (image * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
            out.append(8.0 * (2.0 * self.truth[hashlib.md5(pixels.tobytes()).hexdigest()] - 1.0))
        return torch.stack(out)[:, None]


def shifted_labels(prepared: PreparedDataset, ids: list[str], shift: int) -> dict[str, PseudoLabel]:
    """First-round labels that are the truth moved ``shift`` pixels right: worse than the teacher."""
    out = {}
    for sample_id in ids:
        mask = np.roll(prepared.mask(sample_id), shift, axis=1)
        out[sample_id] = PseudoLabel(mask, 0.5, bool(mask.any()), "" if mask.any() else "no_candidate")
    return out


def test_refined_labels_are_at_least_as_good_when_the_teacher_beats_the_labeler(tiny_prepared: Path) -> None:
    prepared = PreparedDataset(tiny_prepared)
    ids = [i for i in prepared.ids if prepared.mask(i).any()]
    first = shifted_labels(prepared, ids, shift=6)
    refined = refine_labels(LookupTeacher(prepared, 64), prepared, ids, torch.device("cpu"), min_area_fraction=0.005)
    for sample_id in ids:
        truth = prepared.mask(sample_id)
        assert dice(refined[sample_id].mask, truth) >= dice(first[sample_id].mask, truth), sample_id
    assert label_quality(refined, prepared)["dice"] > label_quality(first, prepared)["dice"]


def test_written_labels_read_back_and_only_valid_confident_ones_train(tiny_prepared: Path, tmp_path: Path) -> None:
    prepared = PreparedDataset(tiny_prepared)
    ids = prepared.ids[:6]
    labels = shifted_labels(prepared, ids, shift=2)
    labels[ids[0]] = PseudoLabel(np.zeros_like(labels[ids[0]].mask), 0.9, False, "teacher_empty")
    labels[ids[1]] = PseudoLabel(labels[ids[1]].mask, 0.1, labels[ids[1]].valid)
    write_labels(tmp_path / "refined", labels)
    back = read_labels(PseudoLabels(tmp_path / "refined"), ids)
    for sample_id in ids:
        assert np.array_equal(back[sample_id].mask, labels[sample_id].mask)
        assert (back[sample_id].valid, back[sample_id].reason) == (labels[sample_id].valid, labels[sample_id].reason)
    trainable = InMemoryLabels(back).trainable(min_score=0.3)
    assert ids[0] not in trainable and ids[1] not in trainable
    assert trainable == sorted(i for i in ids[2:] if labels[i].valid)


def test_an_image_the_teacher_finds_nothing_on_keeps_its_previous_label_with_the_reason() -> None:
    from busseg.pseudo.refine import keep_previous_where_invalid

    before = {i: PseudoLabel(disc((32, 32), (16, 16), 6), 0.7, True, "", (10, 10, 23, 23)) for i in ("a", "b", "c")}
    before["c"] = PseudoLabel(np.zeros((32, 32), bool), 0.0, False, "no_candidate")
    new = {
        "a": PseudoLabel(np.zeros((32, 32), bool), 0.0, False, "teacher_empty"),
        "b": PseudoLabel(disc((32, 32), (12, 12), 5), 0.9, True),
        "c": PseudoLabel(np.zeros((32, 32), bool), 0.0, False, "teacher_empty"),
    }
    out = keep_previous_where_invalid(new, before)
    assert out["a"].valid and np.array_equal(out["a"].mask, before["a"].mask)
    assert out["a"].reason == "kept_previous:teacher_empty" and out["a"].box == before["a"].box
    assert out["b"] is new["b"]  # a real new label replaces the old one
    assert not out["c"].valid and out["c"].reason == "teacher_empty"  # nothing valid to keep


def test_refine_labels_keeps_previous_labels_where_the_teacher_is_empty(tiny_prepared: Path) -> None:
    class EmptyTeacher(nn.Module):
        config = ModelConfig(encoder="resnet18", image_size=64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full_like(x[:, :1], -10.0)

    prepared = PreparedDataset(tiny_prepared)
    ids = [i for i in prepared.ids if prepared.mask(i).any()][:3]
    previous = shifted_labels(prepared, ids, shift=3)
    out = refine_labels(EmptyTeacher(), prepared, ids, torch.device("cpu"), 0.005, previous=previous)
    for sample_id in ids:
        assert np.array_equal(out[sample_id].mask, previous[sample_id].mask)
        assert out[sample_id].reason == "kept_previous:teacher_empty"


def test_ground_truth_labels_are_valid_certain_and_boxed(tiny_prepared: Path) -> None:
    from busseg.pseudo.refine import ground_truth_labels

    prepared = PreparedDataset(tiny_prepared)
    ids = prepared.ids[:4]
    labels = ground_truth_labels(prepared, ids)
    for sample_id in ids:
        truth = prepared.mask(sample_id).astype(bool)
        label = labels[sample_id]
        assert label.valid and label.score == 1.0 and label.reason == "ground_truth"
        assert np.array_equal(label.mask, truth)
        if truth.any():
            x0, y0, x1, y1 = label.box
            assert truth[y0:y1, x0:x1].sum() == truth.sum() and truth[y0, :].any() and truth[:, x1 - 1].any()
    assert set(InMemoryLabels(labels).trainable(min_score=1.0)) == set(ids)


def test_pixel_certainty_is_high_where_the_label_agrees_with_the_network_and_zero_where_it_does_not() -> None:
    from busseg.pseudo.refine import certain_pixels, pixel_certainty_map

    prob = np.zeros((60, 60), np.float32)
    prob[disc((60, 60), (30, 30), 14)] = 0.98
    prob[disc((60, 60), (30, 30), 14) & ~disc((60, 60), (30, 30), 11)] = 0.6  # a hesitant rim
    prob[disc((60, 60), (8, 50), 3)] = 0.9  # a second blob the largest-component rule drops
    label = label_from_probabilities(prob, 0.01, pixel_certainty=True)
    assert label.certainty is not None and label.certainty.dtype == np.uint8
    assert label.certainty[30, 30] == round(255 * 0.96) and label.certainty[0, 0] == 255
    assert label.certainty[30, 43] == round(255 * 0.2)  # the rim: inside the label, unsure
    assert not label.mask[8, 50] and label.certainty[8, 50] == 0  # labeled background, network says lesion
    keep = certain_pixels(label.certainty, 0.5)
    assert keep is not None and keep[30, 30] and keep[0, 0] and not keep[30, 43] and not keep[8, 50]
    assert certain_pixels(label.certainty, 0.0) is None and certain_pixels(None, 0.5) is None
    assert label_from_probabilities(prob, 0.01).certainty is None  # only when asked for


def test_certainty_weights_follow_the_labels_and_are_written_to_look_at(tmp_path: Path) -> None:
    from busseg.pseudo.refine import CERTAINTY_DIR, certain_fraction, keep_previous_where_invalid

    certainty = np.full((32, 32), 255, np.uint8)
    certainty[:, :8] = 40
    refined = PseudoLabel(disc((32, 32), (16, 16), 6), 0.8, True, "", (10, 10, 23, 23), certainty)
    truth = PseudoLabel(disc((32, 32), (16, 16), 5), 1.0, True, "ground_truth")
    labels = {"a": refined, "gt": truth, "gone": PseudoLabel(np.zeros((32, 32), bool), 0.0, False, "teacher_empty")}
    source = InMemoryLabels(labels, min_certainty=0.5)
    weight = source.weight("a")
    assert weight is not None and not weight[:, :8].any() and weight[:, 8:].all()
    assert source.weight("gt") is None  # ground truth counts whole
    assert InMemoryLabels(labels).weight("a") is None  # no threshold: every pixel
    assert certain_fraction([refined, truth, labels["gone"]], 0.5) == pytest.approx(1 - 8 / 64)
    kept = keep_previous_where_invalid({"a": labels["gone"]}, {"a": refined})["a"]
    assert kept.certainty is certainty  # a kept label keeps its certainty
    write_labels(tmp_path / "refined", labels)
    assert sorted(p.name for p in (tmp_path / "refined" / CERTAINTY_DIR).iterdir()) == ["a.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "refined" / CERTAINTY_DIR / "a.png")), certainty)
