"""The ``busseg`` command line: segment new images with a trained model.

    busseg predict --model models/synthetic/student.pt --out predictions/ scan1.png scans/

Output names (one distinct output per input, nothing overwritten by another input):

* a folder given as input is mirrored: ``scans/sub/scan.png`` -> ``<out>/sub/scan.png.mask.png``;
* a file given as input goes to the top: ``a/scan.png`` -> ``<out>/scan.png.mask.png``;
* the input's whole file name is kept, so ``scan.png`` and ``scan.jpg`` do not collide;
* two inputs that would still share an output (the same relative name under two given
  folders, or two given files with the same name) are not guessed apart: the later one
  is skipped with the reason, and nothing is overwritten.

Files named ``*.mask.png`` or ``*.overlay.png`` are this command's outputs and are never
read from input folders (nor, when named directly, from the output folder), and a folder
input skips the output folder inside it, so ``--out`` may lie inside (or be) an input
folder and a second run reads the same inputs as the first. Hidden files and folders
(``.name``) are not read from input folders.

Scans are images (PNG, JPEG, BMP, TIFF) or DICOM files (``.dcm``; the first frame of a
cine clip, with a note). An image that cannot be read (corrupt, not an image, colour content without
``--allow-colour``) is skipped and listed with the reason; the others are still written.
The exit code is 0 when every input was written and 1 otherwise; Ctrl-C prints one line,
``interrupted``, and exits with 130 (the masks written until then are whole files).
"""
from __future__ import annotations

import argparse
import errno
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from busseg.dicom import frame_note, is_dicom
from busseg.errors import BussegError, ConfigError, DataError
from busseg.imageio import SCAN_SUFFIXES, read_image, too_small

if TYPE_CHECKING:  # torch is imported only when a command runs (fast --help)
    import torch

    from busseg.models import SegmentationNet

MASK_SUFFIX = ".mask.png"
OVERLAY_SUFFIX = ".overlay.png"
OUTPUT_SUFFIXES = (MASK_SUFFIX, OVERLAY_SUFFIX)


@dataclass(frozen=True)
class Job:
    """One input image and its output name relative to ``--out`` (``sub/scan.png``)."""

    source: Path
    name: Path

    def output(self, out: Path, suffix: str) -> Path:
        """The output file for ``suffix`` (:data:`MASK_SUFFIX` or :data:`OVERLAY_SUFFIX`)."""
        return out / self.name.parent / (self.name.name + suffix)


@dataclass
class Plan:
    """What ``predict`` will read: the jobs, inputs skipped already, earlier outputs ignored."""

    jobs: list[Job] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: int = 0


@dataclass
class Summary:
    """What a run wrote and what it skipped (with the reason)."""

    masks: int = 0
    overlays: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[tuple[Path, str]] = field(default_factory=list)


def _is_within(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies inside it (both resolved)."""
    return path == folder or folder in path.parents


def _is_output_name(path: Path) -> bool:
    """A name this command gives its outputs (``*.mask.png``, ``*.overlay.png``)."""
    return path.name.endswith(OUTPUT_SUFFIXES)


def _walk(folder: Path, out: Path) -> Iterator[Path]:
    """Files under ``folder`` that may be images (sorted), hidden entries and the output folder left out.

    "May be images": the extensions of :data:`busseg.imageio.SCAN_SUFFIXES` (images and DICOM, case-insensitive);
    a file named explicitly is read whatever its extension."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        # An output folder inside an input folder holds our own outputs, never inputs
        # (when it *is* the input folder, the output names are filtered per file).
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _resolve(here / d) not in (out, None))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in SCAN_SUFFIXES:
                yield here / name


def plan_jobs(inputs: list[Path], out: Path) -> Plan:
    """Map every input image to a distinct output name (see the module docstring)."""
    out = out.resolve()
    plan = Plan()
    seen_sources: set[Path] = set()
    claimed: dict[Path, Path] = {}  # output name -> the input that has it

    def add(source: Path, name: Path, explicit: bool) -> None:
        resolved = _resolve(source)
        if resolved is None:
            plan.skipped.append((source, _link_problem(source)))
            return
        # Earlier outputs are never inputs: in a folder wherever they lie, and a file named
        # directly (a shell glob such as out/*.png) when it lies in the output folder.
        if _is_output_name(source) and (not explicit or _is_within(resolved.parent, out)):
            plan.ignored += 1
            return
        if resolved in seen_sources:  # the same file given twice (as a file and in a folder)
            return
        seen_sources.add(resolved)
        if name in claimed:
            plan.skipped.append(
                (source, f"its output {name}{MASK_SUFFIX} is already that of {claimed[name]}; "
                         "predict these inputs in separate runs or with separate --out folders")
            )
            return
        claimed[name] = source
        plan.jobs.append(Job(source, name))

    for path in inputs:
        if path.is_dir():
            for source in _walk(path, out):
                add(source, source.relative_to(path), explicit=False)
        elif path.is_file():
            add(path, Path(path.name), explicit=True)
        elif path.is_symlink():
            plan.skipped.append((path, _link_problem(path)))
        else:
            plan.skipped.append((path, "no such file or folder"))
    return plan


def _resolve(path: Path) -> Path | None:
    """``path`` resolved, or None when symbolic links loop (Python raises RuntimeError for
    that up to 3.12 and OSError from 3.13)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def _link_problem(path: Path) -> str:
    """Why a symbolic link cannot be read: it loops, or its target is missing."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the links point at each other, never at a file)"
        return f"broken symbolic link ({exc.strerror})"
    return "symbolic link that cannot be resolved"


def _read(path: Path, allow_colour: bool) -> np.ndarray:
    """The image as uint8 (H, W); :class:`DataError` with the reason when it is unusable.

    The colour rule is :func:`busseg.imageio.read_image`'s (the one the importers use);
    when it refuses a colour image, the reason says which flag converts it. The size rule
    is ``prepare``'s (:func:`busseg.imageio.too_small`): no mask for a 1 x 1 "scan".
    """
    try:
        image = _read_image(read_image, path, allow_colour)
    except DataError as exc:
        if allow_colour or not _readable_as_colour(read_image, path):
            raise
        raise DataError(path, f"{exc.problem}; pass --allow-colour to convert it to grey (luma)") from None
    small = too_small(image)
    if small:
        raise DataError(path, small)
    return image


def _read_image(read_image: Callable[..., np.ndarray], path: Path, allow_colour: bool) -> np.ndarray:
    """``read_image`` with any exception of a broken file turned into :class:`DataError`."""
    try:
        return read_image(path, allow_colour=allow_colour)
    except DataError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files; it is one bad input
        raise DataError(path, f"cannot read image ({type(exc).__name__}: {exc})") from None


def _readable_as_colour(read_image: Callable[..., np.ndarray], path: Path) -> bool:
    """Whether ``path`` reads with ``allow_colour=True`` (so it was refused for its colour)."""
    try:
        _read_image(read_image, path, True)
    except DataError:
        return False
    return True


def _png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels`` (greyscale or RGB uint8) encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path: Path, pixels: np.ndarray) -> None:
    """Write one PNG atomically; a write failure (disk full, ...) is a :class:`DataError`
    naming ``path`` (raised by :func:`busseg.atomic.write_bytes`) and stops the run."""
    from busseg.atomic import write_bytes

    write_bytes(path, _png_bytes(pixels))


def run_predictions(
    model: SegmentationNet, plan: Plan, out: Path, device: torch.device, args: argparse.Namespace, summary: Summary
) -> None:
    """Predict every job of ``plan`` into ``summary``; unreadable images are skipped.

    ``summary`` is filled as the run goes, so that it is right even when a write
    failure stops the run half-way.
    """
    from busseg.inference import predict_keyed
    from busseg.visualize import render_overlay

    def readable() -> Iterator[tuple[Job, np.ndarray]]:
        for job in plan.jobs:
            try:
                image = _read(job.source, args.allow_colour)
                if is_dicom(job.source) and (note := frame_note(job.source)):
                    summary.notes.append((job.source, note))
                yield job, image
            except DataError as exc:
                summary.skipped.append((job.source, exc.problem))

    results = predict_keyed(model, readable(), device)
    for job, image, prob in tqdm(results, total=len(plan.jobs), desc="predict", disable=not args.progress):
        mask = prob > args.threshold
        _write(job.output(out, MASK_SUFFIX), mask.astype(np.uint8) * 255)
        summary.masks += 1
        if args.overlay:
            _write(job.output(out, OVERLAY_SUFFIX), render_overlay(image, None, mask))
            summary.overlays += 1


def _check_out(out: Path) -> None:
    """``--out`` must be a folder or not exist yet (it is created by the first write, so a
    run that writes nothing leaves nothing behind)."""
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder; --out names the output folder")


def _report(summary: Summary, out: Path, ignored: int) -> None:
    """Print what was written (stdout) and every skipped input with its reason (stderr)."""
    written = f"wrote {summary.masks} mask{'s' * (summary.masks != 1)}"
    if summary.overlays:
        written += f" and {summary.overlays} overlay{'s' * (summary.overlays != 1)}"
    print(f"{written} to {out}")
    if ignored:
        print(f"ignored {ignored} earlier output{'s' * (ignored != 1)} of busseg predict (*{MASK_SUFFIX}, *{OVERLAY_SUFFIX})")
    for path, note in summary.notes:
        print(f"note {path}: {note}", file=sys.stderr)
    for path, reason in summary.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)


def predict_command(args: argparse.Namespace) -> None:
    """Write ``<out>/<name>.mask.png`` (0/255) and, with --overlay, ``<name>.overlay.png``."""
    import torch

    from busseg.runtime import resolve_device, set_threads
    from busseg.training.checkpoint import load_model

    plan = plan_jobs(args.inputs, args.out)
    if not plan.jobs and not plan.skipped:
        raise BussegError("no input images found in " + ", ".join(map(str, args.inputs)))
    _check_out(args.out)
    set_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ConfigError as exc:  # the library names the params.yaml key; here it is a flag
        raise BussegError(f"--device: {exc.problem}") from None
    model = load_model(args.model, device) if plan.jobs else None
    summary = Summary(skipped=list(plan.skipped))
    try:
        if model is not None:
            with torch.inference_mode():
                run_predictions(model, plan, args.out, device, args, summary)
    except Exception:  # a write failure stops the run: say what was written before it
        _report(summary, args.out, plan.ignored)
        raise
    # Not on Ctrl-C: the user asked for silence, and main prints the one `interrupted` line.
    _report(summary, args.out, plan.ignored)
    if summary.skipped:
        total = summary.masks + len(summary.skipped)
        raise BussegError(f"skipped {len(summary.skipped)} of {total} inputs (listed above); their masks were not written")


def _non_negative_int(text: str) -> int:
    """argparse type of --threads."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _probability(text: str) -> float:
    """argparse type of --threshold."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``busseg`` argument parser (one sub-command, ``predict``)."""
    parser = argparse.ArgumentParser(prog="busseg", description="Breast-ultrasound lesion segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser(
        "predict",
        help="segment images with a trained checkpoint",
        description=(
            "Write <out>/<name>.mask.png (0/255) per input image, keeping the image's whole file name "
            "(scan.png -> scan.png.mask.png). Folders are searched recursively and mirrored under --out; "
            "files named directly go to its top; of two inputs with one output name the later is skipped. "
            "Unreadable and colour images are skipped and listed; the exit code is 1 when any input was "
            "skipped. *.mask.png / *.overlay.png files (this command's outputs) and hidden files are never "
            "read from input folders, so --out may be or lie inside an input folder."
        ),
    )
    predict.add_argument("inputs", nargs="+", type=Path, help="image files or folders (searched recursively)")
    predict.add_argument("--model", type=Path, required=True, help="checkpoint, e.g. models/<dataset>/student.pt")
    predict.add_argument("--out", type=Path, required=True, help="output folder (created; may be an input folder)")
    predict.add_argument("--threshold", type=_probability, default=0.5, help="probability above which a pixel is lesion")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument("--threads", type=_non_negative_int, default=1, help="torch threads (0 = torch's default)")
    predict.add_argument("--overlay", action="store_true", help="also write <name>.overlay.png outline pictures")
    predict.add_argument(
        "--allow-colour",
        action="store_true",
        help="convert colour images (e.g. Doppler overlays) to grey by luma instead of skipping them",
    )
    predict.add_argument("--no-progress", dest="progress", action="store_false")
    predict.set_defaults(func=predict_command)
    return parser


INTERRUPTED_EXIT_CODE = 130
"""Exit code after Ctrl-C: 128 + SIGINT, what a shell reports for an interrupted command."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; user errors become one ``error:`` line and exit code 1, Ctrl-C
    one ``interrupted`` line and exit code 130 (masks written so far are complete files:
    each is written atomically; the one being written is not left behind)."""
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except BussegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
