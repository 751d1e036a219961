"""The SSL baselines BCP and UniMatch: registry, the mixes they build, their losses on a toy batch, fit()."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from busseg.errors import ConfigError
from busseg.models import ModelConfig
from busseg.training.loop import fit
from busseg.training.methods import BCP, MeanTeacher, Requirements, StudentAverageMethod, UniMatch, get_method
from busseg.training.methods.bcp import BCPConfig
from busseg.training.methods.mean_teacher import MeanTeacherConfig
from busseg.training.methods.bcp import largest_component, paste_box

from .test_ssl_methods import CONFIG, SIZE, batches, make_net, tiny_data

BASELINES = {"bcp": BCP, "unimatch": UniMatch}


@pytest.fixture
def model_config(tiny_model_config: ModelConfig) -> ModelConfig:
    return tiny_model_config


def build(name: str, model_config: ModelConfig, **changes):
    config = replace(CONFIG, method=name, **changes)
    return BASELINES[name](make_net(model_config, 0), config)


def test_baselines_are_registered_and_need_unlabeled_batches_only() -> None:
    for name, cls in BASELINES.items():
        assert get_method(name) is cls
        needs = cls.requirements(replace(CONFIG, method=name))
        assert needs.unlabeled and not needs.static_teacher
        # train.init is the loop's, the same for every method: no method refuses it.
        assert cls.requirements(replace(CONFIG, method=name, init="static_teacher")) == needs


@pytest.mark.parametrize(
    ("cls", "options_type", "own_key"), [(MeanTeacher, MeanTeacherConfig, "rampup_epochs"), (BCP, BCPConfig, "bcp_u_weight")]
)
def test_student_average_methods_build_their_section_and_ignore_a_static_teacher(
    model_config: ModelConfig, cls: type[StudentAverageMethod], options_type: type, own_key: str
) -> None:
    config = replace(CONFIG, method=cls.name, ema_decay=0.9)
    method = cls(make_net(model_config, 0), config, static_teacher=make_net(model_config, 1))
    assert isinstance(method.options, options_type) and method.ema_decay == 0.9
    assert method.static_teacher is None and method.ema_teacher is not None
    assert cls.requirements(config) == Requirements(unlabeled=True, static_teacher=False)
    with pytest.raises(ConfigError) as info:  # the subclass's own section is checked, not just the EMA knobs
        cls.requirements(replace(config, **{own_key: -1.0}))
    assert info.value.key == f"train.{own_key}"


@pytest.mark.parametrize(
    ("key", "value"),
    [("bcp_u_weight", -1.0), ("bcp_pretrain_fraction", 1.0), ("unimatch_threshold", 1.5), ("unimatch_dropout", 1.0)],
)
def test_baseline_keys_are_checked(key: str, value: float) -> None:
    cls = BCP if key.startswith("bcp") else UniMatch
    with pytest.raises(ConfigError) as info:
        cls.requirements(replace(CONFIG, **{key: value}))
    assert info.value.key == f"train.{key}"


def test_paste_box_is_two_thirds_of_each_side() -> None:
    box = paste_box(30, 24, torch.Generator().manual_seed(0))
    rows, cols = box[0, 0].any(dim=1).nonzero(), box[0, 0].any(dim=0).nonzero()
    assert int(rows.max() - rows.min() + 1) == 20 and int(cols.max() - cols.min() + 1) == 16
    assert int(box.sum()) == 20 * 16


def test_bcp_mixes_both_directions_and_pastes_every_labeled_image(model_config: ModelConfig) -> None:
    method = build("bcp", model_config, bcp_pretrain_fraction=0.0)
    labeled, unlabeled = batches(n_labeled=3, n_unlabeled=2)
    seen = []
    method.student.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    method.begin_step(4)
    method.loss(labeled, unlabeled, progress=0.0)
    mixes = seen[-1]
    assert mixes.shape[0] == 3 + 3  # max(n_l, n_u) mixes of each kind
    method.begin_step(4)
    box = paste_box(SIZE, SIZE, method.generator)[0, 0]
    x_l, x_u = labeled["image"], unlabeled["image"]
    for i in range(3):  # unlabeled i mod 2 outside, labeled i inside
        assert torch.equal(mixes[i][:, box], x_l[i][:, box]) and torch.equal(mixes[i][:, ~box], x_u[i % 2][:, ~box])
    for i in range(3):  # labeled i outside, unlabeled i mod 2 inside
        assert torch.equal(mixes[3 + i][:, box], x_u[i % 2][:, box]) and torch.equal(mixes[3 + i][:, ~box], x_l[i][:, ~box])


@pytest.mark.parametrize("n_labeled", [2, 5])
def test_bcp_every_labeled_mask_reaches_the_loss_inside_and_outside_the_box(model_config: ModelConfig, n_labeled: int) -> None:
    method = build("bcp", model_config, bcp_pretrain_fraction=0.0)
    labeled, unlabeled = batches(n_labeled=n_labeled, n_unlabeled=2)
    method.begin_step(3)
    box = paste_box(SIZE, SIZE, method.generator)[0, 0]

    def total(masks: torch.Tensor) -> float:
        method.begin_step(3)  # the same box every time
        with torch.no_grad():
            return float(method.loss({**labeled, "mask": masks}, unlabeled, progress=0.5)[0])

    base = total(labeled["mask"])
    for j in range(n_labeled):
        for region in (box, ~box):
            flipped = labeled["mask"].clone()
            flipped[j, 0][region] = 1.0 - flipped[j, 0][region]
            assert total(flipped) != pytest.approx(base, rel=1e-7), (j, "inside" if region is box else "outside")


def test_bcp_pretraining_uses_labeled_images_only_and_the_teacher_follows(model_config: ModelConfig) -> None:
    method = build("bcp", model_config, bcp_pretrain_fraction=0.5)
    labeled, unlabeled = batches(n_labeled=4, n_unlabeled=2)
    seen = []
    method.student.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    method.begin_step(1)
    loss, parts = method.loss(labeled, unlabeled, progress=0.2)
    assert seen[-1].shape[0] == 4 and parts["loss_u"] == 0.0  # labeled copy-paste: one mix per labeled image
    method.begin_step(1)
    box = paste_box(SIZE, SIZE, method.generator)[0, 0]
    for i in range(4):  # labeled i outside, labeled i + 2 inside
        assert torch.equal(seen[-1][i][:, box], labeled["image"][(i + 2) % 4][:, box])
        assert torch.equal(seen[-1][i][:, ~box], labeled["image"][i][:, ~box])
    method.begin_step(1)
    other_unlabeled = {"image": torch.rand_like(unlabeled["image"])}
    assert float(method.loss(labeled, other_unlabeled, progress=0.2)[0].detach()) == pytest.approx(float(loss.detach()))
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    method.after_optimizer_step()  # pre-training: the EMA teacher becomes the student
    for (name, t), s in zip(method.ema_teacher.state_dict().items(), method.student.state_dict().values()):
        assert torch.equal(t, s), name
    method.begin_step(2)
    loss, parts = method.loss(labeled, unlabeled, progress=0.6)  # self-training from here on
    assert seen[-1].shape[0] == 2 * 4 and parts["loss_u"] > 0


def test_largest_component_keeps_one_blob_per_image() -> None:
    masks = torch.zeros(3, 1, 12, 12)
    masks[0, 0, 1:3, 1:3] = 1  # 4 pixels
    masks[0, 0, 6:10, 6:10] = 1  # 16 pixels: kept
    masks[1, 0, 2:5, 2:5] = 1  # one component: unchanged
    kept = largest_component(masks)
    expected = masks.clone()
    expected[0, 0, 1:3, 1:3] = 0
    assert torch.equal(kept, expected)
    assert not kept[2].any()  # an empty pseudo label stays empty


def test_bcp_targets_mix_ground_truth_with_the_teacher_pseudo_label(model_config: ModelConfig) -> None:
    labeled, unlabeled = batches(n_labeled=2, n_unlabeled=2)

    def parts_before_and_after_changing_the_teacher(u_weight: float) -> tuple[dict, dict]:
        method = build("bcp", model_config, bcp_u_weight=u_weight, bcp_pretrain_fraction=0.0)
        method.eval()
        method.begin_step(0)
        _, before = method.loss(labeled, unlabeled, progress=0.0)
        for p in method.ema_teacher.parameters():
            p.data.add_(torch.randn_like(p))
        method.begin_step(0)  # the same box
        _, after = method.loss(labeled, unlabeled, progress=0.0)
        return before, after

    # u_weight 0: only the regions with ground truth count, so another teacher changes nothing ...
    before, after = parts_before_and_after_changing_the_teacher(0.0)
    assert after["loss_s"] == pytest.approx(before["loss_s"]) and after["loss_u"] == pytest.approx(before["loss_u"])
    # ... and with u_weight > 0 the teacher's pseudo label is part of the target.
    before, after = parts_before_and_after_changing_the_teacher(0.5)
    assert after["loss_u"] != pytest.approx(before["loss_u"])


def test_feature_perturbation_pass(model_config: ModelConfig) -> None:
    net = make_net(model_config, 0).eval()
    x = torch.rand(3, 1, SIZE, SIZE)
    with torch.no_grad():
        clean, fp = net.forward_feature_perturbation(x, 1, dropout=0.0)
        torch.testing.assert_close(clean, net(x))
        torch.testing.assert_close(fp, net(x[1:]))
        clean, fp = net.forward_feature_perturbation(x, 1, dropout=0.5)
    torch.testing.assert_close(clean, net(x))  # the clean stream is untouched
    assert fp.shape == (2, 1, SIZE, SIZE) and not torch.allclose(fp, net(x[1:]))


@pytest.mark.parametrize("name", ["bcp", "unimatch"])
@pytest.mark.parametrize("augment", ["none", "strong"])
def test_baseline_loss_is_finite_uses_both_batches_and_decreases(model_config: ModelConfig, name: str, augment: str) -> None:
    # unimatch_threshold 0: a random tiny model is never 95 % confident, and the test wants the unlabeled terms on.
    # ema_decay 1: a fixed teacher, so that the targets (largest-component pseudo labels) hold still.
    method = build(name, model_config, augment=augment, unimatch_threshold=0.0, ema_decay=1.0)
    labeled, unlabeled = batches(n_labeled=2, n_unlabeled=2)
    method.train()

    def loss_at(lab, unl):
        method.begin_step(0)  # the same views and boxes every time: losses are comparable
        return method.loss(lab, unl, progress=0.5)

    loss, parts = loss_at(labeled, unlabeled)
    assert math.isfinite(float(loss.detach())) and all(math.isfinite(v) for v in parts.values())
    assert parts["loss_u"] > 0
    with torch.no_grad():
        other_u = {"image": unlabeled["image"].flip(-1).roll(7, -2)}
        assert float(loss_at(labeled, other_u)[0]) != pytest.approx(float(loss.detach()), rel=1e-6)
        other_l = {**labeled, "mask": 1.0 - labeled["mask"]}
        assert float(loss_at(other_l, unlabeled)[0]) != pytest.approx(float(loss.detach()), rel=1e-6)
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=1e-2)
    first = float(loss.detach())
    for _ in range(8):
        loss, _ = loss_at(labeled, unlabeled)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_optimizer_step()
    assert float(loss_at(labeled, unlabeled)[0].detach()) < first


@pytest.mark.parametrize("name", ["bcp", "unimatch"])
def test_baseline_fit_runs_end_to_end(tiny_prepared: Path, model_config: ModelConfig, tmp_path: Path, name: str) -> None:
    config = replace(CONFIG, method=name, epochs=1, augment="strong")
    method = build(name, model_config, epochs=1, augment="strong")
    result = fit(method, tiny_data(tiny_prepared), config, device=torch.device("cpu"), seed=0, best_path=tmp_path / "s.pt", progress=False)
    assert {"loss_s", "loss_u"} <= set(result.history[-1])
    assert all(math.isfinite(result.history[-1][k]) for k in ("loss_s", "loss_u"))
