"""benchmarks/fit_appearance.py: the leave-one-scanner-out fit sees only the other scanners."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import fit_appearance  # noqa: E402
from busseg.pseudo.appearance import APPEARANCE_FEATURES, PRIOR_TERMS, ImageAnalysis  # noqa: E402


def write_candidates(path: Path, groups: list[str], seed: int = 0) -> None:
    """An extract-format file: per image 6 candidates; the best one is the darkest (contrast)."""
    rng = np.random.default_rng(seed)
    names = list(ImageAnalysis.FEATURES)
    features, dice, counts = [], [], []
    for _ in groups:
        f = rng.normal(size=(6, len(names)))
        f[:, names.index("log_area")] = np.log(0.05)  # every candidate passes the area filter
        f[:, names.index("depth_rel")] = rng.uniform(0.2, 0.6, 6)
        f[:, names.index("offset_x_rel")] = rng.uniform(0.0, 0.3, 6)
        f[:, names.index("log_size_rel")] = rng.uniform(-4.0, -2.0, 6)
        d = np.clip(0.2 + 0.2 * f[:, names.index("contrast")], 0.0, 1.0)
        features.append(f), dice.append(d), counts.append(6)
    np.savez(
        path,
        ids=np.asarray([f"img{i}" for i in range(len(groups))]),
        groups=np.asarray(groups),
        counts=np.asarray(counts),
        features=np.concatenate(features).astype(np.float32),
        dice=np.concatenate(dice).astype(np.float32),
        hit=np.concatenate(dice) > 0.3,
        seconds=np.zeros(len(groups)),
        feature_names=np.asarray(names),
    )


def test_leave_one_scanner_out_fits_only_on_the_other_scanners(tmp_path: Path) -> None:
    groups = ["a"] * 12 + ["b"] * 10 + ["c"] * 9
    write_candidates(tmp_path / "x.npz", groups)
    data = fit_appearance.Candidates(tmp_path / "x.npz")
    seen: list[set[str]] = []

    def spy(train, l2, fraction, min_images):
        seen.append(set(train.groups.tolist()))
        return fit_appearance.fit_both(train, l2, fraction, min_images)

    results = fit_appearance.leave_one_group_out(data, 1e-3, 0.5, 4, fit_fn=spy)
    assert seen == [{"b", "c"}, {"a", "c"}, {"a", "b"}]
    assert set(results) == {"a", "b", "c"}
    assert results["a"]["final"]["n"] == 12 and results["c"]["final"]["n"] == 9


def test_the_fit_learns_what_makes_a_good_candidate(tmp_path: Path) -> None:
    write_candidates(tmp_path / "x.npz", ["a"] * 40)
    data = fit_appearance.Candidates(tmp_path / "x.npz")
    wa, wb = fit_appearance.fit_both(data, 1e-4, 0.5, 4)
    assert wa.shape == (len(APPEARANCE_FEATURES),) and wb.shape == (len(APPEARANCE_FEATURES) + len(PRIOR_TERMS),)
    assert wa[APPEARANCE_FEATURES.index("contrast")] > 0  # the feature that predicts Dice here
    first, final, priors = fit_appearance.score_with(data, wa, wb, 0.5, 4)
    oracle = data.dice.max(axis=1).mean()
    assert fit_appearance.report(data, final)["dice"] > 0.9 * oracle
    assert priors["a"].source == "confident_labels"
