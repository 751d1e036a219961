"""Dual-teacher semi-supervised building blocks: UEWF fusion, AURCL loss and EMA teachers."""
from __future__ import annotations

from busseg.ssl.aurcl import (
    AURCL_VARIANTS,
    AURCLLoss,
    PrototypeAURCLLoss,
    aurcl_loss,
    prototype_contrast_loss,
    select_uncertain,
    uncertainty,
)
from busseg.ssl.ema import ema_update, freeze, make_ema_teacher
from busseg.ssl.uewf import binary_entropy, patch_smooth, uewf

__all__ = [
    "AURCL_VARIANTS",
    "AURCLLoss",
    "PrototypeAURCLLoss",
    "prototype_contrast_loss",
    "aurcl_loss",
    "binary_entropy",
    "ema_update",
    "freeze",
    "make_ema_teacher",
    "patch_smooth",
    "select_uncertain",
    "uewf",
    "uncertainty",
]
