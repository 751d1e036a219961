"""The ``appearance`` labeler's fitted constants, read from a JSON weights file.

Everything :class:`busseg.pseudo.appearance.AppearanceLabeler` learned from ground truth
lives in one file (``pseudo.appearance.weights``, default :data:`DEFAULT_WEIGHTS`), so
that a held-out target can be labeled by weights that never saw it: the
linear scores' weights and biases, the prior used when a dataset is too small to estimate
its own, and the map from the best candidate's score to a confidence. The files are
written by ``benchmarks/fit_appearance.py fit``; ``models/appearance/`` holds the
committed ones (see its README).

Format (JSON object)::

    {
      "format": "busseg-appearance-weights", "version": 1,
      "appearance_weights": {<feature>: number, ...},   # exactly APPEARANCE_FEATURES
      "appearance_bias": number,
      "score_weights": {<feature or prior term>: number, ...},  # APPEARANCE_FEATURES + PRIOR_TERMS
      "score_bias": number,
      "default_prior": {"depth", "depth_spread", "offset_x", "offset_x_spread",
                        "log_size", "log_size_spread": number},
      "confidence_centre": number, "confidence_scale": number > 0,
      "fitted_on": "free text", "fit": {free metadata}        # optional
    }

A missing, malformed or other-feature-set file is a :class:`busseg.errors.DataError`
naming the file (the stages print it as one ``error: <file>: <problem>`` line).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busseg.errors import DataError

DEFAULT_WEIGHTS = "models/appearance/default.json"
"""The committed default weights (relative to the project root, as every params path)."""

FORMAT = "busseg-appearance-weights"
VERSION = 1

# Features of a candidate that say how it looks, wherever it is (AppearanceLabeler.describe).
APPEARANCE_FEATURES: tuple[str, ...] = (
    "contrast",  # ring median minus inside mean, in units of the image's std
    "t_contrast",  # the same, in units of the pooled std of inside and ring
    "darkness",  # image median minus inside mean, in image std
    "shape",  # fit to the prompts' shape words
    "solidity",
    "aspect",  # minor / major axis
    "level",  # threshold quantile
    "hull",  # the convex-hull variant of a component
    "border",  # number of tissue sides touched
    "top",  # touching the top of the tissue: skin and subcutaneous fat
    "log_size_rel",  # log of the area over the tissue's area: lesions are neither specks
    "log_size_rel_sq",  # nor half the scan (a broad preference; the dataset prior adapts it)
)
# Terms that compare a candidate with the dataset's lesions (DatasetPrior.terms).
PRIOR_TERMS: tuple[str, ...] = ("prior_depth", "prior_x", "prior_size")
# The numbers of a DatasetPrior, as DatasetPrior.as_dict writes them.
PRIOR_FIELDS: tuple[str, ...] = ("depth", "depth_spread", "offset_x", "offset_x_spread", "log_size", "log_size_spread")

_REQUIRED = (
    "format", "version", "appearance_weights", "appearance_bias", "score_weights", "score_bias",
    "default_prior", "confidence_centre", "confidence_scale",
)
_OPTIONAL = ("fitted_on", "fit")


@dataclass(frozen=True)
class AppearanceWeights:
    """The labeler's fitted constants (see the module docs for their meaning).

    ``appearance`` weighs :data:`APPEARANCE_FEATURES` (the first pass, before the dataset
    prior is known); ``score`` weighs them and :data:`PRIOR_TERMS` (the final choice).
    The scale of the scores is arbitrary: only their order within an image picks the
    lesion; across images, ``sigmoid((z - confidence_centre) / confidence_scale)`` is the
    label's confidence. ``default_prior`` holds the :data:`PRIOR_FIELDS` of the prior used
    for single images and datasets too small to estimate their own. ``path`` and
    ``sha256`` say where the weights came from (the resume caches key on the digest).
    """

    appearance: Mapping[str, float]
    appearance_bias: float
    score: Mapping[str, float]
    score_bias: float
    default_prior: Mapping[str, float]
    confidence_centre: float
    confidence_scale: float
    fitted_on: str = ""
    fit: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""
    sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        """The file's content (:func:`load_appearance_weights` reads it back; ``path`` and
        ``sha256`` are properties of the file, not stored in it)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "fitted_on": self.fitted_on,
            "appearance_weights": {k: float(self.appearance[k]) for k in APPEARANCE_FEATURES},
            "appearance_bias": float(self.appearance_bias),
            "score_weights": {k: float(self.score[k]) for k in (*APPEARANCE_FEATURES, *PRIOR_TERMS)},
            "score_bias": float(self.score_bias),
            "default_prior": {k: float(self.default_prior[k]) for k in PRIOR_FIELDS},
            "confidence_centre": float(self.confidence_centre),
            "confidence_scale": float(self.confidence_scale),
            "fit": dict(self.fit),
        }


def write_appearance_weights(path: str | Path, weights: AppearanceWeights) -> None:
    """Write ``weights`` as a weights file (indented JSON, stable key order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(weights.to_json(), indent=1) + "\n")


def load_appearance_weights(path: str | Path) -> AppearanceWeights:
    """Read and check a weights file; any problem is a :class:`DataError` naming ``path``.

    A relative ``path`` is relative to the working directory (the project root in the
    pipeline's stages).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a weights file" if path.is_dir() else "weights file not found"
        raise DataError(path, f"{what} (pseudo.appearance.weights; fit one with benchmarks/fit_appearance.py fit)")
    raw = path.read_bytes()
    try:
        values = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not a JSON weights file: {exc}") from None
    return _parse(values, path, hashlib.sha256(raw).hexdigest())


def _parse(values: Any, path: Path, digest: str) -> AppearanceWeights:
    """The checked :class:`AppearanceWeights` of a parsed weights file."""
    if not isinstance(values, dict):
        raise DataError(path, f"expected a JSON object of weights, got {type(values).__name__}")
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        raise DataError(path, f"not an appearance weights file: missing {', '.join(missing)}")
    unknown = sorted(set(values) - {*_REQUIRED, *_OPTIONAL})
    if unknown:
        raise DataError(path, f"unknown key(s) {', '.join(unknown)}; a weights file has {', '.join((*_REQUIRED, *_OPTIONAL))}")
    if values["format"] != FORMAT or values["version"] != VERSION:
        raise DataError(
            path, f"format {values['format']!r} version {values['version']!r}; this busseg reads {FORMAT!r} version {VERSION}"
        )
    appearance = _weights(values["appearance_weights"], APPEARANCE_FEATURES, "appearance_weights", path)
    score = _weights(values["score_weights"], (*APPEARANCE_FEATURES, *PRIOR_TERMS), "score_weights", path)
    prior = _weights(values["default_prior"], PRIOR_FIELDS, "default_prior", path)
    for spread in ("depth_spread", "offset_x_spread", "log_size_spread"):
        if prior[spread] <= 0:
            raise DataError(path, f"default_prior.{spread} must be > 0, got {prior[spread]}")
    scale = _number(values["confidence_scale"], "confidence_scale", path)
    if scale <= 0:
        raise DataError(path, f"confidence_scale must be > 0, got {scale}")
    fit = values.get("fit", {})
    if not isinstance(fit, dict):
        raise DataError(path, f"fit: expected an object of fit metadata, got {fit!r}")
    return AppearanceWeights(
        appearance=appearance,
        appearance_bias=_number(values["appearance_bias"], "appearance_bias", path),
        score=score,
        score_bias=_number(values["score_bias"], "score_bias", path),
        default_prior=prior,
        confidence_centre=_number(values["confidence_centre"], "confidence_centre", path),
        confidence_scale=scale,
        fitted_on=str(values.get("fitted_on", "")),
        fit=fit,
        path=str(path),
        sha256=digest,
    )


def _weights(values: Any, names: tuple[str, ...], key: str, path: Path) -> dict[str, float]:
    """``{name: number}`` with exactly ``names`` as keys, in their order."""
    if not isinstance(values, dict):
        raise DataError(path, f"{key}: expected an object of name -> number, got {values!r}")
    missing = [n for n in names if n not in values]
    extra = sorted(set(values) - set(names))
    if missing or extra:
        parts = [f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(extra)}" if extra else ""]
        raise DataError(
            path,
            f"{key} fitted for other features ({'; '.join(p for p in parts if p)}); this busseg's are "
            f"{', '.join(names)}: fit the weights again (benchmarks/fit_appearance.py)",
        )
    return {n: _number(values[n], f"{key}.{n}", path) for n in names}


def _number(value: Any, key: str, path: Path) -> float:
    """A finite JSON number as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(path, f"{key}: expected a finite number, got {value!r}")
    return float(value)
