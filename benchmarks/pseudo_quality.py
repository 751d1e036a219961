"""Quality and speed of the appearance pseudo-label backend against real ground truth.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/pseudo_quality.py \
        --root ../shared/data/BUS-BRA --kind busbra [--devices "GE Logiq 7" ...] [--by-scanner] \
        [--weights models/appearance/default.json] [--workers 2] [--limit N] [--step K] [--out results.json]
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/pseudo_quality.py \
        --root ../shared/data/STU --kind stu

The images are labeled as the pipeline's ``pseudo_label`` stage labels one dataset: the
first pass per image, the dataset prior from all of them (from their own most confident
labels, no ground truth), then each image's label (``--single-image``: each image alone,
with the weights file's default prior). ``--devices`` keeps only those BUS-BRA scanners,
as a ``busbra`` entry with ``devices:`` does (the prior then comes from them alone);
``--by-scanner`` adds one summary per scanner; ``--weights`` is
``pseudo.appearance.weights``.

Prints the number of images, mean Dice (invalid labels count 0), mean Dice over
valid labels, coverage (valid fraction), hit rate (centroid of the pseudo mask
inside the ground-truth lesion), median CPU seconds per image of the first pass, and
the mean Dice of the most confident labels at a few coverages (top 30 / 50 / 70 / 90 % by
score). The ground truth is used only here, never by the labeler.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from busseg.data.importers.busbra import DEVICES, check_devices, device_name
from busseg.errors import ConfigError
from busseg.pseudo.appearance import AppearanceLabeler, AppearanceOptions
from busseg.pseudo.appearance_weights import DEFAULT_WEIGHTS

COVERAGES = (0.3, 0.5, 0.7, 0.9)


def busbra_pairs(root: Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of BUS-BRA: images/bus_XXXX-y.png <-> masks/mask_XXXX-y.png."""
    images = sorted((root / "images").glob("bus_*.png"))
    return [(p, root / "masks" / p.name.replace("bus_", "mask_", 1)) for p in images]


def stu_pairs(root: Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of STU: images/Test_Image_N.png <-> masks/mask_N.png."""
    images = sorted((root / "images").glob("Test_Image_*.png"), key=_number)
    return [(p, root / "masks" / f"mask_{_number(p)}.png") for p in images]


def _number(path: Path) -> int:
    """The trailing number of a file name (``Test_Image_7.png`` -> 7)."""
    return int(re.findall(r"\d+", path.stem)[-1])


def load_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Greyscale uint8 image and boolean mask at the image's size."""
    image = np.asarray(Image.open(image_path).convert("L"))
    raw = Image.open(mask_path)
    if raw.mode == "1":
        mask = np.asarray(raw).astype(bool)
    else:
        mask = np.asarray(raw.convert("L")) > 127
    if mask.shape != image.shape:
        resized = cv2.resize(mask.astype(np.uint8) * 255, image.shape[::-1], interpolation=cv2.INTER_NEAREST)
        mask = resized > 127
    return image, mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def centroid_hit(pred: np.ndarray, truth: np.ndarray) -> bool:
    """Whether the centroid of ``pred`` falls inside ``truth``."""
    if not pred.any():
        return False
    ys, xs = np.nonzero(pred)
    return bool(truth[int(round(ys.mean())), int(round(xs.mean()))])


def scanners(root: Path) -> dict[str, str]:
    """BUS-BRA image id -> scanner (``Device`` without the probe frequency)."""
    with open(root / "bus_data.csv", newline="") as handle:
        return {row["ID"].strip(): device_name(row["Device"]) for row in csv.DictReader(handle)}


_WORKER: AppearanceLabeler | None = None


def _start_worker(options: AppearanceOptions) -> None:
    """Pool initialiser: one labeler per process, on one CPU thread."""
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = AppearanceLabeler(options)


def _analyse(image_path: str) -> tuple[dict[str, np.ndarray], float]:
    """The first pass over one image (as arrays, to cross the process boundary) and its CPU seconds."""
    assert _WORKER is not None
    image = np.asarray(Image.open(image_path).convert("L"))
    start = time.process_time()  # CPU time of this process: robust to other load on the machine
    analysis = _WORKER.analyse(image)
    return analysis.to_arrays(), time.process_time() - start


def evaluate(
    pairs: list[tuple[Path, Path]], options: AppearanceOptions, *, workers: int = 1, single_image: bool = False,
    groups: dict[str, str] | None = None,
) -> Iterator[dict[str, object]]:
    """One record per image: Dice, validity, score, hit, seconds (of the first pass), group.

    The labels are the pipeline's: a first pass per image (``workers`` processes), the
    dataset prior from every first pass, then each decision (``single_image``: each image
    with the weights file's default prior instead).
    """
    labeler = AppearanceLabeler(options)
    if workers > 1:
        with Pool(workers, initializer=_start_worker, initargs=(options,)) as pool:
            passes = pool.map(_analyse, [str(p) for p, _ in pairs], chunksize=8)
    else:
        _start_worker(options)
        passes = [_analyse(str(p)) for p, _ in pairs]
    analyses = [labeler.load_analysis(arrays) for arrays, _ in passes]
    prior = labeler.default_prior if single_image else labeler.fit_prior(analyses)
    for (image_path, mask_path), analysis, (_, seconds) in zip(pairs, analyses, passes):
        _, truth = load_pair(image_path, mask_path)
        label = labeler.decide(analysis, prior)
        yield {
            "image": image_path.name,
            "group": (groups or {}).get(image_path.stem, ""),
            "dice": dice(label.mask, truth) if label.valid else 0.0,
            "valid": label.valid,
            "reason": label.reason,
            "score": label.score,
            "hit": centroid_hit(label.mask, truth) if label.valid else False,
            "seconds": seconds,
        }


def summarise(records: list[dict[str, object]]) -> dict[str, object]:
    """Aggregate numbers of the per-image records."""
    d = np.array([r["dice"] for r in records], dtype=float)
    valid = np.array([r["valid"] for r in records], dtype=bool)
    score = np.array([r["score"] if r["valid"] else -1.0 for r in records], dtype=float)
    order = np.argsort(-score, kind="stable")
    by_coverage = {}
    for coverage in COVERAGES:
        keep = max(1, int(round(coverage * len(d))))
        top = order[:keep]
        by_coverage[f"top{int(coverage * 100)}"] = {
            "dice": float(d[top].mean()),
            "min_score": float(score[top].min()),
        }
    reasons: dict[str, int] = {}
    for r in records:
        if not r["valid"]:
            reasons[str(r["reason"])] = reasons.get(str(r["reason"]), 0) + 1
    return {
        "n": len(records),
        "mean_dice": float(d.mean()),
        "mean_dice_valid": float(d[valid].mean()) if valid.any() else 0.0,
        "coverage": float(valid.mean()),
        "hit_rate": float(np.mean([r["hit"] for r in records])),
        "median_seconds": float(np.median([r["seconds"] for r in records])),
        "max_seconds": float(np.max([r["seconds"] for r in records])),
        "dice_at_coverage": by_coverage,
        "invalid_reasons": reasons,
    }


def print_summary(summary: dict[str, object]) -> None:
    print(f"n={summary['n']}")
    print(f"mean Dice (invalid=0) = {summary['mean_dice']:.4f}")
    print(f"mean Dice over valid  = {summary['mean_dice_valid']:.4f}")
    print(f"coverage              = {summary['coverage']:.4f}")
    print(f"hit rate              = {summary['hit_rate']:.4f}")
    print(f"median s/image        = {summary['median_seconds']:.4f} (max {summary['max_seconds']:.4f})")
    for name, row in summary["dice_at_coverage"].items():
        print(f"Dice {name:>5} by score = {row['dice']:.4f} (score >= {row['min_score']:.3f})")
    if summary["invalid_reasons"]:
        print(f"invalid: {summary['invalid_reasons']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="dataset folder")
    parser.add_argument("--kind", choices=("busbra", "stu"), required=True)
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="the labeler's weights file (pseudo.appearance.weights)")
    parser.add_argument("--devices", nargs="+", default=None, metavar="SCANNER",
                        help=f"busbra: only these scanners ({', '.join(DEVICES)}), as the dataset entry's devices")
    parser.add_argument("--by-scanner", action="store_true", help="busbra: one summary per scanner as well")
    parser.add_argument("--single-image", action="store_true", help="label each image alone (the default prior)")
    parser.add_argument("--workers", type=int, default=1, help="processes for the first pass")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images (after --step)")
    parser.add_argument("--step", type=int, default=1, help="use every K-th image")
    parser.add_argument("--out", type=Path, default=None, help="write summary and per-image records as JSON")
    parser.add_argument("--results-out", type=Path, default=None, metavar="PATH",
                        help="also write the summary as a result file (benchmarks/results/<suite>/<name>.json)")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # the target is one CPU core

    pairs = busbra_pairs(args.root) if args.kind == "busbra" else stu_pairs(args.root)
    groups = scanners(args.root) if args.kind == "busbra" else {}
    if args.devices is not None:
        if args.kind != "busbra":
            raise SystemExit("--devices selects BUS-BRA scanners (--kind busbra)")
        try:
            selected = check_devices(args.devices, "--devices")
        except ConfigError as exc:
            raise SystemExit(f"error: {exc}") from None
        pairs = [pair for pair in pairs if groups.get(pair[0].stem) in selected]
    pairs = pairs[:: args.step][: args.limit]
    if not pairs:
        raise SystemExit(f"no images found under {args.root}")
    start = time.perf_counter()
    records = list(evaluate(pairs, AppearanceOptions(weights=args.weights), workers=args.workers,
                            single_image=args.single_image, groups=groups))
    summary = summarise(records)
    print(f"weights {args.weights}; {len(records)} images in {time.perf_counter() - start:.0f} s wall ({args.workers} workers)")
    print_summary(summary)
    by_scanner = {}
    if args.by_scanner and groups:
        print(f"\n| scanner | n | Dice | top-50 % | coverage | hit rate |\n|---|---|---|---|---|---|")
        for group in sorted({str(r["group"]) for r in records}):
            part = summarise([r for r in records if r["group"] == group])
            by_scanner[group] = part
            print(f"| {group} | {part['n']} | {part['mean_dice']:.3f} | {part['dice_at_coverage']['top50']['dice']:.3f} | "
                  f"{part['coverage']:.3f} | {part['hit_rate']:.3f} |")
    if args.out is not None:
        args.out.write_text(json.dumps({"weights": args.weights, "summary": summary, "by_scanner": by_scanner, "records": records}, indent=1))
    if args.results_out is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import results_io

        def cells(name: str, part: dict) -> list:
            return [name, part["n"], f"{part['mean_dice']:.3f}", f"{part['dice_at_coverage']['top50']['dice']:.3f}",
                    f"{part['coverage']:.3f}", f"{part['hit_rate']:.3f}", f"{part['median_seconds']:.3f}"]

        target = f"{args.kind} {' + '.join(args.devices) if args.devices else ''}".strip()
        results_io.write_result(
            args.results_out, title=f"First-round labels: {target}, weights {args.weights}",
            header=["images", "n", "label Dice", "top-50 % by confidence", "coverage", "hit rate", "median s / image"],
            table=[cells(target, summary), *(cells(g, part) for g, part in by_scanner.items())],
            overrides={"weights": str(args.weights)})


if __name__ == "__main__":
    main()
