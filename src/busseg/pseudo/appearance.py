"""Weight-free, training-free pseudo labels from appearance words (the default backend).

METHOD.md (APPG) prompts Grounding DINO + SAM with appearance descriptions of a
lesion ("dark oval", "dark round", "dark lobulated"). This backend turns the same
words into classical image analysis, so that the pipeline runs without any model
weights:

* "dark" / "bright" set the polarity: a lesion is hypo- (or hyper-) echoic
  relative to the tissue around it;
* "oval", "round", "lobulated", "irregular" are shape priors.

Pipeline for one image:

1. resize to a working resolution, give black padding outside the scan's field of
   view a neutral grey, reduce speckle (median + bilateral filter); the median
   also erases thin burned-in marks (calipers, text), which are bright anyway;
2. propose candidates: the connected components of a stack of grey-level
   thresholds (a small component tree, MSER-like), each opened with discs of a
   few radii to cut bridges into neighbouring dark tissue, plus their convex hulls;
3. score every candidate with a linear model over few features: contrast against
   its surrounding ring, absolute darkness, fit to the prompts' shape words,
   solidity, size, position (upper middle, not at the skin) and contact with the
   image border (posterior shadows and deep dark bands reach the bottom or sides);
4. keep the best candidate large enough to pass the area filter, smooth its
   boundary at the original size, and apply the area filter of METHOD.md
   (foreground must exceed ``min_area_fraction`` of the image).

The label's score is a confidence in [0, 1], a monotone map of the best
candidate's linear score: on BUS-BRA the most confident labels are the best ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from busseg.errors import ConfigError
from busseg.pseudo.base import PseudoLabel, apply_area_filter, invalid_label

# Words the prompts may use. Polarity words say whether the lesion is darker or
# brighter than its surroundings; shape words select a shape prior.
POLARITY_WORDS: dict[str, int] = {"dark": 1, "hypoechoic": 1, "bright": -1, "hyperechoic": -1}
SHAPE_WORDS: tuple[str, ...] = ("oval", "round", "lobulated", "irregular")
# Object nouns carry no shape prior ("dark spot", "dark nodule"): accepted and ignored.
OBJECT_WORDS: tuple[str, ...] = ("spot", "nodule", "mass", "region", "blob", "area", "lesion", "cyst")
KNOWN_WORDS: tuple[str, ...] = tuple(sorted((*POLARITY_WORDS, *SHAPE_WORDS, *OBJECT_WORDS)))

# Below this many pixels at the working resolution a component is speckle, not a lesion.
_MIN_COMPONENT_PIXELS = 24
# Typical height of a lesion centre (fraction of the image height) in BUS images.
_TYPICAL_DEPTH = 0.33
# Grey level at or below which border-touching pixels count as outside the field of view,
# and the least area (fraction of the image) such a region must have.
_BLACK_LEVEL = 3
_MIN_OUTSIDE_FRACTION = 0.005


@dataclass(frozen=True)
class AppearanceOptions:
    """Options of :class:`AppearanceLabeler`.

    ``prompts`` are appearance descriptions as in METHOD.md; each is a few of the
    words in :data:`KNOWN_WORDS`. ``min_area_fraction`` is the area filter.
    ``working_size`` is the long side (pixels) at which the analysis runs.
    Candidates are ranked by the linear score of :data:`SCORE_WEIGHTS` (tuned on
    BUS-BRA; see ``benchmarks/pseudo_quality.py``).
    """

    prompts: tuple[str, ...] = ("dark oval", "dark round", "dark lobulated")
    min_area_fraction: float = 0.01
    working_size: int = 160
    # Candidate generation: grey-level thresholds at these quantiles of the smoothed
    # image, each opened with discs of these radii to cut thin bridges to dark tissue.
    n_levels: int = 16
    min_level_quantile: float = 0.03
    max_level_quantile: float = 0.8
    opening_radii: tuple[int, ...] = (1, 3, 5)
    convex_variants: bool = True
    # Candidate size limits as fractions of the image.
    min_candidate_fraction: float = 0.004
    max_candidate_fraction: float = 0.6
    # Speckle reduction.
    median_size: int = 5
    bilateral_sigma: float = 20.0
    # Confidence: the label's score is sigmoid((z - confidence_centre) / confidence_scale)
    # of the best candidate's linear score z (see :data:`SCORE_WEIGHTS`).
    confidence_centre: float = 4.0
    confidence_scale: float = 1.5


# Weights of the linear candidate score z = SCORE_BIAS + sum(weight * feature). Fitted
# once on BUS-BRA (patients with an even case number) by maximising the expected Dice
# of a per-image softmax over candidates; the features are those of
# :meth:`AppearanceLabeler.describe`. The scale of z is arbitrary; only its order
# within an image picks the lesion, its value across images is the confidence.
SCORE_WEIGHTS: dict[str, float] = {
    "contrast": 1.810,  # ring median minus inside mean, in units of the image's std
    "t_contrast": 1.188,  # the same, in units of the pooled std of inside and ring
    "shape": 3.994,  # fit to the prompts' shape words
    "solidity": 3.115,
    "aspect": 2.319,  # minor / major axis: rounder is likelier
    "log_area": 0.145,
    "log_area_sq": -0.123,  # with log_area: a size prior peaking near 2-3 % of the image
    "centre_x": -7.587,  # |x - 0.5|
    "depth": -17.156,  # (y - 0.33)^2, y in image heights: lesions sit in the upper middle
    "border": -2.093,  # number of image sides touched
    "top": -1.576,  # touching the top: skin and subcutaneous fat
    "level": 1.156,  # threshold quantile
    "darkness": 1.140,  # image median minus inside mean, in image std
    "hull": 0.709,  # the convex-hull variant of a component
}
SCORE_BIAS = -3.997


@dataclass
class Candidate:
    """One candidate region at the working resolution: a crop, its place and its features."""

    region: np.ndarray  # bool crop of the working image
    offset: tuple[int, int]  # (y, x) of the crop in the working image
    features: dict[str, float]
    score: float = 0.0  # linear evidence z of :meth:`AppearanceLabeler.score`

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The region as a boolean mask of the working image's ``shape``."""
        mask = np.zeros(shape, dtype=bool)
        y, x = self.offset
        mask[y : y + self.region.shape[0], x : x + self.region.shape[1]] = self.region
        return mask


@dataclass(frozen=True)
class ParsedPrompts:
    """What the prompts ask for: ``polarity`` 1 for a dark lesion, -1 for a bright one,
    and the shape words in the order they first appear."""

    polarity: int
    shapes: tuple[str, ...]


def parse_prompts(prompts: tuple[str, ...] | list[str]) -> ParsedPrompts:
    """Parse appearance prompts into one polarity and the set of shape words.

    Raises :class:`ConfigError` for unknown words, for an empty prompt list and
    for prompts that disagree on polarity ("dark ..." together with "bright ...").
    """
    if isinstance(prompts, str) or not prompts:
        raise ConfigError("prompts", f"expected a non-empty list of descriptions, got {prompts!r}")
    polarities: set[int] = set()
    shapes: list[str] = []
    for prompt in prompts:
        words = str(prompt).lower().replace(",", " ").split()
        if not words:
            raise ConfigError("prompts", f"empty description {prompt!r}")
        for word in words:
            if word in POLARITY_WORDS:
                polarities.add(POLARITY_WORDS[word])
            elif word in SHAPE_WORDS:
                if word not in shapes:
                    shapes.append(word)
            elif word in OBJECT_WORDS:
                continue
            else:
                raise ConfigError(
                    "prompts", f"unknown word {word!r} in {prompt!r}; known words: {', '.join(KNOWN_WORDS)}"
                )
    if len(polarities) > 1:
        raise ConfigError("prompts", "descriptions mix 'dark' and 'bright'; use one polarity")
    polarity = polarities.pop() if polarities else 1  # lesions in BUS are mostly hypoechoic
    return ParsedPrompts(polarity=polarity, shapes=tuple(shapes))


class AppearanceLabeler:
    """Pseudo labels from classical image analysis driven by appearance words."""

    def __init__(self, options: AppearanceOptions = AppearanceOptions()) -> None:
        _check_options(options)
        self.options = options
        self.prompt = parse_prompts(options.prompts)

    def label(self, image: np.ndarray) -> PseudoLabel:
        """Pseudo label of one greyscale uint8 image ``(H, W)``; the mask has shape ``(H, W)``."""
        _check_image(image)
        shape = image.shape
        if min(shape) < 8:
            return invalid_label(shape, "image_too_small")
        work = self.preprocess(image)
        if float(work.std()) < 1e-3:
            return invalid_label(shape, "no_contrast")
        candidates = self.candidates(work)
        if not candidates:
            return invalid_label(shape, "no_candidate")
        best = self.choose(candidates)
        mask = self.refine(best, work, shape)
        if not mask.any():
            return invalid_label(shape, "empty_after_refinement", self.confidence(best.score))
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        label = PseudoLabel(mask=mask, score=self.confidence(best.score), valid=True, box=box)
        return apply_area_filter(label, self.options.min_area_fraction)

    # -- stages ------------------------------------------------------------------------

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """Resize to the working size and reduce speckle; returns float32 in [0, 1], lesion dark."""
        o = self.options
        h, w = image.shape
        scale = o.working_size / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = _neutralise_outside_field(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        if self.prompt.polarity < 0:
            small = 255 - small
        small = cv2.medianBlur(small, _odd(o.median_size))
        small = cv2.bilateralFilter(small, 7, o.bilateral_sigma, 3.0)
        return small.astype(np.float32) / 255.0

    def candidates(self, work: np.ndarray) -> list[Candidate]:
        """Dark connected components over thresholds x opening radii, each described and scored."""
        o = self.options
        quantiles = np.linspace(o.min_level_quantile, o.max_level_quantile, o.n_levels)
        levels = np.quantile(work, quantiles)
        context = _Context.of(work)
        min_area = max(_MIN_COMPONENT_PIXELS, o.min_candidate_fraction * work.size)
        max_area = o.max_candidate_fraction * work.size
        seen: set[tuple[int, ...]] = set()
        out: list[Candidate] = []
        for radius in o.opening_radii:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
            for i, level in enumerate(levels):
                binary = cv2.morphologyEx((work <= level).astype(np.uint8), cv2.MORPH_OPEN, kernel)
                count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4)
                for index in range(1, count):
                    x, y, bw, bh, area = (int(v) for v in stats[index])
                    if not min_area <= area <= max_area or (x, y, bw, bh, area) in seen:
                        continue
                    seen.add((x, y, bw, bh, area))
                    region = _fill_holes((labels[y : y + bh, x : x + bw] == index).astype(np.uint8))
                    variants = [(region, 0.0)]
                    if o.convex_variants:
                        hull = _convex_hull(region)
                        if np.count_nonzero(hull) <= max_area:
                            variants.append((hull, 1.0))
                    for mask, hull in variants:
                        features = self.describe(mask, (y, x), context)
                        features.update(level=float(quantiles[i]), hull=hull)
                        out.append(Candidate(mask, (y, x), features, self.score(features)))
        return out

    def choose(self, candidates: list[Candidate]) -> Candidate:
        """The best-scoring candidate among those large enough to pass the area filter.

        A region the area filter would discard can never become a label, so it must
        not hide a slightly less likely but lesion-sized one. Only when no candidate
        is large enough is the best small one returned (and then filtered out).
        """
        margin = 1.1 * self.options.min_area_fraction  # refinement changes the area slightly
        large = [c for c in candidates if np.exp(c.features["log_area"]) > margin]
        return max(large or candidates, key=lambda c: c.score)

    def refine(self, best: Candidate, work: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Smooth the chosen region's boundary and resize it to ``shape``."""
        region = best.full_mask(work.shape).astype(np.float32)
        soft = cv2.GaussianBlur(region, (0, 0), 1.5)
        big = cv2.resize(soft, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        return big >= 0.5

    # -- features and score ---------------------------------------------------------------

    def describe(self, region: np.ndarray, offset: tuple[int, int], context: _Context) -> dict[str, float]:
        """Features of one candidate ``region`` (a bool crop at ``offset`` of the working image).

        ``level`` (threshold quantile) and ``hull`` (convex-hull variant) are added by
        :meth:`candidates`; all grey-level features are in units of the image's std.
        """
        work = context.work
        h, w = work.shape
        y, x = offset
        bh, bw = region.shape
        area = int(np.count_nonzero(region))
        ring_width = max(3, int(round(0.25 * np.sqrt(area))))
        y0, x0 = max(0, y - ring_width), max(0, x - ring_width)
        y1, x1 = min(h, y + bh + ring_width), min(w, x + bw + ring_width)
        crop = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        crop[y - y0 : y - y0 + bh, x - x0 : x - x0 + bw] = region
        # Distance transform instead of a dilation: its cost does not grow with the ring width.
        ring = cv2.distanceTransform(1 - crop, cv2.DIST_L2, 3) <= ring_width
        ring &= crop == 0
        inside_values = work[y0:y1, x0:x1][crop > 0]
        ring_values = work[y0:y1, x0:x1][ring] if ring.any() else inside_values
        inside, outside = float(inside_values.mean()), float(ring_values.mean())
        spread = np.sqrt(float(inside_values.var()) + float(ring_values.var())) + 1e-3
        ellipse_fit, aspect = _ellipse_fit(region.astype(np.uint8))
        solidity = area / max(1, int(np.count_nonzero(_convex_hull(region))))
        ys, xs = np.nonzero(region)
        cx, cy = (xs.mean() + x) / w, (ys.mean() + y) / h
        sides = (x == 0, y == 0, x + bw == w, y + bh == h)
        log_area = float(np.log(area / float(h * w)))
        features = {
            "contrast": (float(np.median(ring_values)) - inside) / context.spread,
            "t_contrast": (outside - inside) / spread,
            "darkness": (context.median - inside) / context.spread,
            "solidity": solidity,
            "ellipse_fit": ellipse_fit,
            "aspect": aspect,
            "log_area": log_area,
            "log_area_sq": log_area**2,
            "centre_x": abs(cx - 0.5),
            "depth": (cy - _TYPICAL_DEPTH) ** 2,
            "border": float(sum(sides)),
            "top": float(sides[1]),
        }
        features["shape"] = self._shape_prior(features)
        return features

    def score(self, f: dict[str, float]) -> float:
        """Linear evidence ``z`` that a candidate with features ``f`` is the lesion (unbounded)."""
        return SCORE_BIAS + sum(weight * f[name] for name, weight in SCORE_WEIGHTS.items())

    def confidence(self, z: float) -> float:
        """Map the best candidate's evidence ``z`` to a confidence in [0, 1]."""
        o = self.options
        return float(1.0 / (1.0 + np.exp(-(z - o.confidence_centre) / o.confidence_scale)))

    def _shape_prior(self, f: dict[str, float]) -> float:
        """How well the region fits the prompts' shape words (best word wins); 1 without shape words."""
        scores = []
        for word in self.prompt.shapes:
            if word == "oval":
                scores.append(f["ellipse_fit"])
            elif word == "round":
                scores.append(f["ellipse_fit"] * (0.5 + 0.5 * f["aspect"]))
            elif word == "lobulated":
                scores.append(np.sqrt(f["solidity"]) * (0.5 + 0.5 * f["ellipse_fit"]))
            elif word == "irregular":
                scores.append(np.sqrt(f["solidity"]))
        return float(max(scores)) if scores else 1.0


@dataclass(frozen=True)
class _Context:
    """Per-image quantities shared by all candidates."""

    work: np.ndarray
    spread: float  # std of the working image
    median: float

    @classmethod
    def of(cls, work: np.ndarray) -> _Context:
        return cls(work, float(work.std()) + 1e-6, float(np.median(work)))


# -- helpers ---------------------------------------------------------------------------------


def _ellipse_fit(region: np.ndarray) -> tuple[float, float]:
    """IoU of ``region`` with its moment-equivalent ellipse, and the ellipse's minor/major ratio."""
    m = cv2.moments(region, binaryImage=True)
    if m["m00"] <= 0:
        return 0.0, 0.0
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    mu20, mu02, mu11 = m["mu20"] / m["m00"], m["mu02"] / m["m00"], m["mu11"] / m["m00"]
    common = np.sqrt(((mu20 - mu02) / 2) ** 2 + mu11**2)
    lam1, lam2 = (mu20 + mu02) / 2 + common, max((mu20 + mu02) / 2 - common, 1e-6)
    major, minor = 2 * np.sqrt(lam1), 2 * np.sqrt(lam2)
    angle = 0.5 * np.degrees(np.arctan2(2 * mu11, mu20 - mu02))
    ellipse = np.zeros_like(region)
    cv2.ellipse(ellipse, (round(cx), round(cy)), (max(1, round(major)), max(1, round(minor))), angle, 0, 360, 1, -1)
    inter = np.count_nonzero(ellipse & region)
    union = np.count_nonzero(ellipse | region)
    return inter / max(union, 1), float(minor / max(major, 1e-6))


def _neutralise_outside_field(small: np.ndarray) -> np.ndarray:
    """Give black areas outside the scan's field of view the image's median grey.

    Pure black regions that touch the image border are padding around the scan
    (sector edges, letterboxing), not tissue; left black they would be the darkest,
    highest-contrast "lesions" of the image.
    """
    black = (small <= _BLACK_LEVEL).astype(np.uint8)
    if not black.any() or black.all():
        return small
    h, w = small.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(black, connectivity=8)
    out = small.copy()
    fill = np.uint8(np.median(small[black == 0]))
    for index in range(1, count):
        x, y, bw, bh, area = (int(v) for v in stats[index])
        on_border = x == 0 or y == 0 or x + bw == w or y + bh == h
        if on_border and area >= _MIN_OUTSIDE_FRACTION * h * w:
            out[labels == index] = fill
    return out


def _convex_hull(region: np.ndarray) -> np.ndarray:
    """The filled convex hull of a binary crop, as bool of the same shape."""
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = np.zeros(region.shape, dtype=np.uint8)
    if contours:
        points = np.concatenate(contours)
        cv2.drawContours(hull, [cv2.convexHull(points)], -1, 1, -1)
    return hull.astype(bool)


def _fill_holes(region: np.ndarray) -> np.ndarray:
    """Fill the holes of a binary uint8 region (flood fill from outside)."""
    padded = np.pad(region, 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood == 0
    return (padded.astype(bool) | holes)[1:-1, 1:-1]


def _odd(size: int) -> int:
    """The nearest odd size at or above ``size`` (OpenCV's median filter needs one)."""
    return max(1, size | 1)


def _check_image(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is a 2-D uint8 array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a 2-D uint8 numpy array (H, W), got {type(image).__name__}")
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"image must be a 2-D uint8 greyscale array (H, W), got {image.dtype} with shape {image.shape}")


def _check_options(o: AppearanceOptions) -> None:
    """Raise ConfigError naming the first out-of-range option."""
    if not 0.0 <= o.min_area_fraction < 1.0:
        raise ConfigError("min_area_fraction", f"must be in [0, 1), got {o.min_area_fraction}")
    if o.working_size < 16:
        raise ConfigError("working_size", f"must be at least 16 pixels, got {o.working_size}")
    if o.n_levels < 1:
        raise ConfigError("n_levels", f"must be at least 1, got {o.n_levels}")
    if not 0.0 <= o.min_level_quantile < o.max_level_quantile <= 1.0:
        raise ConfigError("max_level_quantile", "need 0 <= min_level_quantile < max_level_quantile <= 1")
    if not o.opening_radii or any(r < 1 for r in o.opening_radii):
        raise ConfigError("opening_radii", f"need one or more radii >= 1, got {o.opening_radii}")
    if not 0.0 < o.min_candidate_fraction < o.max_candidate_fraction <= 1.0:
        raise ConfigError("max_candidate_fraction", "need 0 < min_candidate_fraction < max_candidate_fraction <= 1")
    if o.median_size < 1 or o.bilateral_sigma <= 0:
        raise ConfigError("median_size", "median_size must be >= 1 and bilateral_sigma > 0")
    if o.confidence_scale <= 0:
        raise ConfigError("confidence_scale", f"must be > 0, got {o.confidence_scale}")
