"""Reading DICOM ultrasound scans (``.dcm``) as 8-bit greyscale or RGB pixels.

Scanners export DICOM; busseg reads the pixel data of a file with :mod:`pydicom` and hands
it to the same colour rule as every PNG (:func:`busseg.imageio.read_image_with_colour`).

What is read:

* photometric interpretations ``MONOCHROME2`` (as is), ``MONOCHROME1`` (inverted, so that
  tissue is bright as in every other scan), ``RGB``, the ``YBR_*`` family (converted to RGB
  by pydicom) and ``PALETTE COLOR`` (through its lookup table);
* 8-bit data as is; deeper data (12/16-bit) rescaled by the image's own minimum and
  maximum, the rule for 16-bit PNGs too;
* the first frame of a multi-frame file (a cine clip): :func:`frame_note` says so, and the
  prepare report and ``busseg predict`` print that note;
* transfer syntaxes: uncompressed (implicit/explicit VR, little/big endian), deflated, RLE
  lossless (decoded by pydicom itself), JPEG baseline and JPEG 2000 (decoded by Pillow,
  already a dependency). JPEG-LS, 12-bit JPEG extended and JPEG lossless need a further
  handler (``pip install pylibjpeg pylibjpeg-libjpeg``, or ``python-gdcm``); without one a
  file in them is refused with a :class:`~busseg.errors.DataError` that names the file and
  its transfer syntax, which the importers record as a skip.

Masks stay images (PNG etc.): a DICOM file is only ever read as a scan. :func:`write_dicom`
writes pixels as an uncompressed DICOM file (the tests' and benchmarks' scanner exports).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from busseg.errors import DataError

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
"""File extensions read as DICOM scans (case-insensitive)."""

_PREAMBLE_MAGIC_OFFSET = 128
_MAGIC = b"DICM"


def is_dicom(path: str | Path) -> bool:
    """Whether ``path`` names a DICOM file: a DICOM extension, or, for a file without an
    extension (as scanners often export them), the ``DICM`` marker after the 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(_PREAMBLE_MAGIC_OFFSET)
            return handle.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False


def _dataset(path: Path, *, pixels: bool):
    """The parsed file (without its pixel data unless ``pixels``), or a DataError naming it."""
    import pydicom  # imported here: a dataset of PNGs never pays for it
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():  # pydicom warns of recoverable header quirks (VR mismatches)
            warnings.simplefilter("ignore", UserWarning)
            return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except InvalidDicomError as exc:
        raise DataError(path, f"cannot read DICOM: not a DICOM file ({exc})") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(path, f"cannot read DICOM: damaged file ({type(exc).__name__}: {exc})") from None


def _transfer_syntax(dataset) -> str:
    """The file's transfer syntax by name and UID (implicit VR little endian when unstated)."""
    meta = getattr(dataset, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid is None:
        return "Implicit VR Little Endian (no transfer syntax stated)"
    return f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)


def frame_count(path: str | Path) -> int:
    """Number of frames of a DICOM file (1 for a single image), from its header only."""
    dataset = _dataset(Path(path), pixels=False)
    try:
        return max(1, int(getattr(dataset, "NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def frame_note(path: str | Path) -> str:
    """``"first of N frames read (cine clip)"`` for a multi-frame file, else ``""``."""
    frames = frame_count(path)
    return f"DICOM cine clip: first of {frames} frames read" if frames > 1 else ""


def read_dicom_pixels(path: str | Path, max_pixels: int) -> np.ndarray:
    """The first frame of a DICOM scan as ``uint8``: (H, W) for greyscale, (H, W, 3) for colour.

    Raises :class:`DataError` naming ``path`` for a file that is not DICOM, has no pixel
    data, is larger than ``max_pixels``, uses a photometric interpretation busseg does not
    read, or is compressed in a transfer syntax no installed handler decodes (the message
    names the syntax and the packages that decode it).
    """
    path = Path(path)
    dataset = _dataset(path, pixels=True)
    if "PixelData" not in dataset and "FloatPixelData" not in dataset and "DoubleFloatPixelData" not in dataset:
        raise DataError(path, "DICOM file without pixel data (a report or structured document, not a scan)")
    rows, columns = int(getattr(dataset, "Rows", 0) or 0), int(getattr(dataset, "Columns", 0) or 0)
    if rows * columns > max_pixels:
        raise DataError(path, f"image too large: {columns}x{rows} px (at most {max_pixels / 1e6:.1f} MP are read)")
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    frame = _first_frame(dataset, path)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            frame = apply_color_lut(frame, dataset)
        except (ValueError, KeyError, AttributeError) as exc:
            raise DataError(path, f"cannot read DICOM: broken palette lookup table ({exc})") from None
        return _to_uint8(frame, path)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if frame.ndim != 2:
            raise DataError(path, f"cannot read DICOM: {photometric} pixel data of shape {frame.shape}")
        grey = _to_uint8(frame, path)
        return 255 - grey if photometric == "MONOCHROME1" else grey
    if photometric == "RGB" or photometric.startswith("YBR"):
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise DataError(path, f"cannot read DICOM: {photometric} pixel data of shape {frame.shape}")
        return _to_uint8(frame, path)
    raise DataError(
        path,
        f"cannot read DICOM: photometric interpretation {photometric!r} is not read "
        "(read are MONOCHROME1, MONOCHROME2, RGB, YBR_* and PALETTE COLOR)",
    )


def _first_frame(dataset, path: Path) -> np.ndarray:
    """The first frame's pixels (YBR converted to RGB), or a DataError naming the transfer syntax."""
    from pydicom.pixels import pixel_array

    try:
        # index=0 decodes one frame only: a 200-frame cine clip is not decoded whole.
        return np.asarray(pixel_array(dataset, index=0))
    except (RuntimeError, NotImplementedError) as exc:
        message = str(exc)
        if "plugin" in message.lower() or "decode" in message.lower() or "decompress" in message.lower():
            raise DataError(
                path,
                f"compressed pixel data in transfer syntax {_transfer_syntax(dataset)} that no installed "
                "handler decodes; install one (pip install pylibjpeg pylibjpeg-libjpeg, or python-gdcm) "
                "or export the scan uncompressed",
            ) from None
        raise DataError(path, f"cannot read DICOM pixel data: {message.splitlines()[0]}") from None
    except (ValueError, KeyError, AttributeError, IndexError, TypeError, EOFError) as exc:
        raise DataError(path, f"cannot read DICOM pixel data: damaged file ({type(exc).__name__}: {exc})") from None


def _to_uint8(values: np.ndarray, path: Path) -> np.ndarray:
    """8-bit data as is; deeper data rescaled by its own min and max (flat data -> zeros)."""
    if values.dtype == np.uint8:
        return np.ascontiguousarray(values)
    if not np.issubdtype(values.dtype, np.number):
        raise DataError(path, f"cannot read DICOM: pixel data of type {values.dtype}")
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def write_dicom(path: str | Path, pixels: np.ndarray) -> None:
    """Write 8-bit ``pixels`` as an uncompressed DICOM secondary capture: (H, W) as
    MONOCHROME2, (H, W, 3) as RGB (how many ultrasound machines store grey scans)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.PatientID = "US", "anonymous"
    dataset.Rows, dataset.Columns = pixels.shape[:2]
    colour = pixels.ndim == 3
    dataset.SamplesPerPixel = 3 if colour else 1
    dataset.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        dataset.PlanarConfiguration = 0
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit, dataset.PixelRepresentation = 7, 0
    dataset.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    dataset.save_as(path, enforce_file_format=True)
