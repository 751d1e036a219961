"""DDP on CPU (gloo): N ranks follow the one-process run, only rank 0 writes, resume works."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from busseg.distributed import DistContext
from busseg.models import ModelConfig, build_model
from busseg.runtime import seed_everything
from busseg.training.checkpoint import read_checkpoint
from busseg.training.config import TrainConfig
from busseg.training.loop import fit
from busseg.training.methods import get_method

from .test_loop import tiny_data

CONFIGS = {
    "supervised": TrainConfig(epochs=3, steps_per_epoch=2, batch_size=4, lr=1e-3),
    # An EMA teacher and an unlabeled half-batch: 2 + 2 images per step, 1 + 1 per rank.
    "mean_teacher": TrainConfig(method="mean_teacher", epochs=3, steps_per_epoch=2, batch_size=4, unlabeled_batch=2, lr=1e-3),
    # Random views: every rank draws the global batch's parameters and takes its slice.
    "mean_teacher_strong": TrainConfig(method="mean_teacher", epochs=3, steps_per_epoch=2, batch_size=4, unlabeled_batch=2,
                                       lr=1e-3, augment="strong"),
}
MODEL = ModelConfig(encoder="resnet18", image_size=64, decoder_channels=(32, 16, 16, 8, 8))


class SimulatedKill(Exception):
    """Stands for a kill (KeyboardInterrupt would be swallowed by torch.multiprocessing's workers)."""


class Recorder:
    def __init__(self, interrupt_after: int | None = None) -> None:
        self.logs: list[dict[str, float]] = []
        self.interrupt_after = interrupt_after

    def log_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        self.logs.append(dict(logs))
        if epoch == self.interrupt_after:
            raise SimulatedKill(f"after epoch {epoch}")


def train(method_name: str, prepared: Path, out: Path, context: DistContext, interrupt_after: int | None = None) -> list[dict]:
    config = CONFIGS[method_name]
    data = tiny_data(prepared)
    if config.method != "supervised":
        data.unlabeled, data.labeled = data.labeled, data.labeled  # any images serve as unlabeled ones
    seed_everything(0)
    method = get_method(config.method)(build_model(MODEL), config)
    recorder = Recorder(interrupt_after)
    fit(method, data, config, device=torch.device("cpu"), seed=0, best_path=out / "best.pt", scratch_dir=out / "scratch",
        logger=recorder, progress=False, context=context)
    return recorder.logs


def _worker(rank: int, world: int, init_file: str, method_name: str, prepared: str, out: str, interrupt_after) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logs = train(method_name, Path(prepared), Path(out), DistContext(rank, world, rank), interrupt_after)
        (Path(out) / f"history{rank}.json").write_text(json.dumps(logs))
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, method_name: str, prepared: Path, out: Path, init: Path, interrupt_after: int | None = None) -> None:
    mp.start_processes(_worker, args=(world, str(init), method_name, str(prepared), str(out), interrupt_after),
                       nprocs=world, start_method="spawn")


@pytest.mark.parametrize("method_name", ["supervised", "mean_teacher", "mean_teacher_strong"])
def test_two_ranks_follow_the_one_process_loss_history(tiny_prepared: Path, tmp_path: Path, method_name: str) -> None:
    single = train(method_name, tiny_prepared, tmp_path / "one", DistContext())
    run_ranks(2, method_name, tiny_prepared, tmp_path / "two", tmp_path / "init")
    for rank in (0, 1):
        ranked = json.loads((tmp_path / "two" / f"history{rank}.json").read_text())
        assert len(ranked) == len(single)
        for a, b in zip(single, ranked):
            for key in ("loss", "loss_s"):
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), (rank, key, a, b)
            # Dice of thresholded masks of a barely trained tiny net: float rounding flips pixels
            # near p = 0.5, so only a loose check (the losses above carry the equivalence).
            assert b["val_dice"] == pytest.approx(a["val_dice"], abs=0.05)
    # One checkpoint, written by rank 0, with weights close to the one-process run's.
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if p.suffix == ".pt") == ["best.pt"]
    one, two = read_checkpoint(tmp_path / "one" / "best.pt"), read_checkpoint(tmp_path / "two" / "best.pt")
    assert set(one["model"]) == set(two["model"])
    config = CONFIGS[method_name]
    # Adam moves every weight by up to ~lr a step whatever the gradient's size, so rounding that
    # flips the sign of a near-zero gradient can move a weight by up to 2 lr per step: that bounds
    # any one weight; on average the two runs must agree far more closely.
    bound = 2 * config.lr * config.epochs * config.steps_per_epoch
    for key, value in one["model"].items():
        if not value.is_floating_point():  # num_batches_tracked
            assert torch.equal(two["model"][key], value), key
        elif "running_" in key:  # batch-norm statistics over the global batch, not Adam-updated
            # They follow the weights, so single channels can differ; on the whole they agree.
            difference = float((two["model"][key] - value).abs().mean())
            assert difference <= 1e-3 + 1e-2 * float(value.abs().mean()), key
        else:
            difference = (two["model"][key] - value).abs()
            assert float(difference.max()) <= bound, key
            assert float(difference.mean()) <= bound / 10, key


def test_an_interrupted_two_rank_run_resumes(tiny_prepared: Path, tmp_path: Path) -> None:
    run_ranks(2, "supervised", tiny_prepared, tmp_path / "full", tmp_path / "init-full")
    with pytest.raises(mp.ProcessRaisedException, match="SimulatedKill"):  # both ranks "killed" after epoch 2
        run_ranks(2, "supervised", tiny_prepared, tmp_path / "cut", tmp_path / "init-cut", interrupt_after=1)
    assert not (tmp_path / "cut" / "best.pt").exists()
    assert (tmp_path / "cut" / "scratch" / "last.pt").is_file()
    run_ranks(2, "supervised", tiny_prepared, tmp_path / "cut", tmp_path / "init-resume")
    resumed = json.loads((tmp_path / "cut" / "history0.json").read_text())
    assert [int(log["epoch"]) for log in resumed] == [0, 1, 2]  # history replayed, the last epoch trained
    full, cut = read_checkpoint(tmp_path / "full" / "best.pt"), read_checkpoint(tmp_path / "cut" / "best.pt")
    for key, value in full["model"].items():
        assert torch.equal(cut["model"][key], value), key
