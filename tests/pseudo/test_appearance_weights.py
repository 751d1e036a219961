"""The appearance labeler's weights file (issue 20): loading, bad files, labels as before."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busseg.errors import ConfigError, DataError
from busseg.pseudo.appearance import AppearanceLabeler, AppearanceOptions
from busseg.pseudo.appearance_weights import (
    APPEARANCE_FEATURES,
    DEFAULT_WEIGHTS,
    PRIOR_FIELDS,
    PRIOR_TERMS,
    load_appearance_weights,
    write_appearance_weights,
)

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models" / "appearance"
IN_SAMPLE = MODELS / "busbra_all_in_sample.json"
BUSBRA = REPO.parent / "shared" / "data" / "BUS-BRA"

# The constants src/busseg/pseudo/appearance.py held before issue 20 (fitted on all of BUS-BRA).
OLD_APPEARANCE_WEIGHTS = {
    "contrast": 11.913, "t_contrast": 6.385, "darkness": 4.708, "shape": 1.079, "solidity": 2.066,
    "aspect": 9.487, "level": 6.421, "hull": 5.605, "border": -17.822, "top": -0.001,
    "log_size_rel": 0.821, "log_size_rel_sq": -0.694,
}
OLD_SCORE_WEIGHTS = {
    "contrast": 12.432, "t_contrast": 4.916, "darkness": 7.993, "shape": 2.585, "solidity": 1.58,
    "aspect": 9.885, "level": 5.071, "hull": 5.407, "border": -10.66, "top": -1.817,
    "log_size_rel": 0.676, "log_size_rel_sq": -0.657,
    "prior_depth": 2.437, "prior_x": 2.587, "prior_size": 0.233,
}
OLD_DEFAULT_PRIOR = (0.33681, 0.119125, 0.055081, 0.06, -2.586174, 0.807775)
OLD_CONFIDENCE = (29.645, 7.192)


def in_sample_json() -> dict:
    return json.loads(IN_SAMPLE.read_text())


def write(path: Path, values: object) -> Path:
    path.write_text(json.dumps(values) if not isinstance(values, str) else values)
    return path


def test_the_committed_files_load_and_cover_the_features() -> None:
    names = sorted(p.name for p in MODELS.glob("*.json"))
    assert names == [
        "busbra_all_in_sample.json", "default.json", "loso_ge_logiq_5.json", "loso_ge_logiq_7.json",
        "loso_toshiba_aplio_300.json", "loso_u_systems.json",
    ]
    for path in MODELS.glob("*.json"):
        weights = load_appearance_weights(path)
        assert tuple(weights.appearance) == APPEARANCE_FEATURES
        assert tuple(weights.score) == (*APPEARANCE_FEATURES, *PRIOR_TERMS)
        assert weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert weights.fitted_on
    assert AppearanceOptions().weights == DEFAULT_WEIGHTS == "models/appearance/default.json"


def test_the_in_sample_file_holds_the_old_constants() -> None:
    weights = load_appearance_weights(IN_SAMPLE)
    assert dict(weights.appearance) == OLD_APPEARANCE_WEIGHTS
    assert dict(weights.score) == OLD_SCORE_WEIGHTS
    assert tuple(weights.default_prior[k] for k in PRIOR_FIELDS) == OLD_DEFAULT_PRIOR
    assert (weights.confidence_centre, weights.confidence_scale) == OLD_CONFIDENCE
    assert weights.appearance_bias == weights.score_bias == 0.0


def test_a_written_file_reads_back(tmp_path: Path) -> None:
    weights = load_appearance_weights(IN_SAMPLE)
    write_appearance_weights(tmp_path / "sub" / "w.json", weights)
    back = load_appearance_weights(tmp_path / "sub" / "w.json")
    assert back.to_json() == weights.to_json()


def _edited(edit) -> dict:
    values = in_sample_json()
    edit(values)
    return values


BAD_FILES = [
    ("not JSON", "{appearance", "not a JSON weights file"),
    ("not an object", [1, 2], "expected a JSON object"),
    ("missing key", _edited(lambda v: v.pop("score_weights")), "missing score_weights"),
    ("unknown key", _edited(lambda v: v.update(confidence_centr=1.0)), "unknown key(s) confidence_centr"),
    ("other format", _edited(lambda v: v.update(format="torch")), "format 'torch'"),
    ("newer version", _edited(lambda v: v.update(version=2)), "version 2"),
    ("a feature missing", _edited(lambda v: v["appearance_weights"].pop("hull")), "appearance_weights fitted for other features (missing hull)"),
    ("an unknown feature", _edited(lambda v: v["score_weights"].update(brightness=1.0)), "score_weights fitted for other features (unknown brightness)"),
    ("a weight not a number", _edited(lambda v: v["score_weights"].update(hull="5")), "score_weights.hull: expected a finite number"),
    ("NaN", _edited(lambda v: v.update(score_bias=float("nan"))), "score_bias: expected a finite number"),
    ("boolean", _edited(lambda v: v.update(appearance_bias=True)), "appearance_bias: expected a finite number"),
    ("scale 0", _edited(lambda v: v.update(confidence_scale=0)), "confidence_scale must be > 0"),
    ("prior spread 0", _edited(lambda v: v["default_prior"].update(depth_spread=0.0)), "default_prior.depth_spread must be > 0"),
    ("prior field missing", _edited(lambda v: v["default_prior"].pop("log_size")), "default_prior fitted for other features (missing log_size)"),
    ("fit not an object", _edited(lambda v: v.update(fit=[1])), "fit: expected an object"),
]


@pytest.mark.parametrize(("content", "problem"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_malformed_file_is_a_data_error_naming_it(tmp_path: Path, content: object, problem: str) -> None:
    path = write(tmp_path / "weights.json", content)
    with pytest.raises(DataError) as info:
        load_appearance_weights(path)
    assert info.value.path == path
    assert problem in info.value.problem
    with pytest.raises(DataError, match="weights.json"):  # the labeler reads the file it is given
        AppearanceLabeler(AppearanceOptions(weights=str(path)))


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_a_missing_file_is_a_data_error_naming_it(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.json"
    if kind == "folder":
        path.mkdir()
    with pytest.raises(DataError, match="pseudo.appearance.weights") as info:
        AppearanceLabeler(AppearanceOptions(weights=str(path)))
    assert info.value.path == path
    assert ("not found" if kind == "missing" else "is a folder") in info.value.problem


@pytest.mark.parametrize("key", ["confidence_centre", "confidence_scale"])
def test_the_moved_confidence_options_point_to_the_weights_file(key: str) -> None:
    import yaml

    from busseg.params_schema import validate_params
    from busseg.pseudo.registry import build_labeler

    with pytest.raises(ConfigError, match="lives in the weights file") as info:
        build_labeler("appearance", {"prompts": ["dark oval"], key: 1.0})
    assert info.value.key == f"pseudo.appearance.{key}"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pseudo"]["appearance"][key] = 1.0
    with pytest.raises(ConfigError, match="lives in the weights file") as info:
        validate_params(params)
    assert info.value.key == f"pseudo.appearance.{key}"


def test_the_weights_file_keys_the_resume_cache(tmp_path: Path) -> None:
    from busseg.pseudo.registry import input_files
    from busseg.pseudo.run import options_key

    first = write(tmp_path / "w.json", in_sample_json())
    options = {"prompts": ["dark oval"], "weights": str(first)}
    before = options_key("appearance", options, input_files("appearance", options))
    write(first, _edited(lambda v: v.update(confidence_centre=30.0)))  # same path, other content
    after = options_key("appearance", options, input_files("appearance", options))
    assert before != after
    assert input_files("appearance", {"prompts": ["dark oval"]}) == [Path(DEFAULT_WEIGHTS)]
    assert input_files("grounded_sam", {}) == []


def test_other_weights_change_the_labels() -> None:
    from .test_appearance import lesion_image

    image, _ = lesion_image((160, 200), (90, 70), (30, 20), seed=7)
    base = load_appearance_weights(IN_SAMPLE)
    shifted = type(base)(**{**base.__dict__, "confidence_centre": base.confidence_centre + 20.0})
    a = AppearanceLabeler(weights=base).label(image)
    b = AppearanceLabeler(weights=shifted).label(image)
    assert np.array_equal(a.mask, b.mask) and b.score < a.score  # same choice, lower confidence


# Labels of ten BUS-BRA images by busseg before issue 20 (constants in appearance.py):
# sha1 of the packed mask (12 hex digits) and the score, labeled one by one (the default
# prior) and as one dataset (the prior estimated from their own confident labels).
BEFORE_SINGLE = [
    ("43193e7f4ee8", 0.632178), ("1c3fdcf29345", 0.431272), ("6b9cb1cf6c96", 0.608105), ("d1f670d9be28", 0.83703),
    ("26709387ec41", 0.477033), ("bfb6fc6f256f", 0.491993), ("9c5106cefb6a", 0.384089), ("d77d62bc4839", 0.578404),
    ("493616251648", 0.254167), ("70e01c6efa04", 0.079477),
]
BEFORE_DATASET = [
    ("43193e7f4ee8", 0.686346), ("1c3fdcf29345", 0.465729), ("285b594e9608", 0.629977), ("d1f670d9be28", 0.850521),
    ("26709387ec41", 0.49478), ("bfb6fc6f256f", 0.649653), ("33c146d777fe", 0.333486), ("d77d62bc4839", 0.707473),
    ("06d494762005", 0.417669), ("70e01c6efa04", 0.098302),
]


@pytest.mark.skipif(not (BUSBRA / "images").is_dir(), reason="BUS-BRA not present at ../shared/data")
def test_the_in_sample_file_gives_the_labels_of_before() -> None:
    paths = sorted((BUSBRA / "images").glob("bus_*.png"))[::150][:10]
    images = [np.asarray(Image.open(p).convert("L")) for p in paths]
    labeler = AppearanceLabeler(AppearanceOptions(weights=str(IN_SAMPLE)))

    def fingerprint(label) -> tuple[str, float]:
        assert label.valid
        return hashlib.sha1(np.packbits(label.mask).tobytes()).hexdigest()[:12], round(float(label.score), 6)

    assert [fingerprint(labeler.label(image)) for image in images] == BEFORE_SINGLE
    analyses = [labeler.analyse(image) for image in images]
    prior = labeler.fit_prior(analyses)
    assert [fingerprint(labeler.decide(a, prior)) for a in analyses] == BEFORE_DATASET
