"""Tests of the synthetic breast-ultrasound generator: reproducibility, ground truth, class mix,
option checks, and that the segmentation problem is neither trivial nor hopeless."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from busseg.config import from_dict
from busseg.data.synthetic import (
    BENIGN_SHAPES,
    LABELS,
    MALIGNANT_SHAPES,
    SyntheticCase,
    SyntheticOptions,
    case_seed,
    generate_case,
    generate_dataset,
)
from busseg.errors import ConfigError

SMALL = SyntheticOptions(size=64)


def _same(a: SyntheticCase, b: SyntheticCase) -> bool:
    return (
        a.image.tobytes() == b.image.tobytes()
        and a.mask.tobytes() == b.mask.tobytes()
        and (a.label, a.shape) == (b.label, b.shape)
    )


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (prediction & truth).sum() / total)


@pytest.fixture(scope="module")
def lesion_cases() -> list[SyntheticCase]:
    """60 lesion images at the default size (128 px) and options."""
    cases = [case for case in generate_dataset(90, seed=7) if case.label != "normal"]
    assert len(cases) >= 60
    return cases[:60]


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("size", [32, 128])
def test_same_seed_gives_identical_bytes(size: int) -> None:
    options = SyntheticOptions(size=size, mark_probability=1.0)
    assert _same(generate_case(3, options), generate_case(3, options))


def test_different_seeds_differ() -> None:
    first, second = generate_case(1, SMALL), generate_case(2, SMALL)
    assert first.image.tobytes() != second.image.tobytes()


def test_dataset_cases_are_reproducible_on_their_own() -> None:
    cases = list(generate_dataset(5, seed=11, options=SMALL))
    assert len(cases) == 5
    assert _same(cases[3], generate_case(case_seed(11, 3), SMALL))
    # A shorter dataset is a prefix of a longer one.
    assert all(_same(a, b) for a, b in zip(generate_dataset(3, seed=11, options=SMALL), cases))
    assert len({case.image.tobytes() for case in cases}) == 5


def test_case_seed_follows_seed_sequence_spawn() -> None:
    children = np.random.SeedSequence(42).spawn(4)
    expected = [int(child.generate_state(1, dtype=np.uint64)[0]) for child in children]
    assert [case_seed(42, i) for i in range(4)] == expected


# --------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("size", [32, 64, 256])
def test_dtype_and_shape(size: int) -> None:
    case = generate_case(5, SyntheticOptions(size=size, normal_fraction=0.0))
    assert case.image.dtype == np.uint8 and case.image.shape == (size, size)
    assert case.mask.dtype == np.bool_ and case.mask.shape == (size, size)
    assert case.image.std() > 10  # not blank or saturated


@pytest.mark.parametrize(
    "options",
    [SMALL, SyntheticOptions(size=32, normal_fraction=0.3, lesion_radius=(0.01, 0.02))],
    ids=["64px", "32px-tiny-lesions"],
)
def test_mask_is_empty_exactly_for_normal_images(options: SyntheticOptions) -> None:
    for case in generate_dataset(60, seed=3, options=options):
        assert case.label in LABELS
        assert (case.label == "normal") == (not case.mask.any())
        assert (case.label == "normal") == (case.shape == "none")


def test_shapes_match_classes() -> None:
    seen = set()
    for case in generate_dataset(80, seed=4, options=SMALL):
        if case.label == "benign":
            assert case.shape in BENIGN_SHAPES
        elif case.label == "malignant":
            assert case.shape in MALIGNANT_SHAPES
        seen.add(case.shape)
    assert seen == {*BENIGN_SHAPES, *MALIGNANT_SHAPES, "none"}


def test_class_fractions_are_respected() -> None:
    options = SyntheticOptions(size=32, normal_fraction=0.2, malignant_fraction=0.4)
    labels = [case.label for case in generate_dataset(240, seed=5, options=options)]
    normal = labels.count("normal") / len(labels)
    lesions = len(labels) - labels.count("normal")
    malignant = labels.count("malignant") / lesions
    # About three binomial standard deviations.
    assert abs(normal - 0.2) < 3 * np.sqrt(0.2 * 0.8 / len(labels))
    assert abs(malignant - 0.4) < 3 * np.sqrt(0.4 * 0.6 / lesions)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [({"normal_fraction": 1.0}, {"normal"}), ({"normal_fraction": 0.0, "malignant_fraction": 0.0}, {"benign"})],
)
def test_extreme_fractions(changes: dict, expected: set[str]) -> None:
    options = dataclasses.replace(SyntheticOptions(size=32), **changes)
    assert {case.label for case in generate_dataset(20, seed=6, options=options)} == expected


def test_marks_are_bright_and_few() -> None:
    """Marks are drawn last, so the same seed with and without them differs only in the marks."""
    for seed in range(6):
        plain = generate_case(seed, SyntheticOptions(mark_probability=0.0))
        marked = generate_case(seed, SyntheticOptions(mark_probability=1.0))
        assert np.array_equal(plain.mask, marked.mask)
        diff = plain.image != marked.image
        assert 0 < diff.mean() < 0.05
        assert marked.image[diff].max() >= 200
        assert marked.image[diff].mean() > plain.image[diff].mean() + 30  # anti-aliased text blends


# --------------------------------------------------------------------------- difficulty


def test_lesions_are_darker_than_their_surroundings(lesion_cases: list[SyntheticCase]) -> None:
    gaps = []
    for case in lesion_cases:
        ring = ndimage.binary_dilation(case.mask, iterations=6) & ~ndimage.binary_dilation(case.mask, iterations=2)
        gaps.append(case.image[ring].mean() - case.image[case.mask].mean())
    gaps = np.array(gaps)
    assert gaps.mean() > 30  # grey levels; about 60 measured
    assert np.mean(gaps > 0) >= 0.9  # a few nearly isoechoic lesions are allowed


def _otsu_largest_dark(image: np.ndarray) -> np.ndarray:
    """Global baseline: Otsu threshold of the smoothed image, largest dark component."""
    smooth = ndimage.gaussian_filter(image.astype(float), 2.0 * image.shape[0] / 128)
    labels, count = ndimage.label(smooth < threshold_otsu(smooth))
    if count == 0:
        return np.zeros(image.shape, dtype=bool)
    sizes = ndimage.sum_labels(np.ones(image.shape), labels, range(1, count + 1))
    return labels == 1 + int(np.argmax(sizes))


def _dark_blob(image: np.ndarray) -> np.ndarray:
    """Local baseline: candidates darker than their neighbourhood, best compact, central,
    mid-depth blob."""
    n = image.shape[0]
    scale = n / 128
    smooth = ndimage.gaussian_filter(image.astype(float), 2.5 * scale)
    contrast = ndimage.gaussian_filter(image.astype(float), 16 * scale) - smooth
    candidates = ndimage.binary_opening(contrast > max(8.0, 0.8 * contrast.std()))
    labels, count = ndimage.label(candidates)
    best, best_score = np.zeros(image.shape, dtype=bool), -np.inf
    for index in range(1, count + 1):
        blob = labels == index
        ys, xs = np.nonzero(blob)
        if ys.size < 12 * scale**2:
            continue
        fill = ys.size / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
        prior = np.exp(-(((ys.mean() / n - 0.45) / 0.25) ** 2) - ((xs.mean() / n - 0.5) / 0.35) ** 2)
        touches_border = min(ys.min(), xs.min()) == 0 or max(ys.max(), xs.max()) == n - 1
        score = contrast[blob].mean() * np.sqrt(ys.size) * fill * prior * (0.3 if touches_border else 1.0)
        if score > best_score:
            best, best_score = blob, score
    return best


def test_one_global_threshold_does_not_solve_it(lesion_cases: list[SyntheticCase]) -> None:
    """The largest dark region is usually fat, shadow or chest wall, not the lesion: measured
    mean Dice 0.14-0.20 over seeds (0.16 on BUS-BRA and 0.25 on STU with the same baseline)."""
    dice = np.mean([_dice(_otsu_largest_dark(case.image), case.mask) for case in lesion_cases])
    assert 0.08 < dice < 0.35


def test_a_local_blob_detector_finds_most_but_not_all(lesion_cases: list[SyntheticCase]) -> None:
    """Measured mean Dice 0.65-0.71, 73-87 % found (0.52 / 64 % on BUS-BRA, 0.67 / 83 % on STU)."""
    dice = np.array([_dice(_dark_blob(case.image), case.mask) for case in lesion_cases])
    assert 0.5 < dice.mean() < 0.85
    assert 0.6 <= np.mean(dice > 0.5) <= 0.95


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"size": 16}, "size"),
        ({"size": 64.0}, "size"),
        ({"normal_fraction": 1.5}, "normal_fraction"),
        ({"malignant_fraction": -0.1}, "malignant_fraction"),
        ({"mark_probability": "often"}, "mark_probability"),
        ({"lesion_contrast_db": (10.0, 5.0)}, "lesion_contrast_db"),
        ({"lesion_radius": (0.1,)}, "lesion_radius"),
        ({"gland_lobules": (0.5, 2)}, "gland_lobules"),
    ],
)
def test_bad_options_name_the_key(changes: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        SyntheticOptions(**changes)
    assert error.value.key == key


@pytest.mark.parametrize(("count", "seed", "key"), [(0, 1, "count"), (2, -1, "seed"), (2.5, 1, "count")])
def test_bad_dataset_arguments_name_the_key(count: int, seed: int, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        generate_dataset(count, seed, SMALL)  # fails at the call, before iteration
    assert error.value.key == key


def test_options_build_from_a_params_section() -> None:
    options = from_dict(SyntheticOptions, {"size": 64, "lesion_radius": [0.1, 0.15]}, "datasets.synthetic")
    assert options.size == 64 and options.lesion_radius == (0.1, 0.15)
    with pytest.raises(ConfigError, match="datasets.synthetic.sise"):
        from_dict(SyntheticOptions, {"sise": 64}, "datasets.synthetic")
