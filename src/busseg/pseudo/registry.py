"""Pseudo-label backends by name (``pseudo.backend``)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from busseg.config import from_dict, join_key
from busseg.errors import ConfigError
from busseg.pseudo.base import PseudoLabeler


def _appearance(options: Mapping[str, Any]) -> PseudoLabeler:
    from busseg.pseudo.appearance import AppearanceLabeler

    return AppearanceLabeler.from_section(options)


def _grounded_sam(options: Mapping[str, Any]) -> PseudoLabeler:
    # Imported lazily: groundingdino and transformers take seconds to import.
    from busseg.pseudo.grounded_sam import GroundedSamLabeler, GroundedSamOptions

    return GroundedSamLabeler(from_dict(GroundedSamOptions, options, "pseudo.grounded_sam"))


BACKENDS: dict[str, Callable[[Mapping[str, Any]], PseudoLabeler]] = {
    "appearance": _appearance,
    "grounded_sam": _grounded_sam,
}


TWO_PASS_BACKENDS = frozenset({"appearance"})
"""Backends that adapt to the dataset (:class:`busseg.pseudo.base.TwoPassLabeler`)."""

TORCH_FREE_BACKENDS = frozenset({"appearance"})
"""Backends that run no network: their stages need not load torch (nor runtime.threads/device)."""

SHARED_KEYS = ("prompts", "min_area_fraction")
"""Options every backend receives from the ``pseudo`` section itself (``pseudo.prompts``)."""


def input_files(backend: str, options: Mapping[str, Any]) -> list[Path]:
    """Files besides the images whose content a backend's labels depend on.

    The ``appearance`` backend's weights file (``pseudo.appearance.weights``): its content
    hash enters the labeling stage's resume key, so that first passes scored with other
    weights are never reused. Model checkpoints of ``grounded_sam`` are keyed by path (they
    are large, and a changed checkpoint is a new file name in practice).
    """
    if backend == "appearance":
        from busseg.pseudo.appearance_weights import DEFAULT_WEIGHTS

        return [Path(str(options.get("weights", DEFAULT_WEIGHTS)))]
    return []


def build_labeler(backend: str, options: Mapping[str, Any]) -> PseudoLabeler:
    """Build backend ``backend`` from its options (prompts, min_area_fraction and its own keys).

    A backend's own checks know only the bare option name (``working_size``); errors raised
    while building it name the full key, ``pseudo.<backend>.working_size`` (or
    ``pseudo.prompts`` for the options shared by every backend).
    """
    if backend not in BACKENDS:
        raise ConfigError("pseudo.backend", f"unknown backend '{backend}'; available: {', '.join(sorted(BACKENDS))}")
    try:
        return BACKENDS[backend](options)
    except ConfigError as exc:
        if exc.key.startswith("pseudo.") or exc.key.startswith("runtime."):
            raise
        section = "pseudo" if exc.key.split(".")[0] in SHARED_KEYS else f"pseudo.{backend}"
        raise ConfigError(join_key(section, exc.key), exc.problem) from None
