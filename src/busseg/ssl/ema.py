"""Teachers: the EMA (dynamic) teacher T_B and freezing the static teacher T_A.

docs/method.md: T_B is the exponential moving average of the student S, updated after
every optimizer step (decay 0.99 by default); T_A is trained on pseudo labels and
then frozen.

Buffers: floating-point buffers (batch-norm ``running_mean`` / ``running_var``)
follow the same EMA as the parameters, so the teacher's normalisation statistics
match its averaged weights (as in timm's ``ModelEmaV2``, which averages the whole
state dict); integer buffers (``num_batches_tracked``) are counters, not estimates,
and are copied from the student.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and turn off gradients of all its parameters, in place.

    Eval mode also stops batch-norm from updating its running statistics, so the
    model's state stays bit-identical however it is used. A later ``model.train()``
    call would undo the eval part: call it on the student only.
    """
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def make_ema_teacher(student: nn.Module) -> nn.Module:
    """An independent copy of ``student`` to be updated by :func:`ema_update`.

    The copy is a deepcopy (no shared tensors, and ``student.train()`` / ``.eval()``
    do not affect it), in eval mode (its batch-norm uses the EMA running statistics)
    and with ``requires_grad=False`` on all parameters.
    """
    return freeze(copy.deepcopy(student))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``t = decay * t + (1 - decay) * s`` for every parameter and floating buffer, in place.

    Integer buffers (``num_batches_tracked``) are copied. ``decay = 0`` copies the
    student, ``decay = 1`` leaves the teacher unchanged.

    Raises:
        ValueError: ``decay`` outside [0, 1], or the two models' parameter/buffer names
            or shapes differ.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    _update(dict(teacher.named_parameters()), dict(student.named_parameters()), decay, "parameter")
    _update(dict(teacher.named_buffers()), dict(student.named_buffers()), decay, "buffer")


def _update(
    teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor], decay: float, kind: str
) -> None:
    """EMA of matching floating tensors; plain copy of the others."""
    if teacher.keys() != student.keys():
        missing = sorted(set(student) ^ set(teacher))
        raise ValueError(f"teacher and student {kind}s differ: {', '.join(missing[:5])}")
    for name, t in teacher.items():
        s = student[name]
        if t.shape != s.shape:
            raise ValueError(
                f"{kind} '{name}' has shape {tuple(t.shape)} in the teacher "
                f"and {tuple(s.shape)} in the student"
            )
        if t.is_floating_point():
            t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
        else:
            t.copy_(s)
