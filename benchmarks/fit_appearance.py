"""Fit the appearance backend's weights files, and measure how they transfer between scanners.

The weights files of ``busseg.pseudo.appearance`` (``models/appearance/*.json``, read by
:mod:`busseg.pseudo.appearance_weights`) come from here. Two steps::

    # 1. candidates and their features, with each candidate's Dice against the ground
    #    truth at the working resolution (the ground truth is used here only):
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fit_appearance.py extract \
        --root ../shared/data/BUS-BRA --kind busbra --out .busseg/fit/busbra.npz --workers 2
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fit_appearance.py extract \
        --root ../shared/data/STU --kind stu --out .busseg/fit/stu.npz

    # 2. the weights files, fitted on the TRAIN split only (issue 20), then scored:
    PYTHONPATH=src python benchmarks/fit_appearance.py fit --data .busseg/fit/busbra.npz \
        --root ../shared/data/BUS-BRA --eval .busseg/fit/stu.npz --out-dir models/appearance

``fit`` computes the train split exactly as the pipeline does for a ``busbra`` entry of
every scanner (the prepare and split stages' own code, with ``seed`` and ``split`` of
``--params``: the default pipeline's seed 0 and 70/10/20), so no validation or test image
of that split reaches a weights file, and writes to ``--out-dir``:

* ``default.json``: fitted on the train-split images of every scanner;
* ``loso_<scanner>.json`` for each scanner: fitted on the train-split images of the three
  other scanners only, for a held-out target (``benchmarks/heldout_*.yaml``).

Each file records what it saw (``fit``: images, scanners, split, and the SHA-256 of the
sorted fitted ids, one per line: for ``default.json`` that is ``sha256sum`` of the
pipeline's ``data/splits/<busbra>/train.txt`` at that seed). Another seed gives another
split, whose test images ``default.json`` has seen: it is test-free for seed 0's split only.
``busbra_all_in_sample.json`` keeps the constants fitted on all of BUS-BRA before issue 20.

It also prints leave-one-scanner-out figures (fit on the other scanners' train images,
score every image of the held-out scanner, its prior estimated from itself, exactly as
the labeler adapts to a new dataset) and, with ``--eval``, the default weights on a
dataset never fitted on (STU).

Each BUS-BRA image's group is its scanner (``Device`` in ``bus_data.csv``). The fit
maximises the expected Dice of a per-image softmax over the candidates that could
pass the area filter, with an L2 penalty, in two steps as the labeler runs:
the appearance weights alone (first pass), then, with every group's prior estimated
from that group's own most confident first-pass choices (no ground truth, exactly as
the labeler adapts to a new dataset), the final weights with the prior's terms.

Figures are at the working resolution (the chosen candidate before boundary
smoothing): a close, fast proxy of the labels' Dice. ``benchmarks/pseudo_quality.py
--by-scanner`` measures the real labels at full resolution.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

from busseg.config import from_dict
from busseg.data.importers.busbra import device_name
from busseg.data.index import read_index
from busseg.data.prepare import prepare_dataset
from busseg.data.prepared import INDEX_FILE
from busseg.data.split import SplitConfig, split_dataset
from busseg.pseudo.appearance import (
    APPEARANCE_FEATURES,
    PRIOR_TERMS,
    AppearanceLabeler,
    AppearanceOptions,
    DatasetPrior,
    ImageAnalysis,
)
from busseg.pseudo.appearance_weights import AppearanceWeights, write_appearance_weights
from pseudo_quality import busbra_pairs, load_pair, stu_pairs

FEATURES = ImageAnalysis.FEATURES
_LABELER: AppearanceLabeler | None = None


def _extract_one(item: tuple[str, str]) -> dict[str, np.ndarray]:
    """All candidates of one image: features, Dice and centroid hit against the truth."""
    global _LABELER
    if _LABELER is None:
        cv2.setNumThreads(1)
        _LABELER = AppearanceLabeler(AppearanceOptions())
    image, truth = load_pair(Path(item[0]), Path(item[1]))
    start = time.process_time()
    work, tissue = _LABELER.preprocess(image)
    candidates = _LABELER.candidates(work, tissue) if float(work.std()) >= 1e-3 else []
    seconds = time.process_time() - start
    small = cv2.resize(truth.astype(np.float32), work.shape[::-1], interpolation=cv2.INTER_AREA) >= 0.5
    rows, dices, hits = [], [], []
    for c in candidates:
        mask = c.full_mask(work.shape)
        total = int(mask.sum()) + int(small.sum())
        dices.append(2.0 * int((mask & small).sum()) / total if total else 0.0)
        ys, xs = np.nonzero(mask)
        hits.append(bool(small[int(round(ys.mean())), int(round(xs.mean()))]))
        rows.append([c.features[k] for k in FEATURES])
    return {
        "features": np.asarray(rows, dtype=np.float32).reshape(-1, len(FEATURES)),
        "dice": np.asarray(dices, dtype=np.float32),
        "hit": np.asarray(hits, dtype=bool),
        "seconds": np.float64(seconds),
    }


def busbra_devices(root: Path) -> dict[str, str]:
    """Image id -> scanner name (the ``Device`` column without the probe frequency)."""
    with open(root / "bus_data.csv", newline="") as handle:
        return {row["ID"]: device_name(row["Device"]) for row in csv.DictReader(handle)}


def scanner_slug(device: str) -> str:
    """A scanner's name as a file-name part: ``Toshiba Aplio 300`` -> ``toshiba_aplio_300``."""
    return re.sub(r"[^a-z0-9]+", "_", device.lower()).strip("_")


def pipeline_split(root: Path, params_file: Path) -> dict[str, list[str]]:
    """Train / val / test ids of BUS-BRA as the pipeline splits it (every scanner, one entry).

    Runs the prepare stage's and the split stage's own code (:func:`prepare_dataset` into a
    temporary folder, :func:`split_dataset`) with ``seed`` and ``split`` of ``params_file``,
    so that the ids are those of ``data/splits/<busbra entry>/*.txt``.
    """
    params = yaml.safe_load(params_file.read_text()) or {}
    config = from_dict(SplitConfig, params.get("split"), "split")
    with tempfile.TemporaryDirectory(prefix="busseg-fit-") as tmp:
        prepare_dataset("busbra", {"kind": "busbra", "root": str(root.resolve())}, Path(tmp) / "busbra", progress=False)
        index = read_index(Path(tmp) / "busbra" / INDEX_FILE)
    return split_dataset(index, config, int(params.get("seed", 0)))


def ids_sha256(ids: Iterable[str]) -> str:
    """SHA-256 of the sorted ids, one per line (the bytes of the pipeline's split files)."""
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(ids)).encode()).hexdigest()


def extract(args: argparse.Namespace) -> None:
    pairs = busbra_pairs(args.root) if args.kind == "busbra" else stu_pairs(args.root)
    pairs = pairs[:: args.step]
    groups = busbra_devices(args.root) if args.kind == "busbra" else {}
    ids = [p.stem for p, _ in pairs]
    with Pool(args.workers) as pool:
        results = pool.map(_extract_one, [(str(a), str(b)) for a, b in pairs], chunksize=8)
    counts = np.asarray([len(r["dice"]) for r in results])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        ids=np.asarray(ids),
        groups=np.asarray([groups.get(i, args.kind) for i in ids]),
        counts=counts,
        features=np.concatenate([r["features"] for r in results]),
        dice=np.concatenate([r["dice"] for r in results]),
        hit=np.concatenate([r["hit"] for r in results]),
        seconds=np.asarray([r["seconds"] for r in results]),
        feature_names=np.asarray(FEATURES),
    )
    seconds = np.asarray([r["seconds"] for r in results])
    print(f"{len(ids)} images, {counts.sum()} candidates, median {np.median(seconds):.3f} s/image (CPU) -> {args.out}")


class Candidates:
    """One extracted dataset as padded tensors: images x candidates x features."""

    def __init__(self, path: Path, min_area_fraction: float = 0.01) -> None:
        with np.load(path) as stored:  # read each array once: NpzFile decompresses on every access
            data = {key: stored[key] for key in stored.files}
        self.ids, self.groups = data["ids"], data["groups"]
        counts = data["counts"]
        names = list(data["feature_names"])
        if missing := set(FEATURES) - set(names):
            raise SystemExit(f"{path}: extracted without {sorted(missing)}; run extract again")
        n, width = len(counts), max(1, int(counts.max()))
        self.features = np.zeros((n, width, len(names)), np.float64)
        self.dice = np.zeros((n, width))
        self.hit = np.zeros((n, width), bool)
        self.usable = np.zeros((n, width), bool)
        start = 0
        for i, count in enumerate(counts):
            rows = slice(start, start + count)
            self.features[i, :count] = data["features"][rows]
            self.dice[i, :count] = data["dice"][rows]
            self.hit[i, :count] = data["hit"][rows]
            # Only a candidate that passes the area filter can become a label (AppearanceLabeler.analyse).
            self.usable[i, :count] = np.exp(data["features"][rows, names.index("log_area")]) > 1.1 * min_area_fraction
            start += count
        self.names = names

    def column(self, name: str) -> np.ndarray:
        if name == "log_size_rel_sq":  # derived, as in ImageAnalysis.from_arrays
            return self.column("log_size_rel") ** 2
        return self.features[..., self.names.index(name)]

    def subset(self, keep: np.ndarray) -> Candidates:
        out = object.__new__(Candidates)
        for key in ("ids", "groups", "features", "dice", "hit", "usable"):
            setattr(out, key, getattr(self, key)[keep])
        out.names = self.names
        return out


def appearance_matrix(c: Candidates) -> np.ndarray:
    return np.stack([c.column(k) for k in APPEARANCE_FEATURES], axis=-1)


def prior_matrix(c: Candidates, first_pass: np.ndarray, fraction: float, min_images: int) -> tuple[np.ndarray, dict[str, DatasetPrior]]:
    """The prior's terms of every candidate, each group's prior estimated from its own
    most confident first-pass choices (AppearanceLabeler.fit_prior, on arrays)."""
    terms = np.zeros(c.dice.shape + (len(PRIOR_TERMS),))
    priors = {}
    best = np.where(c.usable, first_pass, -np.inf).argmax(axis=1)
    best_score = first_pass[np.arange(len(best)), best]
    has = c.usable.any(axis=1)
    for group in np.unique(c.groups):
        rows = np.nonzero((c.groups == group) & has)[0]
        order = rows[np.argsort(-best_score[rows], kind="stable")]
        kept = order[: max(min_images, int(np.ceil(fraction * len(rows))))]
        pick = best[kept]
        prior = DatasetPrior.estimate(
            c.column("depth_rel")[kept, pick], c.column("offset_x_rel")[kept, pick], c.column("log_size_rel")[kept, pick], "confident_labels"
        )
        priors[str(group)] = prior
        members = c.groups == group
        for k, (name, mean, spread) in enumerate(
            (
                ("depth_rel", prior.depth, prior.depth_spread),
                ("offset_x_rel", prior.offset_x, prior.offset_x_spread),
                ("log_size_rel", prior.log_size, prior.log_size_spread),
            )
        ):
            # DatasetPrior.terms on arrays (same order as PRIOR_TERMS).
            terms[members, :, k] = -np.minimum(((c.column(name)[members] - mean) / spread) ** 2, DatasetPrior._CAP)
    return terms, priors


def fit_weights(x: np.ndarray, c: Candidates, l2: float, steps: int = 300) -> np.ndarray:
    """Weights maximising the mean over images of sum(softmax(x @ w) * dice) - l2 |w|^2."""
    torch.manual_seed(0)
    xt = torch.tensor(x, dtype=torch.float64)
    dice = torch.tensor(c.dice)
    usable = torch.tensor(c.usable)
    has = usable.any(dim=1)
    xt, dice, usable = xt[has], dice[has], usable[has]
    w = torch.zeros(x.shape[-1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        z = (xt @ w).masked_fill(~usable, -1e9)
        loss = -(torch.softmax(z, dim=1) * dice).sum(dim=1).mean() + l2 * (w**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return w.detach().numpy()


def choose(scores: np.ndarray, c: Candidates) -> np.ndarray:
    return np.where(c.usable, scores, -np.inf).argmax(axis=1)


def report(c: Candidates, scores: np.ndarray) -> dict[str, float]:
    """Dice (no usable candidate = 0), top-50 % Dice by score, coverage, hit rate."""
    pick = choose(scores, c)
    rows = np.arange(len(pick))
    has = c.usable.any(axis=1)
    d = np.where(has, c.dice[rows, pick], 0.0)
    conf = np.where(has, scores[rows, pick], -np.inf)
    top = np.argsort(-conf, kind="stable")[: max(1, len(d) // 2)]
    return {
        "n": int(len(d)),
        "dice": float(d.mean()),
        "dice_top50": float(d[top].mean()),
        "coverage": float(has.mean()),
        "hit_rate": float(np.where(has, c.hit[rows, pick], False).mean()),
    }


def fit_both(train: Candidates, l2: float, fraction: float, min_images: int) -> tuple[np.ndarray, np.ndarray]:
    """First-pass (appearance) weights, then final weights with the prior's terms."""
    xa = appearance_matrix(train)
    wa = fit_weights(xa, train, l2)
    terms, _ = prior_matrix(train, xa @ wa, fraction, min_images)
    wb = fit_weights(np.concatenate([xa, terms], axis=-1), train, l2)
    return wa, wb


def score_with(c: Candidates, wa: np.ndarray, wb: np.ndarray, fraction: float, min_images: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """First-pass and final scores on ``c``, its groups' priors estimated from ``c`` itself."""
    xa = appearance_matrix(c)
    first = xa @ wa
    terms, priors = prior_matrix(c, first, fraction, min_images)
    return first, np.concatenate([xa, terms], axis=-1) @ wb, priors


def leave_one_group_out(
    data: Candidates, l2: float, fraction: float, min_images: int, fit_fn: Callable[..., tuple[np.ndarray, np.ndarray]] = None
) -> dict[str, dict[str, dict[str, float]]]:
    """For each group (scanner): fit on every other group, score on it (its prior from itself).

    ``fit_fn`` (default :func:`fit_both`) receives only the other groups' candidates.
    """
    fit_fn = fit_fn or fit_both
    results = {}
    for group in np.unique(data.groups):
        held = data.groups == group
        wa, wb = fit_fn(data.subset(~held), l2, fraction, min_images)
        test = data.subset(held)
        first, final, _ = score_with(test, wa, wb, fraction, min_images)
        results[str(group)] = {"appearance_only": report(test, first), "final": report(test, final)}
    return results


def fitted_constants(
    data: Candidates, wa: np.ndarray, wb: np.ndarray, fraction: float, min_images: int
) -> tuple[DatasetPrior, float, float]:
    """The default prior and the confidence map of weights fitted on ``data``.

    The prior: estimated from all of ``data`` as one dataset (its most confident first-pass
    choices). The confidence: the median and the inter-quartile range / 2 of the chosen
    final scores, which map to confidences of 0.5 and about 0.27 to 0.73.
    """
    first, final, _ = score_with(data, wa, wb, fraction, min_images)
    pooled = data.subset(np.ones(len(data.ids), bool))
    pooled.groups = np.full(len(data.ids), "all")
    _, priors = prior_matrix(pooled, first, fraction, min_images)
    pick = choose(final, data)
    chosen = final[np.arange(len(pick)), pick][data.usable.any(axis=1)]
    centre = float(np.median(chosen))
    scale = float(np.subtract(*np.percentile(chosen, [75, 25]))) / 2.0
    return priors["all"], centre, scale


def weights_file(
    data: Candidates, l2: float, fraction: float, min_images: int, fitted_on: str, fit_info: dict[str, Any],
    fit_fn: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
) -> AppearanceWeights:
    """Weights fitted on every image of ``data`` (already restricted to what may be seen)."""
    wa, wb = (fit_fn or fit_both)(data, l2, fraction, min_images)
    prior, centre, scale = fitted_constants(data, wa, wb, fraction, min_images)
    devices = sorted({str(g) for g in data.groups})
    return AppearanceWeights(
        appearance={k: round(float(v), 4) for k, v in zip(APPEARANCE_FEATURES, wa)},
        appearance_bias=0.0,  # a constant shift changes no choice; the confidence centre absorbs it
        score={k: round(float(v), 4) for k, v in zip((*APPEARANCE_FEATURES, *PRIOR_TERMS), wb)},
        score_bias=0.0,
        default_prior={k: v for k, v in prior.as_dict().items() if k not in ("source", "n_images")},
        confidence_centre=round(centre, 4),
        confidence_scale=round(scale, 4),
        fitted_on=fitted_on,
        fit={**fit_info, "images": int(len(data.ids)), "devices": devices, "ids_sha256": ids_sha256(map(str, data.ids)),
             "l2": l2},
    )


def fit_weights_files(
    data: Candidates, train_ids: Iterable[str], l2: float, fraction: float, min_images: int, split_info: dict[str, Any],
    fit_fn: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, AppearanceWeights]:
    """``default`` (every scanner's train images) and ``loso_<scanner>`` (the other scanners'
    train images) weights; no image outside ``train_ids`` is ever passed to ``fit_fn``."""
    train = data.subset(np.isin(data.ids, np.asarray(sorted(set(train_ids)))))
    split = f"seed-{split_info['seed']} train split ({split_info['train']:g}/{split_info['val']:g}/{split_info['test']:g})"
    files = {
        "default": weights_file(
            train, l2, fraction, min_images, f"BUS-BRA {split}, every scanner: {len(train.ids)} images, no val or test image",
            {"split": split_info}, fit_fn,
        )
    }
    for device in sorted({str(g) for g in train.groups}):
        others = train.subset(train.groups != device)
        files[f"loso_{scanner_slug(device)}"] = weights_file(
            others, l2, fraction, min_images,
            f"BUS-BRA {split} without {device} (held out): {len(others.ids)} images of the other scanners",
            {"split": split_info, "held_out": device}, fit_fn,
        )
    return files


def fit(args: argparse.Namespace) -> None:
    o = AppearanceOptions()
    data = Candidates(args.data, o.min_area_fraction)
    params = yaml.safe_load(args.params.read_text()) or {}
    split_config = from_dict(SplitConfig, params.get("split"), "split")
    seed = int(params.get("seed", 0))
    start = time.perf_counter()
    if args.train_ids is not None:
        train_ids = [line.strip() for line in args.train_ids.read_text().splitlines() if line.strip()]
        test_ids: list[str] = []
    else:
        parts = pipeline_split(args.root, args.params)
        train_ids, test_ids = parts["train"], parts["test"]
        print(f"pipeline split of {args.root} (seed {seed}): train {len(train_ids)}, val {len(parts['val'])}, "
              f"test {len(test_ids)} ({time.perf_counter() - start:.0f} s)")
    if missing := sorted(set(train_ids) - set(map(str, data.ids))):
        raise SystemExit(f"{args.data}: {len(missing)} train ids not extracted (e.g. {missing[0]}); run extract on all images")
    split_info = {"seed": seed, "train": split_config.train, "val": split_config.val, "test": split_config.test}
    files = fit_weights_files(data, train_ids, args.l2, o.prior_fraction, o.prior_min_images, split_info)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, weights in files.items():
        write_appearance_weights(args.out_dir / f"{name}.json", weights)
        print(f"{args.out_dir / name}.json: {weights.fitted_on}")

    print("\nleave-one-scanner-out (fitted on the other scanners' train images, scored on every image of the held-out one)")
    print(f"{'held-out scanner':<24} {'n':>5} {'appearance':>10} {'final':>7} {'top-50%':>8} {'coverage':>8} {'hit':>6}")
    train_set = set(train_ids)
    results = {}
    for device in sorted({str(g) for g in data.groups}):
        weights = files.get(f"loso_{scanner_slug(device)}")
        if weights is None:
            continue
        held = data.subset(data.groups == device)
        wa, wb = (np.asarray(list(weights.appearance.values())), np.asarray(list(weights.score.values())))
        first, final, _ = score_with(held, wa, wb, o.prior_fraction, o.prior_min_images)
        r_first, r_final = report(held, first), report(held, final)
        results[device] = {"appearance_only": r_first, "final": r_final}
        print(f"{device:<24} {r_final['n']:>5} {r_first['dice']:>10.4f} {r_final['dice']:>7.4f} {r_final['dice_top50']:>8.4f} "
              f"{r_final['coverage']:>8.3f} {r_final['hit_rate']:>6.3f}")
    dices = [r["final"]["dice"] for r in results.values()]
    print(f"mean over scanners: {np.mean(dices):.4f}, min {np.min(dices):.4f}")
    default = files["default"]
    wa, wb = np.asarray(list(default.appearance.values())), np.asarray(list(default.score.values()))
    _, final, _ = score_with(data, wa, wb, o.prior_fraction, o.prior_min_images)
    everything = report(data, final)
    print(f"default.json on all of BUS-BRA: dice {everything['dice']:.4f} (coverage {everything['coverage']:.3f})")
    if test_ids:
        test = data.subset(np.isin(data.ids, np.asarray(test_ids)))
        _, final_test, _ = score_with(test, wa, wb, o.prior_fraction, o.prior_min_images)
        print(f"default.json on the seed-{seed} test split (never fitted on): dice {report(test, final_test)['dice']:.4f} (n {len(test.ids)})")
        assert not train_set & set(test_ids)
    if args.eval is not None:
        other = Candidates(args.eval, o.min_area_fraction)
        first_o, final_o, _ = score_with(other, wa, wb, o.prior_fraction, o.prior_min_images)
        print(f"{args.eval} (never fitted on): appearance only {report(other, first_o)['dice']:.4f}, final {report(other, final_o)}")
    if args.out is not None:
        args.out.write_text(json.dumps({"loso": results}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("extract", help="candidates, features and their Dice for one dataset")
    e.add_argument("--root", type=Path, required=True)
    e.add_argument("--kind", choices=("busbra", "stu"), required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--workers", type=int, default=1)
    e.add_argument("--step", type=int, default=1, help="use every K-th image")
    f = sub.add_parser("fit", help="the weights files (train split only), then leave-one-scanner-out figures")
    f.add_argument("--data", type=Path, required=True, help="extract's output for BUS-BRA")
    f.add_argument("--root", type=Path, default=Path("../shared/data/BUS-BRA"), help="BUS-BRA, to split it as the pipeline does")
    f.add_argument("--params", type=Path, default=Path("params.yaml"), help="seed and split of the pipeline")
    f.add_argument("--train-ids", type=Path, default=None,
                   help="the pipeline's data/splits/<busbra>/train.txt instead of splitting --root here")
    f.add_argument("--out-dir", type=Path, default=Path("models/appearance"), help="where the weights files go")
    f.add_argument("--eval", type=Path, default=None, help="a dataset never fitted on (e.g. STU)")
    f.add_argument("--l2", type=float, default=1e-5)
    f.add_argument("--out", type=Path, default=None, help="leave-one-scanner-out figures as JSON")
    args = parser.parse_args()
    extract(args) if args.command == "extract" else fit(args)


if __name__ == "__main__":
    main()
