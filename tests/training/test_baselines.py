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
from busseg.training.methods import BCP, UniMatch, get_method
from busseg.training.methods.bcp import paste_box

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
        with pytest.raises(ConfigError) as info:
            cls.requirements(replace(CONFIG, method=name, init_from_static=True))
        assert info.value.key == "train.init_from_static"


@pytest.mark.parametrize(("key", "value"), [("bcp_u_weight", -1.0), ("unimatch_threshold", 1.5), ("unimatch_dropout", 1.0)])
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


def test_bcp_mixes_both_directions(model_config: ModelConfig) -> None:
    method = build("bcp", model_config)
    labeled, unlabeled = batches(n_labeled=3, n_unlabeled=2)
    seen = []
    method.student.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    method.begin_step(4)
    method.loss(labeled, unlabeled, progress=0.0)
    mixes = seen[-1]
    assert mixes.shape[0] == 2 + 3  # each unlabeled and each labeled image is the outside of one mix
    method.begin_step(4)
    box = paste_box(SIZE, SIZE, method.generator)[0, 0]
    x_l, x_u = labeled["image"], unlabeled["image"]
    for i in range(2):  # unlabeled outside, labeled i mod 3 inside
        assert torch.equal(mixes[i][:, box], x_l[i % 3][:, box]) and torch.equal(mixes[i][:, ~box], x_u[i][:, ~box])
    for j in range(3):  # labeled outside, unlabeled j mod 2 inside
        assert torch.equal(mixes[2 + j][:, box], x_u[j % 2][:, box]) and torch.equal(mixes[2 + j][:, ~box], x_l[j][:, ~box])


def test_bcp_targets_mix_ground_truth_with_the_teacher_pseudo_label(model_config: ModelConfig) -> None:
    labeled, unlabeled = batches(n_labeled=2, n_unlabeled=2)

    def parts_before_and_after_changing_the_teacher(u_weight: float) -> tuple[dict, dict]:
        method = build("bcp", model_config, bcp_u_weight=u_weight)
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
    method = build(name, model_config, augment=augment, unimatch_threshold=0.0)
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
