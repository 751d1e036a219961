"""The colour rule on real scans (a BUS-UCLM folder) or on scans with BUS-UCLM's statistics.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/colour_rule.py --folder PATH [--out FILE]
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/colour_rule.py [--grey 646] [--doppler 37] [--timed 60]

``--folder`` reads a folder in BUS-UCLM's layout (``images/`` and ``INFO.csv``, whose
``Doppler`` column is the truth) with :func:`busseg.imageio.read_image_with_colour`, the
reader every importer uses, and writes one JSON file (default
``benchmarks/results/colour_rule/<folder name>.json``): the command, the git commit, the CPU
model (``lscpu``), the date, every scan's decision with its fractions and reason, and the
rates: greyscale content (``grey``/``tinted``) among ``Doppler: No`` scans, colour among
``Doppler: Yes``. The same rates are printed.

Without ``--folder`` it makes 856 x 606 scans with BUS-UCLM's statistics
(``tests/data/uclm_scans.py``: a tinted grey map, the scanner's body-mark icon, marks and
text; Doppler scans add a colour box and usually a colour bar). The defaults are the real
folder's make-up (683 scans less the 13 ``HESN_*`` ones skipped for their mask size; 37
``Doppler: Yes``). For every scan it records what :func:`busseg.imageio.classify_colour`
decides, and what it decides with the grey map estimated from every pixel (the sampled
estimate must decide the same). On the first ``--timed`` scans it times the rule against
an early rule (kept below, verbatim, as :func:`classify_colour_v1`), the two interleaved per
scan so that a busy machine slows both alike.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import busseg.imageio as imageio  # noqa: E402
from busseg.errors import DataError  # noqa: E402
from busseg.imageio import COLOUR, GREY, TINTED, ColourContent, classify_colour, read_image_with_colour  # noqa: E402
from data.uclm_scans import uclm_scan  # noqa: E402  (tests/data: the fixture generator)


def classify_colour_v1(rgb: np.ndarray, luma: np.ndarray | None = None) -> ColourContent:
    """The rule as of commit cfb8b90 (full-image medians by sorting, 1 % limit), for timing."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)
    if not np.any(spread > 2):
        return ColourContent()
    if luma is None:
        luma = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)
    offsets = rgb.astype(np.int16) - luma[..., None].astype(np.int16)
    expected = _grey_map_offsets_v1(luma, offsets)[luma.astype(np.intp)]
    off_map = np.abs(offsets - expected).max(axis=2) > 8
    fraction = float(np.count_nonzero(off_map)) / max(off_map.size, 1)
    return ColourContent(TINTED if fraction <= 0.01 else COLOUR, fraction)


def _grey_map_offsets_v1(luma: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The grey map of that early rule (verbatim)."""
    bins = luma.ravel().astype(np.intp) // 16
    flat = offsets.reshape(-1, 3)
    n_bins = 256 // 16
    counts = np.bincount(bins, minlength=n_bins)
    trusted = counts >= max(4, 0.002 * bins.size)
    table = np.zeros((256, 3), dtype=np.float64)
    if not trusted.any():
        return table
    order = np.argsort(bins, kind="stable")
    groups = np.split(flat[order], np.cumsum(counts)[:-1])
    centres = (np.arange(n_bins) + 0.5) * 16
    medians = np.array([np.median(g, axis=0) if len(g) else np.zeros(3) for g in groups])
    levels = np.arange(256)
    for channel in range(3):
        table[:, channel] = np.interp(levels, centres[trusted], medians[trusted, channel])
    return table


def _timed(function, rgb: np.ndarray, luma: np.ndarray) -> tuple[ColourContent, float]:
    """``function(rgb, luma)`` and its wall time in seconds."""
    start = time.perf_counter()
    content = function(rgb, luma)
    return content, time.perf_counter() - start


def _rates(kinds: list[str], doppler: list[bool]) -> tuple[float, float]:
    """(share of greyscale content among non-Doppler scans, share of colour among Doppler ones)."""
    grey = [k in (GREY, TINTED) for k, d in zip(kinds, doppler) if not d]
    colour = [k == COLOUR for k, d in zip(kinds, doppler) if d]
    return float(np.mean(grey)) if grey else float("nan"), float(np.mean(colour)) if colour else float("nan")


REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "colour_rule"


def read_doppler_truth(folder: Path) -> dict[str, bool]:
    """``INFO.csv``'s ``Doppler`` column of a BUS-UCLM folder: image file name -> Yes."""
    with open(folder / "INFO.csv", encoding="utf-8-sig", newline="") as handle:
        rows = csv.DictReader(handle, delimiter=";")
        return {row["Image"].strip(): row["Doppler"].strip().lower() == "yes" for row in rows}


def classify_folder(folder: Path) -> list[dict[str, object]]:
    """Every scan of ``folder/images`` listed in ``INFO.csv``, read as the importers read it:
    its decision, fractions, reason and time (an unreadable scan is recorded, not fatal)."""
    decisions = []
    for name, doppler in sorted(read_doppler_truth(folder).items()):
        start = time.perf_counter()
        try:
            _, content = read_image_with_colour(folder / "images" / name)
        except DataError as error:
            decisions.append({"image": name, "doppler": doppler, "kind": "unreadable", "reason": error.problem})
            continue
        decisions.append(
            {
                "image": name,
                "doppler": doppler,
                "kind": content.kind,
                "correct": (content.kind == COLOUR) == doppler,
                "off_map_fraction": round(content.off_map_fraction, 6),
                "flow_fraction": round(content.flow_fraction, 6),
                "area_fraction": round(content.area_fraction, 6),
                "reason": content.reason,
                "seconds": round(time.perf_counter() - start, 4),
            }
        )
    return decisions


def folder_rates(decisions: list[dict[str, object]]) -> dict[str, object]:
    """Counts and rates of a folder's decisions (greyscale among No, colour among Yes)."""
    readable = [d for d in decisions if d["kind"] != "unreadable"]
    grey, colour = _rates([str(d["kind"]) for d in readable], [bool(d["doppler"]) for d in readable])
    return {
        "n_scans": len(decisions),
        "n_unreadable": len(decisions) - len(readable),
        "n_doppler_no": sum(not d["doppler"] for d in readable),
        "n_doppler_yes": sum(bool(d["doppler"]) for d in readable),
        "greyscale_among_doppler_no": grey,
        "colour_among_doppler_yes": colour,
        "median_seconds_per_scan": statistics.median(float(d["seconds"]) for d in readable) if readable else None,
    }


def _cpu_model() -> str:
    """The CPU model as ``lscpu`` names it (the platform's name where lscpu is missing)."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _git_commit() -> str:
    """The commit the benchmark ran at, with ``-dirty`` when the tree had changes."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_folder(folder: Path, out: Path | None) -> Path:
    """Classify a real folder, print its rates and write the JSON result; returns its path."""
    decisions = classify_folder(folder)
    rates = folder_rates(decisions)
    out = out or RESULTS / f"{folder.name}.json"
    result = {
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=src python " + shlex.join(["benchmarks/colour_rule.py", *sys.argv[1:]]),
        "git_commit": _git_commit(),
        "cpu": _cpu_model(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "folder": folder.name,
        "rates": rates,
        "wrong": [d["image"] for d in decisions if not d.get("correct", False)],
        "decisions": decisions,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(
        f"{folder.name}: {rates['n_doppler_no']} scans Doppler: No, {rates['n_doppler_yes']} Doppler: Yes; "
        f"greyscale content among No {rates['greyscale_among_doppler_no']:.1%}, colour among Yes "
        f"{rates['colour_among_doppler_yes']:.1%}; wrong: {', '.join(result['wrong']) or 'none'}; written to {out}"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a real folder in BUS-UCLM's layout (images/, INFO.csv)")
    parser.add_argument("--out", type=Path, help="where --folder writes its JSON result")
    parser.add_argument("--grey", type=int, default=646, help="scans marked Doppler: No")
    parser.add_argument("--doppler", type=int, default=37, help="scans marked Doppler: Yes")
    parser.add_argument("--timed", type=int, default=60, help="scans on which both rules are timed")
    parser.add_argument("--seed", type=int, default=0, help="first fixture seed")
    args = parser.parse_args()
    if args.folder is not None:
        run_folder(args.folder, args.out)
        return
    run_synthetic(args)


def run_synthetic(args: argparse.Namespace) -> None:
    """The rates and speed on scans with BUS-UCLM's statistics (see the module docstring)."""
    total = args.grey + args.doppler
    # Doppler scans spread evenly through the run, so that the timed scans hold both kinds.
    spread = {round(j * total / args.doppler) for j in range(args.doppler)} if args.doppler else set()
    doppler = [i in spread for i in range(total)]
    new, full, old = [], [], []
    fractions: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    times_new, times_old, ratios = [], [], []
    for index, is_doppler in enumerate(doppler):
        rgb = uclm_scan(args.seed + index, doppler=is_doppler)
        luma = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)
        content, seconds = _timed(classify_colour, rgb, luma)
        new.append(content.kind)
        fractions[is_doppler].append((content.off_map_fraction, content.flow_fraction))
        with mock.patch.object(imageio, "MAP_SAMPLE_PIXELS", rgb.shape[0] * rgb.shape[1]):
            full.append(classify_colour(rgb, luma).kind)
        if index < args.timed:
            before, seconds_old = _timed(classify_colour_v1, rgb, luma)
            times_new.append(seconds)
            times_old.append(seconds_old)
            ratios.append(seconds_old / seconds)
            old.append(before.kind)
    print(f"{args.grey} scans Doppler: No, {args.doppler} Doppler: Yes, 856 x 606")
    grey_rate, colour_rate = _rates(new, doppler)
    print(f"rule now:   greyscale content among No {grey_rate:.1%}, colour among Yes {colour_rate:.1%}")
    timed_doppler = doppler[: len(old)]
    grey_v1, colour_v1 = _rates(old, timed_doppler)
    print(f"rule v1 (first {len(old)} scans): greyscale among No {grey_v1:.1%}, colour among Yes {colour_v1:.1%}")
    mismatches = sum(a != b for a, b in zip(new, full))
    print(f"sampled grey map vs every pixel: {mismatches} different decisions of {len(new)}")
    for is_doppler, values in fractions.items():
        off, flow = np.array(values).T * 100 if values else (np.zeros(1), np.zeros(1))
        print(
            f"Doppler {'Yes' if is_doppler else 'No '}: off-map {off.min():.2f}-{off.max():.2f} %, "
            f"flow-coloured {flow.min():.3f}-{flow.max():.3f} % (limits {imageio.OVERLAY_MAX_FRACTION:.0%}, "
            f"{imageio.FLOW_MAX_FRACTION:.1%}, cores of {imageio.AREA_MIN_PIXELS} px)"
        )
    if ratios:
        print(
            f"time per scan (median of {len(ratios)}): v1 {statistics.median(times_old) * 1000:.1f} ms, "
            f"now {statistics.median(times_new) * 1000:.1f} ms; speed-up (median per scan) "
            f"{statistics.median(ratios):.1f}x"
        )


if __name__ == "__main__":
    main()
