"""Evaluation at full resolution, inference, and the `busseg predict` command."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from busseg.cli import main as cli_main
from busseg.data.index import read_index
from busseg.data.prepared import PreparedDataset
from busseg.evaluation import evaluate_split, summarize
from busseg.inference import predict_probability_maps
from busseg.models import build_model
from busseg.training.checkpoint import save_model_checkpoint
from busseg.training.config import TrainConfig


@pytest.fixture
def checkpoint(tmp_path: Path, tiny_model_config) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "student.pt"
    save_model_checkpoint(path, build_model(tiny_model_config), TrainConfig(), epoch=0, val_dice=0.5)
    return path


def test_probability_maps_have_each_images_own_size(tiny_model_config) -> None:
    model = build_model(tiny_model_config)
    images = [np.zeros((50, 70), np.uint8), np.full((91, 33), 200, np.uint8), np.zeros((64, 64), np.uint8)]
    maps = list(predict_probability_maps(model, iter(images), torch.device("cpu"), batch_size=2))
    assert [m.shape for m in maps] == [(50, 70), (91, 33), (64, 64)]
    assert all(((m >= 0) & (m <= 1)).all() for m in maps)


def test_evaluate_split_rows_and_overlays(tiny_prepared: Path, checkpoint: Path, tmp_path: Path) -> None:
    from busseg.training.checkpoint import load_model

    ids = sorted(read_index(tiny_prepared / "index.csv")["id"])[:5]
    per_image = evaluate_split(load_model(checkpoint), tiny_prepared, ids, torch.device("cpu"), overlay_dir=tmp_path / "ov", n_overlays=2, progress=False)
    assert list(per_image["id"]) == ids
    assert per_image[["dice", "iou", "accuracy"]].apply(lambda c: c.between(0, 1).all()).all()
    summary = summarize(per_image)
    assert summary["n_images"] == 5 and set(summary) == {"dice", "iou", "accuracy", "hd95", "n_images"}
    overlay = np.asarray(Image.open(next((tmp_path / "ov").glob("*.png"))))
    assert overlay.ndim == 3 and overlay.shape[1] == 2 * 64 + 4


def test_evaluate_split_draws_best_median_worst_from_the_measured_masks(tiny_prepared: Path, checkpoint: Path, tmp_path: Path) -> None:
    import json

    from busseg.cases import select_cases
    from busseg.training.checkpoint import load_model

    ids = sorted(read_index(tiny_prepared / "index.csv")["id"])[:6]
    per_image = evaluate_split(load_model(checkpoint), tiny_prepared, ids, torch.device("cpu"), case_dir=tmp_path / "cases", progress=False)
    listing = json.loads((tmp_path / "cases" / "cases.json").read_text())
    dice = {str(i): round(float(d), 6) for i, d in zip(per_image["id"], per_image["dice"])}
    prepared = PreparedDataset(tiny_prepared)
    lesion_ids = {i for i in ids if prepared.mask(i).any()}
    assert {case: entry["id"] for case, entry in listing.items()} == select_cases(dice, lesion_ids)
    assert all(entry["dice"] == dice[entry["id"]] for entry in listing.values())
    for case in ("best", "median", "worst"):
        overlay = np.asarray(Image.open(tmp_path / "cases" / f"{case}.png"))
        assert overlay.ndim == 3 and overlay.shape[1] == 2 * 64 + 4


def test_predict_command_writes_masks(tiny_prepared: Path, checkpoint: Path, tmp_path: Path, capsys) -> None:
    code = cli_main(["predict", "--model", str(checkpoint), "--out", str(tmp_path / "pred"), "--overlay", "--no-progress", str(tiny_prepared / "images")])
    assert code == 0
    n = len(list((tiny_prepared / "images").glob("*.png")))
    masks = sorted((tmp_path / "pred").glob("*.mask.png"))
    assert len(masks) == n and len(list((tmp_path / "pred").glob("*.overlay.png"))) == n
    assert set(np.unique(np.asarray(Image.open(masks[0])))) <= {0, 255}


def test_predict_command_bad_input_is_one_line(tmp_path: Path, checkpoint: Path, capsys) -> None:
    assert cli_main(["predict", "--model", str(checkpoint), "--out", str(tmp_path / "p"), str(tmp_path / "nope.png")]) == 1
    assert "nope.png: no such file" in capsys.readouterr().err
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"\x89PNG garbage")
    assert cli_main(["predict", "--model", str(checkpoint), "--out", str(tmp_path / "p"), "--no-progress", str(corrupt)]) == 1
    assert "bad.png" in capsys.readouterr().err
    assert cli_main(["predict", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "p"), str(corrupt)]) == 1
    assert "missing.pt" in capsys.readouterr().err
