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


def test_weights_files_see_only_train_ids_and_loso_files_never_their_scanner(tmp_path: Path) -> None:
    """Issue 20: no test (or validation) id reaches any weights file; ``loso_<scanner>`` sees
    none of that scanner's images; each file records what it saw."""
    groups = ["GE Logiq 7"] * 14 + ["Toshiba Aplio 300"] * 12 + ["U-Systems"] * 10
    write_candidates(tmp_path / "x.npz", groups)
    data = fit_appearance.Candidates(tmp_path / "x.npz")
    ids = [str(i) for i in data.ids]
    test_ids = set(ids[::3])
    train_ids = [i for i in ids if i not in test_ids and not i.endswith("4")]  # some validation ids too
    seen: dict[str, set[str]] = {}

    def spy(train, l2, fraction, min_images):
        key = "default" if len(set(train.groups.tolist())) == 3 else "loso:" + ",".join(sorted(set(train.groups.tolist())))
        seen[key] = set(train.ids.tolist())
        return fit_appearance.fit_both(train, l2, fraction, min_images)

    split = {"seed": 0, "train": 0.7, "val": 0.1, "test": 0.2}
    files = fit_appearance.fit_weights_files(data, train_ids, 1e-3, 0.5, 4, split, fit_fn=spy)
    assert sorted(files) == ["default", "loso_ge_logiq_7", "loso_toshiba_aplio_300", "loso_u_systems"]
    assert len(seen) == 4
    for fitted in seen.values():
        assert fitted <= set(train_ids) and not fitted & test_ids
    assert seen["default"] == set(train_ids)
    group_of = dict(zip(ids, groups))
    for device in ("GE Logiq 7", "Toshiba Aplio 300", "U-Systems"):
        weights = files[f"loso_{fit_appearance.scanner_slug(device)}"]
        assert weights.fit["held_out"] == device and device not in weights.fit["devices"]
        fitted = {i for i in train_ids if group_of[i] != device}
        assert weights.fit["ids_sha256"] == fit_appearance.ids_sha256(fitted)
        assert weights.fit["images"] == len(fitted)
    assert files["default"].fit["ids_sha256"] == fit_appearance.ids_sha256(train_ids)
    assert files["default"].fit["split"] == split


def test_weights_files_load_back_and_label(tmp_path: Path) -> None:
    from busseg.pseudo.appearance import AppearanceLabeler, AppearanceOptions
    from busseg.pseudo.appearance_weights import load_appearance_weights, write_appearance_weights

    write_candidates(tmp_path / "x.npz", ["a"] * 20 + ["b"] * 20)
    data = fit_appearance.Candidates(tmp_path / "x.npz")
    files = fit_appearance.fit_weights_files(data, [str(i) for i in data.ids], 1e-3, 0.5, 4, {"seed": 0, "train": 0.7, "val": 0.1, "test": 0.2})
    write_appearance_weights(tmp_path / "default.json", files["default"])
    weights = load_appearance_weights(tmp_path / "default.json")
    assert weights.confidence_scale > 0 and weights.fit["images"] == 40
    image = np.full((64, 64), 150, np.uint8)
    image[20:40, 20:44] = 40
    label = AppearanceLabeler(AppearanceOptions(weights=str(tmp_path / "default.json"))).label(image)
    assert label.mask.shape == image.shape


def test_ids_sha256_is_the_digest_of_a_split_file(tmp_path: Path) -> None:
    import hashlib

    from busseg.data.split import write_id_list

    write_id_list(tmp_path / "train.txt", ["bus_0002-s", "bus_0001-l"][::-1])
    assert fit_appearance.ids_sha256(["bus_0002-s", "bus_0001-l"]) == hashlib.sha256((tmp_path / "train.txt").read_bytes()).hexdigest()


@pytest.mark.parametrize(("device", "slug"), [("GE Logiq 7", "ge_logiq_7"), ("Toshiba Aplio 300", "toshiba_aplio_300"), ("U-Systems", "u_systems")])
def test_scanner_slugs(device: str, slug: str) -> None:
    assert fit_appearance.scanner_slug(device) == slug


BUSBRA = REPO.parent / "shared" / "data" / "BUS-BRA"


@pytest.mark.slow
@pytest.mark.skipif(not (BUSBRA / "images").is_dir(), reason="BUS-BRA not present at ../shared/data")
def test_the_committed_weights_files_saw_only_the_pipelines_train_split() -> None:
    """Issue 20, on the real files: each committed weights file was fitted on exactly the
    seed-0 train images of its scanners, as the pipeline splits BUS-BRA (prepares all 1875
    images into a temporary folder: about a minute)."""
    import json

    from busseg.data.importers.busbra import DEVICES

    parts = fit_appearance.pipeline_split(BUSBRA, REPO / "params.yaml")
    device = fit_appearance.busbra_devices(BUSBRA)
    train = parts["train"]
    assert not set(train) & set(parts["test"])
    for path in sorted((REPO / "models" / "appearance").glob("*.json")):
        fit = json.loads(path.read_text())["fit"]
        if path.name == "busbra_all_in_sample.json":
            assert fit["images"] == 1875  # the reference: in-sample on purpose
            continue
        assert fit["split"] == {"seed": 0, "train": 0.7, "val": 0.1, "test": 0.2}
        seen = [i for i in train if device[i] in fit["devices"]]
        assert fit["ids_sha256"] == fit_appearance.ids_sha256(seen), path.name
        assert fit["images"] == len(seen)
        expected = sorted(DEVICES) if path.name == "default.json" else sorted(set(DEVICES) - {fit["held_out"]})
        assert fit["devices"] == expected, path.name
