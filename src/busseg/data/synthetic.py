"""A seeded generator of synthetic breast-ultrasound (BUS) images with exact lesion masks.

The project's default pipeline runs on these images, so they imitate what makes real BUS
segmentation hard rather than just drawing a dark disk on noise:

* **Anatomy.** From the top: a bright skin line; subcutaneous fat made of dark fat lobules
  separated by bright Cooper's ligaments; bright, horizontally streaked fibroglandular tissue
  that holds a few more fat lobules; sometimes the retromammary fat, the striated pectoral
  muscle and a dark chest wall with a rib shadow at the bottom.
* **Lesions.** Hypoechoic masses of five shapes: oval, round and lobulated (benign; some are
  anechoic cysts), irregular and spiculated (malignant, often with an echogenic halo and a
  heterogeneous interior). Their contrast and margin blur vary, so some are barely visible.
* **Acoustics.** Posterior acoustic enhancement (mostly benign) or shadowing (mostly
  malignant), lateral edge shadows, depth-dependent attenuation, a noise floor.
* **Image formation.** Scatterers with Gaussian complex amplitudes are filtered with an
  anisotropic point-spread function (coarser laterally, as in real probes), so the envelope
  is Rayleigh-distributed, spatially correlated speckle; specular reflectors (skin, ligaments,
  fascia) are coherent and stay continuous lines; the envelope is log-compressed to 8 bit.
* **Burned-in marks.** Occasionally caliper crosses next to the lesion, text, depth ticks.

Dark fat lobules, shadows, the dark chest wall and low-contrast lesions make a single global
threshold fail often, while a local-contrast blob detector still finds most lesions.

Geometry is drawn in normalised coordinates (depth ``y`` and lateral ``x`` in [0, 1]) and
pixel-scale effects (speckle grain, line width, margin blur) scale with ``size``, so images look
alike at every size; the same seed still gives a different scene at another size.

One CPU core makes about 60 images per second at 128 px and 15 at 256 px.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft
from scipy import ndimage

from busseg.config import check_range
from busseg.errors import ConfigError

LABELS = ("benign", "malignant", "normal")
BENIGN_SHAPES = ("oval", "round", "lobulated")
MALIGNANT_SHAPES = ("irregular", "spiculated")
SHAPES = (*BENIGN_SHAPES, *MALIGNANT_SHAPES, "none")

# Relative frequencies of the shapes within a class (BI-RADS: benign masses are mostly
# oval/circumscribed, malignant ones irregular, a good part of them spiculated).
_BENIGN_SHAPE_P = (0.45, 0.2, 0.35)
_MALIGNANT_SHAPE_P = (0.6, 0.4)

_TEXT = ("MAMA DIR", "MAMA ESQ", "RT BREAST", "LT BREAST", "RAD", "ARAD", "TRANS", "LONG", "14L5", "GE")


@dataclass(frozen=True)
class SyntheticOptions:
    """How synthetic cases are drawn.

    ``size``: side of the square images in pixels (>= 32).
    ``normal_fraction``: probability that a case has no lesion.
    ``malignant_fraction``: probability that a lesion case is malignant.
    ``mark_probability``: probability that burned-in marks (calipers, text, depth ticks) appear.
    ``lesion_contrast_db``: range of lesion darkness below glandular tissue, in dB of echo
    intensity (simple cysts are always anechoic); low values give barely visible lesions.
    ``lesion_radius``: range of the lesion's mean semi-axis as a fraction of ``size``.
    ``gland_lobules``: range (inclusive) of the number of dark fat lobules inside the glandular
    layer, the distractors that look most like lesions.
    """

    size: int = 128
    normal_fraction: float = 0.1
    malignant_fraction: float = 0.35
    mark_probability: float = 0.3
    lesion_contrast_db: tuple[float, float] = (4.0, 20.0)
    lesion_radius: tuple[float, float] = (0.06, 0.2)
    gland_lobules: tuple[int, int] = (0, 3)

    def __post_init__(self) -> None:
        validate_options(self)


@dataclass(frozen=True)
class SyntheticCase:
    """One synthetic image with its ground truth.

    ``image`` is uint8 (size, size); ``mask`` is bool (size, size) and all False for normal
    images; ``label`` is one of :data:`LABELS`; ``shape`` one of :data:`SHAPES`.
    """

    image: np.ndarray
    mask: np.ndarray
    label: str
    shape: str


def validate_options(options: SyntheticOptions) -> None:
    """Raise :class:`~busseg.errors.ConfigError` naming the first out-of-range option."""
    if isinstance(options.size, bool) or not isinstance(options.size, int) or options.size < 32:
        raise ConfigError("size", f"must be an integer >= 32, got {options.size!r}")
    for key in ("normal_fraction", "malignant_fraction", "mark_probability"):
        value = getattr(options, key)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ConfigError(key, f"must be a number in [0, 1], got {value!r}")
        check_range(key, float(value), 0.0, 1.0)
    _check_pair("lesion_contrast_db", options.lesion_contrast_db, 0.0, 40.0)
    _check_pair("lesion_radius", options.lesion_radius, 0.01, 0.4)
    _check_pair("gland_lobules", options.gland_lobules, 0, 20)
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in options.gland_lobules):
        raise ConfigError("gland_lobules", f"must be two integers, got {options.gland_lobules!r}")


def _check_pair(key: str, pair: tuple[float, float], low: float, high: float) -> None:
    """Check that ``pair`` is an ordered (min, max) pair inside [low, high]."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ConfigError(key, f"must be a pair [min, max], got {pair!r}")
    for value in pair:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ConfigError(key, f"must hold numbers, got {pair!r}")
        check_range(key, float(value), low, high)
    if pair[0] > pair[1]:
        raise ConfigError(key, f"min must not exceed max, got {pair!r}")


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of :func:`generate_dataset` with base ``seed``.

    Equal to the state of ``numpy.random.SeedSequence(seed).spawn(index + 1)[index]``, so any
    single case can be regenerated with ``generate_case(case_seed(seed, index))``.
    """
    _check_seed("seed", seed)
    _check_seed("index", index)
    child = np.random.SeedSequence(seed, spawn_key=(index,))
    return int(child.generate_state(1, dtype=np.uint64)[0])


def generate_dataset(
    count: int, seed: int, options: SyntheticOptions = SyntheticOptions()
) -> Iterator[SyntheticCase]:
    """Yield ``count`` cases; case ``i`` is ``generate_case(case_seed(seed, i), options)``.

    Each case depends only on ``(seed, i)``, so it is reproducible on its own and a longer
    dataset starts with the cases of a shorter one.
    """
    # Checked here, not in the generator, so that bad arguments fail at the call.
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ConfigError("count", f"must be an integer >= 1, got {count!r}")
    _check_seed("seed", seed)
    validate_options(options)
    return (generate_case(case_seed(seed, index), options) for index in range(int(count)))


def generate_case(seed: int, options: SyntheticOptions = SyntheticOptions()) -> SyntheticCase:
    """Draw one synthetic BUS image, its lesion mask, class label and shape from ``seed``."""
    _check_seed("seed", seed)
    validate_options(options)
    rng = np.random.default_rng(seed)
    label, shape = _draw_class(rng, options)
    grid = _Grid(options.size)
    scene = _anatomy(rng, grid, options)
    mask = np.zeros((grid.n, grid.n), dtype=bool)
    lesion: _Lesion | None = None
    if label != "normal":
        lesion = _draw_lesion(rng, label, shape, scene, options)
        mask = _add_lesion(rng, scene, grid, lesion)
    _add_attenuation(rng, scene, grid)
    image = _form_image(rng, scene, grid)
    if rng.random() < options.mark_probability:
        _add_marks(rng, image, mask, lesion, grid)
    return SyntheticCase(image=image, mask=mask, label=label, shape=shape)


# --------------------------------------------------------------------------- helpers


def _check_seed(key: str, seed: int) -> None:
    """Seeds must be non-negative integers (numpy's SeedSequence rejects the rest)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(key, f"must be a non-negative integer, got {seed!r}")


class _Grid:
    """Pixel-centre coordinates in normalised units: ``y`` is depth, ``x`` lateral, both in [0, 1]."""

    def __init__(self, size: int) -> None:
        self.n = size
        self.scale = size / 128.0  # pixel sizes of physical effects are tuned at 128 px
        centres = (np.arange(size, dtype=np.float64) + 0.5) / size
        self.y, self.x = np.meshgrid(centres, centres, indexing="ij")
        self.line = centres


class _Scene:
    """What the image is formed from: echo intensity in dB (0 dB = glandular tissue) and a
    coherent (specular) amplitude, plus layer boundaries needed to place lesions."""

    def __init__(self, n: int) -> None:
        self.echo_db = np.zeros((n, n))
        self.specular = np.zeros((n, n))
        self.fat_end = np.zeros(n)
        self.gland_end = np.zeros(n)


@dataclass(frozen=True)
class _Lesion:
    """Geometry and appearance of one lesion (normalised units)."""

    label: str
    shape: str
    centre: tuple[float, float]  # (y, x)
    axes: tuple[float, float]  # semi-axes (along the orientation, across it)
    angle: float  # orientation of the first axis, radians from horizontal
    harmonics: tuple[tuple[int, float, float], ...]  # (order, amplitude, phase) of r(theta)
    spikes: tuple[tuple[float, float, float], ...]  # (angle, width, height) of spicules
    contrast_db: float
    margin_px: float  # blur of the margin in pixels at 128 px


def _draw_class(rng: np.random.Generator, options: SyntheticOptions) -> tuple[str, str]:
    """Pick the class label and lesion shape."""
    if rng.random() < options.normal_fraction:
        return "normal", "none"
    if rng.random() < options.malignant_fraction:
        return "malignant", str(rng.choice(MALIGNANT_SHAPES, p=_MALIGNANT_SHAPE_P))
    return "benign", str(rng.choice(BENIGN_SHAPES, p=_BENIGN_SHAPE_P))


def _smooth_noise(rng: np.random.Generator, n: int, sigma: tuple[float, float]) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field smoothed with ``sigma`` (pixels, y/x).

    Filtering in the Fourier domain costs the same for every ``sigma`` (the field wraps around).
    """
    spectrum = scipy.fft.rfft2(rng.standard_normal((n, n), dtype=np.float32))
    ky2, kx2 = _squared_frequencies(n, real=True)
    spectrum *= np.exp(-2 * np.pi**2 * (sigma[0] ** 2 * ky2 + sigma[1] ** 2 * kx2))
    field = scipy.fft.irfft2(spectrum, s=(n, n)).astype(np.float64)
    return field / (field.std() + 1e-12)


@functools.lru_cache(maxsize=8)
def _squared_frequencies(n: int, real: bool) -> tuple[np.ndarray, np.ndarray]:
    """Squared FFT frequencies (cycles per pixel) along y and x, shaped to broadcast; the
    x axis is halved for real FFTs. Cached: every image of a dataset has the same size."""
    ky = np.fft.fftfreq(n).astype(np.float32)[:, None]
    kx = (np.fft.rfftfreq(n) if real else np.fft.fftfreq(n)).astype(np.float32)[None, :]
    squared = (ky**2, kx**2)
    for array in squared:
        array.setflags(write=False)  # shared by all callers
    return squared


def _smooth_curve(
    rng: np.random.Generator, grid: _Grid, base: float, amplitude: float, wavelength: float
) -> np.ndarray:
    """A random smooth curve ``y(x)`` around ``base`` that varies by about ``amplitude``."""
    curve = ndimage.gaussian_filter1d(rng.standard_normal(grid.n), wavelength * grid.n / 4, mode="wrap")
    return base + amplitude * curve / (curve.std() + 1e-12)


def _at(curve: np.ndarray, x: float) -> float:
    """Value of a per-column curve at normalised lateral position ``x``."""
    return float(np.interp(x, (np.arange(curve.size) + 0.5) / curve.size, curve))


def _ellipse(
    grid: _Grid, centre: tuple[float, float], axes: tuple[float, float], angle: float
) -> np.ndarray:
    """Normalised elliptical radius: < 1 inside the ellipse."""
    dy, dx = grid.y - centre[0], grid.x - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    u = (dx * c + dy * s) / axes[0]
    v = (-dx * s + dy * c) / axes[1]
    return np.hypot(u, v)


def _soft_inside(distance_px: np.ndarray, width_px: float) -> np.ndarray:
    """A soft indicator that is 0.5 exactly on the boundary (``distance_px`` > 0 inside)."""
    return 1.0 / (1.0 + np.exp(-np.clip(distance_px / max(width_px, 1e-3), -30, 30)))


def _draw_line(grid: _Grid, ys: np.ndarray, xs: np.ndarray, width_px: float) -> np.ndarray:
    """A thin anti-aliased polyline (normalised points) as a float map in [0, 1]."""
    canvas = np.zeros((grid.n, grid.n), dtype=np.uint8)
    shift = 4  # cv2 sub-pixel precision: coordinates in 1/16 px
    points = np.stack([xs * grid.n - 0.5, ys * grid.n - 0.5], axis=1) * (1 << shift)
    cv2.polylines(canvas, [np.round(points).astype(np.int32)], False, 255, 1, cv2.LINE_AA, shift)
    line = canvas.astype(np.float64) / 255.0
    if width_px > 1.0:
        line = ndimage.gaussian_filter(line, (width_px - 1.0) / 2)
        line /= max(line.max(), 1e-6)
    return line


# --------------------------------------------------------------------------- anatomy


def _anatomy(rng: np.random.Generator, grid: _Grid, options: SyntheticOptions) -> _Scene:
    """Draw the tissue layers, fat lobules and specular reflectors of a lesion-free breast."""
    scene = _Scene(grid.n)
    skin = rng.uniform(0.015, 0.045)
    scene.fat_end = np.clip(_smooth_curve(rng, grid, rng.uniform(0.17, 0.34), 0.03, 0.5), skin + 0.06, 0.45)
    scene.gland_end = np.clip(_smooth_curve(rng, grid, rng.uniform(0.62, 0.95), 0.03, 1.0), scene.fat_end + 0.2, 1.2)
    s = grid.scale
    depth = grid.y
    fat_end = scene.fat_end[None, :]
    echo = _gland_texture(rng, grid)
    fat_level = rng.uniform(-11.0, -7.0)
    in_fat = (depth > skin) & (depth < fat_end)
    fat_texture = _smooth_noise(rng, grid.n, (2.0 * s, 4.0 * s)) * 1.5
    echo = np.where(in_fat, fat_level + fat_texture, echo)
    echo = np.where(depth <= skin, -25.0, echo)  # coupling gel above the skin
    _add_deep_layers(rng, grid, scene, echo, fat_level)
    scene.echo_db = echo

    _add_fat_lobules(rng, grid, scene, fat_level, options)
    # Skin: a bright double line; fascia between fat and gland: a fainter one.
    scene.specular += 1.1 * _draw_line(grid, np.full(grid.n, skin), grid.line, 1.2 * s)
    scene.specular += 0.6 * _draw_line(grid, np.full(grid.n, skin + 0.016), grid.line, 1.0 * s)
    scene.specular += rng.uniform(0.2, 0.5) * _draw_line(grid, scene.fat_end, grid.line, 1.0 * s)
    _add_ligaments(rng, grid, scene, skin)
    return scene


def _gland_texture(rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """Fibroglandular echo in dB: laterally stretched speckle-scale texture (ducts and stroma
    run roughly parallel to the skin), patchy brightness and sparse bright strands."""
    s = grid.scale
    fine = _smooth_noise(rng, grid.n, (1.0 * s, 6.0 * s)) * rng.uniform(2.0, 3.5)
    patches = _smooth_noise(rng, grid.n, (4.0 * s, 10.0 * s)) * rng.uniform(1.5, 3.0)
    strands = np.clip(_smooth_noise(rng, grid.n, (0.7 * s, 8.0 * s)) - 1.2, 0.0, None) * rng.uniform(3.0, 6.0)
    return rng.uniform(-1.0, 1.0) + fine + patches + strands


def _add_deep_layers(
    rng: np.random.Generator, grid: _Grid, scene: _Scene, echo: np.ndarray, fat_level: float
) -> None:
    """Retromammary fat, pectoral muscle and chest wall below the gland, where visible."""
    s = grid.scale
    depth = grid.y
    top = scene.gland_end[None, :]
    retro = top + rng.uniform(0.01, 0.04)
    muscle_end = retro + rng.uniform(0.08, 0.16)
    retro_mask = (depth >= top) & (depth < retro)
    echo[retro_mask] = fat_level
    # Muscle: medium echo with bright, thin, nearly horizontal fibre lines.
    fibres = _smooth_noise(rng, grid.n, (0.6 * s, 10.0 * s))
    muscle = rng.uniform(-8.0, -4.0) + 2.5 * np.clip(fibres, -1.0, 2.5)
    muscle_mask = (depth >= retro) & (depth < muscle_end)
    echo[muscle_mask] = muscle[muscle_mask]
    chest = (depth >= muscle_end)
    echo[chest] = rng.uniform(-16.0, -10.0) + 1.5 * _smooth_noise(rng, grid.n, (2 * s, 6 * s))[chest]
    if np.any(chest) and rng.random() < 0.5:
        _add_rib(rng, grid, scene, echo, muscle_end[0])
    if np.any(muscle_mask):
        scene.specular += rng.uniform(0.2, 0.5) * _draw_line(grid, retro[0], grid.line, 1.0 * s)
        scene.specular += rng.uniform(0.4, 0.8) * _draw_line(grid, muscle_end[0], grid.line, 1.2 * s)


def _add_rib(
    rng: np.random.Generator, grid: _Grid, scene: _Scene, echo: np.ndarray, muscle_end: np.ndarray
) -> None:
    """A rib: a bright curved surface with a dark acoustic shadow below it."""
    cx = rng.uniform(0.15, 0.85)
    top = float(np.interp(cx, grid.line, muscle_end)) + rng.uniform(0.01, 0.05)
    half = rng.uniform(0.12, 0.22)
    xs = np.linspace(cx - half, cx + half, 64)
    ys = top + 0.6 * ((xs - cx) / half) ** 2 * rng.uniform(0.04, 0.08)
    scene.specular += 0.9 * _draw_line(grid, ys, xs, 1.4 * grid.scale)
    below = (grid.y > np.interp(grid.x, xs, ys)) & (np.abs(grid.x - cx) < half * 0.95)
    echo[below] -= rng.uniform(10.0, 18.0)


def _add_fat_lobules(
    rng: np.random.Generator,
    grid: _Grid,
    scene: _Scene,
    fat_level: float,
    options: SyntheticOptions,
) -> None:
    """Dark, flat fat lobules: a row of them fills the subcutaneous layer, a few sit in the gland."""
    x = rng.uniform(-0.15, 0.0)
    while x < 1.1:  # lobules tile the subcutaneous fat, separated by echogenic septa
        rx = rng.uniform(0.07, 0.16)
        cx = x + rx
        skin = 0.05
        fat_end = _at(scene.fat_end, cx)
        ry = max(0.02, 0.5 * (fat_end - skin) * rng.uniform(0.6, 0.95))
        cy = 0.5 * (skin + fat_end) + rng.uniform(-0.2, 0.2) * ry
        _lobule(rng, grid, scene, (cy, cx), (rx, ry), fat_level - rng.uniform(1.0, 5.0))
        x = cx + rx * rng.uniform(0.8, 1.1)
    low, high = options.gland_lobules
    for _ in range(int(rng.integers(low, high + 1))):
        cx = rng.uniform(0.1, 0.9)
        top = _at(scene.fat_end, cx)
        bottom = min(_at(scene.gland_end, cx), 0.92)
        ry = rng.uniform(0.025, 0.07)
        cy = rng.uniform(top + ry * 0.5, max(bottom - ry, top + ry))
        rx = rng.uniform(1.2, 2.6) * ry
        _lobule(rng, grid, scene, (cy, cx), (rx, ry), fat_level + rng.uniform(-3.0, 3.0))


def _lobule(
    rng: np.random.Generator,
    grid: _Grid,
    scene: _Scene,
    centre: tuple[float, float],
    axes: tuple[float, float],
    level: float,
) -> None:
    """Blend one fat lobule (soft ellipse) with a thin echogenic rim into the scene."""
    r = _ellipse(grid, centre, axes, rng.uniform(-0.25, 0.25))
    distance_px = (1.0 - r) * min(axes) * grid.n
    width_px = 0.8 * grid.scale
    inside = _soft_inside(distance_px, width_px)
    scene.echo_db = scene.echo_db * (1 - inside) + level * inside
    scene.echo_db += rng.uniform(2.0, 6.0) * np.exp(-((distance_px / width_px) ** 2))


def _add_ligaments(rng: np.random.Generator, grid: _Grid, scene: _Scene, skin: float) -> None:
    """Cooper's ligaments: curved bright lines crossing the subcutaneous fat obliquely."""
    for _ in range(int(rng.integers(2, 6))):
        x0 = rng.uniform(-0.1, 1.1)
        x1 = x0 + rng.choice((-1.0, 1.0)) * rng.uniform(0.12, 0.45)
        t = np.linspace(0.0, 1.0, 48)
        xs = x0 + (x1 - x0) * t
        end = _at(scene.fat_end, x1)
        bend = rng.uniform(-0.5, 0.5)  # sag of the curve, as a fraction of the layer
        ys = skin + 0.02 + (end - skin - 0.02) * (t + bend * t * (1 - t))
        scene.specular += rng.uniform(0.25, 0.6) * _draw_line(grid, ys, xs, 1.0 * grid.scale)


# --------------------------------------------------------------------------- lesions


def _draw_lesion(
    rng: np.random.Generator, label: str, shape: str, scene: _Scene, options: SyntheticOptions
) -> _Lesion:
    """Draw the geometry and appearance of a lesion of the given class and shape."""
    # At least 3 px, so that the pixel nearest to the centre is always inside the lesion and
    # a lesion image never has an empty mask.
    mean_radius = max(rng.uniform(*options.lesion_radius), 3.0 / options.size)
    harmonics: list[tuple[int, float, float]] = []
    spikes: list[tuple[float, float, float]] = []
    if shape == "round":
        aspect, angle = rng.uniform(1.0, 1.15), rng.uniform(-np.pi, np.pi)
        harmonics = [(k, rng.uniform(0.0, 0.03), rng.uniform(0, 2 * np.pi)) for k in (2, 3)]
    elif shape == "oval":
        aspect, angle = rng.uniform(1.35, 2.2), rng.normal(0.0, 0.15)  # "parallel" to the skin
        harmonics = [(k, rng.uniform(0.0, 0.03), rng.uniform(0, 2 * np.pi)) for k in (2, 3)]
    elif shape == "lobulated":
        aspect, angle = rng.uniform(1.1, 1.8), rng.normal(0.0, 0.25)
        lobes = int(rng.integers(3, 6))
        harmonics = [(lobes, rng.uniform(0.08, 0.15), rng.uniform(0, 2 * np.pi))]
        harmonics += [(lobes + 1, rng.uniform(0.0, 0.05), rng.uniform(0, 2 * np.pi))]
    else:  # irregular or spiculated: angular margins, often "taller than wide"
        aspect, angle = rng.uniform(1.0, 1.6), rng.uniform(-np.pi, np.pi)
        strength = 0.16 if shape == "irregular" else 0.08
        harmonics = [(k, rng.uniform(0.3, 1.0) * strength / k**0.6, rng.uniform(0, 2 * np.pi)) for k in range(2, 10)]
        if shape == "spiculated":
            n_spikes = int(rng.integers(6, 14))
            spikes = [
                (rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.1), rng.uniform(0.15, 0.4))
                for _ in range(n_spikes)
            ]
    axes = (mean_radius * np.sqrt(aspect), mean_radius / np.sqrt(aspect))
    # How far the boundary r(theta) can reach beyond the ellipse.
    reach = 1.0 + sum(abs(a) for _, a, _ in harmonics) + max((h for _, _, h in spikes), default=0.0)
    centre = _place_lesion(rng, scene, axes, angle, reach)
    return _Lesion(
        label=label,
        shape=shape,
        centre=centre,
        axes=axes,
        angle=float(angle),
        harmonics=tuple(harmonics),
        spikes=tuple(spikes),
        contrast_db=_draw_contrast(rng, label, options.lesion_contrast_db),
        margin_px=float(rng.uniform(0.4, 1.2) if label == "benign" else rng.uniform(1.0, 2.5)),
    )


def _draw_contrast(rng: np.random.Generator, label: str, bounds: tuple[float, float]) -> float:
    """Lesion darkness in dB: skewed towards the dark end (most masses are clearly
    hypoechoic, some nearly isoechoic); malignant masses are rarely nearly isoechoic."""
    u = rng.random() ** 0.6
    if label == "malignant":
        u = 0.3 + 0.7 * u
    return float(bounds[0] + u * (bounds[1] - bounds[0]))


def _place_lesion(
    rng: np.random.Generator, scene: _Scene, axes: tuple[float, float], angle: float, reach: float
) -> tuple[float, float]:
    """A centre that keeps the lesion in the image, mostly within the glandular layer."""
    c, s = np.cos(angle), np.sin(angle)
    half_w = reach * np.hypot(axes[0] * c, axes[1] * s)
    half_h = reach * np.hypot(axes[0] * s, axes[1] * c)
    cx = rng.uniform(0.2, 0.8)
    cx = float(np.clip(cx, half_w + 0.02, 1 - half_w - 0.02)) if half_w < 0.48 else 0.5
    fat_end, gland_end = _at(scene.fat_end, cx), _at(scene.gland_end, cx)
    low = max(fat_end - 0.3 * half_h, half_h + 0.06)
    high = min(gland_end - 0.4 * half_h, 0.97 - half_h)
    cy = rng.uniform(low, high) if high > low else min(low, 0.97 - half_h)
    return float(cy), cx


def _lesion_distance(grid: _Grid, lesion: _Lesion) -> np.ndarray:
    """Signed distance-like map to the lesion boundary, in pixels, > 0 inside.

    The boundary is ``rho = r(theta)`` in the lesion's elliptical frame; the radial gap is
    scaled by the mean semi-axis, which is close to the Euclidean distance near the boundary."""
    dy, dx = grid.y - lesion.centre[0], grid.x - lesion.centre[1]
    c, s = np.cos(lesion.angle), np.sin(lesion.angle)
    u = (dx * c + dy * s) / lesion.axes[0]
    v = (-dx * s + dy * c) / lesion.axes[1]
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    boundary = np.ones_like(rho)
    for order, amplitude, phase in lesion.harmonics:
        boundary += amplitude * np.cos(order * theta + phase)
    for centre, width, height in lesion.spikes:
        gap = np.angle(np.exp(1j * (theta - centre)))  # wrapped angular distance
        boundary += height * np.exp(-((gap / width) ** 2))
    boundary = np.maximum(boundary, 0.3)
    scale_px = np.sqrt(lesion.axes[0] * lesion.axes[1]) * grid.n
    return (boundary - rho) * scale_px


def _add_lesion(
    rng: np.random.Generator, scene: _Scene, grid: _Grid, lesion: _Lesion
) -> np.ndarray:
    """Blend the lesion and its posterior effects into the scene; return its exact mask."""
    s = grid.scale
    distance = _lesion_distance(grid, lesion)
    mask = distance >= 0.0
    inside = _soft_inside(distance, lesion.margin_px * s)

    cyst = lesion.shape in ("oval", "round") and rng.random() < 0.3
    level = -(lesion.contrast_db if not cyst else rng.uniform(22.0, 28.0))
    heterogeneity = {"benign": 1.0, "malignant": 2.5}[lesion.label] * (0.3 if cyst else 1.0)
    interior = level + heterogeneity * _smooth_noise(rng, grid.n, (2.0 * s, 2.0 * s))
    # The lesion keeps a weak imprint of the tissue it grows in (partial volume, gain).
    background = scene.echo_db
    tissue_weight = 0.0 if cyst else 0.15
    lesion_db = interior + tissue_weight * background
    if lesion.label == "malignant" and rng.random() < 0.4:
        _add_calcifications(rng, scene, mask)
    halo = 0.0
    if lesion.label == "malignant" and rng.random() < 0.4:
        ring = np.clip(-distance, 0.0, None) / (rng.uniform(1.5, 3.0) * s)
        halo = rng.uniform(3.0, 6.0) * np.exp(-ring**2) * (distance < 0)
    scene.echo_db = background * (1 - inside) + lesion_db * inside + halo
    scene.specular *= 1 - inside
    _add_posterior(rng, scene, grid, lesion, inside, cyst)
    return mask


def _add_calcifications(rng: np.random.Generator, scene: _Scene, mask: np.ndarray) -> None:
    """Microcalcifications: a few tiny bright dots inside a malignant lesion."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return
    picks = rng.integers(0, ys.size, size=int(rng.integers(2, 7)))
    dots = np.zeros_like(scene.specular)
    dots[ys[picks], xs[picks]] = 1.0
    scene.specular += rng.uniform(0.4, 0.9) * dots


def _add_posterior(
    rng: np.random.Generator,
    scene: _Scene,
    grid: _Grid,
    lesion: _Lesion,
    inside: np.ndarray,
    cyst: bool,
) -> None:
    """Posterior enhancement or shadowing below the lesion, and thin lateral edge shadows."""
    gain_db = _posterior_gain_db(rng, lesion.label, cyst)
    if gain_db != 0.0:
        # Everything below the lesion in its columns, but not the lesion itself.
        below = np.maximum.accumulate(inside, axis=0) * (1.0 - inside)
        if gain_db < 0:  # shadows are a little narrower than the lesion
            below = ndimage.grey_erosion(below, size=(1, max(1, int(round(3 * grid.scale)))))
        below = ndimage.gaussian_filter(below, (0.5 * grid.scale, 1.5 * grid.scale))
        fade = 1.0  # shadows persist to the bottom, enhancement fades with depth
        if gain_db > 0:
            fade = np.exp(-np.clip(grid.y - lesion.centre[0], 0, None) / rng.uniform(0.3, 0.8))
        scene.echo_db += gain_db * below * fade
    if lesion.shape in ("oval", "round", "lobulated") and rng.random() < 0.3:
        _add_edge_shadows(rng, scene, grid, lesion, inside)


def _posterior_gain_db(rng: np.random.Generator, label: str, cyst: bool) -> float:
    """Posterior echo change in dB: cysts always enhance; other benign masses mostly enhance
    or show nothing; malignant masses mostly shadow (BI-RADS posterior features)."""
    if cyst:
        return float(rng.uniform(5.0, 9.0))
    # (probability, low, high) of enhancement, shadowing; the rest has no posterior feature.
    enhance, shadow = {
        "benign": ((0.55, 3.0, 7.0), (0.10, -8.0, -4.0)),
        "malignant": ((0.15, 2.0, 5.0), (0.60, -13.0, -5.0)),
    }[label]
    roll = rng.random()
    if roll < enhance[0]:
        return float(rng.uniform(enhance[1], enhance[2]))
    if roll < enhance[0] + shadow[0]:
        return float(rng.uniform(shadow[1], shadow[2]))
    return 0.0


def _add_edge_shadows(
    rng: np.random.Generator, scene: _Scene, grid: _Grid, lesion: _Lesion, inside: np.ndarray
) -> None:
    """Refraction shadows: narrow dark columns below the lateral edges of a smooth lesion."""
    columns = np.nonzero(inside.max(axis=0) > 0.5)[0]
    if columns.size < 4:
        return
    below_centre = (grid.y > lesion.centre[0]).astype(float)
    for x in (columns[0], columns[-1]):
        profile = np.exp(-0.5 * ((np.arange(grid.n) - x) / (1.2 * grid.scale)) ** 2)
        scene.echo_db -= rng.uniform(5.0, 10.0) * profile[None, :] * below_centre * (1 - inside)


# --------------------------------------------------------------------------- image formation


def _add_attenuation(rng: np.random.Generator, scene: _Scene, grid: _Grid) -> None:
    """Depth-dependent attenuation left over after time-gain compensation, in dB."""
    total_db = rng.uniform(8.0, 20.0)
    curvature = rng.uniform(0.8, 1.5)  # TGC rarely compensates linearly
    scene.echo_db -= total_db * grid.y**curvature


def _psf_transfer(n: int, sigma: tuple[float, float]) -> np.ndarray:
    """Frequency response of a Gaussian point-spread function with unit energy."""
    ky2, kx2 = _squared_frequencies(n, real=False)
    response = np.exp(-2 * np.pi**2 * (sigma[0] ** 2 * ky2 + sigma[1] ** 2 * kx2))
    return response / np.sqrt(np.mean(response**2))


def _form_image(rng: np.random.Generator, scene: _Scene, grid: _Grid) -> np.ndarray:
    """Speckle formation, noise floor, compounding and log compression into an 8-bit image."""
    s = grid.scale
    # Padding keeps FFT wrap-around away from the visible image; a fast FFT length matters
    # more than a few extra pixels.
    size = scipy.fft.next_fast_len(grid.n + 2 * (int(np.ceil(8 * s)) + 2))
    pad = (size - grid.n) // 2
    pads = (pad, size - grid.n - pad)
    echo = np.pad(scene.echo_db, pads, mode="edge")
    # Specular reflectors are rarely continuous: modulate them so they break up.
    breaks = np.clip(1.0 + 0.6 * _smooth_noise(rng, grid.n, (2 * s, 5 * s)), 0.0, 2.0)
    specular = np.pad(scene.specular * breaks, pads, mode="edge")
    intensity = 10.0 ** (echo / 10.0) + 10.0 ** (rng.uniform(-34.0, -26.0) / 10.0)
    sigma = (rng.uniform(0.7, 1.0) * s, rng.uniform(1.6, 2.4) * s)  # axial finer than lateral
    transfer = _psf_transfer(size, sigma)
    # A coherent line of amplitude a comes out with peak amplitude a * line_gain; scale so that
    # specular = 1 is about 6 dB above glandular tissue.
    line_gain = np.sqrt(2 * np.pi) * sigma[1] / np.sqrt(np.pi * sigma[0] * sigma[1])
    # Spatial compounding averages a few independent speckle patterns, which smooths speckle
    # as modern scanners do; the coherent part is the same in every look.
    looks = int(rng.integers(2, 5))
    phase = np.exp(1j * 2 * np.pi * 0.15 * _smooth_noise(rng, size, (3 * s, 8 * s)))
    coherent = specular * phase * (2.0 / line_gain)
    # Single precision halves the cost of the FFTs; speckle needs no more.
    amplitude = np.sqrt(intensity / 2).astype(np.float32)
    coherent = coherent.astype(np.complex64)
    power = np.zeros((size, size), dtype=np.float32)
    for _ in range(looks):
        noise = rng.standard_normal((size, size, 2), dtype=np.float32).view(np.complex64)[..., 0]
        field = amplitude * noise + coherent
        power += np.abs(scipy.fft.ifft2(scipy.fft.fft2(field) * transfer)) ** 2
    envelope = np.sqrt(power / looks, dtype=np.float64)[pad : pad + grid.n, pad : pad + grid.n]
    return _log_compress(rng, envelope)


def _log_compress(rng: np.random.Generator, envelope: np.ndarray) -> np.ndarray:
    """Map the envelope to 8 bit over a random dynamic range and gain, like a scanner."""
    dynamic_range = rng.uniform(36.0, 48.0)
    gland_level = rng.uniform(0.52, 0.7)  # where glandular tissue sits on the grey scale
    db = 20.0 * np.log10(envelope + 1e-9)
    # The mean of 20 log10 of a Rayleigh envelope is about 2.5 dB below its rms.
    floor = -2.5 - gland_level * dynamic_range
    grey = (db - floor) / dynamic_range * 255.0
    return np.clip(np.round(grey), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- burned-in marks


def _add_marks(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    lesion: _Lesion | None,
    grid: _Grid,
) -> None:
    """Burn in caliper crosses (lesion images only), text and depth ticks, in place."""
    kinds = ["text", "ticks"] + (["calipers"] * 2 if lesion is not None else [])
    chosen = set(rng.choice(kinds, size=int(rng.integers(1, 3)), replace=True))
    if lesion is not None and "calipers" in chosen:
        _add_calipers(rng, image, mask, lesion, grid)
    if "text" in chosen:
        _add_text(rng, image, grid)
    if "ticks" in chosen:
        _add_ticks(rng, image, grid)


def _add_calipers(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, lesion: _Lesion, grid: _Grid
) -> None:
    """Small bright '+' marks just outside the lesion at the ends of its axes."""
    directions = [lesion.angle]
    if rng.random() < 0.6:
        directions.append(lesion.angle + np.pi / 2)
    arm = max(1, int(round(2 * grid.scale)))
    value = int(rng.integers(220, 256))
    cy, cx = lesion.centre[0] * grid.n - 0.5, lesion.centre[1] * grid.n - 0.5
    for angle in directions:
        for sign in (1.0, -1.0):
            dy, dx = sign * np.sin(angle), sign * np.cos(angle)
            step = 0.0
            while True:  # walk out of the mask along the axis
                y, x = int(round(cy + step * dy)), int(round(cx + step * dx))
                if not (0 <= y < grid.n and 0 <= x < grid.n) or not mask[y, x]:
                    break
                step += 0.5
            y, x = int(round(cy + (step + 1.5) * dy)), int(round(cx + (step + 1.5) * dx))
            _cross(image, y, x, arm, value)


def _cross(image: np.ndarray, y: int, x: int, arm: int, value: int) -> None:
    """Draw a '+' of half-length ``arm`` centred at (y, x), clipped to the image."""
    n = image.shape[0]
    if not (0 <= y < n and 0 <= x < n):
        return
    image[y, max(0, x - arm) : min(n, x + arm + 1)] = value
    image[max(0, y - arm) : min(n, y + arm + 1), x] = value


def _add_text(rng: np.random.Generator, image: np.ndarray, grid: _Grid) -> None:
    """Burned-in annotation text in a corner, as scanners print it."""
    text = str(rng.choice(_TEXT))
    if rng.random() < 0.5:
        text += f" {int(rng.integers(1, 13))}:00"
    scale = 0.55 * grid.scale
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_PLAIN, scale, 1)
    margin = max(2, int(3 * grid.scale))
    x = margin if rng.random() < 0.5 else max(margin, grid.n - width - margin)
    y = grid.n - margin if rng.random() < 0.7 else height + margin
    value = int(rng.integers(200, 256))
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_PLAIN, scale, value, 1, cv2.LINE_AA)


def _add_ticks(rng: np.random.Generator, image: np.ndarray, grid: _Grid) -> None:
    """A depth scale: small bright ticks down one side of the image."""
    x = int(rng.integers(1, 3)) if rng.random() < 0.5 else grid.n - int(rng.integers(2, 4))
    spacing = max(4, int(round(rng.uniform(0.12, 0.2) * grid.n)))
    length = max(1, int(round(1.5 * grid.scale)))
    for y in range(spacing // 2, grid.n, spacing):
        lo = max(0, x - length // 2)
        image[y, lo : lo + length + 1] = 230
