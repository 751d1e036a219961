"""Stage prepare@<dataset>: import or generate a dataset into a normalised folder.

    python stages/prepare.py --dataset NAME --out data/prepared/NAME --report metrics/prepare/NAME.json
"""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

from _params import dataset_spec, load_params, main_guard, runtime_progress

from busseg.atomic import write_json
from busseg.data.prepare import prepare_dataset
from busseg.errors import DataError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    # Past `ulimit -f` the kernel sends SIGXFSZ, which kills the process before any
    # cleanup; ignored, the write fails with EFBIG instead, which the writers turn into
    # an `error:` line naming the file, with their temporaries removed.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    params = load_params()
    progress = runtime_progress(params)  # no network here: torch is not loaded
    report = prepare_dataset(args.dataset, dataset_spec(params, args.dataset), args.out, progress=progress)
    try:
        write_json(args.report, report.to_dict())
    except OSError as exc:
        raise DataError(args.report, f"cannot write the report: {exc.strerror or exc}") from None
    if report.n_unmasked:
        print(f"prepare {args.dataset}: {report.n_images} images, {report.n_masked} with a mask, "
              f"{report.n_unmasked} without (unlabeled scans)")
    if report.notes:
        print(f"prepare {args.dataset}: {len(report.notes)} DICOM cine clips, their first frame read "
              f"(listed under notes in {args.report})")


if __name__ == "__main__":
    main_guard(main)
