"""Builders of tiny dataset folders that reproduce each public layout and its quirks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

BUSBRA_ROWS = [
    # ID, Case, Pathology, CSV Height (one deliberately wrong, as in the real CSV)
    ("bus_0001-l", "1", "malignant", 20),
    ("bus_0001-r", "1", "malignant", 20),
    ("bus_0002-s", "2", "benign", 99),
    ("bus_0003-l", "3", "benign", 20),
]


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Save ``array`` as a PNG (converted to ``mode`` when given); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)
    return path


def grey_image(height: int, width: int, seed: int) -> np.ndarray:
    """A reproducible uint8 noise image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def box_mask(height: int, width: int, top: int = 2, left: int = 3, size: int = 5) -> np.ndarray:
    """A bool mask with one square lesion."""
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def write_corrupt(path: Path, seed: int = 0) -> Path:
    """Random bytes under an image name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(300))
    return path


def make_busbra(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A BUS-BRA layout: 1-bit masks, a CSV with one wrong height, one missing mask.

    Returns the expected (image, mask) of the ids that should import;
    ``bus_0003-l`` has no mask.
    """
    expected = {}
    for index, (sample_id, _case, _pathology, _height) in enumerate(BUSBRA_ROWS):
        height, width = (24, 18) if sample_id == "bus_0002-s" else (20, 16)
        image, mask = grey_image(height, width, index), box_mask(height, width, top=index)
        save(root / "images" / f"{sample_id}.png", image)
        if sample_id != "bus_0003-l":
            save(root / "masks" / f"mask_{sample_id.removeprefix('bus_')}.png", mask, mode="1")
            expected[sample_id] = (image, mask)
    lines = ["ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX"]
    lines += [
        f'{sid},{case},x,{pathology},4,GE,16,{height},left,"[1,2,3,4]"'
        for sid, case, pathology, height in BUSBRA_ROWS
    ]
    (root / "bus_data.csv").write_text("\n".join(lines) + "\n")
    return expected


def make_stu(root: Path, numbers: tuple[int, ...] = (1, 2, 10), scale: int = 4) -> dict[str, np.ndarray]:
    """An STU layout: 16x16 images, masks ``scale`` times larger with grey edge values.

    Returns the expected 16x16 mask per id.
    """
    expected = {}
    for number in numbers:
        image, mask = grey_image(16, 16, number), box_mask(16, 16, top=number % 8)
        big = np.kron(mask.astype(np.uint8) * 255, np.ones((scale, scale), dtype=np.uint8))
        # Anti-aliased edge: a few pixels inside/outside the lesion border at mid greys,
        # on the side of the threshold that keeps the nearest-neighbour result unchanged.
        rows, cols = np.nonzero(big)
        big[rows[0], cols[0]] = 200
        big[rows[-1], cols[-1] + 1] = 60
        save(root / "images" / f"Test_Image_{number}.png", image)
        save(root / "masks" / f"mask_{number}.png", big)
        expected[f"stu_{number:03d}"] = mask
    return expected


def rgb(array: np.ndarray) -> np.ndarray:
    """A greyscale array as (H, W, 3) RGB with grey content."""
    return np.repeat(array[..., None], 3, axis=2)


def rgba(array: np.ndarray) -> np.ndarray:
    """A greyscale array as (H, W, 4) RGBA with grey content and opaque alpha."""
    return np.concatenate([rgb(array), np.full(array.shape + (1,), 255, np.uint8)], axis=2)


def colour_mask(mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """An RGB mask: ``colour`` on the lesion, black elsewhere (BUS-UCLM style)."""
    out = np.zeros(mask.shape + (3,), np.uint8)
    out[mask] = colour
    return out


def doppler(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` as RGB with a colour Doppler patch, and its expected luma conversion."""
    coloured = rgb(image)
    coloured[2:6, 2:8] = (200, 30, 40)
    coloured[8:11, 4:9] = (20, 60, 220)
    return coloured, np.asarray(Image.fromarray(coloured).convert("L"))


BUSI_DUPLICATE = ("benign_003", "malignant_002")
"""The ids of the fixture's exact duplicate pair across classes (as BUSI's 433/145)."""


def make_busi(root: Path) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """A BUSI layout under ``root/Dataset_BUSI_with_GT`` with every quirk, 16x16 images.

    ``benign (2)`` has masks ``_mask`` (L), ``_mask_1`` (RGB) and ``_mask_2`` (RGBA),
    ``benign (3)`` has the pixels of ``malignant (2)``, ``benign (4)`` a Doppler
    overlay, ``benign (5)`` no mask; ``normal (1)`` an empty mask. Returns the expected
    ``id -> (label, image, mask)`` of the samples that import (normal included).
    """
    base = root / "Dataset_BUSI_with_GT"
    expected: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}

    def case(label: str, number: int, image: np.ndarray, masks: list[tuple[np.ndarray, str]]) -> None:
        save(base / label / f"{label} ({number}).png", image if image.ndim == 3 else rgb(image))
        for index, (mask, mode) in enumerate(masks):
            suffix = "_mask" if index == 0 else f"_mask_{index}"
            array = {"1": mask, "L": mask.astype(np.uint8) * 255}.get(mode)
            if mode == "RGB":
                array = colour_mask(mask, (255, 255, 255))
            elif mode == "RGBA":
                array = rgba(mask.astype(np.uint8) * 255)
            save(base / label / f"{label} ({number}){suffix}.png", array, mode="1" if mode == "1" else None)

    one, two, three = box_mask(16, 16, 1, 1, 4), box_mask(16, 16, 8, 2, 3), box_mask(16, 16, 10, 10, 5)
    case("benign", 1, grey_image(16, 16, 1), [(one, "1")])
    expected["benign_001"] = ("benign", grey_image(16, 16, 1), one)
    case("benign", 2, grey_image(16, 16, 2), [(one, "L"), (two, "RGB"), (three, "RGBA")])
    expected["benign_002"] = ("benign", grey_image(16, 16, 2), one | two | three)
    case("benign", 3, grey_image(16, 16, 99), [(two, "1")])
    expected["benign_003"] = ("benign", grey_image(16, 16, 99), two)
    coloured, converted = doppler(grey_image(16, 16, 4))
    case("benign", 4, coloured, [(three, "RGB")])
    expected["benign_004"] = ("benign", converted, three)
    case("benign", 5, grey_image(16, 16, 5), [])
    case("malignant", 1, grey_image(16, 16, 11), [(three, "RGBA")])
    expected["malignant_001"] = ("malignant", grey_image(16, 16, 11), three)
    case("malignant", 2, grey_image(16, 16, 99), [(one, "1")])
    expected["malignant_002"] = ("malignant", grey_image(16, 16, 99), one)
    case("malignant", 10, grey_image(16, 16, 12), [(two, "L")])
    expected["malignant_010"] = ("malignant", grey_image(16, 16, 12), two)
    empty = np.zeros((16, 16), dtype=bool)
    case("normal", 1, grey_image(16, 16, 21), [(empty, "L")])
    expected["normal_001"] = ("normal", grey_image(16, 16, 21), empty)
    return expected


GREEN, RED = (0, 255, 0), (255, 0, 0)
YELLOW, PURPLE = (255, 255, 0), (150, 60, 170)

INFO_HEADER = "\ufeffImage;Resolution;Label;Doppler;Marks;Combined\n"
"""BUS-UCLM's real INFO.csv header: ';'-separated, UTF-8 with a byte-order mark."""


def tint(grey: np.ndarray) -> np.ndarray:
    """``grey`` through a blue-tinted grey map like BUS-UCLM's scanner (R < G < B).

    On a typical scan (mean about 62) the channel means come out near 60 / 62 / 68 and R,
    G, B differ on almost every pixel, by more than 8 levels on the brighter half.
    """
    g = grey.astype(np.float64)
    red = np.clip(np.rint(g * 0.95), 0, 255)
    green = np.clip(np.rint(g * 0.99 + 1), 0, 255)
    blue = np.clip(np.rint(g * 1.08 + 3), 0, 255)
    return np.stack([red, green, blue], axis=2).astype(np.uint8)


def luma(rgb_array: np.ndarray) -> np.ndarray:
    """The ITU-R 601 luma Pillow gives an RGB(A) array: what an importer must read."""
    return np.asarray(Image.fromarray(rgb_array).convert("RGB").convert("L"))


def scan(height: int, width: int, seed: int) -> np.ndarray:
    """A dim speckle-like grey scan (mean about 60) with a darker lesion-like blob."""
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0, 30.0, (height, width))
    yy, xx = np.mgrid[:height, :width]
    image[(yy - height / 2) ** 2 / 0.06 + (xx - width / 2) ** 2 / 0.1 < height * width / 4] *= 0.4
    return np.clip(image, 0, 255).astype(np.uint8)


def add_calipers(rgb_array: np.ndarray) -> np.ndarray:
    """Burned-in overlays as on BUS-UCLM's ``Marks: Yes`` images: a yellow and a green
    caliper cross, a purple body-mark icon and a yellow orientation letter (< 1 % of pixels)."""
    out = rgb_array.copy()
    height, width = out.shape[:2]
    for (y, x), colour in (((height // 3, width // 3), YELLOW), ((2 * height // 3, 2 * width // 3), GREEN)):
        out[y - 3 : y + 4, x] = colour
        out[y, x - 3 : x + 4] = colour
    out[2:9, width - 9, :] = PURPLE  # body-mark icon outline
    out[2:9, width - 3, :] = PURPLE
    out[2, width - 9 : width - 2] = PURPLE
    out[3:8, 3] = YELLOW  # orientation letter "L"
    out[7, 3:6] = YELLOW
    return out


def add_doppler(rgb_array: np.ndarray, seed: int = 0) -> np.ndarray:
    """A colour Doppler box: red and blue flow speckles and a colour bar at the side."""
    out = rgb_array.copy()
    height, width = out.shape[:2]
    rng = np.random.default_rng(seed)
    box = out[height // 4 : height // 4 + 24, width // 3 : width // 3 + 30]
    flow = rng.random(box.shape[:2])
    box[flow < 0.3] = (210, 40, 30)
    box[(flow >= 0.3) & (flow < 0.5)] = (30, 80, 230)
    ramp = np.linspace(0, 1, height // 2)[:, None]
    out[height // 4 : height // 4 + height // 2, 1:3] = (
        np.concatenate([255 * ramp, 40 * np.ones_like(ramp), 255 * (1 - ramp)], axis=1)[:, None, :]
    ).astype(np.uint8)
    return out


def make_bus_uclm(
    root: Path,
    *,
    info: str | None = INFO_HEADER
    + "ALWI_000.png;16x16;Benign;No;No;No\n"
    + "ALWI_001.png;16x16;Malignant;No;No;No\n"
    + "ALWI_002.png;16x16;Normal;No;No;No\n"
    + "BEAU_000.png;16x16;Malignant;No;No;No\n"
    + "BEAU_001.png;16x16;Malignant;No;No;No\n",
) -> dict[str, tuple[str, str, np.ndarray, np.ndarray]]:
    """A small BUS-UCLM layout: tinted RGB and RGBA images, colour masks, one size mismatch.

    ``ALWI_000`` green (benign), ``ALWI_001`` red (malignant, RGBA image), ``ALWI_002``
    black (normal), ``BEAU_000`` a mask larger than its image, ``BEAU_001`` a white
    lesion whose class only ``INFO.csv`` gives. ``info`` (the real header with a BOM by
    default) is written when not None. Returns the expected
    ``id -> (label, group, image, mask)`` of the importable samples (``BEAU_001``
    labelled malignant, as the default ``info`` says).
    """
    mask = box_mask(16, 16, 3, 4, 6)
    empty = np.zeros((16, 16), dtype=bool)
    opaque = np.full((16, 16, 1), 255, np.uint8)
    cases = [
        ("ALWI_000", tint(grey_image(16, 16, 31)), colour_mask(mask, GREEN), "benign"),
        ("ALWI_001", np.concatenate([tint(grey_image(16, 16, 32)), opaque], 2), colour_mask(mask, RED), "malignant"),
        ("ALWI_002", tint(grey_image(16, 16, 33)), colour_mask(empty, GREEN), "normal"),
        ("BEAU_000", tint(grey_image(16, 16, 34)), colour_mask(box_mask(20, 16), RED), None),
        ("BEAU_001", tint(grey_image(16, 16, 35)), colour_mask(mask, (255, 255, 255)), "malignant"),
    ]
    expected = {}
    for name, image, mask_rgb, label in cases:
        save(root / "images" / f"{name}.png", image)
        save(root / "masks" / f"{name}.png", mask_rgb)
        if label is not None:
            expected[name] = (label, name.split("_")[0], luma(image), mask_rgb.max(axis=2) > 0)
    if info is not None:
        (root / "INFO.csv").write_text(info, encoding="utf-8")
    return expected


UCLM_PATIENTS = ("ALWI", "BEAU", "CAFE", "DUNE")


def make_bus_uclm_like(root: Path, per_patient: int = 6) -> dict[str, dict[str, str]]:
    """A BUS-UCLM folder laid out and coloured like the real one, at 96 x 128 px.

    Every image is an 8-bit RGB PNG through the blue-tinted grey map; masks are RGB with
    exactly black, green (benign) and red (malignant); ``INFO.csv`` has the real header
    with a BOM and ``;``. Per patient: the first image normal, then benign and malignant
    in turn; every third image has calipers and body marks (``Marks: Yes``); the
    patients' second images are colour Doppler (``Doppler: Yes``, once written ``Y``),
    and ``DUNE_005`` is a ``Combined`` image. Returns ``id -> facts`` (``label``,
    ``group``, ``doppler``, ``marks``, ``combined``).
    """
    facts: dict[str, dict[str, str]] = {}
    lines = [INFO_HEADER]
    for p_index, patient in enumerate(UCLM_PATIENTS):
        for index in range(per_patient):
            name = f"{patient}_{index:03d}"
            seed = 100 * p_index + index
            label = "normal" if index == 0 else ("benign", "malignant")[index % 2]
            marks = index % 3 == 2
            doppler = index == 1
            rgb_image = tint(scan(96, 128, seed))
            if marks:
                rgb_image = add_calipers(rgb_image)
            if doppler:
                rgb_image = add_doppler(rgb_image, seed)
            lesion = box_mask(96, 128, 30 + index, 40 + p_index, 20) if label != "normal" else np.zeros((96, 128), bool)
            save(root / "images" / f"{name}.png", rgb_image)
            save(root / "masks" / f"{name}.png", colour_mask(lesion, GREEN if label == "benign" else RED))
            combined = name == "DUNE_005"
            doppler_text = ("Y" if patient == "BEAU" else "Yes") if doppler else "No"
            lines.append(
                f"{name}.png;128x96;{label.capitalize()};{doppler_text};"
                f"{'Yes' if marks else 'No'};{'Yes' if combined else 'No'}\n"
            )
            facts[name] = {
                "label": label,
                "group": patient,
                "doppler": "yes" if doppler else "no",
                "marks": "yes" if marks else "no",
                "combined": "yes" if combined else "no",
            }
    (root / "INFO.csv").write_text("".join(lines), encoding="utf-8")
    return facts


def make_udiat(
    root: Path, images: dict[str, np.ndarray] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A UDIAT layout ``original/<name>.png`` + ``GT/<name>.png`` (0/255 masks).

    ``images`` maps file stems to images (default: three noise images). Returns the
    expected ``id -> (image, mask)``.
    """
    if images is None:
        images = {f"{n:06d}": grey_image(16, 16, 40 + n) for n in (1, 2, 3)}
    expected = {}
    for index, (name, image) in enumerate(sorted(images.items())):
        mask = box_mask(*image.shape, top=index, left=index, size=4)
        save(root / "original" / f"{name}.png", image)
        save(root / "GT" / f"{name}.png", mask.astype(np.uint8) * 255)
        expected[name] = (image, mask)
    return expected


def write_huge_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` px (8-bit grey) with next to no data.

    What a decompression bomb or a 10000 x 10000 export looks like before decoding, in a few
    bytes: a reader must refuse it from the header, never start decoding it.
    """
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )
    return path
