from __future__ import annotations

import pytest
import torch
from torch import nn

from busseg.ssl.ema import ema_update, freeze, make_ema_teacher

torch.set_num_threads(1)


def tiny_model() -> nn.Sequential:
    """Linear(2 -> 2) + BatchNorm1d(2) with hand-set weights (all parameters 1, bias 0)."""
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    return model


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def student_after_one_step() -> nn.Sequential:
    """The tiny model with parameters set to 3 and one train-mode batch through batch-norm."""
    student = tiny_model()
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.fill_(3.0)
    student.train()
    student(torch.tensor([[1.0, 0.0], [3.0, 2.0]]))  # updates running stats, counter -> 1
    return student


def test_ema_arithmetic_by_hand():
    teacher = make_ema_teacher(tiny_model())  # weight 1, bias 0, BN weight 1, bias 0, mean 0, var 1
    student = student_after_one_step()
    ema_update(teacher, student, decay=0.9)

    # Parameters: 0.9 * 1 + 0.1 * 3 = 1.2 for weights, 0.9 * 0 + 0.1 * 3 = 0.3 for biases.
    torch.testing.assert_close(teacher[0].weight, torch.full((2, 2), 1.2))
    torch.testing.assert_close(teacher[0].bias, torch.full((2,), 0.3))
    torch.testing.assert_close(teacher[1].weight, torch.full((2,), 1.2))
    torch.testing.assert_close(teacher[1].bias, torch.full((2,), 0.3))
    # Student Linear output: 3 * (x0 + x1) + 3 = [6, 6] and [18, 18]: batch mean 12, unbiased var 72.
    # Student running stats (momentum 0.1): mean 0.9 * 0 + 0.1 * 12 = 1.2, var 0.9 * 1 + 0.1 * 72 = 8.1.
    torch.testing.assert_close(student[1].running_mean, torch.full((2,), 1.2))
    torch.testing.assert_close(student[1].running_var, torch.full((2,), 8.1))
    # Teacher running stats are the EMA of those: mean 0.9 * 0 + 0.1 * 1.2, var 0.9 * 1 + 0.1 * 8.1.
    torch.testing.assert_close(teacher[1].running_mean, torch.full((2,), 0.12))
    torch.testing.assert_close(teacher[1].running_var, torch.full((2,), 1.71))
    # The counter is copied, not averaged.
    assert teacher[1].num_batches_tracked.item() == 1


def test_decay_zero_copies_the_student():
    teacher = make_ema_teacher(tiny_model())
    student = student_after_one_step()
    ema_update(teacher, student, decay=0.0)
    for name, tensor in student.state_dict().items():
        assert torch.equal(teacher.state_dict()[name], tensor), name


def test_decay_one_keeps_the_teacher():
    teacher = make_ema_teacher(tiny_model())
    before = state(teacher)
    ema_update(teacher, student_after_one_step(), decay=1.0)
    for name, tensor in teacher.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue  # copied by design
        assert torch.equal(tensor, before[name]), name


def test_make_ema_teacher_is_an_independent_frozen_copy():
    student = tiny_model().train()
    teacher = make_ema_teacher(student)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    with torch.no_grad():
        student[0].weight.add_(5.0)
    assert torch.equal(teacher[0].weight, torch.ones(2, 2))  # no shared storage
    student.eval()
    student.train()
    assert not teacher.training


def test_frozen_model_is_bit_identical_after_optimizer_steps_of_another_model():
    torch.manual_seed(0)
    frozen = freeze(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)))
    before = state(frozen)
    student = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).train()
    optimizer = torch.optim.Adam(list(student.parameters()) + list(frozen.parameters()), lr=0.1)
    for _ in range(3):
        x = torch.randn(8, 4)
        optimizer.zero_grad()
        loss = ((student(x) - frozen(x)) ** 2).mean()  # the frozen model is used, not trained
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in frozen.parameters())
    for name, tensor in frozen.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert freeze(student) is student and not student.training


def test_ema_teacher_drifts_towards_the_student_over_steps():
    teacher = make_ema_teacher(tiny_model())
    student = student_after_one_step()
    for _ in range(200):
        ema_update(teacher, student, decay=0.99)
    # After n steps the gap shrinks to 0.99 ** n of its start: 2 * 0.134 = 0.27 for the weights.
    torch.testing.assert_close(teacher[0].weight, torch.full((2, 2), 3.0 - 2.0 * 0.99**200))


@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_decay_outside_unit_interval_is_rejected(decay):
    with pytest.raises(ValueError, match="decay"):
        ema_update(tiny_model(), tiny_model(), decay)


def test_mismatched_models_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        ema_update(nn.Linear(2, 3), nn.Linear(2, 4), 0.5)
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Sequential(nn.Linear(2, 2)), tiny_model(), 0.5)
