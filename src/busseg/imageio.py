"""Reading and writing greyscale ultrasound images and binary masks, with validation.

Public BUS datasets store the same kind of content in many PNG flavours: 8-bit
greyscale, 1-bit, RGB or RGBA with grey content, 16-bit greyscale, colour-coded
masks. These functions turn all of them into two array types used everywhere in
busseg, and refuse anything they cannot convert without guessing:

* images: ``uint8`` arrays of shape (H, W);
* masks: ``bool`` arrays of shape (H, W), True on the lesion.

Conversion rules (each one is a decision, stated here once):

* RGB/RGBA/LA/palette images: alpha is dropped and the content is classified by
  :func:`classify_colour` (the one colour rule of every importer kind):

  - ``grey``: every pixel's channels within :data:`GREY_TOLERANCE` levels of each other;
  - ``tinted``: greyscale content stored in colour: the scan seen through a tinted grey
    map (BUS-UCLM's Siemens images: channel means about 60 / 62 / 68) and/or coloured
    overlays (caliper crosses, body-mark icons, markers, text). Each channel is a function of
    the pixel's luma (the "grey map", estimated from the image itself); pixels off that map
    are overlays unless they are *flow-coloured* (:func:`_flow_pixels`: saturated red/orange
    or blue/cyan, the two halves of every colour Doppler velocity map) *and* painted in
    areas: blobs with a solid core (:data:`AREA_SIZE`), away from the frame's edge or large;
  - ``colour``: at least :data:`AREA_MIN_PIXELS` pixels in the solid core of flow-coloured
    blobs, or speckled flow on more than :data:`FLOW_MAX_FRACTION` of the image, or more than
    :data:`OVERLAY_MAX_FRACTION` of the image off the grey map (no overlay layer covers that
    much): real colour content such as the flow in a colour Doppler box and its colour bar.
    :attr:`ColourContent.reason` says where the colour was and how much.

  ``grey`` and ``tinted`` images are read by their ITU-R 601 luma. A ``colour`` image is
  an error for :func:`read_image` unless ``allow_colour=True``; the importers read every
  image with :func:`read_image_with_colour`, convert colour images to luma as well, and
  the prepare report lists the ``tinted`` and ``colour`` ones (the documented rule:
  "converted and listed").
* 16-bit (and 32-bit) greyscale images are rescaled linearly so that the image's own
  minimum maps to 0 and its maximum to 255 (a constant image becomes all zeros).
* Masks: 1-bit as is; 8-bit with values in {0, 255} or {0, 1}, or any two values of which
  the background is 0 ({0, 120}: the other value is the lesion); 16/32-bit: nonzero is
  foreground; RGB/RGBA: any non-black pixel is foreground (BUS-UCLM colour masks).
  Masks with intermediate grey levels are an error, unless the caller passes
  ``threshold=True`` (the documented rule of datasets such as STU), in which case
  values > 127 are foreground; even then a "mask" in which more than
  :data:`NEAR_BINARY_MAX_FRACTION` of the pixels are intermediate is refused, since
  it is almost certainly an image put in the masks folder.

Every problem with a file raises :class:`busseg.errors.DataError` naming the file.
"""
from __future__ import annotations

import hashlib
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from busseg.atomic import atomic_path
from busseg.dicom import DICOM_SUFFIXES, is_dicom, read_dicom_pixels
from busseg.errors import DataError

GREY_TOLERANCE = 2
"""Largest channel spread (in 8-bit levels) of a pixel that still counts as grey."""

MAP_TOLERANCE = 8
"""Largest distance (8-bit levels) of a channel from the image's grey map at the pixel's
luma that still counts as on the map (rounding of luma and resampling in the scanner
move tinted pixels by a few levels; overlay and Doppler colours are far off it)."""

OVERLAY_MAX_FRACTION = 0.10
"""Largest fraction of off-map pixels (any colour) that may still be greyscale content with
overlays. Real BUS-UCLM scans without Doppler carry 1.1-2.2 % (the scanner's filled body-mark
icon alone is about 1.1 %, plus a yellow marker, green calipers or a measurement box, and
text); a screen that is a tenth colour is a colour image whatever its hues."""

FLOW_MIN_CHROMA = 40
"""Smallest channel spread (levels) of a flow-coloured pixel. Colour Doppler paints flow in
saturated colours (dark red flow at (66, 0, 0) still spreads 66 levels); a tinted map spreads
its channels by under 40 and BUS-UCLM's lavender body-mark icon by about 34."""

FLOW_MIN_SATURATION = 0.5
"""Smallest saturation (spread / brightest channel) of a flow-coloured pixel: Doppler flow is
0.6-1.0; pastel overlays (the body-mark icon 0.21, a green measurement box 0.34) are less."""

FLOW_HUES = ((0.0, 40.0), (320.0, 360.0), (170.0, 265.0))
"""Hue ranges (degrees) of flow colours: red to orange (flow towards the probe, power
Doppler) and blue to cyan (flow away). Velocity maps reach yellow or cyan only at the cores
of fast flow, inside red or blue; the scanners' marks are yellow (hue 45-60), green or
lavender, so yellow markers and green calipers never count as flow."""

AREA_SIZE = 3
"""Side (pixels) of the square neighbourhood that must be flow-coloured entirely for a pixel
to count as the solid core of a painted area: 1-2 px caliper crosses, lines and letters
have none; flow in a vessel or a colour bar does (the smallest real flow seen, a 71-px red
speck, has 34 such pixels)."""

AREA_MIN_PIXELS = 16
"""Fewest solid-core flow pixels (see :data:`AREA_SIZE`) that make an image colour. On the
40 real BUS-UCLM scans of the sample, grey scans have none and Doppler scans 34 and more."""

EDGE_ICON_MAX_FRACTION = 0.002
"""Largest size (share of the image) of a flow-coloured blob touching the frame's edge that
is taken for a scanner icon (a logo, an orientation marker), not flow: icons sit at the
edges and are small; flow lies inside the tissue or, touching the edge, is large."""

FLOW_MAX_FRACTION = 0.005
"""Largest fraction of flow-coloured pixels (speckled, without solid cores) in greyscale
content: real grey scans hold under 0.15 % (orange text, a blue edge line); a Doppler box
whose flow is speckled rather than painted in areas covers more."""

MAP_SAMPLE_PIXELS = 65536
"""Pixels the grey map is estimated from at most (a regular grid over larger images);
every pixel is still tested against the map."""

MAP_BIN = 16
"""Width (luma levels) of the bins in which the grey map is estimated."""

MAP_MIN_FRACTION = 0.002
"""Smallest share of the pixels a luma bin needs for its median colour to be trusted;
bins with fewer (say, the bright levels where yellow calipers dominate) are interpolated
from their neighbours, so that a small overlay never defines the map."""

MAP_MAX_SPREAD = 96
"""Largest channel spread (levels) of a pixel the grey map is estimated from. A tinted map
spreads its channels by a few tens of levels at most (BUS-UCLM's: under 40 even at the
brightest; a sepia map about 65); overlay and Doppler colours spread them by 100-255."""

GREY, TINTED, COLOUR = "grey", "tinted", "colour"
"""The three kinds of image content :func:`classify_colour` tells apart."""

NEAR_BINARY_MAX_FRACTION = 0.05
"""Largest fraction of intermediate (not 0/255) pixels a thresholded mask may have."""

PNG_COMPRESS_LEVEL = 1
"""zlib level of written PNGs: on BUS-BRA, level 1 writes 3.7x faster than Pillow's
default 6 for files about 14 % larger, a good trade for a cached pipeline output."""

MAX_PIXELS = 4096 * 4096
"""Largest image (width x height) that is read. Ultrasound scans are under 1 MP and a 4K
screen capture is 8.3 MP; a larger file is almost certainly something else (or a
decompression bomb), and reading it would take gigabytes (the colour rule works on
several copies). Larger images are refused from their header, with their size."""

_SIZE_LIMIT = f"at most {MAX_PIXELS / 1e6:.1f} MP (4096 x 4096 px) are read"

MIN_IMAGE_SIZE = 16
"""Smallest width and height (pixels) of an image that is prepared or predicted. No
breast-ultrasound scan is smaller; a 1 x 1 or 3 x 3 "image" in the test split would count
as one easy case and inflate the mean Dice, and a mask predicted for it means nothing, so
``prepare`` skips it with the reason and ``busseg predict`` refuses it the same way."""


def too_small(image: np.ndarray) -> str | None:
    """Why ``image`` (H, W) is too small to segment, or None: the one size rule of
    ``prepare`` and ``busseg predict`` (:data:`MIN_IMAGE_SIZE`)."""
    height, width = image.shape[:2]
    if min(height, width) >= MIN_IMAGE_SIZE:
        return None
    return f"image too small: {width}x{height} px (at least {MIN_IMAGE_SIZE} px per side)"


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File extensions read as images or masks from a folder (case-insensitive): by the
importers (``folder``, ``udiat``, ...) and by ``busseg predict`` for its input folders."""

SCAN_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
"""File extensions read as scans (images, never masks): the image formats and DICOM."""

_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


@dataclass(frozen=True)
class ColourContent:
    """What :func:`classify_colour` found: ``kind`` (:data:`GREY`, :data:`TINTED` or
    :data:`COLOUR`), ``off_map_fraction``, the share of pixels off the grey map,
    ``area_fraction``, the share in the solid core of flow-coloured areas (Doppler flow, a
    colour bar), ``flow_fraction``, the share of flow-coloured pixels, and ``where``, the
    flow-coloured blobs that counted (empty when none did)."""

    kind: str = GREY
    off_map_fraction: float = 0.0
    area_fraction: float = 0.0
    flow_fraction: float = 0.0
    where: str = ""

    @property
    def converted(self) -> bool:
        """Whether reading changed more than a grey file's exact channel values."""
        return self.kind != GREY

    @property
    def reason(self) -> str:
        """Why the image is colour, for reports and messages (empty unless ``colour``)."""
        if self.kind != COLOUR:
            return ""
        amounts = f"{self.flow_fraction:.2%} of pixels in flow colours (red/blue), {self.off_map_fraction:.2%} off the grey map"
        return f"{self.where}; {amounts}" if self.where else amounts


def read_image(path: str | Path, *, allow_colour: bool = False) -> np.ndarray:
    """Read a greyscale ultrasound image as a ``uint8`` array of shape (H, W).

    Accepts 8-bit and 1-bit greyscale, RGB/RGBA/LA/palette files with greyscale content
    (plain grey or ``tinted``, see the module docstring; alpha is dropped) and 16-bit
    greyscale (rescaled by the image's own min/max). Colour content (e.g. a Doppler box)
    is converted to luma only with ``allow_colour=True``. Raises :class:`DataError`
    naming ``path`` otherwise.
    """
    image, content = read_image_with_colour(path)
    if content.kind == COLOUR and not allow_colour:
        raise DataError(
            path,
            f"cannot read image: colour content, e.g. a colour Doppler box ({content.reason}); "
            "expected greyscale content",
        )
    return image


def read_image_with_colour(path: str | Path) -> tuple[np.ndarray, ColourContent]:
    """Read an image as ``uint8`` (H, W) by its luma, and say what its colour content was.

    Every importer reads images through here, so that the colour rule is the same for
    every dataset kind; the caller decides what to record. DICOM files
    (:func:`busseg.dicom.is_dicom`) are read by :func:`busseg.dicom.read_dicom_pixels`
    (their first frame) and pass the same colour rule. Raises :class:`DataError`
    naming ``path`` for unreadable files.
    """
    if is_dicom(path):
        pixels = read_dicom_pixels(path, MAX_PIXELS)
        if pixels.ndim == 2:
            return pixels, ColourContent()
        luma = np.asarray(Image.fromarray(pixels).convert("L"), dtype=np.uint8)
        return luma, classify_colour(pixels, luma)
    image = _open(path, "image")
    if image.mode in ("L", "1"):
        return np.asarray(image.convert("L"), dtype=np.uint8), ColourContent()
    if image.mode in _HIGH_DEPTH_MODES:
        return _rescale_to_uint8(np.asarray(image)), ColourContent()
    if image.mode in ("LA", "La"):
        return np.asarray(image.getchannel("L"), dtype=np.uint8), ColourContent()
    rgb = _to_rgb(image, path, "image")
    luma = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)
    return luma, classify_colour(rgb, luma)


def classify_colour(rgb: np.ndarray, luma: np.ndarray | None = None) -> ColourContent:
    """Tell grey, tinted-grey (greyscale content) and colour content of an RGB array apart.

    "Two channels differ" cannot be the test: a tinted grey map makes R, G and B differ on
    nearly every pixel. What a tinted map keeps is that each channel is a function of one
    grey ramp, hence of the pixel's luma. So the grey map (each channel's median offset
    from luma, per bin of :data:`MAP_BIN` levels) is estimated from the image, and pixels
    more than :data:`MAP_TOLERANCE` levels off it count as coloured. Scanners burn marks
    into every scan (a filled body-mark icon, a yellow marker, green calipers, text), so
    being off the map is not enough: colour content is Doppler flow, saturated red/orange or
    blue/cyan (:func:`_flow_pixels`) painted in areas with a solid core
    (:data:`AREA_MIN_PIXELS`), small blobs at the frame's edge being icons
    (:data:`EDGE_ICON_MAX_FRACTION`); or speckled flow over more than
    :data:`FLOW_MAX_FRACTION` of the image; or more than :data:`OVERLAY_MAX_FRACTION` of it
    off the map.
    """
    rgb = np.asarray(rgb, dtype=np.uint8)
    if not _has_colour(rgb):
        return ColourContent()
    if luma is None:
        luma = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)
    off_map = _off_map(rgb, luma, _grey_map_offsets(*_map_sample(rgb, luma)))
    size = max(off_map.size, 1)
    fraction = float(np.count_nonzero(off_map)) / size
    flow = _flow_pixels(rgb, off_map)
    flow_fraction = float(np.count_nonzero(flow)) / size
    core = _solid_core(flow) if flow.any() else flow
    blobs = _flow_blobs(flow, core) if core.any() else []
    core_pixels = sum(blob.core_pixels for blob in blobs)
    colour = core_pixels >= AREA_MIN_PIXELS or flow_fraction > FLOW_MAX_FRACTION or fraction > OVERLAY_MAX_FRACTION
    where = _describe_blobs(blobs, off_map.shape) if colour else ""
    return ColourContent(COLOUR if colour else TINTED, fraction, core_pixels / size, flow_fraction, where)


def _flow_pixels(rgb: np.ndarray, off_map: np.ndarray) -> np.ndarray:
    """Off-map pixels in flow colours: spread at least :data:`FLOW_MIN_CHROMA`, saturation at
    least :data:`FLOW_MIN_SATURATION` and a hue in :data:`FLOW_HUES` (red/orange, blue/cyan).

    Only off-map pixels are tested, so a sepia or otherwise warm grey map (on the map by
    definition) never counts as flow; the hue is computed for the few vivid pixels only.
    """
    red, green, blue = (rgb[..., c].astype(np.int16) for c in range(3))
    brightest = np.maximum(np.maximum(red, green), blue)
    chroma = brightest - np.minimum(np.minimum(red, green), blue)
    vivid = off_map & (chroma >= FLOW_MIN_CHROMA) & (chroma >= FLOW_MIN_SATURATION * brightest)
    flow = np.zeros(off_map.shape, dtype=bool)
    index = np.flatnonzero(vivid)
    if index.size:
        hue = _hue(rgb.reshape(-1, 3)[index].astype(np.float32))
        in_range = np.zeros(index.size, dtype=bool)
        for low, high in FLOW_HUES:
            in_range |= (hue >= low) & (hue < high)
        flow.flat[index[in_range]] = True
    return flow


def _hue(pixels: np.ndarray) -> np.ndarray:
    """HSV hue in degrees [0, 360) of (N, 3) float RGB pixels with a nonzero spread."""
    red, green, blue = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    brightest = pixels.max(axis=1)
    spread = np.maximum(brightest - pixels.min(axis=1), 1e-6)
    sector = np.where(
        brightest == red,
        np.mod((green - blue) / spread, 6.0),
        np.where(brightest == green, (blue - red) / spread + 2.0, (red - green) / spread + 4.0),
    )
    return sector * 60.0


def _solid_core(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` whose whole :data:`AREA_SIZE` x :data:`AREA_SIZE` neighbourhood is
    in ``mask`` (a binary erosion; False along the border, where the square does not fit)."""
    height, width = mask.shape
    k, half = AREA_SIZE, AREA_SIZE // 2
    core = np.zeros_like(mask)
    if height < k or width < k:
        return core
    rows = mask[: height - k + 1].copy()
    for shift in range(1, k):
        rows &= mask[shift : height - k + 1 + shift]
    solid = rows[:, : width - k + 1].copy()
    for shift in range(1, k):
        solid &= rows[:, shift : width - k + 1 + shift]
    core[half : half + solid.shape[0], half : half + solid.shape[1]] = solid
    return core


@dataclass(frozen=True)
class _Blob:
    """One flow-coloured connected area: its pixels, solid-core pixels and bounding box."""

    pixels: int
    core_pixels: int
    rows: tuple[int, int]
    columns: tuple[int, int]


def _flow_blobs(flow: np.ndarray, core: np.ndarray) -> list[_Blob]:
    """The flow-coloured blobs (8-connected) that have a solid core, largest first, less
    those taken for icons: touching the frame's edge and under :data:`EDGE_ICON_MAX_FRACTION`."""
    from scipy import ndimage  # only images with flow-coloured cores get here

    labels, _ = ndimage.label(flow, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    core_sizes = np.bincount(labels[core], minlength=sizes.size)
    height, width = flow.shape
    blobs = []
    for number, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or core_sizes[number] == 0:
            continue
        rows, columns = (box[0].start, box[0].stop - 1), (box[1].start, box[1].stop - 1)
        at_edge = rows[0] == 0 or columns[0] == 0 or rows[1] == height - 1 or columns[1] == width - 1
        if at_edge and sizes[number] < EDGE_ICON_MAX_FRACTION * flow.size:
            continue
        blobs.append(_Blob(int(sizes[number]), int(core_sizes[number]), rows, columns))
    return sorted(blobs, key=lambda blob: -blob.pixels)


def _describe_blobs(blobs: list[_Blob], shape: tuple[int, ...]) -> str:
    """Where the flow-coloured areas are, for :attr:`ColourContent.reason`."""
    if not blobs:
        return ""
    height, width = shape[:2]
    largest = blobs[0]
    total = sum(blob.pixels for blob in blobs)
    return (
        f"{len(blobs)} painted colour area{'s' if len(blobs) > 1 else ''} ({total} px), the largest "
        f"{largest.pixels} px at rows {largest.rows[0]}-{largest.rows[1]}, columns "
        f"{largest.columns[0]}-{largest.columns[1]} of {height} x {width}"
    )


def _has_colour(rgb: np.ndarray) -> bool:
    """Whether any pixel's channels differ by more than :data:`GREY_TOLERANCE` levels."""
    red, green, blue = (rgb[..., c].astype(np.int16) for c in range(3))
    return bool(
        np.any(np.abs(red - green) > GREY_TOLERANCE)
        or np.any(np.abs(red - blue) > GREY_TOLERANCE)
        or np.any(np.abs(green - blue) > GREY_TOLERANCE)
    )


def _map_sample(rgb: np.ndarray, luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pixels the grey map is estimated from: all of them up to :data:`MAP_SAMPLE_PIXELS`,
    else a regular grid of about that many (every ``step``-th row and column).

    The map is 16 medians of a smooth ramp: tens of thousands of pixels pin it down as
    well as the whole image does, at a fraction of the cost (issue 21: the full estimate
    was most of ``prepare``'s time on 856 x 606 scans). A grid, not a random draw, keeps
    the result a function of the pixels alone.
    """
    step = max(1, math.ceil(math.sqrt(luma.size / MAP_SAMPLE_PIXELS)))
    return rgb[::step, ::step], luma[::step, ::step]


def _grey_map_offsets(rgb: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """The grey map as a (256, 3) table: each channel's expected offset from luma.

    Medians per luma bin resist overlays (a minority at every well-populated level, and
    saturated colours, over :data:`MAP_MAX_SPREAD`, are not counted at all); bins with
    fewer than :data:`MAP_MIN_FRACTION` of the pixels are interpolated from the trusted
    ones, and with no trusted bin the map is plain grey (all offsets zero). The medians
    come from per-bin histograms of the integer offsets (equal to ``np.median``, without
    sorting the pixels).
    """
    n_bins = 256 // MAP_BIN
    channels = [rgb[..., c].ravel() for c in range(3)]
    # Saturated pixels (overlay colours, Doppler flow) are off any grey map: left out, so
    # that many pixels of one overlay colour never make a sparsely populated bin their own.
    brightest = np.maximum(np.maximum(channels[0], channels[1]), channels[2])
    darkest = np.minimum(np.minimum(channels[0], channels[1]), channels[2])
    kept = brightest.astype(np.int16) - darkest <= MAP_MAX_SPREAD
    channels = [values[kept].astype(np.intp) for values in channels]
    flat_luma = luma.ravel()[kept].astype(np.intp)
    bins = flat_luma // MAP_BIN
    counts = np.bincount(bins, minlength=n_bins)
    trusted = counts >= max(4, MAP_MIN_FRACTION * luma.size)
    table = np.zeros((256, 3), dtype=np.float64)
    if not trusted.any():
        return table
    centres = (np.arange(n_bins) + 0.5) * MAP_BIN
    levels = np.arange(256)
    for channel in range(3):
        offsets = channels[channel] - flat_luma + 255  # 0 .. 510
        histogram = np.bincount(bins * 511 + offsets, minlength=n_bins * 511).reshape(n_bins, 511)
        medians = _histogram_medians(histogram[trusted], counts[trusted]) - 255
        table[:, channel] = np.interp(levels, centres[trusted], medians)
    return table


def _histogram_medians(histogram: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The median of each row's values (``np.median``'s: the mean of the two middle ones
    for an even count), from a (rows, values) histogram of integer values 0, 1, ..."""
    cumulative = np.cumsum(histogram, axis=1)
    # The k-th smallest value (from 0) is the first value whose cumulative count exceeds k.
    lower = np.argmax(cumulative > ((counts - 1) // 2)[:, None], axis=1)
    upper = np.argmax(cumulative > (counts // 2)[:, None], axis=1)
    return (lower + upper) / 2.0


def _off_map(rgb: np.ndarray, luma: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Pixels with a channel more than :data:`MAP_TOLERANCE` levels off the grey map.

    ``|value - luma - offset| > tolerance`` is precomputed for every (luma, value) pair as
    a 256 x 256 table per channel, and looked up by ``luma * 256 + value``: the same test
    on uint8 pixels, without (H, W, 3) float arrays (a third of the time of computing it).
    """
    levels = np.arange(256, dtype=np.float64)
    expected = levels[:, None, None] + offsets[:, None, :]  # (luma, 1, channel)
    off_table = np.abs(levels[None, :, None] - expected) > MAP_TOLERANCE  # (luma, value, channel)
    index = luma.astype(np.uint16) << 8
    off_map = np.zeros(luma.shape, dtype=bool)
    for channel in range(3):
        off_map |= np.take(np.ascontiguousarray(off_table[..., channel]).ravel(), index | rgb[..., channel])
    return off_map


def read_mask(
    path: str | Path,
    *,
    resize_to: tuple[int, int] | None = None,
    threshold: bool = False,
) -> np.ndarray:
    """Read a binary lesion mask as a ``bool`` array of shape (H, W).

    ``resize_to`` is the target ``(height, width)`` (an image's ``.shape``); the mask is
    resized with nearest-neighbour, which keeps it binary. ``threshold=True`` accepts
    near-binary 8-bit masks and keeps values > 127; without it, a mask with more than two
    grey levels, or two of which neither is 0, is an error ({0, v}: v is the lesion).
    See the module docstring for all rules.
    """
    image = _open(path, "mask")
    if image.mode == "1":
        mask = np.asarray(image, dtype=bool)
    elif image.mode in _HIGH_DEPTH_MODES:
        mask = np.asarray(image) != 0
    elif image.mode == "L":
        mask = _binarise_levels(np.asarray(image, dtype=np.uint8), path, threshold)
    elif image.mode in ("LA", "La"):
        mask = _binarise_levels(np.asarray(image.getchannel("L"), dtype=np.uint8), path, threshold)
    else:
        # Colour masks (BUS-UCLM: green benign, red malignant) mark the lesion with
        # any non-black colour; the brightest channel carries that information.
        rgb = _to_rgb(image, path, "mask")
        # np.maximum over the three planes: 5x faster than .max(axis=2) on a short last axis.
        brightest = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
        mask = brightest > 127 if threshold else brightest > 0
    if resize_to is not None:
        mask = resize_mask(mask, resize_to)
    return mask


def load_grey(path: str | Path) -> np.ndarray:
    """Read a prepared (already validated) 8-bit greyscale PNG as ``uint8`` (H, W).

    No conversion rules here: prepared files were written by :func:`write_png`, so any
    failure is a broken or missing file, raised as :class:`DataError` naming it.
    """
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read prepared image: {exc}") from None


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a ``uint8`` image to ``size`` x ``size`` (the network's input)."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a bool mask to ``size = (height, width)`` with nearest-neighbour sampling.

    Nearest-neighbour keeps the mask binary, and because it only picks existing pixels
    it gives the same result whether a near-binary mask is thresholded before or after.
    """
    height, width = (int(s) for s in size)
    if mask.shape == (height, width):
        return mask
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (width, height), resample=Image.Resampling.NEAREST
    )
    return np.asarray(resized) > 127


def mask_colour_class(path: str | Path) -> str | None:
    """The class a colour-coded mask encodes: ``"benign"`` (green), ``"malignant"`` (red).

    BUS-UCLM draws benign lesions in green (0, 255, 0) and malignant ones in red
    (255, 0, 0). Returns ``None`` for a mask without coloured foreground (all black,
    greyscale or white foreground). When both colours occur, the one covering more
    pixels wins; a tie returns ``None``. Raises :class:`DataError` if unreadable.
    """
    image = _open(path, "mask")
    if image.mode in ("1", "L", "LA", "La") or image.mode in _HIGH_DEPTH_MODES:
        return None
    rgb = _to_rgb(image, path, "mask").astype(np.int16)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    n_green = int(np.count_nonzero((green > red + GREY_TOLERANCE) & (green > blue + GREY_TOLERANCE)))
    n_red = int(np.count_nonzero((red > green + GREY_TOLERANCE) & (red > blue + GREY_TOLERANCE)))
    if n_green == n_red:
        return None
    return "benign" if n_green > n_red else "malignant"


def write_png(path: str | Path, array: np.ndarray, *, atomic: bool = True) -> None:
    """Write a ``uint8`` image or a ``bool`` mask (as 0/255) to an 8-bit greyscale PNG.

    The file appears atomically (:func:`busseg.atomic.atomic_path`: a temporary beside it,
    then a rename), so a crash never leaves a truncated PNG behind. ``atomic=False`` writes
    in place, for a caller that builds a whole folder atomically (prepare): the per-file
    temporary would only add a scan of the folder per file. The parent folder is created
    when missing. A failed write (disk full, ``ulimit -f``) raises :class:`DataError`
    naming ``path``; the atomic write leaves nothing behind.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"write_png expects a 2-D array, got shape {array.shape}")
    if array.dtype == bool:
        pixels = array.astype(np.uint8) * 255
    elif array.dtype == np.uint8:
        pixels = array
    else:
        raise ValueError(f"write_png expects uint8 or bool, got {array.dtype}")
    path = Path(path)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    try:
        if not atomic:
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
            return
        with atomic_path(path) as tmp_path:
            image.save(tmp_path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    except OSError as exc:  # disk full, ulimit -f (EFBIG), permissions: name the target
        raise DataError(path, f"cannot write: {exc.strerror or exc}") from None


def content_hash(array: np.ndarray) -> str:
    """SHA-256 hex digest of an array's decoded pixels, shape and dtype.

    Two files with the same pixels hash alike whatever their PNG encoding, which is
    what duplicate detection needs; the shape is included so that a 2x8 and a 4x4
    image with the same bytes differ.
    """
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _open(path: str | Path, what: str) -> Image.Image:
    """Open and fully decode ``path``, turning every failure into a :class:`DataError`.

    The size is checked from the header, before any pixel is decoded: an image over
    :data:`MAX_PIXELS` is refused with its size, never read whole (Pillow's own
    decompression-bomb warning, printed raw from deep inside it, is not shown).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_size(image.size, path, what)
                image.load()
                return image
    except MemoryError:
        raise
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # past twice Pillow's own limit, Image.open refuses
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)) / 1e6:.0f} MP" if found else f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP"
        raise DataError(path, f"cannot read {what}: too large: {pixels}; {_SIZE_LIMIT}") from None
    except FileNotFoundError:
        raise DataError(path, f"cannot read {what}: file not found") from None
    except Exception as exc:  # noqa: BLE001
        # Pillow reports broken files through many exception types (OSError,
        # SyntaxError, zlib.error, ValueError, DecompressionBombError, ...); all of
        # them mean the same thing to the user: this file is not a readable image.
        raise DataError(path, f"cannot read {what}: {type(exc).__name__}: {exc}") from None


def _check_size(size: tuple[int, int], path: str | Path, what: str) -> None:
    """Refuse an image of more than :data:`MAX_PIXELS` pixels, naming its size."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise DataError(
            path,
            f"cannot read {what}: too large: {width} x {height} px ({width * height / 1e6:.0f} MP); {_SIZE_LIMIT}",
        )


def _to_rgb(image: Image.Image, path: str | Path, what: str) -> np.ndarray:
    """The (H, W, 3) uint8 RGB content of a colour or palette image, alpha dropped."""
    if image.mode not in ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        raise DataError(path, f"cannot read {what}: unsupported pixel mode '{image.mode}'")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _rescale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map an image's own [min, max] linearly onto [0, 255]."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _binarise_levels(levels: np.ndarray, path: str | Path, threshold: bool) -> np.ndarray:
    """An 8-bit mask to bool: exact {0,255} / {0,1} always, near-binary only when thresholding."""
    present = np.unique(levels)
    if set(present.tolist()) <= {0, 255}:
        return levels == 255
    if set(present.tolist()) <= {0, 1}:
        return levels == 1
    if len(present) == 2 and present[0] == 0:
        # Any two-valued mask with background 0 ({0, 120}, {0, 128}): some tools save the
        # lesion as a class index or a mid grey; with two values there is nothing to guess.
        return levels == present[1]
    intermediate = float(np.count_nonzero((levels > 0) & (levels < 255))) / max(levels.size, 1)
    if not threshold:
        raise DataError(
            path,
            f"mask is not binary: {intermediate:.2%} of pixels have grey levels other than "
            f"0/255 ({len(present)} distinct values)",
        )
    if intermediate > NEAR_BINARY_MAX_FRACTION:
        raise DataError(
            path,
            f"mask is not near-binary: {intermediate:.2%} of pixels have intermediate grey "
            f"levels (at most {NEAR_BINARY_MAX_FRACTION:.0%} allowed); is this an image?",
        )
    return levels > 127
