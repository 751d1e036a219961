"""The cross-dataset summary and its markdown table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from busseg.errors import DataError
from busseg.report import build_summary, markdown_table


def test_summary_is_nested_dataset_then_metric(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "pseudo").mkdir()
    for name, d in (("busbra", 0.8), ("stu", 0.7)):
        (tmp_path / "eval" / f"{name}.json").write_text(json.dumps({"dice": d, "iou": d - 0.1, "accuracy": 0.95, "hd95": 12.0, "n_images": 10}))
    (tmp_path / "pseudo" / "busbra.json").write_text(json.dumps({"dice": 0.7, "coverage": 0.95, "backend": "appearance"}))
    summary = build_summary(tmp_path / "eval", tmp_path / "pseudo", ["busbra", "stu"])
    assert summary["busbra"]["dice"] == 0.8
    assert summary["busbra"]["pseudo_dice"] == 0.7
    assert "pseudo_dice" not in summary["stu"]
    table = markdown_table(summary)
    assert table.splitlines()[0].startswith("| dataset | dice | iou")
    assert "| stu | 0.7000 |" in table


def test_missing_dataset_metrics_is_named(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    with pytest.raises(DataError, match="busbra.json"):
        build_summary(tmp_path / "eval", tmp_path / "pseudo", ["busbra"])


def test_cross_table_rows_train_columns_test(tmp_path: Path) -> None:
    from busseg.report import cross_table

    (tmp_path / "eval").mkdir()
    (tmp_path / "cross" / "a").mkdir(parents=True)
    (tmp_path / "cross" / "b").mkdir()
    (tmp_path / "eval" / "a.json").write_text(json.dumps({"dice": 0.8}))
    (tmp_path / "eval" / "b.json").write_text(json.dumps({"dice": 0.7}))
    # cross_evaluate@<train>-<test> writes cross/<train>/<test>.json; the diagonal is empty.
    (tmp_path / "cross" / "a" / "a.json").write_text("{}")
    (tmp_path / "cross" / "a" / "b.json").write_text(json.dumps({"dice": 0.5}))
    (tmp_path / "cross" / "b" / "a.json").write_text(json.dumps({"dice": 0.4}))
    (tmp_path / "cross" / "b" / "b.json").write_text("{}")
    table = cross_table(tmp_path / "eval", tmp_path / "cross", ["a", "b"])
    assert "| a | 0.8000 | 0.5000 |" in table
    assert "| b | 0.4000 | 0.7000 |" in table
    assert cross_table(tmp_path / "eval", tmp_path / "cross", ["a"]) == ""


def test_refined_label_quality_enters_the_summary_only_after_a_round(tmp_path: Path) -> None:
    import json

    for folder in ("eval", "pseudo", "refine"):
        (tmp_path / folder).mkdir()
    (tmp_path / "eval" / "a.json").write_text(json.dumps({"dice": 0.7, "n_images": 3}))
    (tmp_path / "eval" / "b.json").write_text(json.dumps({"dice": 0.6, "n_images": 3}))
    (tmp_path / "refine" / "a.json").write_text(json.dumps({"rounds": 1, "round_0": {"dice": 0.6}, "round_1": {"dice": 0.7}}))
    (tmp_path / "refine" / "b.json").write_text(json.dumps({"rounds": 0, "round_0": {"dice": 0.6}}))
    summary = build_summary(tmp_path / "eval", tmp_path / "pseudo", ["a", "b"], tmp_path / "refine")
    assert (summary["a"]["train_labels_dice"], summary["a"]["refined_labels_dice"]) == (0.6, 0.7)
    assert "refined_labels_dice" not in summary["b"]
