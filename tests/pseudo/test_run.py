"""Labeling a dataset: outputs, the resumable scratch cache, quality metrics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from busseg.data.index import read_index
from busseg.data.prepared import PseudoLabels
from busseg.pseudo.base import PseudoLabel, apply_area_filter, invalid_label
from busseg.pseudo.run import LabelCache, dice_vs_coverage, label_dataset, options_key, quality_summary, score_against_truth
from busseg.pseudo.selection import select_training_labels
from busseg.errors import ConfigError, TrainingError


class CountingLabeler:
    """Labels the centre square; fails on purpose after ``fail_after`` images."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls, self.fail_after = 0, fail_after

    def label(self, image: np.ndarray) -> PseudoLabel:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        mask = np.zeros(image.shape, dtype=bool)
        h, w = image.shape
        mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
        return PseudoLabel(mask=mask, score=float(image.mean()) / 255, valid=True, box=(w // 4, h // 4, 3 * w // 4, 3 * h // 4))


def test_label_dataset_writes_masks_and_table(tiny_prepared: Path, tmp_path: Path) -> None:
    index = read_index(tiny_prepared / "index.csv")
    table, seconds = label_dataset(CountingLabeler, tiny_prepared, index, tmp_path / "out", progress=False)
    assert len(seconds) == len(index) and min(seconds) >= 0
    assert list(table["id"]) == list(index["id"])
    assert table["valid"].all()
    assert len(list((tmp_path / "out/masks").glob("*.png"))) == len(index)
    saved = pd.read_csv(tmp_path / "out/labels.csv")
    assert saved["area_fraction"].between(0.24, 0.26).all()


class BatchCountingLabeler(CountingLabeler):
    """CountingLabeler that also takes batches, recording each batch's size."""

    def __init__(self, batch_size: int = 5) -> None:
        super().__init__()
        self.batch_size, self.batches = batch_size, []

    def label_batch(self, images: list[np.ndarray]) -> list[PseudoLabel]:
        self.batches.append(len(images))
        return [self.label(image) for image in images]


def test_a_batch_labeler_gets_the_missing_images_batch_size_at_a_time(tiny_prepared: Path, tmp_path: Path) -> None:
    index = read_index(tiny_prepared / "index.csv")  # 16 images
    single, _ = label_dataset(CountingLabeler, tiny_prepared, index, tmp_path / "single", progress=False)
    made: list[BatchCountingLabeler] = []
    cache = LabelCache(tmp_path / "cache", "k")
    first = index.iloc[[0, 3, 4]]  # cached by a first run: the second labels the other 13
    label_dataset(lambda: made.append(BatchCountingLabeler()) or made[-1], tiny_prepared, first, tmp_path / "first", cache, progress=False)
    table, seconds = label_dataset(
        lambda: made.append(BatchCountingLabeler()) or made[-1], tiny_prepared, index, tmp_path / "batched", cache, progress=False
    )
    assert made[0].batches == [3] and made[1].batches == [5, 5, 3]
    pd.testing.assert_frame_equal(table, single)
    assert len(seconds) == 16 and min(seconds) >= 0
    for sample_id in index["id"]:
        assert (PseudoLabels(tmp_path / "batched").mask(sample_id) == PseudoLabels(tmp_path / "single").mask(sample_id)).all()


def test_interrupted_run_resumes_from_the_cache(tiny_prepared: Path, tmp_path: Path) -> None:
    index = read_index(tiny_prepared / "index.csv")
    cache = LabelCache(tmp_path / "cache", options_key("counting", {"a": 1}))
    with pytest.raises(KeyboardInterrupt):
        label_dataset(lambda: CountingLabeler(fail_after=5), tiny_prepared, index, tmp_path / "out", cache, progress=False)
    assert not (tmp_path / "out").exists()  # no half-written output
    second = CountingLabeler()
    label_dataset(lambda: second, tiny_prepared, index, tmp_path / "out", cache, progress=False)
    assert second.calls == len(index) - 5
    # A fully cached run never builds the labeler (no model loading).
    built = []
    label_dataset(lambda: built.append(1) or CountingLabeler(), tiny_prepared, index, tmp_path / "again", cache, progress=False)
    assert built == []
    # The output holds data only (no timings), so a cached re-run is byte-identical.
    assert (tmp_path / "out/labels.csv").read_bytes() == (tmp_path / "again/labels.csv").read_bytes()
    for mask in (tmp_path / "out/masks").iterdir():
        assert mask.read_bytes() == (tmp_path / "again/masks" / mask.name).read_bytes()


def test_options_key_changes_with_options() -> None:
    assert options_key("appearance", {"prompts": ["dark oval"]}) != options_key("appearance", {"prompts": ["dark round"]})
    assert options_key("appearance", {"a": 1, "b": 2}) == options_key("appearance", {"b": 2, "a": 1})


def test_quality_metrics_and_curve(tiny_prepared: Path, tmp_path: Path) -> None:
    index = read_index(tiny_prepared / "index.csv")
    label_dataset(CountingLabeler, tiny_prepared, index, tmp_path / "out", progress=False)
    scored = score_against_truth(tiny_prepared, index, tmp_path / "out")
    summary = quality_summary(scored)
    assert summary["coverage"] == 1.0
    assert 0.0 <= summary["dice"] <= summary["dice_valid"] <= 1.0
    assert summary["n_lesion_images"] == int(scored["has_lesion"].sum())
    curve = dice_vs_coverage(scored)
    assert curve["coverage"].is_monotonic_increasing
    assert curve["coverage"].iloc[-1] == pytest.approx(1.0)


def test_area_filter_rule() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[0, 0] = True  # exactly 1 %: discarded (<= 1 %)
    label = apply_area_filter(PseudoLabel(mask, 0.9, True), 0.01)
    assert not label.valid and label.reason == "area_below_min" and label.score == 0.9
    mask[0, 1] = True
    assert apply_area_filter(PseudoLabel(mask, 0.9, True), 0.01).valid
    assert invalid_label((3, 4), "no_candidate").mask.shape == (3, 4)


def test_select_training_labels(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    pd.DataFrame(
        {"id": ["a", "b", "c", "d"], "valid": [True, True, False, True], "score": [0.9, 0.2, 0.8, 0.7], "reason": ["", "", "no_candidate", ""]}
    ).to_csv(csv, index=False)
    assert select_training_labels(csv, ["a", "b", "c"], 0.0) == ["a", "b"]
    assert select_training_labels(csv, ["a", "b", "c", "d"], 0.5) == ["a", "d"]
    with pytest.raises(TrainingError, match="lower pseudo.min_score"):
        select_training_labels(csv, ["a", "b"], 0.95)


def test_unknown_backend_lists_available() -> None:
    from busseg.pseudo.registry import build_labeler

    with pytest.raises(ConfigError, match="available: appearance, grounded_sam"):
        build_labeler("sam2", {})


@pytest.mark.parametrize(
    ("options", "key"),
    [({"working_size": 4}, "pseudo.appearance.working_size"), ({"prompts": ["dark oval", "bright oval"]}, "pseudo.prompts")],
)
def test_backend_errors_name_the_full_key(options: dict, key: str) -> None:
    from busseg.pseudo.registry import build_labeler

    with pytest.raises(ConfigError) as info:
        build_labeler("appearance", {"prompts": ["dark oval"], "min_area_fraction": 0.01, **options})
    assert info.value.key == key


def test_two_pass_labeling_adapts_caches_first_passes_and_takes_a_calibrated_prior(tiny_prepared: Path, tmp_path: Path) -> None:
    import json

    from busseg.data.prepared import PreparedDataset
    from busseg.pseudo.appearance import AppearanceLabeler, DatasetPrior

    index = PreparedDataset(tiny_prepared).index
    cache = LabelCache(tmp_path / "cache", options_key("appearance", {}))
    table, _ = label_dataset(AppearanceLabeler, tiny_prepared, index, tmp_path / "out", cache, two_pass=True, progress=False)
    adapted = json.loads((tmp_path / "out" / "prior.json").read_text())
    assert adapted["source"] == "confident_labels" and adapted["n_images"] >= 8
    assert len(list(cache.dir.glob("*.npz"))) == len(index)
    # A second run reads every first pass from the cache: identical labels, no analysis.

    class NoAnalysis(AppearanceLabeler):
        def analyse(self, image):  # type: ignore[override]
            raise AssertionError("analysed an image the cache holds")

    again, _ = label_dataset(NoAnalysis, tiny_prepared, index, tmp_path / "again", cache, two_pass=True, progress=False)
    assert again.equals(table)
    # A calibrated prior replaces the estimated one and is what the folder records.
    calibrated = DatasetPrior(0.9, 0.05, 0.4, 0.05, -1.0, 0.4, source="ground_truth", n_images=3)
    label_dataset(AppearanceLabeler, tiny_prepared, index, tmp_path / "cal", cache, two_pass=True, prior=calibrated, progress=False)
    assert json.loads((tmp_path / "cal" / "prior.json").read_text()) == calibrated.as_dict()


def test_two_pass_first_passes_in_worker_processes_give_the_same_labels(tiny_prepared: Path, tmp_path: Path) -> None:
    """Two worker processes share the first passes: masks, table and prior are byte-identical to one
    process's, and the cache is filled for a resume either way."""
    from busseg.data.prepared import PreparedDataset
    from busseg.pseudo.appearance import AppearanceLabeler

    index = PreparedDataset(tiny_prepared).index
    label_dataset(AppearanceLabeler, tiny_prepared, index, tmp_path / "one", two_pass=True, progress=False, workers=1)
    cache = LabelCache(tmp_path / "cache", options_key("appearance", {}))
    _, seconds = label_dataset(AppearanceLabeler, tiny_prepared, index, tmp_path / "two", cache, two_pass=True, progress=False, workers=2)
    assert len(seconds) == len(index) and min(seconds) > 0
    assert len(list(cache.dir.glob("*.npz"))) == len(index)
    one, two = sorted((tmp_path / "one").rglob("*")), sorted((tmp_path / "two").rglob("*"))
    assert [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "two") for p in two]
    for a, b in zip(one, two):
        assert a.is_dir() or a.read_bytes() == b.read_bytes(), a.name


def test_a_bad_image_in_a_worker_process_is_the_same_error_line(tiny_prepared: Path, tmp_path: Path) -> None:
    """An error a worker raises reaches the stage as the same busseg error (it must pickle)."""
    import shutil

    from busseg.data.prepared import PreparedDataset
    from busseg.errors import DataError
    from busseg.pseudo.appearance import AppearanceLabeler

    prepared = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, prepared)  # the fixture is shared: break a copy
    index = PreparedDataset(prepared).index
    broken = prepared / "images" / f"{index['id'].iloc[3]}.png"
    assert broken.is_file()
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=broken.name):
        label_dataset(AppearanceLabeler, prepared, index, tmp_path / "out", two_pass=True, progress=False, workers=2)
    assert not (tmp_path / "out").exists()
