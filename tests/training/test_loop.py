"""The training loop: batches, checkpoints, resume after an interruption, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from busseg.data.dataset import SegmentationDataset
from busseg.data.prepared import PreparedDataset
from busseg.data.index import read_index
from busseg.errors import DataError, TrainingError
from busseg.models import build_model
from busseg.runtime import seed_everything
from busseg.training.checkpoint import load_model, read_checkpoint
from busseg.training.config import TrainConfig
from busseg.training.loop import TrainData, fit, index_batches, steps_per_epoch
from busseg.training.methods import Supervised, get_method

CONFIG = TrainConfig(epochs=3, steps_per_epoch=2, batch_size=4, lr=1e-3)


def tiny_data(prepared: Path, size: int = 64) -> TrainData:
    ids = sorted(read_index(prepared / "index.csv")["id"])
    dataset = PreparedDataset(prepared)
    return TrainData(
        labeled=SegmentationDataset(dataset, ids[:8], size, masks=dataset),
        val=SegmentationDataset(dataset, ids[8:12], size, masks=dataset),
    )


def test_index_batches_cycle_small_sets_and_are_seeded() -> None:
    batches = list(index_batches(3, 4, steps=3, seed=1))
    assert all(len(b) == 4 for b in batches)
    counts = np.bincount(np.concatenate(batches), minlength=3)
    assert counts.min() == counts.max() == 4  # whole permutations, cycled
    assert [b.tolist() for b in batches] == [b.tolist() for b in index_batches(3, 4, steps=3, seed=1)]


def test_index_batches_shard_across_ranks() -> None:
    rank0 = np.concatenate(list(index_batches(16, 2, steps=4, seed=0, rank=0, world_size=2)))
    rank1 = np.concatenate(list(index_batches(16, 2, steps=4, seed=0, rank=1, world_size=2)))
    assert not set(rank0) & set(rank1)


def test_steps_per_epoch() -> None:
    assert steps_per_epoch(TrainConfig(batch_size=8), 100) == 13
    assert steps_per_epoch(TrainConfig(steps_per_epoch=5), 100) == 5


def test_fit_writes_a_self_describing_checkpoint(tiny_prepared: Path, tiny_model_config, tmp_path: Path) -> None:
    seed_everything(0)
    model = build_model(tiny_model_config)
    result = fit(Supervised(model, CONFIG), tiny_data(tiny_prepared), CONFIG, device=torch.device("cpu"), seed=0, best_path=tmp_path / "best.pt", progress=False)
    assert len(result.history) == 3
    checkpoint = read_checkpoint(tmp_path / "best.pt")
    assert checkpoint["method"] == "supervised"
    assert checkpoint["epoch"] == result.best_epoch
    rebuilt = load_model(tmp_path / "best.pt")
    assert rebuilt.config == tiny_model_config
    x = torch.rand(2, 1, 64, 64)
    assert rebuilt(x).shape == (2, 1, 64, 64)


class InterruptAt:
    """A logger that simulates a kill after ``epoch`` finished."""

    def __init__(self, epoch: int | None) -> None:
        self.epoch, self.seen = epoch, []

    def log_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        self.seen.append(epoch)
        if epoch == self.epoch:
            raise KeyboardInterrupt


def interrupted_run_beside_a_full_one(data: TrainData, model_config, tmp_path: Path) -> Path:
    """Train ``a.pt`` uninterrupted, then start ``b.pt`` and "kill" it after epoch 2; return its scratch."""
    cpu = torch.device("cpu")
    seed_everything(0)
    fit(Supervised(build_model(model_config), CONFIG), data, CONFIG, device=cpu, seed=0, best_path=tmp_path / "a.pt", progress=False)
    scratch = tmp_path / "scratch"
    seed_everything(0)
    with pytest.raises(KeyboardInterrupt):
        fit(Supervised(build_model(model_config), CONFIG), data, CONFIG, device=cpu, seed=0, best_path=tmp_path / "b.pt",
            scratch_dir=scratch, logger=InterruptAt(1), progress=False)
    return scratch


def test_resume_after_interruption_gives_the_same_model(tiny_prepared: Path, tiny_model_config, tmp_path: Path) -> None:
    data = tiny_data(tiny_prepared)
    cpu = torch.device("cpu")
    scratch = interrupted_run_beside_a_full_one(data, tiny_model_config, tmp_path)
    assert not (tmp_path / "b.pt").exists()  # no half-finished output
    seed_everything(123)  # a resumed run must not depend on fresh initialisation
    logger = InterruptAt(None)
    fit(Supervised(build_model(tiny_model_config), CONFIG), data, CONFIG, device=cpu, seed=0, best_path=tmp_path / "b.pt",
        scratch_dir=scratch, logger=logger, progress=False)
    assert logger.seen == [0, 1, 2]  # history replayed, then the last epoch trained
    a, b = read_checkpoint(tmp_path / "a.pt"), read_checkpoint(tmp_path / "b.pt")
    assert a["epoch"] == b["epoch"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


class NanMethod(Supervised):
    name = "nan"

    def loss(self, labeled, unlabeled, progress):
        loss, parts = super().loss(labeled, unlabeled, progress)
        return loss * float("nan"), parts


def test_non_finite_loss_is_a_clear_error(tiny_prepared: Path, tiny_model_config, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="loss became nan.*lower the learning rate"):
        fit(NanMethod(build_model(tiny_model_config), CONFIG), tiny_data(tiny_prepared), CONFIG, device=torch.device("cpu"), seed=0,
            best_path=tmp_path / "best.pt", progress=False)
    assert not (tmp_path / "best.pt").exists()


def test_empty_labeled_set_is_a_clear_error(tiny_prepared: Path, tiny_model_config, tmp_path: Path) -> None:
    data = tiny_data(tiny_prepared)
    data.labeled = SegmentationDataset(PreparedDataset(tiny_prepared), [], 64, masks=PreparedDataset(tiny_prepared))
    with pytest.raises(TrainingError, match="no labeled images"):
        fit(Supervised(build_model(tiny_model_config), CONFIG), data, CONFIG, device=torch.device("cpu"), seed=0, best_path=tmp_path / "x.pt")


def test_unknown_method_lists_the_available_ones() -> None:
    from busseg.errors import ConfigError

    with pytest.raises(ConfigError, match="available: .*supervised"):
        get_method("fixmatch")


def test_broken_checkpoint_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "student.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="student.pt"):
        load_model(bad)
    with pytest.raises(DataError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_two_runs_write_byte_identical_checkpoints(tiny_prepared: Path, tiny_model_config, tmp_path: Path) -> None:
    data, cpu = tiny_data(tiny_prepared), torch.device("cpu")
    for name in ("a", "b"):
        seed_everything(0)
        fit(Supervised(build_model(tiny_model_config), CONFIG), data, CONFIG, device=cpu, seed=0,
            best_path=tmp_path / name / "best.pt", scratch_dir=tmp_path / f"scratch-{name}", progress=False)
    assert (tmp_path / "a" / "best.pt").read_bytes() == (tmp_path / "b" / "best.pt").read_bytes()
    # The resume state is deleted once the output is written, and nothing temporary is left.
    assert not list((tmp_path / "scratch-a").iterdir())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["best.pt"]


@pytest.mark.parametrize("damage", ["garbage", "foreign", "truncated"])
def test_unusable_resume_state_is_discarded_with_a_warning(
    tiny_prepared: Path, tiny_model_config, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    data, cpu = tiny_data(tiny_prepared), torch.device("cpu")
    scratch = interrupted_run_beside_a_full_one(data, tiny_model_config, tmp_path)
    state = scratch / "last.pt"
    if damage == "garbage":
        state.write_bytes(b"\x00not a torch file")
    elif damage == "foreign":
        torch.save({"something": torch.zeros(3)}, state)
    else:
        state.write_bytes(state.read_bytes()[:1000])
    capsys.readouterr()
    seed_everything(0)  # the fresh start must equal an uninterrupted run
    fit(Supervised(build_model(tiny_model_config), CONFIG), data, CONFIG, device=cpu, seed=0, best_path=tmp_path / "b.pt",
        scratch_dir=scratch, progress=False)
    assert "discarding unusable resume state" in capsys.readouterr().err
    a, b = read_checkpoint(tmp_path / "a.pt"), read_checkpoint(tmp_path / "b.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_a_failed_copy_of_the_best_checkpoint_leaves_nothing_behind(
    tiny_prepared: Path, tiny_model_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    def disk_full(source, target, *args, **kwargs):
        Path(target).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    out = tmp_path / "models"
    with pytest.raises(DataError, match=r"static_teacher\.pt: cannot write: No space left on device$"):
        fit(Supervised(build_model(tiny_model_config), CONFIG), tiny_data(tiny_prepared), CONFIG, device=torch.device("cpu"),
            seed=0, best_path=out / "static_teacher.pt", progress=False)
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_compiled_student_trains_and_keeps_checkpoint_keys(tiny_prepared: Path, tiny_model_config, tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=4, lr=1e-3)
    seed_everything(0)
    fit(Supervised(build_model(tiny_model_config), config), tiny_data(tiny_prepared), config, device=torch.device("cpu"),
        seed=0, best_path=tmp_path / "compiled.pt", progress=False, compile_model=True)
    plain = build_model(tiny_model_config).state_dict()
    assert set(read_checkpoint(tmp_path / "compiled.pt")["model"]) == set(plain)
    assert load_model(tmp_path / "compiled.pt")(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


class BatchRecorder(Supervised):
    """Supervised loss, but asks for unlabeled batches (``ssl``) and records each step's batch sizes."""

    name = "recorder"

    def __init__(self, model, config, ssl: bool) -> None:
        self.ssl = ssl
        super().__init__(model, config)
        self.seen: list[tuple[int, int]] = []

    def requirements(self, config, section="train"):  # type: ignore[override]
        from busseg.training.methods import Requirements

        return Requirements(unlabeled=self.ssl)

    def loss(self, labeled, unlabeled, progress):
        self.seen.append((labeled["image"].shape[0], 0 if unlabeled is None else unlabeled["image"].shape[0]))
        return super().loss(labeled, unlabeled, progress)


def test_ssl_steps_add_the_unlabeled_batch_to_a_full_labeled_batch(tiny_prepared: Path, tiny_model_config, tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, steps_per_epoch=None, batch_size=3, unlabeled_batch=5, lr=1e-3)
    full = tiny_data(tiny_prepared)
    dataset = PreparedDataset(tiny_prepared)
    ids = sorted(read_index(tiny_prepared / "index.csv")["id"])
    ssl_data = TrainData(labeled=SegmentationDataset(dataset, ids[:2], 64, masks=dataset),
                         unlabeled=SegmentationDataset(dataset, ids[2:8], 64), val=full.val)
    # Supervised loads no unlabeled images but is told the size of the train split.
    sup_data = TrainData(labeled=ssl_data.labeled, val=full.val, n_train=8)
    runs = {}
    for ssl, data in ((True, ssl_data), (False, sup_data)):
        method = BatchRecorder(build_model(tiny_model_config), config, ssl=ssl)
        fit(method, data, config, device=torch.device("cpu"), seed=0, best_path=tmp_path / f"{ssl}.pt", progress=False)
        runs[ssl] = method.seen
    # ceil(8 train images / batch 3) = 3 optimizer steps for both methods.
    assert runs[True] == [(3, 5)] * 3  # 3 labeled (2 images cycled) + 5 unlabeled on top
    assert runs[False] == [(3, 0)] * 3


def test_steps_per_epoch_counts_the_whole_train_split(tiny_prepared: Path) -> None:
    data = tiny_data(tiny_prepared)
    assert data.train_split_size() == 8
    data.n_train = 30
    assert steps_per_epoch(TrainConfig(batch_size=4), data.train_split_size()) == 8


def test_ssl_method_without_unlabeled_batch_is_a_clear_error(tiny_prepared: Path, tiny_model_config, tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=2, unlabeled_batch=0)
    data = tiny_data(tiny_prepared)
    data.unlabeled = data.labeled
    with pytest.raises(TrainingError, match="train.unlabeled_batch must be >= 1"):
        fit(BatchRecorder(build_model(tiny_model_config), config, ssl=True), data, config, device=torch.device("cpu"),
            seed=0, best_path=tmp_path / "x.pt", progress=False)


def test_augmented_run_resumes_to_the_same_model(tiny_prepared: Path, tiny_model_config, tmp_path: Path) -> None:
    # Every step's augmentation comes from a seed keyed by (seed, step, rank), not from a
    # generator state that an interruption would lose.
    config = TrainConfig(epochs=3, steps_per_epoch=2, batch_size=4, lr=1e-3, augment="weak")
    data, cpu = tiny_data(tiny_prepared), torch.device("cpu")
    seed_everything(0)
    fit(Supervised(build_model(tiny_model_config), config), data, config, device=cpu, seed=0, best_path=tmp_path / "a.pt", progress=False)
    scratch = tmp_path / "scratch"
    seed_everything(0)
    with pytest.raises(KeyboardInterrupt):
        fit(Supervised(build_model(tiny_model_config), config), data, config, device=cpu, seed=0, best_path=tmp_path / "b.pt",
            scratch_dir=scratch, logger=InterruptAt(1), progress=False)  # killed in epoch 2, resumes after epoch 1
    seed_everything(1)
    fit(Supervised(build_model(tiny_model_config), config), data, config, device=cpu, seed=0, best_path=tmp_path / "b.pt",
        scratch_dir=scratch, progress=False)
    a, b = read_checkpoint(tmp_path / "a.pt"), read_checkpoint(tmp_path / "b.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # And the augmentation did something: the clean run ends elsewhere.
    seed_everything(0)
    clean = TrainConfig(epochs=3, steps_per_epoch=2, batch_size=4, lr=1e-3)
    fit(Supervised(build_model(tiny_model_config), clean), data, clean, device=cpu, seed=0, best_path=tmp_path / "c.pt", progress=False)
    c = read_checkpoint(tmp_path / "c.pt")
    assert any(not torch.equal(a["model"][k], c["model"][k]) for k in a["model"] if a["model"][k].is_floating_point())


def test_step_seeds_differ_across_steps_and_runs() -> None:
    from busseg.training.loop import step_seed

    seeds = {step_seed(s, k) for s in range(3) for k in range(100)}
    assert len(seeds) == 300 and all(0 <= x < 2**63 for x in seeds)
    assert step_seed(0, 5) == step_seed(0, 5)
