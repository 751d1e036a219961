"""Weight-free, training-free pseudo labels from appearance words (the default backend).

docs/method.md (APPG) prompts Grounding DINO + SAM with appearance descriptions of a
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
3. score every candidate with a linear model over how it looks: contrast against
   its surrounding ring, absolute darkness, fit to the prompts' shape words,
   solidity and contact with the image border (posterior shadows and deep dark
   bands reach the bottom or sides, skin and fat touch the top). This is the
   *appearance* score; it knows nothing of where lesions sit in a frame;
4. where and how large lesions are is a fact about a dataset's framing, not about
   lesions, so it is not a constant: :meth:`AppearanceLabeler.fit_prior` estimates
   it from the dataset's own most confident labels (position relative to the imaged
   tissue, size relative to the tissue's area; a :class:`DatasetPrior`), and a
   second pass re-ranks each image's best candidates with it;
5. keep the best candidate large enough to pass the area filter, smooth its
   boundary at the original size, and apply the area filter of docs/method.md
   (foreground must exceed ``min_area_fraction`` of the image).

Labeling a dataset is therefore two passes: :meth:`~AppearanceLabeler.analyse` each
image (the costly part, cacheable per image), :meth:`~AppearanceLabeler.fit_prior` on
all analyses, then :meth:`~AppearanceLabeler.decide` each image (cheap).
:meth:`~AppearanceLabeler.label` labels a single image with the weights file's default
prior instead. Everything fitted on ground truth (the scores' weights, the default prior,
the confidence map) is read from a weights file, ``pseudo.appearance.weights``
(:mod:`busseg.pseudo.appearance_weights`; the committed ones are fitted by
``benchmarks/fit_appearance.py`` on BUS-BRA's seed-0 train split, see docs/method.md).

The label's score is a confidence in [0, 1], a monotone map of the best
candidate's linear score: on BUS-BRA the most confident labels are the best ones.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from busseg.config import from_dict
from busseg.errors import ConfigError
from busseg.pseudo.appearance_weights import (
    APPEARANCE_FEATURES,
    DEFAULT_WEIGHTS,
    PRIOR_FIELDS,
    PRIOR_TERMS,  # noqa: F401 (re-exported: the fit and its tests name the terms from here)
    AppearanceWeights,
    load_appearance_weights,
)
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
# Grey level at or below which border-touching pixels count as outside the field of view,
# and the least area (fraction of the image) such a region must have.
_BLACK_LEVEL = 3
_MIN_OUTSIDE_FRACTION = 0.005


@dataclass(frozen=True)
class AppearanceOptions:
    """Options of :class:`AppearanceLabeler`.

    ``prompts`` are appearance descriptions as in docs/method.md; each is a few of the
    words in :data:`KNOWN_WORDS`. ``min_area_fraction`` is the area filter.
    ``working_size`` is the long side (pixels) at which the analysis runs.
    Candidates are ranked by the linear scores of the ``weights`` file (a path relative
    to the project root; :mod:`busseg.pseudo.appearance_weights`), which also holds the
    default prior and the confidence map (fitted by ``benchmarks/fit_appearance.py``).
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
    # The fitted constants: score weights, default prior and confidence map (the label's
    # score is sigmoid((z - confidence_centre) / confidence_scale) of the best candidate's z).
    weights: str = DEFAULT_WEIGHTS
    # Dataset prior (see DatasetPrior): estimated from the dataset's own most confident
    # `prior_fraction` of labels when at least `prior_min_images` images are labeled
    # together; otherwise, and for single images, the weights file's default prior is used.
    adapt_prior: bool = True
    prior_fraction: float = 0.5
    prior_min_images: int = 8
    # Candidates per image kept after the appearance pass for the prior's re-ranking.
    top_k: int = 24


# Derived features, recomputed from the stored ones when a first pass is read back.
_DERIVED: dict[str, str] = {"log_size_rel_sq": "log_size_rel"}

MOVED_TO_WEIGHTS: tuple[str, ...] = ("confidence_centre", "confidence_scale")
"""Former options of ``pseudo.appearance`` that are now part of the weights file."""


def check_moved_options(options: Mapping[str, Any], section: str = "pseudo.appearance") -> None:
    """Raise :class:`ConfigError` for an option that moved into the weights file, with where it is now."""
    for key in MOVED_TO_WEIGHTS:
        if key in options:
            raise ConfigError(
                f"{section}.{key}",
                f"no longer an option: it lives in the weights file ({section}.weights, default {DEFAULT_WEIGHTS}) "
                "with the score weights it was fitted with; fit a file with benchmarks/fit_appearance.py",
            )


@dataclass(frozen=True)
class DatasetPrior:
    """Where a dataset's lesions sit and how large they are, relative to the imaged tissue.

    ``depth``: centre height in tissue heights from the tissue's top (the skin line);
    ``offset_x``: ``|x - 0.5|`` of the centre in tissue widths; ``log_size``: log of the
    area over the tissue's area. Each is a robust mean and spread (median and scaled MAD)
    over the labels it was estimated from; ``source`` says which (``default``,
    ``confident_labels``, ``ground_truth``) and ``n_images`` how many.
    """

    depth: float
    depth_spread: float
    offset_x: float
    offset_x_spread: float
    log_size: float
    log_size_spread: float
    source: str = "default"
    n_images: int = 0

    # A candidate further than this many spreads from the prior is penalised no further:
    # one unusual lesion must stay findable when its appearance is unambiguous.
    _CAP = 9.0
    # Least spreads: a handful of similar confident labels must not make the prior a spike.
    MIN_SPREADS = {"depth": 0.08, "offset_x": 0.06, "log_size": 0.4}

    def terms(self, f: dict[str, float]) -> dict[str, float]:
        """The prior's score terms of a candidate with features ``f`` (each in [-cap, 0])."""

        def term(value: float, mean: float, spread: float) -> float:
            return -min(((value - mean) / spread) ** 2, self._CAP)

        return {
            "prior_depth": term(f["depth_rel"], self.depth, self.depth_spread),
            "prior_x": term(f["offset_x_rel"], self.offset_x, self.offset_x_spread),
            "prior_size": term(f["log_size_rel"], self.log_size, self.log_size_spread),
        }

    @classmethod
    def estimate(cls, depth: Sequence[float], offset_x: Sequence[float], log_size: Sequence[float], source: str) -> DatasetPrior:
        """A prior from the positions and sizes of example lesions (median and 1.4826 MAD)."""

        def robust(values: Sequence[float], floor: float) -> tuple[float, float]:
            v = np.asarray(values, dtype=np.float64)
            median = float(np.median(v))
            return median, max(floor, 1.4826 * float(np.median(np.abs(v - median))))

        d, x, s = (robust(v, cls.MIN_SPREADS[k]) for v, k in ((depth, "depth"), (offset_x, "offset_x"), (log_size, "log_size")))
        return cls(d[0], d[1], x[0], x[1], s[0], s[1], source=source, n_images=len(depth))

    @classmethod
    def from_dict(cls, values: Mapping[str, float | str | int]) -> DatasetPrior:
        """Inverse of :meth:`as_dict` (``source`` and ``n_images`` default to a default prior's)."""
        return cls(
            *(float(values[k]) for k in PRIOR_FIELDS),
            source=str(values.get("source", "default")),
            n_images=int(values.get("n_images", 0)),
        )

    def as_dict(self) -> dict[str, float | str | int]:
        """JSON-ready values (rounded, so that the file is stable across platforms)."""
        out: dict[str, float | str | int] = {}
        for name in PRIOR_FIELDS:
            out[name] = round(float(getattr(self, name)), 6)
        out.update(source=self.source, n_images=self.n_images)
        return out


@dataclass
class Candidate:
    """One candidate region at the working resolution: a crop, its place and its features."""

    region: np.ndarray  # bool crop of the working image
    offset: tuple[int, int]  # (y, x) of the crop in the working image
    features: dict[str, float]
    score: float = 0.0  # linear evidence z (appearance score after the first pass)

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The region as a boolean mask of the working image's ``shape``."""
        mask = np.zeros(shape, dtype=bool)
        y, x = self.offset
        mask[y : y + self.region.shape[0], x : x + self.region.shape[1]] = self.region
        return mask


@dataclass
class ImageAnalysis:
    """The first pass over one image: its best candidates by appearance, or why there are none.

    ``shape`` is the image's, ``work_shape`` the working resolution's; ``reason`` is empty
    when there are candidates. Serialisable to arrays (:meth:`to_arrays`) for the
    per-image cache of the labeling stage.
    """

    shape: tuple[int, int]
    work_shape: tuple[int, int]
    candidates: list[Candidate] = field(default_factory=list)
    reason: str = ""

    # What is stored per candidate (the order of benchmarks/fit_appearance.py's columns too).
    FEATURES: tuple[str, ...] = (
        *(k for k in APPEARANCE_FEATURES if k not in _DERIVED), "log_area", "depth_rel", "offset_x_rel",
    )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (``np.savez``-ready, no pickle)."""
        crops = [c.region for c in self.candidates]
        return {
            "shape": np.asarray(self.shape, dtype=np.int64),
            "work_shape": np.asarray(self.work_shape, dtype=np.int64),
            "reason": np.asarray(self.reason),
            "features": np.asarray([[c.features[k] for k in self.FEATURES] for c in self.candidates], dtype=np.float64).reshape(-1, len(self.FEATURES)),
            "scores": np.asarray([c.score for c in self.candidates], dtype=np.float64),
            "offsets": np.asarray([c.offset for c in self.candidates], dtype=np.int64).reshape(-1, 2),
            "crop_shapes": np.asarray([r.shape for r in crops], dtype=np.int64).reshape(-1, 2),
            "bits": np.packbits(np.concatenate([r.ravel() for r in crops])) if crops else np.zeros(0, np.uint8),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> ImageAnalysis:
        """Inverse of :meth:`to_arrays`; raises ``KeyError``/``ValueError`` on a foreign file."""
        sizes = [int(h) * int(w) for h, w in a["crop_shapes"]]
        flat = np.unpackbits(a["bits"])[: sum(sizes)].astype(bool)
        if flat.size != sum(sizes) or len(a["features"]) != len(sizes) or a["features"].shape[1] != len(cls.FEATURES):
            raise ValueError("inconsistent cached analysis")
        candidates, start = [], 0
        for row, score, offset, (h, w), size in zip(a["features"], a["scores"], a["offsets"], a["crop_shapes"], sizes):
            region = flat[start : start + size].reshape(int(h), int(w))
            start += size
            features = dict(zip(cls.FEATURES, (float(v) for v in row)))
            features.update({k: features[base] ** 2 for k, base in _DERIVED.items()})
            candidates.append(Candidate(region, (int(offset[0]), int(offset[1])), features, float(score)))
        shape = (int(a["shape"][0]), int(a["shape"][1]))
        work_shape = (int(a["work_shape"][0]), int(a["work_shape"][1]))
        return cls(shape, work_shape, candidates, str(a["reason"]))


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

    def __init__(self, options: AppearanceOptions = AppearanceOptions(), weights: AppearanceWeights | None = None) -> None:
        """``weights`` default to the file ``options.weights`` names (a
        :class:`~busseg.errors.DataError` naming it when it is missing or malformed)."""
        _check_options(options)
        self.options = options
        self.prompt = parse_prompts(options.prompts)
        self.weights = weights if weights is not None else load_appearance_weights(options.weights)
        self.default_prior = DatasetPrior.from_dict(self.weights.default_prior)

    @classmethod
    def from_section(cls, options: Mapping[str, Any], section: str = "pseudo.appearance") -> AppearanceLabeler:
        """The labeler a params section describes: ``pseudo.appearance`` plus the shared
        ``prompts`` and ``min_area_fraction``. Options that moved into the weights file and
        unknown keys are :class:`ConfigError` naming ``section``. The one constructor of the
        first-round backend (:mod:`busseg.pseudo.registry`) and of refinement's snapping."""
        check_moved_options(options, section)
        return cls(from_dict(AppearanceOptions, options, section))

    def label(self, image: np.ndarray) -> PseudoLabel:
        """Pseudo label of one greyscale uint8 image ``(H, W)``; the mask has shape ``(H, W)``.

        One image has no dataset to estimate a prior from: the weights file's default
        prior stands in (or none with ``adapt_prior: false``). Label a dataset with
        :meth:`analyse`, :meth:`fit_prior` and :meth:`decide` to adapt to it.
        """
        return self.decide(self.analyse(image), self.default_prior if self.options.adapt_prior else None)

    # -- the two passes -------------------------------------------------------------------

    def analyse(self, image: np.ndarray) -> ImageAnalysis:
        """First pass: the ``top_k`` candidates by appearance that could pass the area filter."""
        _check_image(image)
        shape = (int(image.shape[0]), int(image.shape[1]))
        if min(shape) < 8:
            return ImageAnalysis(shape, (0, 0), reason="image_too_small")
        work, tissue = self.preprocess(image)
        work_shape = (int(work.shape[0]), int(work.shape[1]))
        if float(work.std()) < 1e-3:
            return ImageAnalysis(shape, work_shape, reason="no_contrast")
        candidates = self.candidates(work, tissue)
        if not candidates:
            return ImageAnalysis(shape, work_shape, reason="no_candidate")
        # A region the area filter would discard can never become a label, so it must not
        # take the place of a slightly less likely but lesion-sized one. Only when no
        # candidate is large enough is the best small one kept (and later filtered out).
        margin = 1.1 * self.options.min_area_fraction  # refinement changes the area slightly
        large = [c for c in candidates if np.exp(c.features["log_area"]) > margin]
        pool = large or [max(candidates, key=lambda c: c.score)]
        pool = sorted(pool, key=lambda c: -c.score)[: self.options.top_k]  # stable: ties keep their order
        return ImageAnalysis(shape, work_shape, pool)

    def load_analysis(self, arrays: dict[str, np.ndarray]) -> ImageAnalysis:
        """A first pass read back from :meth:`ImageAnalysis.to_arrays` (the stage's cache)."""
        return ImageAnalysis.from_arrays(arrays)

    def fit_prior(self, analyses: Sequence[ImageAnalysis]) -> DatasetPrior | None:
        """The dataset's prior from its most confident first-pass labels.

        ``None`` with ``adapt_prior: false``; the weights file's default prior when fewer
        than ``prior_min_images`` images have a lesion-sized candidate.
        """
        o = self.options
        if not o.adapt_prior:
            return None
        margin = 1.1 * o.min_area_fraction
        best = [a.candidates[0] for a in analyses if a.candidates and np.exp(a.candidates[0].features["log_area"]) > margin]
        if len(best) < o.prior_min_images:
            return self.default_prior
        best.sort(key=lambda c: -c.score)
        kept = best[: max(o.prior_min_images, int(np.ceil(o.prior_fraction * len(best))))]
        return DatasetPrior.estimate(
            [c.features["depth_rel"] for c in kept],
            [c.features["offset_x_rel"] for c in kept],
            [c.features["log_size_rel"] for c in kept],
            source="confident_labels",
        )

    def prior_from_masks(self, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> DatasetPrior | None:
        """Few-shot calibration: the prior from ground-truth masks (the labeled split's).

        ``pairs`` are (image, mask) of the same size; masks without a lesion are skipped.
        ``None`` when none has a lesion. The prior is measured exactly as the first pass
        measures candidates (at the working size, relative to the imaged tissue).
        """
        placements = []
        for image, mask in pairs:
            _check_image(image)
            if min(image.shape) < 8:
                continue
            work, tissue = self.preprocess(image)
            small = cv2.resize(mask.astype(np.float32), work.shape[::-1], interpolation=cv2.INTER_AREA) >= 0.5
            if not small.any():
                continue
            ys, xs = np.nonzero(small)
            placements.append(_Context.of(work, tissue).placement(xs.mean() + 0.5, ys.mean() + 0.5, float(len(ys))))
        if not placements:
            return None
        return DatasetPrior.estimate(
            *([p[k] for p in placements] for k in ("depth_rel", "offset_x_rel", "log_size_rel")), source="ground_truth"
        )

    def decide(self, analysis: ImageAnalysis, prior: DatasetPrior | None) -> PseudoLabel:
        """Second pass: re-rank an image's candidates with ``prior`` and make its label."""
        if analysis.reason:
            return invalid_label(analysis.shape, analysis.reason)
        scored = [(self.final_score(c.features, prior, c.score), c) for c in analysis.candidates]
        z, best = max(scored, key=lambda item: item[0])  # first of equal scores: deterministic
        mask = self.refine(best, analysis.work_shape, analysis.shape)
        if not mask.any():
            return invalid_label(analysis.shape, "empty_after_refinement", self.confidence(z))
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        label = PseudoLabel(mask=mask, score=self.confidence(z), valid=True, box=box)
        return apply_area_filter(label, self.options.min_area_fraction)

    # -- stages ------------------------------------------------------------------------

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resize to the working size and reduce speckle.

        Returns the working image (float32 in [0, 1], lesion dark) and the imaged tissue
        (bool: everything but the black padding around the scan's field of view).
        """
        o = self.options
        h, w = image.shape
        scale = o.working_size / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small, outside = _neutralise_outside_field(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        if self.prompt.polarity < 0:
            small = 255 - small
        small = cv2.medianBlur(small, _odd(o.median_size))
        small = cv2.bilateralFilter(small, 7, o.bilateral_sigma, 3.0)
        return small.astype(np.float32) / 255.0, ~outside

    def candidates(self, work: np.ndarray, tissue: np.ndarray | None = None) -> list[Candidate]:
        """Dark connected components over thresholds x opening radii, each described and
        given its appearance score. ``tissue`` (default: the whole image) is the imaged area."""
        o = self.options
        quantiles = np.linspace(o.min_level_quantile, o.max_level_quantile, o.n_levels)
        levels = np.quantile(work, quantiles)
        context = _Context.of(work, np.ones(work.shape, bool) if tissue is None else tissue)
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
                        out.append(Candidate(mask, (y, x), features, self.appearance_score(features)))
        return out

    def refine(self, best: Candidate, work_shape: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
        """Smooth the chosen region's boundary and resize it to ``shape``."""
        region = best.full_mask(work_shape).astype(np.float32)
        soft = cv2.GaussianBlur(region, (0, 0), 1.5)
        big = cv2.resize(soft, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        return big >= 0.5

    # -- features and score ---------------------------------------------------------------

    def describe(self, region: np.ndarray, offset: tuple[int, int], context: _Context) -> dict[str, float]:
        """Features of one candidate ``region`` (a bool crop at ``offset`` of the working image).

        ``level`` (threshold quantile) and ``hull`` (convex-hull variant) are added by
        :meth:`candidates`; grey-level features are in units of the image's std; position
        and size are relative to the imaged tissue's box and area, not to the frame, so
        that they mean the same on a cropped scan and on a full screen capture.
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
        ty0, ty1, tx0, tx1 = context.tissue_box
        sides = (x <= tx0, y <= ty0, x + bw >= tx1, y + bh >= ty1)
        features = {
            "contrast": (float(np.median(ring_values)) - inside) / context.spread,
            "t_contrast": (outside - inside) / spread,
            "darkness": (context.median - inside) / context.spread,
            "solidity": solidity,
            "ellipse_fit": ellipse_fit,
            "aspect": aspect,
            "log_area": float(np.log(area / float(h * w))),  # of the frame: the area filter's unit
            **context.placement(xs.mean() + x + 0.5, ys.mean() + y + 0.5, area),
            "border": float(sum(sides)),
            "top": float(sides[1]),
        }
        features["log_size_rel_sq"] = features["log_size_rel"] ** 2
        features["shape"] = self._shape_prior(features)
        return features

    def appearance_score(self, f: dict[str, float]) -> float:
        """First-pass evidence that a candidate is the lesion, from how it looks (unbounded)."""
        w = self.weights
        return w.appearance_bias + sum(weight * f[name] for name, weight in w.appearance.items())

    def final_score(self, f: dict[str, float], prior: DatasetPrior | None, appearance: float | None = None) -> float:
        """Evidence with the dataset prior's terms; without a prior, the appearance score."""
        if prior is None:
            return self.appearance_score(f) if appearance is None else appearance
        terms = {**f, **prior.terms(f)}
        return self.weights.score_bias + sum(weight * terms[name] for name, weight in self.weights.score.items())

    def confidence(self, z: float) -> float:
        """Map the best candidate's evidence ``z`` to a confidence in [0, 1]."""
        w = self.weights
        return float(1.0 / (1.0 + np.exp(-(z - w.confidence_centre) / w.confidence_scale)))

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
    tissue_box: tuple[float, float, float, float]  # y0, y1, x0, x1 of the imaged tissue (pixels)
    tissue_area: float  # pixels

    def placement(self, cx: float, cy: float, area: float) -> dict[str, float]:
        """Where a region with centre ``(cx, cy)`` and ``area`` (pixels) sits in the tissue."""
        ty0, ty1, tx0, tx1 = self.tissue_box
        return {
            "depth_rel": (cy - ty0) / (ty1 - ty0),
            "offset_x_rel": abs((cx - tx0) / (tx1 - tx0) - 0.5),
            "log_size_rel": float(np.log(area / self.tissue_area)),
        }

    @classmethod
    def of(cls, work: np.ndarray, tissue: np.ndarray) -> _Context:
        h, w = work.shape
        ys, xs = np.nonzero(tissue)
        if len(ys) < 0.05 * h * w:  # (almost) nothing imaged: fall back to the frame
            box, area = (0.0, float(h), 0.0, float(w)), float(h * w)
        else:
            # Percentiles, not min/max: burned-in text outside the scan must not stretch the box.
            y0, y1 = np.percentile(ys, [0.5, 99.5])
            x0, x1 = np.percentile(xs, [0.5, 99.5])
            box, area = (float(y0), float(y1) + 1.0, float(x0), float(x1) + 1.0), float(len(ys))
        return cls(work, float(work.std()) + 1e-6, float(np.median(work)), box, area)


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


def _neutralise_outside_field(small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give black areas outside the scan's field of view the image's median grey.

    Pure black regions that touch the image border are padding around the scan
    (sector edges, letterboxing), not tissue; left black they would be the darkest,
    highest-contrast "lesions" of the image. Returns the image and the outside mask.
    """
    black = (small <= _BLACK_LEVEL).astype(np.uint8)
    outside = np.zeros(small.shape, dtype=bool)
    if not black.any() or black.all():
        return small, outside
    h, w = small.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(black, connectivity=8)
    out = small.copy()
    fill = np.uint8(np.median(small[black == 0]))
    for index in range(1, count):
        x, y, bw, bh, area = (int(v) for v in stats[index])
        on_border = x == 0 or y == 0 or x + bw == w or y + bh == h
        if on_border and area >= _MIN_OUTSIDE_FRACTION * h * w:
            outside |= labels == index
    out[outside] = fill
    return out, outside


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
    if not o.weights.strip():
        raise ConfigError("weights", f"expected the path of a weights file, got {o.weights!r}")
    if not 0.0 < o.prior_fraction <= 1.0:
        raise ConfigError("prior_fraction", f"must be in (0, 1], got {o.prior_fraction}")
    if o.prior_min_images < 1:
        raise ConfigError("prior_min_images", f"must be at least 1, got {o.prior_min_images}")
    if o.top_k < 1:
        raise ConfigError("top_k", f"must be at least 1, got {o.top_k}")
