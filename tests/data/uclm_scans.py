"""Full-size scans with BUS-UCLM's colour statistics, for the colour rule (issue 21).

BUS-UCLM itself is not in ``../shared/data``; what is known of it (856 x 606 RGB screen
captures from a Siemens scanner) is reproduced here:

* every scan goes through a slightly tinted grey map (R < G < B; channel means about
  60 / 62 / 68), drawn per image around the scanner's own so that no two images share
  the exact map;
* every scan carries coloured overlays on 1-1.5 % of its pixels: caliper crosses with
  dotted measurement lines, a body-mark pictogram with its probe marker, depth ticks and
  anti-aliased text (patient line, settings, measurements; some of it bold). Measured
  on the real folder, the old rule found 1.0-1.3 % of such pixels off the grey map;
* every scan also carries the scanner's filled body-mark icon in its bottom right corner
  (about 80 x 84 px, lavender: 1.1 % of the pixels, painted area that is not colour);
* a Doppler scan adds a colour box: its outline, flow painted with a velocity colour map
  (red-yellow towards the probe, blue-cyan away) over 5-60 % of the box, and (on most
  scans) the colour bar beside the image.

Used by ``tests/test_imageio.py``, ``tests/bad_input`` and
``benchmarks/colour_rule.py`` (the classification rates and the speed of the rule).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HEIGHT, WIDTH = 606, 856
"""BUS-UCLM's image size (rows, columns)."""

OVERLAY_COLOURS = ((244, 243, 93), (204, 175, 59), (99, 151, 110), (248, 252, 254), (194, 196, 151), (150, 60, 170))
"""Caliper yellow, marker yellow, box green, text white, text cream, purple: the annotation
colours of the real scans (measured on 40 of them; an earlier cyan and orange were invented,
and no real mark has a Doppler flow colour)."""

ICON_COLOUR = (130, 127, 161)
"""The lavender of the filled body-mark icon in the bottom right corner of every real scan."""

TEXTS = (
    "BREAST LT", "BREAST RT", "2:00 4CM FN", "L18L6 HD", "Dist 1.23 cm", "Gn 45 dB", "DR 60",
    "FR 27 Hz", "8.0 cm", "TIS 0.4  MI 1.1", "Depth 40 mm", "D1 0.82 cm  D2 0.61 cm", "SIEMENS S2000",
    "Res  Pen  Gen", "THI  SpaceTime", "Vol 0.34 ml", "12:00 2CM FN", "Axilla L",
)


def tinted_map(rng: np.random.Generator) -> np.ndarray:
    """A (256, 3) uint8 table: a grey level's R, G, B through a slightly blue-tinted map."""
    grey = np.arange(256, dtype=np.float64)
    gains = (0.95 + rng.uniform(-0.01, 0.01), 0.99 + rng.uniform(-0.01, 0.01), 1.08 + rng.uniform(-0.02, 0.02))
    shifts = (0.0, 1.0, 3.0 + rng.uniform(-1, 1))
    table = np.stack([grey * gain + shift for gain, shift in zip(gains, shifts)], axis=1)
    return np.clip(np.rint(table), 0, 255).astype(np.uint8)


def speckle_scan(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A grey B-mode-like scan: correlated speckle inside the imaged field, black margins,
    depth attenuation, a bright tissue layer and a dark lesion (channel means about 60 with the margins)."""
    coarse = rng.gamma(2.0, 48.0, (height // 2, width // 2)).astype(np.float32)
    speckle = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float64)
    yy, xx = np.mgrid[:height, :width]
    top, bottom = int(height * rng.uniform(0.06, 0.1)), int(height * rng.uniform(0.9, 0.96))
    left, right = int(width * rng.uniform(0.1, 0.16)), int(width * rng.uniform(0.84, 0.9))
    depth = np.clip((yy - top) / max(bottom - top, 1), 0, 1)
    image = speckle * (1.25 - 0.6 * depth)
    layer = np.abs(yy - (top + (bottom - top) * rng.uniform(0.15, 0.3))) < rng.uniform(8, 20)
    image[layer] *= 1.8
    cy, cx = rng.uniform(0.4, 0.7) * height, rng.uniform(0.35, 0.65) * width
    ry, rx = rng.uniform(25, 70), rng.uniform(35, 110)
    image[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] *= 0.3
    field = (yy >= top) & (yy < bottom) & (xx >= left) & (xx < right)
    image[~field] = 0
    return np.clip(image, 0, 255).astype(np.uint8)


def _painted_fraction(before: np.ndarray, after: np.ndarray) -> float:
    """Share of pixels an overlay changed."""
    return float(np.any(before != after, axis=2).mean())


def draw_overlays(rgb: np.ndarray, rng: np.random.Generator, target: float) -> np.ndarray:
    """``rgb`` with coloured calipers, a body mark, depth ticks and text on about ``target``
    of its pixels (text lines are added until the painted share reaches ``target``)."""
    height, width = rgb.shape[:2]
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    colour = lambda: OVERLAY_COLOURS[int(rng.integers(len(OVERLAY_COLOURS)))]  # noqa: E731
    for _ in range(int(rng.integers(1, 3))):  # caliper pairs with a dotted line between them
        (y0, x0), (y1, x1) = rng.uniform((0.2 * height, 0.2 * width), (0.85 * height, 0.8 * width), (2, 2))
        ink, arm = colour(), int(rng.integers(5, 9))
        for y, x in ((y0, x0), (y1, x1)):
            draw.line([(x - arm, y), (x + arm, y)], fill=ink)
            draw.line([(x, y - arm), (x, y + arm)], fill=ink)
        for t in np.linspace(0.1, 0.9, max(2, int(np.hypot(y1 - y0, x1 - x0) / 6))):
            y, x = y0 + t * (y1 - y0), x0 + t * (x1 - x0)
            draw.line([(x, y), (x + 1, y)], fill=ink)
    # Body mark: a breast pictogram outline with its (filled, thin) probe marker.
    bx, by, radius = rng.uniform(0.02, 0.06) * width, rng.uniform(0.7, 0.8) * height, rng.uniform(18, 26)
    ink = colour()
    draw.ellipse([bx, by, bx + 2 * radius, by + 2 * radius], outline=ink, width=int(rng.integers(1, 3)))
    angle = rng.uniform(0, np.pi)
    dx, dy = 9 * np.cos(angle), 9 * np.sin(angle)
    mx, my = bx + radius, by + radius
    draw.line([(mx - dx, my - dy), (mx + dx, my + dy)], fill=colour(), width=3)
    icon_h, icon_w = int(rng.integers(78, 86)), int(rng.integers(80, 88))
    draw.rectangle([width - icon_w, height - icon_h, width - 1, height - 1], fill=ICON_COLOUR, outline=(200, 200, 210))
    ticks = colour()  # depth scale at the right edge of the field
    for y in range(int(0.1 * height), int(0.95 * height), int(rng.integers(20, 40))):
        draw.line([(0.9 * width, y), (0.9 * width + int(rng.integers(3, 8)), y)], fill=ticks)
    before = rgb
    while _painted_fraction(before, np.asarray(image)) < target:
        font = ImageFont.load_default(size=int(rng.integers(11, 17)))
        text = TEXTS[int(rng.integers(len(TEXTS)))]
        x, y = rng.uniform(0.0, 0.75) * width, rng.uniform(0.0, 0.95) * height
        bold = int(rng.random() < 0.2)
        draw.text((x, y), text, fill=colour(), font=font, stroke_width=bold, stroke_fill=colour() if bold else None)
    return np.asarray(image)


def add_colour_doppler(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` with a colour Doppler box (outline and flow) and, on most scans, a colour bar."""
    out = rgb.copy()
    height, width = out.shape[:2]
    box_h, box_w = int(rng.integers(60, 181)), int(rng.integers(80, 221))
    top, left = int(rng.integers(int(0.1 * height), height - box_h - 40)), int(rng.integers(int(0.15 * width), int(0.85 * width) - box_w))
    yy, xx = np.mgrid[:box_h, :box_w]
    flow = np.zeros((box_h, box_w), dtype=bool)
    velocity = np.zeros((box_h, box_w))
    target = rng.uniform(0.05, 0.6)
    while flow.mean() < target:  # vessels: thick curved bands with a parabolic velocity profile
        centre = rng.uniform(0.1, 0.9) * box_h + rng.uniform(-0.2, 0.2) * box_h * np.sin(xx / rng.uniform(20, 60))
        half = rng.uniform(2.5, 12)
        distance = np.abs(yy - centre)
        vessel = distance < half
        sign = rng.choice((-1.0, 1.0))
        velocity[vessel] = sign * (1 - (distance[vessel] / half) ** 2) * rng.uniform(0.5, 1.0)
        flow |= vessel
    red = np.stack([120 + 135 * velocity, 230 * velocity ** 2, np.zeros_like(velocity)], axis=2)
    blue = np.stack([np.zeros_like(velocity), 200 * velocity ** 2, 120 + 135 * -velocity], axis=2)
    colours = np.where((velocity >= 0)[..., None], red, blue)
    box = out[top : top + box_h, left : left + box_w]
    box[flow] = np.clip(np.rint(colours[flow]), 0, 255).astype(np.uint8)
    image = Image.fromarray(out)
    ImageDraw.Draw(image).rectangle([left, top, left + box_w, top + box_h], outline=(200, 200, 200))
    out = np.asarray(image).copy()
    if rng.random() < 0.85:  # the colour bar: yellow-red above the baseline, blue-cyan below
        bar_w, bar_h = int(rng.integers(8, 13)), int(rng.integers(90, 141))
        bar_top, bar_left = int(0.08 * height), int(rng.uniform(0.01, 0.04) * width)
        ramp = np.linspace(1, -1, bar_h)[:, None]
        bar = np.where(
            (ramp >= 0)[..., None],
            np.stack([120 + 135 * ramp, 230 * ramp ** 2, 0 * ramp], axis=2),
            np.stack([0 * ramp, 200 * ramp ** 2, 120 - 135 * ramp], axis=2),
        )
        out[bar_top : bar_top + bar_h, bar_left : bar_left + bar_w] = np.clip(np.rint(bar), 0, 255).astype(np.uint8)
    return out


def uclm_scan(seed: int, *, doppler: bool, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """One (height, width, 3) uint8 scan: tinted map, 1-1.5 % overlays, a Doppler box if asked."""
    rng = np.random.default_rng(seed)
    grey = speckle_scan(rng, height, width)
    rgb = tinted_map(rng)[grey]
    if doppler:
        rgb = add_colour_doppler(rgb, rng)
    return draw_overlays(rgb, rng, rng.uniform(0.010, 0.015))


def write_uclm_folder(root: Path, n_grey: int, n_doppler: int, *, first_seed: int = 0) -> dict[str, str]:
    """A BUS-UCLM folder (images, colour masks, INFO.csv) of such scans; ``id -> 'yes'/'no'``
    (its ``Doppler`` column); the first ``n_doppler`` images are the Doppler ones."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    doppler_ids: dict[str, str] = {}
    lines = ["\ufeffImage;Resolution;Label;Doppler;Marks;Combined\n"]
    for index in range(n_grey + n_doppler):
        name = f"P{index % 7:03d}_{index:03d}"
        doppler = index < n_doppler
        image = uclm_scan(first_seed + index, doppler=doppler)
        mask = np.zeros(image.shape, np.uint8)
        mask[250:330, 380:500] = (0, 255, 0)
        Image.fromarray(image).save(root / "images" / f"{name}.png", compress_level=1)
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
        doppler_ids[name] = "yes" if doppler else "no"
        lines.append(f"{name}.png;{WIDTH}x{HEIGHT};Benign;{'Yes' if doppler else 'No'};Yes;No\n")
    (root / "INFO.csv").write_text("".join(lines), encoding="utf-8")
    return doppler_ids
