"""The ``busseg`` command line: segment new images with a trained model.

    busseg predict --model models/synthetic/student.pt --out predictions/ scan1.png scans/
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from busseg.errors import BussegError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _expand(paths: list[Path]) -> list[Path]:
    """Files as given, and the image files inside folders (sorted)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            out.append(path)
        else:
            raise DataError(path, "no such file or folder")
    if not out:
        raise BussegError("no input images found in " + ", ".join(map(str, paths)))
    return out


def predict_command(args: argparse.Namespace) -> None:
    """Write ``<out>/<stem>_mask.png`` (0/255) and, with --overlay, ``<stem>_overlay.png``."""
    import torch

    from busseg.imageio import read_image
    from busseg.inference import predict_probability_maps
    from busseg.runtime import resolve_device, set_threads
    from busseg.training.checkpoint import load_model
    from busseg.visualize import render_overlay

    set_threads(args.threads)
    device = resolve_device(args.device)
    model = load_model(args.model, device)
    files = _expand(args.inputs)
    args.out.mkdir(parents=True, exist_ok=True)

    def images() -> Iterator[np.ndarray]:
        for path in files:
            yield read_image(path)

    with torch.inference_mode():
        probs = predict_probability_maps(model, images(), device)
        for path, prob in tqdm(zip(files, probs), total=len(files), desc="predict", disable=not args.progress):
            mask = prob > args.threshold
            Image.fromarray(mask.astype(np.uint8) * 255).save(args.out / f"{path.stem}_mask.png")
            if args.overlay:
                Image.fromarray(render_overlay(read_image(path), None, mask)).save(args.out / f"{path.stem}_overlay.png")
    print(f"wrote {len(files)} masks to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="busseg", description="Breast-ultrasound lesion segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", help="segment images with a trained checkpoint")
    predict.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    predict.add_argument("--model", type=Path, required=True, help="checkpoint, e.g. models/<dataset>/student.pt")
    predict.add_argument("--out", type=Path, required=True, help="output folder")
    predict.add_argument("--threshold", type=float, default=0.5)
    predict.add_argument("--device", default="auto")
    predict.add_argument("--threads", type=int, default=1)
    predict.add_argument("--overlay", action="store_true", help="also write outline overlays")
    predict.add_argument("--no-progress", dest="progress", action="store_false")
    predict.set_defaults(func=predict_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BussegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
