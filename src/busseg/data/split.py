"""Train / validation / test splits grouped by patient and stratified by class.

docs/method.md DECISION: 70 / 10 / 20 by default, patient-grouped where ids exist, stratified
by benign / malignant (and by ``source`` for composite datasets), seeded; the labeled
subset is drawn from train with ``n_labeled = max(1, round(label_ratio * n_train))``,
also stratified. Images with identical pixels (same content hash) are put in one group,
so an exact duplicate can never sit on both sides of a split.

Two cases, decided by the prepared index (:func:`plan_split`):

* every image has a mask (the public datasets): ``label_ratio`` *simulates* semi-supervision
  by hiding the masks of the train images it does not draw (the paper's tables);
* some images have no mask (a user's own scans, a few outlined): validation and test come
  from the masked images only, every other masked image is labeled, every unmasked image is
  unlabeled, and ``label_ratio`` hides nothing. An unmasked image of a patient whose masked
  images went to validation or test is left out of training (it would leak that patient).

``split.val`` and ``split.test`` are fractions (< 1) or counts of images (whole numbers >= 1,
for datasets with few masks); with counts, train takes the rest.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from busseg.atomic import write_text
from busseg.config import check_range
from busseg.errors import ConfigError, DataError

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of the three parts (they must sum to 1); ``val`` and ``test`` may instead be
    counts of images (whole numbers >= 1), and train then takes the rest."""

    train: float = 0.7
    val: float = 0.1
    test: float = 0.2

    @property
    def uses_counts(self) -> bool:
        """Whether ``val`` or ``test`` is a count of images rather than a fraction."""
        return self.val >= 1 or self.test >= 1

    def check(self) -> None:
        if self.uses_counts:
            for name in ("val", "test"):
                value = getattr(self, name)
                if value >= 1 and value != int(value):
                    raise ConfigError(f"split.{name}", f"a count of images must be a whole number, got {value:g}")
                check_range(f"split.{name}", value, 0.0, float("inf"))
            if self.test <= 0:
                raise ConfigError("split", "the test part must be > 0")
            return
        for name in SPLIT_NAMES:
            check_range(f"split.{name}", getattr(self, name), 0.0, 1.0)
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ConfigError("split", f"train + val + test must be 1, got {self.train + self.val + self.test:g}")
        if self.train <= 0 or self.test <= 0:
            raise ConfigError("split", "train and test fractions must be > 0")

    def as_fractions(self, n_images: int) -> "SplitConfig":
        """The same split as fractions of ``n_images`` (itself when it already is).

        Raises :class:`DataError` when the counts leave no image for training.
        """
        self.check()
        if not self.uses_counts:
            return self
        val = self.val if self.val < 1 else self.val / n_images
        test = self.test if self.test < 1 else self.test / n_images
        if val + test >= 1:
            raise DataError(
                "index.csv",
                f"split.val {self.val:g} and split.test {self.test:g} leave no training image "
                f"of the {n_images} images that can be validation or test images",
            )
        return SplitConfig(train=1.0 - val - test, val=val, test=test)


def _stratum_of(frame: pd.DataFrame) -> pd.Series:
    """The stratification key of every row: class, and source where the index has one."""
    key = frame["label"].astype(str)
    if "source" in frame.columns:
        key = frame["source"].astype(str) + "/" + key
    return key


def merge_duplicate_groups(index: pd.DataFrame) -> pd.Series:
    """Groups after joining every set of rows that share a content hash (union-find)."""
    parent: dict[str, str] = {g: g for g in index["group"].astype(str)}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    if "hash" in index.columns:
        for _, rows in index.groupby("hash", sort=True):
            groups = sorted(rows["group"].astype(str).unique())
            for other in groups[1:]:
                parent[find(other)] = find(groups[0])
    return index["group"].astype(str).map(find)


def split_dataset(index: pd.DataFrame, config: SplitConfig, seed: int) -> dict[str, list[str]]:
    """Assign every image id of ``index`` to train, val or test.

    Whole groups are assigned; within each stratum (the majority class of the group)
    groups are shuffled with ``seed`` and filled greedily so that each part gets
    close to its fraction of the stratum's images.
    """
    if index.empty:
        raise DataError("index.csv", "the dataset has no images to split")
    config = config.as_fractions(len(index))
    frame = index.copy()
    frame["_group"] = merge_duplicate_groups(frame)
    frame["_stratum"] = _stratum_of(frame)
    # A group's stratum is its most frequent one (ties broken by name, for determinism).
    group_stratum = (
        frame.groupby("_group")["_stratum"].agg(lambda s: sorted(s.value_counts().items(), key=lambda kv: (-kv[1], kv[0]))[0][0])
    )
    group_size = frame.groupby("_group").size()
    rng = np.random.default_rng(seed)
    fractions = {"train": config.train, "val": config.val, "test": config.test}
    assignment: dict[str, str] = {}
    for stratum in sorted(group_stratum.unique()):
        groups = sorted(group_stratum.index[group_stratum == stratum])
        groups = [groups[i] for i in rng.permutation(len(groups))]
        total = int(group_size[groups].sum())
        filled = {name: 0 for name in SPLIT_NAMES}
        for group in groups:
            # Give the group to the part that is furthest below its target share.
            deficits = {name: fractions[name] * total - filled[name] for name in SPLIT_NAMES if fractions[name] > 0}
            part = max(deficits, key=lambda n: (deficits[n], -SPLIT_NAMES.index(n)))
            assignment[group] = part
            filled[part] += int(group_size[group])
    frame["_part"] = frame["_group"].map(assignment)
    return {name: sorted(frame.loc[frame["_part"] == name, "id"].astype(str)) for name in SPLIT_NAMES}


def n_labeled_for(label_ratio: float, n_train: int) -> int:
    """``max(1, round(label_ratio * n_train))`` (docs/method.md)."""
    check_range("label_ratio", label_ratio, 0.0, 1.0, low_open=True)
    return max(1, int(round(label_ratio * n_train)))


def stratum_quotas(sizes: dict[str, int], n_labeled: int) -> dict[str, int]:
    """How many of ``n_labeled`` images each stratum gives, by sequential apportionment.

    The k-th pick goes to the stratum furthest below its exact share ``k * size / total``
    (ties by name). Every stratum stays within one image of its exact share, and the
    quotas never decrease as ``n_labeled`` grows (house monotonicity), which largest
    remainder does not guarantee with three or more strata (the Alabama paradox): that is
    what keeps the labeled sets of increasing label ratios nested.
    """
    total = sum(sizes.values())
    names = sorted(sizes)
    quota = {s: 0 for s in names}
    for k in range(1, n_labeled + 1):
        best = max(names, key=lambda s: (k * sizes[s] / total - quota[s], -names.index(s)))
        quota[best] += 1
    return quota


def choose_labeled(index: pd.DataFrame, train_ids: list[str], label_ratio: float, seed: int) -> list[str]:
    """Draw the labeled subset of ``train_ids``, stratified by class (and source).

    Nested across label ratios at one seed: each stratum's members are taken in one seeded
    order that does not depend on ``label_ratio``, and the per-stratum counts never shrink
    as the ratio grows (:func:`stratum_quotas`), so the 2.5 % set is inside the 5 % set,
    and so on, whatever the number of strata.
    """
    if not train_ids:
        raise DataError("train.txt", "the train split is empty; the dataset is too small for the split fractions")
    n_labeled = n_labeled_for(label_ratio, len(train_ids))
    frame = index.set_index(index["id"].astype(str)).loc[sorted(train_ids)]
    strata: dict[str, list[str]] = defaultdict(list)
    for image_id, stratum in zip(frame.index, _stratum_of(frame)):
        strata[stratum].append(image_id)
    names = sorted(strata)
    quota = stratum_quotas({s: len(strata[s]) for s in names}, n_labeled)
    rng = np.random.default_rng(seed + 1)
    chosen: list[str] = []
    for s in names:
        members = strata[s]
        # One permutation per stratum, drawn whatever the quota: a prefix of it is taken.
        picks = rng.permutation(len(members))[: quota[s]]
        chosen.extend(members[i] for i in picks)
    return sorted(chosen)


def read_id_list(path: str | Path) -> list[str]:
    """Read a split file: one image id per line, blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "split file not found; run the split stage first")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def write_id_list(path: str | Path, ids: Sequence[str]) -> None:
    """Write one id per line (sorted input gives byte-identical files for the same split)."""
    write_text(path, "".join(f"{i}\n" for i in ids))


SIMULATED, REAL = "simulated", "real"
"""The two kinds of split :func:`plan_split` makes: masks hidden by ``label_ratio`` (every
image has a mask), or the dataset's own unmasked images as the unlabeled ones."""


@dataclass(frozen=True)
class SplitPlan:
    """Every id's part: ``train`` = ``labeled`` + ``unlabeled``; ``val`` and ``test`` (masked
    images only). ``mode`` is :data:`SIMULATED` or :data:`REAL`; ``held_out`` are unmasked
    images left out of training because their patient is in validation or test."""

    mode: str
    train: list[str]
    val: list[str]
    test: list[str]
    labeled: list[str]
    unlabeled: list[str]
    held_out: list[str]

    def files(self) -> dict[str, list[str]]:
        """The split files' contents, ``name -> ids`` (train, val, test, labeled, unlabeled)."""
        return {"train": self.train, "val": self.val, "test": self.test,
                "labeled": self.labeled, "unlabeled": self.unlabeled}

    def summary(self, n_images: int, label_ratio: float) -> dict[str, object]:
        """The split stage's metrics: which case this is and how many images each part has."""
        return {
            "mode": self.mode,
            "label_ratio": label_ratio if self.mode == SIMULATED else None,
            "n_images": n_images,
            "n_masked": n_images - len(self.unlabeled) - len(self.held_out) if self.mode == REAL else n_images,
            "n_unmasked": len(self.unlabeled) + len(self.held_out) if self.mode == REAL else 0,
            **{f"n_{name}": len(ids) for name, ids in self.files().items()},
            "n_held_out_unmasked": len(self.held_out),
        }


def plan_split(index: pd.DataFrame, config: SplitConfig, label_ratio: float, seed: int) -> SplitPlan:
    """The split of a prepared dataset (see the module docstring for the two cases).

    A dataset whose every image has a mask gets exactly :func:`split_dataset` and
    :func:`choose_labeled`. One with unmasked images gets validation and test from its
    masked images and refuses, naming the numbers, when they cannot give at least one
    labeled, one validation and one test image.
    """
    from busseg.data.index import has_mask

    if index.empty:
        raise DataError("index.csv", "the dataset has no images to split")
    masked = has_mask(index)
    if masked.all():
        parts = split_dataset(index, config, seed)
        labeled = choose_labeled(index, parts["train"], label_ratio, seed)
        unlabeled = sorted(set(parts["train"]) - set(labeled))
        return SplitPlan(SIMULATED, parts["train"], parts["val"], parts["test"], labeled, unlabeled, [])
    n_masked = int(masked.sum())
    if n_masked == 0:
        raise DataError(
            "index.csv",
            f"none of the {len(index)} images has a mask: there is nothing to validate or test on; "
            "outline at least three scans (one labeled, one validation, one test image) and put "
            "their masks in the dataset's masks folder",
        )
    frame = index.reset_index(drop=True)
    frame["_group"] = merge_duplicate_groups(frame)
    parts = split_dataset(frame[masked.to_numpy()].drop(columns="_group"), config, seed)
    held_groups = set(frame.loc[frame["id"].astype(str).isin(parts["val"] + parts["test"]), "_group"])
    unmasked = frame[~masked.to_numpy()]
    held_out = sorted(unmasked.loc[unmasked["_group"].isin(held_groups), "id"].astype(str))
    unlabeled = sorted(unmasked.loc[~unmasked["_group"].isin(held_groups), "id"].astype(str))
    labeled = parts["train"]
    if not (labeled and parts["val"] and parts["test"]):
        raise DataError(
            "index.csv",
            f"{n_masked} of {len(index)} images have a mask, which gave {len(labeled)} labeled, "
            f"{len(parts['val'])} validation and {len(parts['test'])} test images with split.val "
            f"{config.val:g} and split.test {config.test:g}; each needs at least one: outline more "
            "scans, or give split.val and split.test as counts (e.g. 1 and 1)",
        )
    return SplitPlan(REAL, sorted(labeled + unlabeled), parts["val"], parts["test"], labeled, unlabeled, held_out)
