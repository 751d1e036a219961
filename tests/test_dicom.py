"""DICOM scans: every photometric interpretation busseg reads, 8- and 16-bit data, cine clips,
compressed data without a handler, real ultrasound files, and the entry points that read them
(the ``folder`` importer and ``busseg predict``).

The files are pydicom's own test files (bundled with pydicom) and the real ultrasound files of
the ``pydicom-data`` package (a dev dependency), never fetched: a name that is not installed
is skipped here, so that no test waits on the network.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from busseg.cli import MASK_SUFFIX, main
from busseg.data import importers
from busseg.data.importers import Sample, Skip
from busseg.dicom import frame_count, frame_note, is_dicom, read_dicom_pixels, write_dicom
from busseg.errors import DataError
from busseg.imageio import COLOUR, GREY, MAX_PIXELS, read_image, read_image_with_colour
from tests.data.fixtures import box_mask, save


def bundled(name: str) -> Path:
    """A DICOM file installed with pydicom or pydicom-data (skipped when not installed)."""
    roots = [Path(pydicom.__file__).parent / "data" / "test_files"]
    spec = importlib.util.find_spec("data_store")  # pydicom-data's package
    if spec is not None and spec.origin is not None:
        roots.append(Path(spec.origin).parent / "data")
    for root in roots:
        if (root / name).is_file():
            return root / name
    pytest.skip(f"{name} is not installed (pip install pydicom-data)")


@pytest.mark.parametrize(
    ("name", "photometric", "bits", "shape"),
    [
        ("MR_small.dcm", "MONOCHROME2", 16, (64, 64)),
        ("SC_rgb_small_odd.dcm", "RGB", 8, (3, 3, 3)),
        ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422", 8, (100, 100, 3)),
        ("examples_palette.dcm", "PALETTE COLOR", 8, (350, 800, 3)),
        ("SC_rgb_jpeg.dcm", "RGB", 8, (256, 256, 3)),  # JPEG baseline, decoded by Pillow
        ("MR_small_RLE.dcm", "MONOCHROME2", 16, (64, 64)),  # RLE, decoded by pydicom
    ],
)
def test_each_photometric_interpretation_reads_as_uint8(name, photometric, bits, shape):
    path = bundled(name)
    dataset = pydicom.dcmread(path)
    assert (dataset.PhotometricInterpretation, dataset.BitsAllocated) == (photometric, bits)
    pixels = read_dicom_pixels(path, MAX_PIXELS)
    assert pixels.dtype == np.uint8 and pixels.shape == shape
    assert pixels.max() > pixels.min()


def test_16_bit_data_is_rescaled_by_its_own_range():
    path = bundled("MR_small.dcm")
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    pixels = read_dicom_pixels(path, MAX_PIXELS)
    expected = np.round((raw - raw.min()) * (255.0 / (raw.max() - raw.min()))).astype(np.uint8)
    np.testing.assert_array_equal(pixels, expected)
    assert (pixels.min(), pixels.max()) == (0, 255)


def test_monochrome1_is_inverted(tmp_path):
    dataset = pydicom.dcmread(bundled("MR_small.dcm"))
    dataset.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "inverted.dcm"
    dataset.save_as(path)
    np.testing.assert_array_equal(read_dicom_pixels(path, MAX_PIXELS), 255 - read_dicom_pixels(bundled("MR_small.dcm"), MAX_PIXELS))


def test_grey_content_in_rgb_reads_as_grey_through_the_colour_rule(tmp_path):
    """An RGB DICOM of a grey scan (how many ultrasound machines store them) is plain grey."""
    grey = read_dicom_pixels(bundled("MR_small.dcm"), MAX_PIXELS)
    path = tmp_path / "grey_rgb.dcm"
    write_dicom(path, np.repeat(grey[..., None], 3, axis=2))
    image, content = read_image_with_colour(path)
    assert content.kind == GREY
    np.testing.assert_array_equal(image, grey)


def test_a_real_ultrasound_file_reads_the_same_uncompressed_and_in_lossless_jpeg_2000():
    uncompressed = read_image_with_colour(bundled("US1_UNCR.dcm"))
    lossless = read_image_with_colour(bundled("US1_J2KR.dcm"))
    assert uncompressed[0].shape == (480, 640)
    np.testing.assert_array_equal(uncompressed[0], lossless[0])
    assert uncompressed[1] == lossless[1]


def test_a_cine_clip_reads_its_first_frame_and_says_so():
    path = bundled("SC_rgb_rle_2frame.dcm")
    all_frames = pydicom.dcmread(path).pixel_array
    assert all_frames.shape[0] == 2 and frame_count(path) == 2
    np.testing.assert_array_equal(read_dicom_pixels(path, MAX_PIXELS), all_frames[0])
    assert frame_note(path) == "DICOM cine clip: first of 2 frames read"
    assert frame_note(bundled("MR_small.dcm")) == ""


def test_compressed_data_without_a_handler_is_refused_naming_file_and_transfer_syntax():
    path = bundled("MR_small_jpeg_ls_lossless.dcm")
    with pytest.raises(DataError, match=r"transfer syntax JPEG-LS Lossless Image Compression \(1\.2\.840\.10008\.1\.2\.4\.80\)") as info:
        read_image(path)
    assert info.value.path == path and "pylibjpeg" in info.value.problem


@pytest.mark.parametrize(("name", "problem"), [("rtplan.dcm", "without pixel data"), ("MR_truncated.dcm", "cannot read DICOM")])
def test_a_dicom_file_that_is_no_scan_or_is_damaged_is_a_data_error(name, problem):
    with pytest.raises(DataError, match=problem):
        read_image(bundled(name))


def test_a_file_that_only_claims_to_be_dicom(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"not a dicom file at all" * 20)
    with pytest.raises(DataError, match="not a DICOM file") as info:
        read_image(path)
    assert info.value.path == path


def test_a_scanner_file_without_extension_is_recognised(tmp_path):
    path = tmp_path / "IM0001"
    path.write_bytes(bundled("MR_small.dcm").read_bytes())
    assert is_dicom(path) and not is_dicom(tmp_path / "scan.png")
    assert read_image(path).shape == (64, 64)


def test_folder_importer_reads_dicom_scans_with_png_masks_and_skips_undecodable_ones(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("MR_small.dcm", "SC_rgb_rle_2frame.dcm", "MR_small_jpeg_ls_lossless.dcm", "US1_UNCR.dcm"):
        (tmp_path / "images" / name).write_bytes(bundled(name).read_bytes())
    save(tmp_path / "masks" / "MR_small.png", box_mask(64, 64, 10, 10, 20), mode="1")
    # A mask named like a DICOM file is not read: masks are images, never DICOM.
    Image.fromarray(box_mask(8, 8)).save(tmp_path / "masks" / "US1_UNCR.dcm", format="PNG")
    records = list(importers.import_folder(tmp_path, {}))
    samples = {r.id: r for r in records if isinstance(r, Sample)}
    skips = {r.id: r for r in records if isinstance(r, Skip)}
    assert sorted(samples) == ["MR_small", "SC_rgb_rle_2frame", "US1_UNCR"]
    assert samples["MR_small"].has_mask and samples["MR_small"].mask.sum() == 400
    assert samples["SC_rgb_rle_2frame"].note == "DICOM cine clip: first of 2 frames read"
    assert samples["US1_UNCR"].colour == COLOUR and not samples["US1_UNCR"].has_mask
    assert "JPEG-LS Lossless" in skips["MR_small_jpeg_ls_lossless"].reason
    ignored = {Path(r.path).name: r.reason for r in records if isinstance(r, importers.Ignored)}
    assert "not a mask image" in ignored["US1_UNCR.dcm"]


def test_predict_reads_dicom_scans_and_notes_a_cine_clip(tmp_path, checkpoint, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("MR_small.dcm", "SC_rgb_rle_2frame.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        (scans / name).write_bytes(bundled(name).read_bytes())
    argv = ["predict", "--model", str(checkpoint), "--out", str(tmp_path / "out"), "--no-progress", "--allow-colour", str(scans)]
    assert main(argv) == 1  # one input could not be read
    err = capsys.readouterr().err
    mask = np.asarray(Image.open(tmp_path / "out" / f"MR_small.dcm{MASK_SUFFIX}"))
    assert mask.shape == (64, 64)
    assert (tmp_path / "out" / f"SC_rgb_rle_2frame.dcm{MASK_SUFFIX}").is_file()
    assert "SC_rgb_rle_2frame.dcm: DICOM cine clip: first of 2 frames read" in err
    assert "MR_small_jpeg_ls_lossless.dcm: compressed pixel data in transfer syntax JPEG-LS" in err
