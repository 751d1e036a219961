"""Split properties: groups never cross, stratification, n_labeled, determinism, duplicates."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from busseg.data.split import SplitConfig, choose_labeled, n_labeled_for, split_dataset
from busseg.errors import ConfigError, DataError


def make_index(n_groups: int = 60, seed: int = 0, with_duplicates: bool = False) -> pd.DataFrame:
    """Patients with 1-4 images each; 1/3 malignant; unique hashes unless duplicates asked."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        label = "malignant" if g % 3 == 0 else "benign"
        for k in range(int(rng.integers(1, 5))):
            rows.append({"id": f"p{g:03d}_{k}", "label": label, "group": f"p{g:03d}", "hash": f"h{g}_{k}"})
    frame = pd.DataFrame(rows)
    if with_duplicates:
        # Two images of different patients with identical pixels.
        frame.loc[frame["id"] == "p001_0", "hash"] = "dup"
        frame.loc[frame["id"] == "p002_0", "hash"] = "dup"
    return frame


def part_of(parts: dict[str, list[str]]) -> dict[str, str]:
    return {i: name for name, ids in parts.items() for i in ids}


def test_every_image_in_exactly_one_part() -> None:
    index = make_index()
    parts = split_dataset(index, SplitConfig(), seed=0)
    all_ids = [i for ids in parts.values() for i in ids]
    assert sorted(all_ids) == sorted(index["id"])
    assert len(all_ids) == len(set(all_ids))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_groups_never_cross_splits(seed: int) -> None:
    index = make_index(seed=seed)
    where = part_of(split_dataset(index, SplitConfig(), seed=seed))
    for _, rows in index.groupby("group"):
        assert len({where[i] for i in rows["id"]}) == 1


def test_fractions_and_stratification_are_close() -> None:
    index = make_index(n_groups=200)
    parts = split_dataset(index, SplitConfig(0.7, 0.1, 0.2), seed=3)
    n = len(index)
    assert abs(len(parts["train"]) / n - 0.7) < 0.05
    assert abs(len(parts["test"]) / n - 0.2) < 0.05
    labels = index.set_index("id")["label"]
    overall = (labels == "malignant").mean()
    for name in ("train", "test"):
        assert abs((labels[parts[name]] == "malignant").mean() - overall) < 0.06


def test_split_is_deterministic_and_seed_dependent() -> None:
    index = make_index()
    assert split_dataset(index, SplitConfig(), 5) == split_dataset(index, SplitConfig(), 5)
    assert split_dataset(index, SplitConfig(), 5) != split_dataset(index, SplitConfig(), 6)


def test_duplicates_land_in_the_same_split() -> None:
    index = make_index(with_duplicates=True)
    for seed in range(10):
        where = part_of(split_dataset(index, SplitConfig(), seed))
        # p001 and p002 are merged, so all their images share one part.
        assert len({where[i] for i in index[index["group"].isin(["p001", "p002"])]["id"]}) == 1


def test_source_column_is_stratified() -> None:
    index = make_index(n_groups=120)
    index["source"] = np.where(index["group"].str[-1].astype(int) % 2 == 0, "a", "b")
    parts = split_dataset(index, SplitConfig(), seed=0)
    source = index.set_index("id")["source"]
    assert abs((source[parts["test"]] == "a").mean() - (source == "a").mean()) < 0.08


@pytest.mark.parametrize(
    ("ratio", "n_train", "expected"),
    [(0.025, 480, 12), (0.1, 100, 10), (0.001, 50, 1), (1.0, 37, 37), (0.5, 3, 2)],
)
def test_n_labeled(ratio: float, n_train: int, expected: int) -> None:
    assert n_labeled_for(ratio, n_train) == expected


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.01])
def test_label_ratio_out_of_range_names_the_parameter(ratio: float) -> None:
    with pytest.raises(ConfigError, match="label_ratio"):
        n_labeled_for(ratio, 10)


def test_labeled_subset_is_stratified_and_inside_train() -> None:
    index = make_index(n_groups=150)
    train = split_dataset(index, SplitConfig(), seed=0)["train"]
    labeled = choose_labeled(index, train, 0.2, seed=0)
    assert set(labeled) <= set(train)
    assert len(labeled) == n_labeled_for(0.2, len(train))
    labels = index.set_index("id")["label"]
    expected = (labels[train] == "malignant").mean() * len(labeled)
    assert abs((labels[labeled] == "malignant").sum() - expected) <= 1
    assert labeled == choose_labeled(index, train, 0.2, seed=0)


def test_train_split_does_not_depend_on_label_ratio() -> None:
    # The split stage writes train.txt independently of label_ratio, which keeps
    # warmup cached in a label_ratio sweep.
    index = make_index()
    train = split_dataset(index, SplitConfig(), seed=0)["train"]
    small = choose_labeled(index, train, 0.05, seed=0)
    large = choose_labeled(index, train, 0.5, seed=0)
    assert len(small) < len(large)


def test_bad_fractions_and_empty_index() -> None:
    with pytest.raises(ConfigError, match="split"):
        split_dataset(make_index(), SplitConfig(0.5, 0.1, 0.1), seed=0)
    with pytest.raises(DataError, match="no images"):
        split_dataset(make_index().iloc[:0], SplitConfig(), seed=0)
    with pytest.raises(DataError, match="train split is empty"):
        choose_labeled(make_index(), [], 0.1, seed=0)


def strata_index(sizes: list[int]) -> pd.DataFrame:
    """One image per patient; stratum k (source s<k>, benign) holds ``sizes[k]`` images."""
    rows = [
        {"id": f"s{k}_{i:04d}", "label": "benign", "source": f"s{k}", "group": f"s{k}_{i:04d}", "hash": f"s{k}_{i}"}
        for k, size in enumerate(sizes)
        for i in range(size)
    ]
    return pd.DataFrame(rows)


RATIOS = (0.025, 0.05, 0.1, 1.0)


@pytest.mark.parametrize(
    "sizes",
    [[300], [210, 90], [120, 110, 70], [150, 61, 47, 23, 19], [7, 5, 3], [97, 89, 83, 79, 73, 71, 67]],
    ids=["1-stratum", "2-strata", "3-strata", "5-strata", "3-small", "7-strata"],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labeled_sets_are_nested_across_label_ratios(sizes: list[int], seed: int) -> None:
    index = strata_index(sizes)
    train = sorted(index["id"])
    stratum = index.set_index("id")["source"]
    previous: set[str] = set()
    for ratio in RATIOS:
        labeled = set(choose_labeled(index, train, ratio, seed=seed))
        assert len(labeled) == n_labeled_for(ratio, len(train))
        assert previous <= labeled, f"the {ratio} labeled set does not contain the smaller one"
        # Still stratified: each stratum within one image of its exact share.
        for k, size in enumerate(sizes):
            exact = len(labeled) * size / len(train)
            assert abs(sum(stratum[i] == f"s{k}" for i in labeled) - exact) < 1.0 + 1e-9
        previous = labeled


def test_nesting_holds_for_every_labeled_count() -> None:
    # Stronger than the four ratios: every n_labeled from 1 to n_train (the apportionment is house-monotone).
    index = strata_index([40, 33, 17, 9, 1])
    train = sorted(index["id"])
    previous: set[str] = set()
    for n in range(1, len(train) + 1):
        labeled = set(choose_labeled(index, train, n / len(train), seed=3))
        assert len(labeled) == n and previous <= labeled
        previous = labeled
