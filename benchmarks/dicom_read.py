"""Reading a DICOM scan against reading the same pixels as PNG.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/dicom_read.py --images ../BUS-BRA/images \
        [--count 100] [--results-out benchmarks/results/performance/dicom_read.json]

Takes the first ``--count`` PNG scans of a folder (real scans: BUS-BRA's 8-bit greyscale
images), writes each again as an uncompressed 8-bit MONOCHROME2 DICOM file and as an RGB
DICOM file (how many ultrasound machines store grey scans) in a temporary folder, and times
:func:`busseg.imageio.read_image_with_colour` on the PNG and on both DICOM copies, interleaved
per scan so that a busy machine slows every format alike. Checks that every copy reads back
the PNG's pixels, then prints the median time per scan of each format and the median per-scan
ratio DICOM / PNG, and writes them as a result file.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_result  # noqa: E402

from busseg.dicom import write_dicom  # noqa: E402
from busseg.imageio import load_grey, read_image_with_colour  # noqa: E402


def timed(path: Path) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    image, _ = read_image_with_colour(path)
    return time.perf_counter() - start, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="a folder of 8-bit greyscale PNG scans")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--results-out", type=Path, default=None)
    args = parser.parse_args()
    sources = sorted(args.images.glob("*.png"))[: args.count]
    if not sources:
        sys.exit(f"error: {args.images}: no PNG scans")
    seconds: dict[str, list[float]] = {"png": [], "dicom_grey": [], "dicom_rgb": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n, source in enumerate(sources):
            grey = load_grey(source)
            copies = {"png": source, "dicom_grey": Path(tmp) / f"{n}.dcm", "dicom_rgb": Path(tmp) / f"{n}_rgb.dcm"}
            write_dicom(copies["dicom_grey"], grey)
            write_dicom(copies["dicom_rgb"], np.repeat(grey[..., None], 3, axis=2))
            for name, path in copies.items():
                elapsed, image = timed(path)
                if not np.array_equal(image, grey):
                    sys.exit(f"error: {path}: read back other pixels than {source}")
                seconds[name].append(elapsed)
    medians = {name: statistics.median(values) * 1000 for name, values in seconds.items()}
    ratios = {name: statistics.median(d / p for d, p in zip(seconds[name], seconds["png"])) for name in ("dicom_grey", "dicom_rgb")}
    for name, value in medians.items():
        print(f"{name}: median {value:.2f} ms per scan" + (f", {ratios[name]:.2f}x the PNG" if name in ratios else ""))
    if args.results_out is not None:
        write_result(
            args.results_out,
            title="Reading a DICOM scan against the same pixels as PNG",
            description=(f"`read_image_with_colour` on {len(sources)} real 8-bit greyscale scans (BUS-BRA), each also "
                         "written as an uncompressed MONOCHROME2 and an RGB DICOM file, timed interleaved per scan, "
                         "one thread. Ratio: the median over scans of DICOM time / PNG time."),
            header=["format", "time per scan (median)", "DICOM / PNG (median per scan)"],
            table=[["PNG (8-bit greyscale)", f"{medians['png']:.2f} ms", "1"],
                   ["DICOM MONOCHROME2, uncompressed", f"{medians['dicom_grey']:.2f} ms", f"{ratios['dicom_grey']:.2f}x"],
                   ["DICOM RGB (grey content), uncompressed", f"{medians['dicom_rgb']:.2f} ms", f"{ratios['dicom_rgb']:.2f}x"]],
            per_scan_seconds={name: [round(v, 6) for v in values] for name, values in seconds.items()},
        )


if __name__ == "__main__":
    main()
