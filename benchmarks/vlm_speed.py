"""CPU speed of the grounded_sam backend at full model size (random weights).

Usage::

    PYTHONPATH=src nice python benchmarks/vlm_speed.py \
        [--images ../shared/data/BUS-BRA/images] [--count 3] [--threads 1 0] [--device cuda]

Builds Grounding DINO-T (the shipped ``GroundingDINO_SwinT_OGC.py`` config, with a
BERT-base-sized text encoder) and SAM ViT-B with random weights, which cost exactly
the compute of the official ones, saves them as checkpoint files in a temporary
folder (about 1.1 GB), loads them through :class:`GroundedSamLabeler` as real
weights would be, and times ``label`` on real BUS-BRA images with the default
sizes (detector resize 800 / 1333, SAM 1024) and the three default prompts.
``box_threshold`` and ``text_threshold`` are 0 so that SAM always runs (random
weights give arbitrary scores). ``--threads 0`` means all cores.

Prints, per thread count, the median seconds per image of the whole label and of
its two parts: the detector (backbone once, transformer once per prompt) and the
SAM image embedding (the mask decoder is cheap and is in the total).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from busseg.pseudo.grounded_sam import GroundedSamLabeler, GroundedSamOptions

# Enough real WordPiece entries for the prompts; ids stay below BERT-base's 30522.
_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", "dark", "oval", "round", "lo", "##bul", "##ated"]


def write_bert_base(folder: Path) -> Path:
    """A BERT-base-sized model (random weights) and a small WordPiece tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(_VOCAB) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    BertModel(BertConfig()).save_pretrained(folder)  # BertConfig() defaults are bert-base-uncased's sizes
    return folder


def write_dino(folder: Path, text_encoder: Path) -> Path:
    """Grounding DINO-T from the shipped SwinT OGC config, saved as {"model": state_dict}."""
    import groundingdino
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig

    args = SLConfig.fromfile(str(Path(groundingdino.__file__).parent / "config" / "GroundingDINO_SwinT_OGC.py"))
    args.device = "cpu"
    args.text_encoder_type = str(text_encoder)
    with contextlib.redirect_stdout(None):
        model = build_model(args)
    path = folder / "groundingdino_swint_ogc_random.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


def write_sam(folder: Path) -> Path:
    """SAM ViT-B (random weights) saved as a plain state dict, like the official file."""
    from segment_anything import sam_model_registry

    path = folder / "sam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    return path


def load_images(folder: Path, count: int) -> list[np.ndarray]:
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise SystemExit(f"no PNG images in {folder}")
    step = max(1, len(paths) // count)
    return [np.asarray(Image.open(p).convert("L")) for p in paths[::step][:count]]


def _now(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # GPU work is asynchronous: time what it finished
    return time.perf_counter()


def time_one(labeler: GroundedSamLabeler, image: np.ndarray, device: str = "cpu") -> tuple[float, float, float]:
    """Seconds for (label, detector, SAM image embedding) of one image."""
    opts = labeler.options
    start = _now(device)
    label = labeler.label(image)
    total = _now(device) - start
    assert label.reason != "no_box", "thresholds are 0: every image must reach SAM"
    start = _now(device)
    labeler.detector.detect([image], opts.prompts, opts.box_threshold, opts.text_threshold)
    detector = _now(device) - start
    start = _now(device)
    labeler.segmenter.embed([image])
    sam = _now(device) - start
    return total, detector, sam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=Path("../shared/data/BUS-BRA/images"))
    parser.add_argument("--count", type=int, default=3, help="images timed per thread setting")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="0 = all cores")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the GPU check uses cuda)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    images = load_images(args.images, args.count)
    print(f"images: {len(images)} from {args.images}, shapes {[im.shape for im in images]}")

    with tempfile.TemporaryDirectory(prefix="vlm_speed_") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        text_encoder = write_bert_base(folder / "bert-base")
        options = GroundedSamOptions(
            dino_checkpoint=str(write_dino(folder, text_encoder)),
            text_encoder=str(text_encoder),
            sam_checkpoint=str(write_sam(folder)),
            verify_checksums=False,  # random weights, not the official files
            box_threshold=0.0,
            text_threshold=0.0,
            device=args.device,
        )
        labeler = GroundedSamLabeler(options)
        print(f"built, saved and loaded both models in {time.perf_counter() - start:.1f} s")

    for threads in args.threads:
        n = threads or os.cpu_count() or 1
        torch.set_num_threads(n)
        time_one(labeler, images[0], args.device)  # warm-up (allocator, lazy inits)
        times = [time_one(labeler, image, args.device) for image in images]
        total, detector, sam = (statistics.median(column) for column in zip(*times))
        print(
            f"threads={n}: median s/image  label {total:.2f}  "
            f"(detector, 3 prompts {detector:.2f}; SAM ViT-B embedding {sam:.2f})  "
            f"all label times {[round(t[0], 2) for t in times]}"
        )


if __name__ == "__main__":
    main()
