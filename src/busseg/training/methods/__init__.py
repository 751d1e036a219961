"""Training methods: how one step's loss is computed from a labeled and an unlabeled batch.

One module per method, each exporting ``methods = {name: class}``; this package merges
them into :data:`METHODS` (``train.method`` picks one by name) and :func:`get_method` lists
the available ones when asked for an unknown name:

================  ==============================================================
``supervised``    labeled images only (:mod:`~busseg.training.methods.supervised`)
``mean_teacher``  EMA teacher, consistency loss (:mod:`~busseg.training.methods.mean_teacher`)
``dual_teacher``  the paper: static + EMA teachers, UEWF, AURCL
                  (:mod:`~busseg.training.methods.dual_teacher`)
``bcp``           bidirectional copy-paste, EMA teacher (:mod:`~busseg.training.methods.bcp`)
``unimatch``      weak-to-strong consistency, two strong views with CutMix, feature
                  perturbation (:mod:`~busseg.training.methods.unimatch`)
================  ==============================================================

What every method shares (the base class, :class:`Requirements`, the EMA-teacher base)
is in :mod:`~busseg.training.methods.base`. To add a method: a module with its class
(``name``, ``loss``, and ``requirements`` when it needs more than labeled batches), its
section dataclass when it has knobs (fields added to
:class:`~busseg.training.config.TrainConfig` as flat ``train.<knob>`` keys), and its
``methods`` entry merged below.
"""
from __future__ import annotations

from busseg.errors import ConfigError
from busseg.training.methods import bcp, dual_teacher, mean_teacher, supervised, unimatch
from busseg.training.methods.base import Batch, EMATeacherMethod, Requirements, StudentAverageMethod, TrainingMethod
from busseg.training.methods.bcp import BCP, BCPConfig
from busseg.training.methods.dual_teacher import DualTeacher, DualTeacherConfig
from busseg.training.methods.mean_teacher import MeanTeacher, MeanTeacherConfig
from busseg.training.methods.supervised import Supervised
from busseg.training.methods.unimatch import UniMatch, UniMatchConfig


def _merge(*registries: dict[str, type[TrainingMethod]]) -> dict[str, type[TrainingMethod]]:
    merged: dict[str, type[TrainingMethod]] = {}
    for registry in registries:
        for name, cls in registry.items():
            if name in merged:
                raise ValueError(f"training method {name!r} is registered twice")
            merged[name] = cls
    return dict(sorted(merged.items()))


METHODS: dict[str, type[TrainingMethod]] = _merge(
    supervised.methods, mean_teacher.methods, dual_teacher.methods, bcp.methods, unimatch.methods
)
"""Class of each training method, by ``train.method`` name."""


def get_method(name: str) -> type[TrainingMethod]:
    """Look a method up by name, listing the available ones when it is unknown."""
    if name not in METHODS:
        raise ConfigError("train.method", f"unknown method '{name}'; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = [
    "BCP",
    "METHODS",
    "BCPConfig",
    "Batch",
    "DualTeacher",
    "DualTeacherConfig",
    "EMATeacherMethod",
    "MeanTeacher",
    "MeanTeacherConfig",
    "Requirements",
    "StudentAverageMethod",
    "Supervised",
    "TrainingMethod",
    "UniMatch",
    "UniMatchConfig",
    "get_method",
]
