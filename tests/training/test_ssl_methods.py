"""The SSL methods: teachers (static frozen, EMA arithmetic), ramp-up, ablation switches, fit()."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from busseg.data.dataset import SegmentationDataset
from busseg.data.prepared import PreparedDataset
from busseg.data.index import read_index
from busseg.errors import ConfigError, TrainingError
from busseg.losses import bce_dice_loss
from busseg.models import ModelConfig, SegmentationNet, build_model
from busseg.ssl import uewf
from busseg.training.checkpoint import load_model, read_checkpoint
from busseg.training.config import TrainConfig
from busseg.training.loop import TrainData, fit
from busseg.training.methods import DualTeacher, MeanTeacher, Supervised, get_method
from busseg.training.methods.mean_teacher import sigmoid_rampup

torch.set_num_threads(1)

SIZE = 64
CONFIG = TrainConfig(
    method="dual_teacher", epochs=2, steps_per_epoch=2, batch_size=4, unlabeled_batch=2,
    ema_decay=0.9, uewf_kernel=4, aurcl_grid=4, aurcl_proj_dim=16,
    rampup_epochs=0.0,  # lambda_u at full weight from step 0 (docs/method.md), so the loss arithmetic is plain
)


@pytest.fixture
def model_config(tiny_model_config: ModelConfig) -> ModelConfig:
    return tiny_model_config


def make_net(config: ModelConfig, seed: int) -> SegmentationNet:
    torch.manual_seed(seed)
    return build_model(config)


def batches(seed: int = 0, n_labeled: int = 2, n_unlabeled: int = 2) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    labeled = {
        "image": torch.rand(n_labeled, 1, SIZE, SIZE, generator=g),
        "mask": (torch.rand(n_labeled, 1, SIZE, SIZE, generator=g) > 0.5).float(),
    }
    return labeled, {"image": torch.rand(n_unlabeled, 1, SIZE, SIZE, generator=g)}


def dual(model_config: ModelConfig, **switches) -> DualTeacher:
    config = replace(CONFIG, **switches)
    static = make_net(model_config, 1) if config.use_static_teacher else None
    return DualTeacher(make_net(model_config, 0), config, static_teacher=static)


def optimizer_steps(method, n: int) -> None:
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=1e-2)
    method.train()
    for step in range(n):
        loss, _ = method.loss(*batches(step), progress=step / n)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_optimizer_step()


def test_methods_are_registered() -> None:
    assert get_method("mean_teacher") is MeanTeacher
    assert get_method("dual_teacher") is DualTeacher
    assert MeanTeacher.requirements(CONFIG).unlabeled and DualTeacher.requirements(CONFIG).unlabeled
    assert DualTeacher.requirements(CONFIG).static_teacher and not MeanTeacher.requirements(CONFIG).static_teacher
    assert not Supervised.requirements(CONFIG).unlabeled


def test_static_teacher_is_frozen_unsaved_and_not_optimised(model_config: ModelConfig) -> None:
    method = dual(model_config)
    static = method.static_teacher
    before = {k: v.clone() for k, v in static.state_dict().items()}
    optimizer_steps(method, 3)

    assert all(torch.equal(before[k], v) for k, v in static.state_dict().items())
    assert not static.training and not any(p.requires_grad for p in static.parameters())
    trainable = {id(p) for p in method.trainable_parameters()}
    assert not trainable & {id(p) for p in static.parameters()}
    keys = set(method.state_dict())
    assert {k.split(".")[0] for k in keys} == {"student", "ema_teacher", "aurcl"}


@pytest.mark.parametrize("method_name", ["mean_teacher", "dual_teacher"])
def test_ema_teacher_follows_the_student_after_each_step(model_config: ModelConfig, method_name: str) -> None:
    if method_name == "mean_teacher":
        method = MeanTeacher(make_net(model_config, 0), replace(CONFIG, method=method_name))
    else:
        method = dual(model_config)
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=1e-2)
    assert not {id(p) for p in method.ema_teacher.parameters()} & {id(p) for p in method.trainable_parameters()}
    method.train()
    assert not method.ema_teacher.training  # train() of the method leaves the teacher in eval mode
    name = "net.decoder.blocks.0.conv1.0.weight"
    for step in range(2):
        teacher_before = method.ema_teacher.get_parameter(name).clone()
        loss, _ = method.loss(*batches(step), progress=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        student_now = method.student.get_parameter(name).detach().clone()
        assert not torch.equal(student_now, teacher_before)
        method.after_optimizer_step()
        expected = 0.9 * teacher_before + 0.1 * student_now
        torch.testing.assert_close(method.ema_teacher.get_parameter(name), expected)
    # Batch-norm statistics follow the student too (the teacher itself never ran in train mode).
    bn = "net.encoder.bn1.running_mean"
    assert not torch.equal(method.ema_teacher.get_buffer(bn), torch.zeros_like(method.ema_teacher.get_buffer(bn)))


@pytest.mark.parametrize(
    ("progress", "epochs", "rampup", "expected"),
    [
        (0.0, 10, 5.0, math.exp(-5.0)),
        (0.25, 10, 5.0, math.exp(-5.0 * 0.25)),  # t = 0.5
        (0.45, 10, 5.0, math.exp(-5.0 * 0.01)),  # t = 0.9
        (0.5, 10, 5.0, 1.0),
        (0.9, 10, 5.0, 1.0),
        (0.0, 10, 0.0, 1.0),  # no ramp-up
        (0.5, 4, 8.0, math.exp(-5.0 * 0.75**2)),  # ramp-up longer than training: t = 0.25
    ],
)
def test_sigmoid_rampup(progress: float, epochs: int, rampup: float, expected: float) -> None:
    assert sigmoid_rampup(progress, epochs, rampup) == pytest.approx(expected)


def test_mean_teacher_loss_is_supervised_plus_ramped_consistency(model_config: ModelConfig) -> None:
    config = replace(CONFIG, method="mean_teacher", lambda_u=2.0, epochs=10, rampup_epochs=5.0)
    method = MeanTeacher(make_net(model_config, 0), config)
    method.eval()  # per-sample batch-norm, so the loss can be recomputed image by image
    labeled, unlabeled = batches()
    loss, parts = method.loss(labeled, unlabeled, progress=0.25)
    assert parts["weight_u"] == pytest.approx(2.0 * math.exp(-1.25))
    with torch.no_grad():
        expected_u = torch.mean((torch.sigmoid(method.student(unlabeled["image"])) - torch.sigmoid(method.ema_teacher(unlabeled["image"]))) ** 2)
        expected_s = bce_dice_loss(method.student(labeled["image"]), labeled["mask"])
    assert parts["loss_u"] == pytest.approx(float(expected_u), rel=1e-4, abs=1e-7)
    assert parts["loss_s"] == pytest.approx(float(expected_s), rel=1e-4)
    assert float(loss.detach()) == pytest.approx(parts["loss_s"] + parts["weight_u"] * parts["loss_u"], rel=1e-5)


def test_fused_target_follows_the_switches(model_config: ModelConfig) -> None:
    g = torch.Generator().manual_seed(0)
    p_a, p_b = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    with_uewf = dual(model_config)
    torch.testing.assert_close(with_uewf.fused_target(p_a, p_b), uewf(p_a, p_b, kernel=CONFIG.uewf_kernel))
    average = dual(model_config, use_uewf=False)
    torch.testing.assert_close(average.fused_target(p_a, p_b), (p_a + p_b) / 2)
    assert not torch.allclose(with_uewf.fused_target(p_a, p_b), (p_a + p_b) / 2)
    assert torch.equal(with_uewf.fused_target(p_a, None), p_a)
    assert torch.equal(with_uewf.fused_target(None, p_b), p_b)


@pytest.mark.parametrize(
    "switches",
    [
        {},
        {"use_uewf": False},
        {"uewf_kernel": 1},
        {"use_static_teacher": False},
        {"use_ema_teacher": False},
        {"use_aurcl": False},
    ],
    ids=["full", "average", "pixelwise", "ema-only", "static-only", "no-aurcl"],
)
def test_dual_teacher_loss_uses_the_switched_on_terms(model_config: ModelConfig, switches: dict) -> None:
    method = dual(model_config, **switches, lambda_c=0.5, lambda_u=1.5)
    config = method.config
    assert (method.static_teacher is not None) == config.use_static_teacher
    assert (method.ema_teacher is not None) == config.use_ema_teacher
    assert (method.aurcl is not None) == config.use_aurcl
    method.eval()  # per-sample batch-norm: the concatenated pass equals separate ones
    labeled, unlabeled = batches()
    loss, parts = method.loss(labeled, unlabeled, progress=0.5)

    x_u = unlabeled["image"]
    with torch.no_grad():
        p_a = torch.sigmoid(method.static_teacher(x_u)) if config.use_static_teacher else None
        p_b = torch.sigmoid(method.ema_teacher(x_u)) if config.use_ema_teacher else None
        if p_a is not None and p_b is not None:
            target = uewf(p_a, p_b, kernel=config.uewf_kernel) if config.use_uewf else (p_a + p_b) / 2
        else:
            target = p_a if p_b is None else p_b
        expected_u = bce_dice_loss(method.student(x_u), target)
    assert parts["loss_u"] == pytest.approx(float(expected_u), rel=1e-4)
    if config.use_aurcl:
        assert parts["loss_c"] > 0
        expected = parts["loss_s"] + 1.5 * parts["loss_u"] + 0.5 * parts["loss_c"]
    else:
        assert "loss_c" not in parts
        expected = parts["loss_s"] + 1.5 * parts["loss_u"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_switched_off_parts_have_no_parameters_or_state(model_config: ModelConfig) -> None:
    full = dual(model_config)
    head = {id(p) for p in full.aurcl.parameters()}
    assert head and head <= {id(p) for p in full.trainable_parameters()}

    lean = dual(model_config, use_aurcl=False, use_ema_teacher=False)
    assert len(lean.trainable_parameters()) == len(list(lean.student.parameters()))
    assert {k.split(".")[0] for k in lean.state_dict()} == {"student"}
    before = {k: v.clone() for k, v in lean.state_dict().items()}
    lean.after_optimizer_step()  # no EMA teacher: nothing moves
    assert all(torch.equal(before[k], v) for k, v in lean.state_dict().items())


def test_static_teacher_requirement_follows_the_config(model_config: ModelConfig) -> None:
    assert DualTeacher.requirements(CONFIG).static_teacher
    assert not DualTeacher.requirements(replace(CONFIG, use_static_teacher=False)).static_teacher
    with pytest.raises(TrainingError, match="warmup"):
        DualTeacher(make_net(model_config, 0), CONFIG, static_teacher=None)
    with pytest.raises(ConfigError, match="use_static_teacher/use_ema_teacher") as info:
        DualTeacher(make_net(model_config, 0), replace(CONFIG, use_static_teacher=False, use_ema_teacher=False))
    assert info.value.key == "train.use_static_teacher/use_ema_teacher"
    # A teacher passed while switched off is ignored, not used.
    ignored = DualTeacher(make_net(model_config, 0), replace(CONFIG, use_static_teacher=False), static_teacher=make_net(model_config, 1))
    assert ignored.static_teacher is None


@pytest.mark.parametrize(("key", "value"), [("aurcl_grid", 0), ("ema_decay", 1.5), ("aurcl_ratio", 0.0), ("uewf_kernel", 0)])
def test_section_checks_name_the_full_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        DualTeacher.requirements(replace(CONFIG, **{key: value}))
    assert info.value.key == f"train.{key}"


@pytest.mark.parametrize("key", ["lambda_u", "lambda_c"])
def test_negative_weights_are_config_errors(model_config: ModelConfig, key: str) -> None:
    with pytest.raises(ConfigError, match=f"train.{key}"):
        dual(model_config, **{key: -1.0})


def test_missing_unlabeled_batch_is_a_training_error(model_config: ModelConfig) -> None:
    method = MeanTeacher(make_net(model_config, 0), CONFIG)
    with pytest.raises(TrainingError, match="unlabeled"):
        method.loss(batches()[0], None, progress=0.0)


def test_state_dict_round_trip_restores_the_ema_teacher(model_config: ModelConfig) -> None:
    trained = dual(model_config)
    optimizer_steps(trained, 1)
    fresh = dual(model_config)
    fresh.load_state_dict(trained.state_dict())
    for (name, a), b in zip(trained.ema_teacher.state_dict().items(), fresh.ema_teacher.state_dict().values()):
        assert torch.equal(a, b), name


def tiny_data(prepared: Path) -> TrainData:
    ids = sorted(read_index(prepared / "index.csv")["id"])
    dataset = PreparedDataset(prepared)
    return TrainData(
        labeled=SegmentationDataset(dataset, ids[:3], SIZE, masks=dataset),
        unlabeled=SegmentationDataset(dataset, ids[3:11], SIZE),
        val=SegmentationDataset(dataset, ids[11:14], SIZE, masks=dataset),
    )


@pytest.mark.parametrize(
    ("method_name", "switches"),
    [("mean_teacher", {}), ("dual_teacher", {}), ("dual_teacher", {"use_ema_teacher": False, "use_aurcl": False})],
)
def test_fit_runs_end_to_end(tiny_prepared: Path, model_config: ModelConfig, tmp_path: Path, method_name: str, switches: dict) -> None:
    config = replace(CONFIG, method=method_name, **switches)
    cls = get_method(method_name)
    static = make_net(model_config, 1) if cls.requirements(config).static_teacher else None
    method = cls(make_net(model_config, 0), config, static_teacher=static)
    result = fit(method, tiny_data(tiny_prepared), config, device=torch.device("cpu"), seed=0, best_path=tmp_path / "student.pt", progress=False)

    assert len(result.history) == 2
    expected_parts = {"loss_s", "loss_u"} | ({"loss_c"} if config.use_aurcl and method_name == "dual_teacher" else set())
    assert expected_parts <= set(result.history[-1])
    assert all(math.isfinite(result.history[-1][k]) for k in expected_parts)
    assert read_checkpoint(tmp_path / "student.pt")["method"] == method_name
    assert load_model(tmp_path / "student.pt").config == model_config
