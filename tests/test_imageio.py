from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busseg.errors import DataError
from busseg.imageio import (
    MAP_TOLERANCE,
    FLOW_MAX_FRACTION,
    OVERLAY_MAX_FRACTION,
    classify_colour,
    content_hash,
    mask_colour_class,
    read_image,
    read_image_with_colour,
    read_mask,
    resize_mask,
    write_png,
)

GREY = np.array([[0, 10, 20, 30], [40, 128, 200, 255], [7, 77, 177, 250]], dtype=np.uint8)
BINARY = np.array([[0, 0, 1, 1], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)


def _save(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


def _grey_as(mode: str) -> Image.Image:
    """GREY stored in another PIL mode, with grey content."""
    rgb = np.repeat(GREY[..., None], 3, axis=2)
    if mode == "RGB":
        return Image.fromarray(rgb)
    if mode == "RGBA":
        alpha = np.full(GREY.shape + (1,), 90, dtype=np.uint8)
        return Image.fromarray(np.concatenate([rgb, alpha], axis=2))
    return Image.fromarray(GREY).convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P"])
def test_read_image_accepts_grey_content_in_any_mode(tmp_path, mode):
    path = _save(tmp_path / "im.png", _grey_as(mode))
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == GREY.shape
    np.testing.assert_array_equal(image, GREY)


def test_read_image_one_bit(tmp_path):
    path = _save(tmp_path / "im.png", Image.fromarray(BINARY))
    np.testing.assert_array_equal(read_image(path), BINARY.astype(np.uint8) * 255)


def test_read_image_16_bit_is_rescaled_by_its_own_range(tmp_path):
    values = np.array([[1000, 2000], [3000, 3000]], dtype=np.uint16)
    image16 = Image.fromarray(values)
    assert image16.mode.startswith("I;16")
    image = read_image(_save(tmp_path / "im.png", image16))
    np.testing.assert_array_equal(image, [[0, 128], [255, 255]])
    assert image.dtype == np.uint8


def test_read_image_16_bit_constant_is_zero(tmp_path):
    path = _save(tmp_path / "im.png", Image.fromarray(np.full((3, 3), 700, dtype=np.uint16)))
    np.testing.assert_array_equal(read_image(path), np.zeros((3, 3), np.uint8))


def test_read_image_refuses_colour_unless_allowed(tmp_path):
    rgb = np.repeat(GREY[..., None], 3, axis=2)
    rgb[0, 0] = (255, 0, 0)  # one Doppler-like pixel: 1 of 12 is far more than an overlay
    path = _save(tmp_path / "doppler.png", Image.fromarray(rgb))
    with pytest.raises(DataError, match="colour content") as info:
        read_image(path)
    assert info.value.path == path
    assert "allow_colour" not in info.value.problem  # no option a CLI user cannot pass
    image = read_image(path, allow_colour=True)
    assert image[0, 0] == 76  # ITU-R 601 luma of pure red
    np.testing.assert_array_equal(image.ravel()[1:], GREY.ravel()[1:])


def test_read_image_tolerates_tiny_channel_noise(tmp_path):
    rgb = np.repeat(GREY[..., None], 3, axis=2).astype(np.int16)
    rgb[..., 2] = np.clip(rgb[..., 2] + 1, 0, 255)  # e.g. JPEG round-off in the source
    image = read_image(_save(tmp_path / "im.png", Image.fromarray(rgb.astype(np.uint8))))
    assert np.abs(image.astype(int) - GREY).max() <= 1


@pytest.mark.parametrize(
    "content",
    [
        lambda: np.random.default_rng(0).bytes(200),
        lambda: b"",
        lambda: b"not an image at all",
    ],
    ids=["random-bytes", "empty-file", "text"],
)
@pytest.mark.parametrize("reader", [read_image, read_mask, mask_colour_class])
def test_unreadable_files_raise_data_error_naming_the_file(tmp_path, content, reader):
    path = tmp_path / "broken.png"
    path.write_bytes(content())
    with pytest.raises(DataError, match="cannot read") as info:
        reader(path)
    assert info.value.path == path


def test_truncated_png_raises_data_error(tmp_path):
    noise = np.random.default_rng(1).integers(0, 255, (64, 64), np.uint8)
    good = _save(tmp_path / "good.png", Image.fromarray(noise))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="cannot read image"):
        read_image(truncated)


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize(
    "stored",
    [
        lambda: Image.fromarray(BINARY),  # 1-bit
        lambda: Image.fromarray(BINARY.astype(np.uint8) * 255),  # L 0/255
        lambda: Image.fromarray(BINARY.astype(np.uint8)),  # L 0/1
        lambda: Image.fromarray(BINARY.astype(np.uint16) * 40000),  # 16-bit, nonzero
        lambda: Image.fromarray(np.stack([BINARY * 0, BINARY * 255, BINARY * 0], 2).astype(np.uint8)),
        lambda: Image.fromarray(
            np.stack([BINARY * 255, BINARY * 0, BINARY * 0, np.full(BINARY.shape, 255)], 2).astype(np.uint8)
        ),
        lambda: Image.fromarray(np.stack([BINARY * 255] * 3, 2).astype(np.uint8)),  # white on black RGB
    ],
    ids=["1-bit", "L-0-255", "L-0-1", "16-bit", "rgb-green", "rgba-red", "rgb-white"],
)
def test_read_mask_formats(tmp_path, stored):
    mask = read_mask(_save(tmp_path / "mask.png", stored()))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, BINARY)


@pytest.mark.parametrize("value", [120, 128, 2, 254])
def test_read_mask_any_two_values_with_background_zero_is_binary(tmp_path, value):
    path = _save(tmp_path / "m.png", Image.fromarray(BINARY.astype(np.uint8) * value))
    np.testing.assert_array_equal(read_mask(path), BINARY)
    np.testing.assert_array_equal(read_mask(path, threshold=True), BINARY)  # 2 < 127: still the lesion


def test_read_mask_two_values_without_zero_is_not_binary(tmp_path):
    path = _save(tmp_path / "m.png", Image.fromarray(BINARY.astype(np.uint8) * 100 + 20))
    with pytest.raises(DataError, match="not binary"):
        read_mask(path)


def test_read_mask_all_zero_is_an_empty_mask(tmp_path):
    mask = read_mask(_save(tmp_path / "m.png", Image.fromarray(np.zeros((5, 6), np.uint8))))
    assert mask.shape == (5, 6) and not mask.any()


def test_read_mask_near_binary_needs_threshold(tmp_path):
    levels = np.zeros((20, 20), np.uint8)
    levels[5:15, 5:15] = 255
    levels[5, 5], levels[4, 4] = 200, 60  # anti-aliased edge values
    path = _save(tmp_path / "m.png", Image.fromarray(levels))
    with pytest.raises(DataError, match="not binary") as info:
        read_mask(path)
    assert info.value.path == path
    np.testing.assert_array_equal(read_mask(path, threshold=True), levels > 127)


def test_read_mask_refuses_an_image_even_when_thresholding(tmp_path):
    path = _save(tmp_path / "m.png", Image.fromarray(GREY))
    with pytest.raises(DataError, match="near-binary"):
        read_mask(path, threshold=True)


def test_read_mask_resize_is_nearest_neighbour(tmp_path):
    big = np.kron(BINARY, np.ones((4, 4), dtype=bool))
    path = _save(tmp_path / "m.png", Image.fromarray(big))
    np.testing.assert_array_equal(read_mask(path, resize_to=BINARY.shape), BINARY)
    np.testing.assert_array_equal(resize_mask(BINARY, big.shape), big)


@pytest.mark.parametrize(
    ("colours", "expected"),
    [
        ([(0, 255, 0)], "benign"),
        ([(255, 0, 0)], "malignant"),
        ([(0, 255, 0), (255, 0, 0), (255, 0, 0)], "malignant"),
        ([(255, 255, 255)], None),
        ([], None),
    ],
)
def test_mask_colour_class(tmp_path, colours, expected):
    rgb = np.zeros((4, 4, 3), np.uint8)
    for index, colour in enumerate(colours):
        rgb[index, index] = colour
    assert mask_colour_class(_save(tmp_path / "m.png", Image.fromarray(rgb))) == expected


def test_mask_colour_class_of_greyscale_mask_is_none(tmp_path):
    assert mask_colour_class(_save(tmp_path / "m.png", Image.fromarray(BINARY))) is None


def test_write_png_round_trips_images_and_masks(tmp_path):
    write_png(tmp_path / "sub" / "im.png", GREY)
    write_png(tmp_path / "mask.png", BINARY)
    np.testing.assert_array_equal(read_image(tmp_path / "sub" / "im.png"), GREY)
    with Image.open(tmp_path / "mask.png") as stored:
        assert stored.mode == "L"
        assert set(np.unique(np.asarray(stored)).tolist()) == {0, 255}
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.png"), BINARY)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["im.png", "mask.png"]


@pytest.mark.parametrize(
    "array", [GREY.astype(np.float32), np.zeros((2, 2, 3), np.uint8)], ids=["float", "3d"]
)
def test_write_png_rejects_other_arrays(tmp_path, array):
    with pytest.raises(ValueError):
        write_png(tmp_path / "x.png", array)
    assert list(tmp_path.iterdir()) == []


def test_write_png_failure_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "im.png"
    target.write_bytes(b"old")

    def full_disk(self, fp, *args, **kwargs):
        with open(fp, "wb") as handle:
            handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(DataError, match="cannot write: No space left on device") as info:
        write_png(target, GREY)
    assert info.value.path == target
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


# --- the colour rule: grey, tinted grey (greyscale content), colour ------------------


def _scan(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.gamma(2.0, 30.0, (height, width)), 0, 255).astype(np.uint8)


def _tinted(grey: np.ndarray) -> np.ndarray:
    """A blue-tinted grey map (BUS-UCLM: channel means about 60 / 62 / 68)."""
    g = grey.astype(float)
    return np.stack([g * 0.95, g * 0.99 + 1, np.minimum(g * 1.08 + 3, 255)], 2).round().astype(np.uint8)


def test_tinted_grey_map_is_greyscale_content(tmp_path):
    tinted = _tinted(_scan())
    spread = tinted.max(axis=2).astype(int) - tinted.min(axis=2)
    assert (spread > 8).mean() > 0.3  # "any two channels differ" would call it colour
    content = classify_colour(tinted)
    assert content.kind == "tinted" and content.off_map_fraction <= OVERLAY_MAX_FRACTION
    path = _save(tmp_path / "tinted.png", Image.fromarray(tinted))
    image, read_content = read_image_with_colour(path)
    np.testing.assert_array_equal(image, np.asarray(Image.fromarray(tinted).convert("L")))
    assert read_content.kind == "tinted" and read_content.converted
    np.testing.assert_array_equal(read_image(path), image)  # accepted without allow_colour


def test_coloured_calipers_and_body_marks_are_overlays_not_colour():
    image = _tinted(_scan())
    image[30:45, 40] = image[37, 33:48] = (255, 255, 0)  # yellow caliper cross
    image[60:75, 90] = image[67, 83:98] = (0, 255, 0)  # green caliper cross
    image[2:10, 110:118][::4] = (150, 60, 170)  # purple body-mark icon
    assert classify_colour(image).kind == "tinted"
    grey = np.repeat(_scan()[..., None], 3, axis=2)
    grey[30:45, 40] = (255, 255, 0)
    assert classify_colour(grey).kind == "tinted"  # a plain grey scan with calipers too


def test_doppler_box_is_colour_on_grey_and_on_tinted_scans():
    for base in (np.repeat(_scan()[..., None], 3, axis=2), _tinted(_scan())):
        image = base.copy()
        flow = np.random.default_rng(1).random((24, 30))
        box = image[20:44, 40:70]
        box[flow < 0.3] = (210, 40, 30)
        box[(flow >= 0.3) & (flow < 0.5)] = (30, 80, 230)
        content = classify_colour(image)
        assert content.kind == "colour" and content.flow_fraction > FLOW_MAX_FRACTION


def test_grey_rgb_and_tiny_noise_stay_grey():
    assert classify_colour(np.repeat(GREY[..., None], 3, axis=2)).kind == "grey"
    noisy = np.repeat(_scan()[..., None], 3, axis=2).astype(int)
    noisy[..., 2] = np.clip(noisy[..., 2] + MAP_TOLERANCE // 2, 0, 255)  # a faint uniform cast
    assert classify_colour(noisy.astype(np.uint8)).kind == "tinted"


def test_content_hash_depends_on_pixels_and_shape_not_encoding(tmp_path):
    Image.fromarray(GREY).save(tmp_path / "a.png", compress_level=0)
    Image.fromarray(GREY).save(tmp_path / "b.png", compress_level=9)
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    assert content_hash(read_image(tmp_path / "a.png")) == content_hash(read_image(tmp_path / "b.png"))
    changed = GREY.copy()
    changed[0, 0] += 1
    assert content_hash(changed) != content_hash(GREY)
    flat = np.arange(16, dtype=np.uint8)
    assert content_hash(flat.reshape(4, 4)) != content_hash(flat.reshape(2, 8))
    assert len(content_hash(GREY)) == 64


# --- issue 21: BUS-UCLM's statistics (tests/data/uclm_scans.py), speed, huge images ---------


def _uclm_like(count: int, doppler: bool, first_seed: int) -> list[np.ndarray]:
    from data.uclm_scans import uclm_scan  # tests/ is on sys.path

    return [uclm_scan(first_seed + i, doppler=doppler) for i in range(count)]


def test_uclm_like_grey_scans_are_greyscale_content_and_doppler_scans_colour():
    """Real statistics: a tinted map plus 1-1.5 % coloured marks and text is greyscale
    content (issue 21: 663 of 670 real scans were called colour); a colour box is colour."""
    grey = [classify_colour(image) for image in _uclm_like(20, False, 500)]
    doppler = [classify_colour(image) for image in _uclm_like(10, True, 600)]
    assert min(c.off_map_fraction for c in grey) > 0.008  # the overlays are there, off the map
    assert np.mean([c.kind == "tinted" for c in grey]) >= 0.95
    assert np.mean([c.kind == "colour" for c in doppler]) >= 0.9


def test_painted_areas_are_colour_where_strokes_of_the_same_share_are_overlays():
    from busseg.imageio import AREA_MIN_PIXELS

    base = _tinted(np.clip(np.random.default_rng(0).gamma(2.0, 45.0, (606, 856)), 0, 255).astype(np.uint8))
    bar = base.copy()
    bar[40:160, 20:32] = np.linspace([255, 230, 0], [0, 200, 255], 120).astype(np.uint8)[:, None, :]  # colour bar
    strokes = base.copy()
    strokes[100:500:16, 100:460] = (255, 255, 0)  # 1-px lines: 1.7 % of the pixels, six times the bar
    bar_content, stroke_content = classify_colour(bar), classify_colour(strokes)
    assert stroke_content.off_map_fraction > bar_content.off_map_fraction
    assert stroke_content.kind == "tinted" and stroke_content.area_fraction == 0
    assert bar_content.kind == "colour" and bar_content.area_fraction * bar.shape[0] * bar.shape[1] >= AREA_MIN_PIXELS


def test_the_sampled_grey_map_decides_as_the_whole_image_does(monkeypatch):
    """The speed-up (the map from a grid of pixels) changes no decision on the fixtures."""
    import busseg.imageio as imageio
    from data.fixtures import add_calipers, add_doppler, scan, tint

    images = _uclm_like(4, False, 700) + _uclm_like(3, True, 800)
    images += [add_calipers(tint(scan(96, 128, 1))), add_doppler(tint(scan(96, 128, 2)))]
    sampled = [classify_colour(image) for image in images]
    monkeypatch.setattr(imageio, "MAP_SAMPLE_PIXELS", 10**9)
    whole = [classify_colour(image) for image in images]
    assert [c.kind for c in sampled] == [c.kind for c in whole]
    for a, b in zip(sampled, whole):
        assert abs(a.off_map_fraction - b.off_map_fraction) < 0.002


def test_histogram_medians_equal_numpy_medians():
    from busseg.imageio import _histogram_medians

    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 511, n) for n in (1, 2, 5, 6, 101, 1000)]
    histogram = np.stack([np.bincount(r, minlength=511) for r in rows])
    counts = np.array([len(r) for r in rows])
    np.testing.assert_array_equal(_histogram_medians(histogram, counts), [np.median(r) for r in rows])


@pytest.mark.parametrize(("width", "height", "shown"), [(10000, 10000, "10000 x 10000 px (100 MP)"), (20000, 20000, "400 MP")])
def test_a_huge_image_is_refused_from_its_header_without_pillows_warning(tmp_path, width, height, shown):
    import warnings

    from data.fixtures import write_huge_png_header

    path = write_huge_png_header(tmp_path / "huge.png", width, height)
    for read in (read_image, read_mask):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would raise here
            with pytest.raises(DataError, match=re.escape(f"too large: {shown}; at most 16.8 MP")) as info:
                read(path)
        assert info.value.path == path


# --- the colour rule on real scans (../shared/data, beside the repository) ---------------

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
UCLM_SAMPLE = SHARED_DATA / "BUS-UCLM-sample"


@pytest.mark.skipif(not (UCLM_SAMPLE / "INFO.csv").is_file(), reason="BUS-UCLM sample not present at ../shared/data")
def test_real_bus_uclm_scans_grey_with_marks_is_greyscale_and_doppler_is_colour():
    """40 real scans (INFO.csv's Doppler column is the truth): the scanner's body-mark icon,
    yellow marker and green calipers are marks, not colour; Doppler flow is colour, with its
    place and amount in the reason. Targets: >= 95 % of No greyscale, >= 90 % of Yes colour."""
    import csv

    with open(UCLM_SAMPLE / "INFO.csv", encoding="utf-8-sig", newline="") as handle:
        truth = {row["Image"]: row["Doppler"] == "Yes" for row in csv.DictReader(handle, delimiter=";")}
    contents = {name: read_image_with_colour(UCLM_SAMPLE / "images" / name)[1] for name in truth}
    no = [contents[n].kind in ("grey", "tinted") for n, doppler in truth.items() if not doppler]
    yes = [contents[n].kind == "colour" for n, doppler in truth.items() if doppler]
    assert len(no) >= 20 and len(yes) >= 5
    assert np.mean(no) >= 0.95, {n: c.off_map_fraction for n, c in contents.items() if not truth[n] and c.kind == "colour"}
    assert np.mean(yes) >= 0.90, [n for n, c in contents.items() if truth[n] and c.kind != "colour"]
    for name, content in contents.items():
        if content.kind == "colour":
            assert re.search(r"painted colour areas? \(\d+ px\), the largest \d+ px at rows \d+-\d+, columns \d+-\d+", content.reason), name
        else:
            assert content.reason == ""


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="real data not present at ../shared/data")
@pytest.mark.parametrize("folder", ["STU/images", "BUS-BRA/images"])
def test_real_greyscale_datasets_are_never_colour(folder):
    """STU and BUS-BRA scans (greyscale, some stored as RGB) stay greyscale content."""
    paths = sorted((SHARED_DATA / folder).glob("*.png"))[:60]
    if not paths:
        pytest.skip(f"{folder} not present")
    kinds = {read_image_with_colour(path)[1].kind for path in paths}
    assert kinds <= {"grey", "tinted"}
