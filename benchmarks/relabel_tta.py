"""Label quality of a refinement re-label under multi-scale test-time augmentation.

    python benchmarks/relabel_tta.py --prepared data/prepared/toshiba --pseudo data/pseudo/toshiba \
        --teacher models/toshiba/static_teacher.pt --ids data/splits/toshiba/unlabeled.txt \
        --sizes 144 160 192

A refinement round's teacher re-labels each image from the mean of its probability maps of
the image and its mirror image at the network's input size (:func:`busseg.pseudo.refine.refine_labels`).
Issue 20 asks whether more input sizes help ("scales if they help"). This script re-labels the
images of ``--ids`` with the flip pair at the network's size alone, and with the flip pair at
the network's size plus each of ``--sizes`` (and all of them together), and prints the mean
Dice against ground truth (images with a lesion; an invalid label counts 0) of each, with the
first-round labels for reference. No training: run it in a project or benchmark clone after
its warm-up, on a train split.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from relabel_inputs import add_relabel_arguments, label_dice, load_relabel_inputs, report

from busseg.data.prepared import PreparedDataset
from busseg.imageio import resize_image
from busseg.inference import probabilities
from busseg.models import SegmentationNet
from busseg.pseudo.base import PseudoLabel
from busseg.pseudo.refine import keep_previous_where_invalid, label_from_probabilities


def probability_at(net: SegmentationNet, image: np.ndarray, size: int, mirrored: bool) -> np.ndarray:
    """The network's probability map of ``image`` (H, W) fed at ``size`` x ``size``, at the image's size."""
    view = np.ascontiguousarray(image[:, ::-1] if mirrored else image)
    x = torch.from_numpy(np.array(resize_image(view, size))).float().div_(255.0)[None, None]
    prob = probabilities(net, x, torch.device("cpu"))
    prob = F.interpolate(prob, size=image.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    return prob[:, ::-1] if mirrored else prob


def relabel_scores(
    net: SegmentationNet,
    prepared: PreparedDataset,
    ids: list[str],
    first: dict[str, PseudoLabel],
    sizes: list[int],
    min_area_fraction: float,
) -> dict[str, float]:
    """Mean label Dice over ``ids`` of the first-round labels ``first`` and of the re-label with
    the flip pair at the network's size (``flip``, what a refinement round does), plus each
    extra size of ``sizes`` (``flip+<size>``) and, with several, all of them (``flip+<a>,<b>``).
    As in a round, an image on which the network finds nothing keeps its first-round label."""
    base = net.config.image_size
    variants = {"flip": (base,), **{f"flip+{s}": (base, s) for s in sizes}}
    if len(sizes) > 1:
        variants["flip+" + ",".join(map(str, sizes))] = (base, *sizes)
    scores: dict[str, list[float]] = {"first_round": [], **{name: [] for name in variants}}
    for sample_id in ids:
        image, truth = prepared.image(sample_id), prepared.mask(sample_id)
        label = first[sample_id]
        scores["first_round"].append(label_dice(label, truth))
        maps = {(s, m): probability_at(net, image, s, m) for s in {base, *sizes} for m in (False, True)}
        for name, used in variants.items():
            relabel = label_from_probabilities(np.mean([maps[s, m] for s in used for m in (False, True)], axis=0), min_area_fraction)
            # as in a round, the previous label stays where the network finds nothing
            relabel = keep_previous_where_invalid({sample_id: relabel}, {sample_id: label})[sample_id]
            scores[name].append(label_dice(relabel, truth))
    return {name: float(np.mean(v)) for name, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_relabel_arguments(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=[144, 160, 192], help="extra input sizes (pixels, square)")
    args = parser.parse_args()
    inputs = load_relabel_inputs(args)
    scores = relabel_scores(inputs.teacher, inputs.prepared, inputs.ids, inputs.first, args.sizes, args.min_area_fraction)
    report({"n_images": len(inputs.ids), **{name: round(value, 4) for name, value in scores.items()}}, args.json)


if __name__ == "__main__":
    main()
