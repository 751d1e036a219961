"""Stage prepare@<dataset>: import or generate a dataset into a normalised folder.

    python stages/prepare.py --dataset NAME --out data/prepared/NAME --report metrics/prepare/NAME.json
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from _params import dataset_spec, load_params, main_guard, runtime_progress

from busseg.atomic import write_json
from busseg.data.prepare import PrepareReport, prepare_dataset
from busseg.scratch import DEFAULT_ROOT as SCRATCH_ROOT


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
    # Built in the scratch folder: after a kill -9 the next busseg run that uses it (any
    # training stage, or prepare) removes the temporary, even if DVC restores the output.
    report = prepare_dataset(args.dataset, dataset_spec(params, args.dataset), args.out, progress=progress,
                             build_in=SCRATCH_ROOT)
    write_json(args.report, report.to_dict())  # a failed write is a DataError naming it
    for line in console_summary(report, args.report):
        print(line, file=sys.stderr)


def console_summary(report: PrepareReport, report_path: Path) -> list[str]:
    """The lines a user must see without opening the report: how many images were skipped
    and which samples look wrong (each list is in the report, which the lines name)."""
    lines = []
    total = report.n_images + report.n_skipped
    if report.n_skipped:
        lines.append(
            f"prepare {report.name}: skipped {report.n_skipped} of {total} images; "
            f"the list with each reason is under 'skipped' in {report_path}"
        )
    if report.warnings:
        shown = "; ".join(f"{w['id']}: {w['problem']}" for w in report.warnings[:3])
        more = f" (and {len(report.warnings) - 3} more)" if len(report.warnings) > 3 else ""
        lines.append(
            f"warning: prepare {report.name}: {len(report.warnings)} imported samples look wrong: {shown}{more}; "
            f"listed under 'warnings' in {report_path}"
        )
    if report.n_unmasked:
        lines.append(f"prepare {report.name}: {report.n_images} images, {report.n_masked} with a mask, "
                     f"{report.n_unmasked} without (unlabeled scans)")
    if report.notes:
        lines.append(f"prepare {report.name}: {len(report.notes)} DICOM cine clips, their first frame read "
                     f"(listed under 'notes' in {report_path})")
    return lines


if __name__ == "__main__":
    main_guard(main)
