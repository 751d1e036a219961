"""The training loop: one readable function, shared by the warm-up and every method.

Budget: ``epochs`` x ``steps_per_epoch`` optimizer steps, the same for every method at
one label ratio (``steps_per_epoch: null`` is one pass over the whole train split, labeled
+ unlabeled pool, at ``batch_size`` images a step, whatever the method). Each step draws a
full batch of ``batch_size`` labeled images (the small labeled set is cycled) and, for
methods that use them, ``unlabeled_batch`` unlabeled images *on top* (as FixMatch and
UniMatch do), so a semi-supervised run sees exactly the labeled presentations of a
supervised one and only adds the unlabeled images. After each epoch the
student is validated (mean Dice on the validation split), ReduceLROnPlateau steps on
that Dice, the best checkpoint is kept, and the whole state goes to a scratch folder
so that an interrupted run resumes from its last finished epoch.

Batches are drawn from seeded per-epoch index streams rather than a DataLoader: data
sits in memory, and an epoch-keyed seed makes resumed runs identical to uninterrupted
ones.

Under DDP (``context.world_size`` > 1, see :mod:`busseg.distributed`) every rank takes a
disjoint slice of each global batch, so the global batch and the step budget are those of a
one-process run; the student's batch norm runs over the global batch, DDP averages the
gradients, and only rank 0 writes (resume state, checkpoints, logs).
"""
from __future__ import annotations

import copy
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from busseg.atomic import copy_file
from busseg.data.dataset import SegmentationDataset, as_batch
from busseg.distributed import DistContext, convert_sync_batchnorm
from busseg.errors import TrainingError
from busseg.inference import probabilities
from busseg.metrics import dice
from busseg.training.checkpoint import save_atomic, save_model_checkpoint
from busseg.training.config import TrainConfig
from busseg.training.methods import Batch, TrainingMethod


class EpochLogger(Protocol):
    """Receives one dict of scalars per finished epoch (dvclive, a list, ...)."""

    def log_epoch(self, epoch: int, logs: dict[str, float]) -> None: ...


@dataclass
class TrainData:
    """What the loop trains on. ``val`` may be None (then the last epoch is kept)."""

    labeled: SegmentationDataset
    unlabeled: SegmentationDataset | None = None
    val: SegmentationDataset | None = None
    #: Images of the train split (labeled + unlabeled pool): ``steps_per_epoch: null`` is one
    #: pass over them. A stage that trains ``supervised`` loads no unlabeled images but
    #: must still count them, so that every method at a label ratio gets the same number of
    #: optimizer steps. None: ``len(labeled) + len(unlabeled)``.
    n_train: int | None = None

    def train_split_size(self) -> int:
        """:attr:`n_train`, or the labeled plus the unlabeled images when it is not set."""
        if self.n_train is not None:
            return self.n_train
        return len(self.labeled) + (len(self.unlabeled) if self.unlabeled is not None else 0)


@dataclass
class FitResult:
    best_epoch: int
    best_val_dice: float
    history: list[dict[str, float]] = field(default_factory=list)


def index_batches(n: int, batch: int, steps: int, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[np.ndarray]:
    """``steps`` batches of indices into ``n`` items, cycling through fresh permutations.

    A set smaller than the batch is repeated within the batch (12 labeled images and a
    batch of 4 is the paper's 2.5 % setting). With ``world_size`` > 1 every rank gets a
    disjoint slice of each global batch.
    """
    if n <= 0:
        raise TrainingError("cannot draw batches from an empty set of images")
    rng = np.random.default_rng(seed)
    order: list[int] = []
    global_batch = batch * world_size
    for _ in range(steps):
        while len(order) < global_batch:
            order.extend(rng.permutation(n).tolist())
        chosen, order = order[:global_batch], order[global_batch:]
        yield np.asarray(chosen[rank * batch : (rank + 1) * batch], dtype=np.int64)


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    """Steps per epoch: ``train.steps_per_epoch``, or when null ``ceil(n_train / batch_size)``.

    ``n_train`` is the size of the whole train split (labeled + unlabeled pool), for every
    method: the budget is optimizer steps, identical for ``supervised`` and the
    semi-supervised methods at one label ratio (:attr:`TrainData.n_train`).
    """
    if config.steps_per_epoch is not None:
        return config.steps_per_epoch
    return max(1, math.ceil(n_train / config.batch_size))


def step_seed(seed: int, step: int) -> int:
    """The seed of one optimizer step's randomness (augmentation), distinct for every (seed, step)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def validate(model: torch.nn.Module, dataset: SegmentationDataset, device: torch.device) -> float:
    """Mean per-image Dice at the network resolution (probability > 0.5)."""
    batch = as_batch(dataset, range(len(dataset)))
    probs = probabilities(model, batch["image"], device)
    preds = (probs > 0.5).numpy()[:, 0]
    targets = batch["mask"].cpu().numpy()[:, 0] > 0.5
    return float(np.mean([dice(p, t) for p, t in zip(preds, targets)]))


def _autocast(device: torch.device, enabled: bool):
    # bfloat16 needs no gradient scaler; on CPU autocast is off (it slows convolutions down).
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


class NonFiniteLoss(TrainingError):
    """The loss of a step is NaN or infinite: nothing was updated (see :func:`train_step`)."""

    def __init__(self, value: float, parts: dict[str, float]) -> None:
        super().__init__(f"the loss became {value} (parts: {parts})")
        self.value = value
        self.parts = parts


def train_step(
    method: TrainingMethod,
    optimizer: torch.optim.Optimizer,
    labeled: Batch,
    unlabeled: Batch | None,
    progress: float,
    *,
    device: torch.device,
    amp: bool = True,
    ddp: torch.nn.parallel.DistributedDataParallel | None = None,
) -> tuple[float, dict[str, float]]:
    """One optimizer step: ``method.loss``, ``zero_grad``, ``backward``, ``step``, ``after_optimizer_step``.

    The one step function of every method, used by :func:`fit` and timed as is by
    ``benchmarks/step_cost.py``. Batches are already on ``device``; ``amp`` turns on
    bfloat16 autocast on CUDA; ``ddp`` (the method wrapped in DistributedDataParallel)
    computes the loss so that the backward pass averages gradients across ranks. Returns
    the loss and its named parts; raises :class:`NonFiniteLoss` (before any update) when
    the loss is not finite, on every rank when it is not finite on one.
    """
    with _autocast(device, amp):
        loss, parts = ddp(labeled, unlabeled, progress) if ddp is not None else method.loss(labeled, unlabeled, progress)
    finite = torch.isfinite(loss.detach()).float()
    if ddp is not None:  # one rank's NaN must stop every rank, or the others hang in backward
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    if not bool(finite):
        raise NonFiniteLoss(float(loss.detach()), parts)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    method.after_optimizer_step()
    return float(loss.detach()), parts


def fit(
    method: TrainingMethod,
    data: TrainData,
    config: TrainConfig,
    *,
    device: torch.device,
    seed: int,
    best_path: str | Path,
    scratch_dir: str | Path | None = None,
    logger: EpochLogger | None = None,
    progress: bool = True,
    desc: str = "train",
    context: DistContext | None = None,
    compile_model: bool = False,
) -> FitResult:
    """Train ``method`` and write the best student checkpoint to ``best_path``.

    With ``scratch_dir``, the state after every epoch is kept there and a later call
    with the same folder resumes from it (the caller keys the folder by the inputs and
    parameters, so a resumed run never mixes two configurations). With ``context`` of a
    multi-rank run (process group already initialised), every rank calls this with the
    same arguments; only rank 0 writes ``best_path`` and the scratch state, and the
    caller gives ``logger`` to rank 0 only. ``compile_model`` runs the student's forward through
    ``torch.compile`` (``runtime.compile``; worth it on GPUs for long runs, a minute of compiling first).
    """
    config.check()
    context = context or DistContext()
    if context.distributed:
        per_rank_batches = {"train.batch_size": config.batch_size}
        if method.needs.unlabeled:
            per_rank_batches["train.unlabeled_batch"] = config.unlabeled_batch
        for key, value in per_rank_batches.items():
            if value % context.world_size:
                raise TrainingError(
                    f"{key}={value} cannot be split evenly over runtime.nproc={context.world_size} ranks "
                    "(the global batch stays the same whatever the number of ranks)"
                )
    if method.needs.unlabeled and (data.unlabeled is None or len(data.unlabeled) == 0):
        raise TrainingError(
            f"method '{config.method}' needs unlabeled images but there are none "
            "(label_ratio 1.0 leaves none: use train.method=supervised for the upper bound)"
        )
    if method.needs.unlabeled and config.unlabeled_batch < 1:
        raise TrainingError(
            f"method '{config.method}' adds a batch of unlabeled images to each labeled batch: "
            f"train.unlabeled_batch must be >= 1, got {config.unlabeled_batch}"
        )
    if len(data.labeled) == 0:
        raise TrainingError("there are no labeled images to train on; raise label_ratio or check the split")
    own_scratch = scratch_dir is None
    if own_scratch and context.distributed:
        raise TrainingError("a multi-rank run needs a shared scratch_dir for its resume state")
    scratch = Path(tempfile.mkdtemp(prefix="busseg-fit-")) if own_scratch else Path(scratch_dir)  # type: ignore[arg-type]
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        return _fit(method, data, config, device, seed, Path(best_path), scratch, logger, progress, desc, context, compile_model)
    finally:
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _load_resume_state(
    state_path: Path,
    method: TrainingMethod,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
    device: torch.device,
    desc: str,
    may_delete: bool = True,
) -> tuple[int, int, float, list[dict[str, float]]] | None:
    """Restore an interrupted run from ``state_path``: (start epoch, best epoch, best score, history).

    A torn, corrupt or foreign state file would otherwise fail every later run until someone
    deleted it by hand; it is discarded with a warning and the stage starts afresh.
    """
    if not state_path.is_file():
        return None
    # Untouched copies: a state that fails half-way through loading must not leak into the fresh run.
    fresh = (copy.deepcopy(method.state_dict()), copy.deepcopy(optimizer.state_dict()), copy.deepcopy(scheduler.state_dict()))
    try:
        state = torch.load(state_path, map_location=device, weights_only=True)
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        resumed = (int(state["epoch"]) + 1, int(state["best_epoch"]), float(state["best_dice"]), list(state["history"]))
        if not (state_path.parent / "best.pt").is_file():
            raise KeyError("best.pt is missing beside it")
    except Exception as exc:  # torch and load_state_dict raise many types for a bad file
        tqdm.write(
            f"warning: {desc}: discarding unusable resume state {state_path} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); starting afresh",
            file=sys.stderr,
        )
        if may_delete:  # rank 0 only: the files are shared by every rank
            for path in (state_path, state_path.parent / "best.pt"):
                path.unlink(missing_ok=True)
        method.load_state_dict(fresh[0])
        optimizer.load_state_dict(fresh[1])
        scheduler.load_state_dict(fresh[2])
        return None
    return resumed


def _fit(
    method: TrainingMethod,
    data: TrainData,
    config: TrainConfig,
    device: torch.device,
    seed: int,
    best_path: Path,
    scratch: Path,
    logger: EpochLogger | None,
    progress: bool,
    desc: str,
    context: DistContext,
    compile_model: bool = False,
) -> FitResult:
    # channels_last: oneDNN's CPU convolutions and tensor cores under bf16 both prefer it
    # (measured here: a ResNet-18 training step at 128 px 10 % faster on the CPU).
    method.to(device, memory_format=torch.channels_last)
    if device.type == "cuda":
        # GPU input pipeline: the (small) datasets live on the GPU; no host-to-device copy a step.
        for dataset in (data.labeled, data.unlabeled, data.val):
            if dataset is not None:
                dataset.to_device(device)
    if compile_model:
        # The bound forward, not the module: state_dict keys (and so checkpoints) stay unchanged.
        method.student.forward = torch.compile(method.student.forward)  # type: ignore[method-assign]
    ddp = None
    if context.distributed:
        # Batch norm over the global batch, so that N ranks follow the one-process run; then
        # DDP (which also broadcasts rank 0's parameters and buffers: every rank starts equal).
        convert_sync_batchnorm(method.student, device)
        # A method's own heads (AURCL's projection) can be left out of the loss by a switch:
        # DDP must then look for unused parameters, at the cost of one graph traversal a step.
        has_heads = any(p.requires_grad and not n.startswith("student.") for n, p in method.named_parameters())
        ddp = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=has_heads
        )
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
    )
    uses_unlabeled = method.needs.unlabeled
    # A full labeled batch every step; the unlabeled batch comes on top (module docstring).
    n_labeled_per_step = config.batch_size
    n_steps = steps_per_epoch(config, data.train_split_size())
    total_steps = config.epochs * n_steps

    state_path, best_scratch = scratch / "last.pt", scratch / "best.pt"
    start_epoch, best_epoch, best_dice, history = 0, -1, -math.inf, []
    context.barrier()  # no rank reads the resume state while rank 0 may still be deleting it
    resumed = _load_resume_state(state_path, method, optimizer, scheduler, device, desc, context.is_main)
    if resumed is not None:
        start_epoch, best_epoch, best_dice, history = resumed
        if logger is not None:  # replay, so the curves of a resumed run are complete
            for logs in history:
                logger.log_epoch(int(logs["epoch"]), logs)
        if context.is_main:
            # Epochs counted from 1, as in the per-epoch lines ("epoch 1/3: loss ..."): start_epoch
            # is the 0-based index of the next epoch, i.e. the number of finished ones.
            tqdm.write(f"{desc}: resuming after epoch {start_epoch}/{config.epochs} from {state_path}")
    progress = progress and context.is_main
    per_rank = context.world_size

    for epoch in range(start_epoch, config.epochs):
        method.train()
        labeled_stream = index_batches(
            len(data.labeled), n_labeled_per_step // per_rank, n_steps, seed=seed * 1000 + epoch * 2,
            rank=context.rank, world_size=context.world_size,
        )
        unlabeled_stream = (
            index_batches(
                len(data.unlabeled), config.unlabeled_batch // per_rank, n_steps, seed=seed * 1000 + epoch * 2 + 1,  # type: ignore[arg-type]
                rank=context.rank, world_size=context.world_size,
            )
            if uses_unlabeled
            else None
        )
        sums: dict[str, float] = {}
        bar = tqdm(range(n_steps), desc=f"{desc} epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for step in bar:
            labeled = {k: v.to(device) for k, v in as_batch(data.labeled, next(labeled_stream)).items()}
            unlabeled = (
                {k: v.to(device) for k, v in as_batch(data.unlabeled, next(unlabeled_stream)).items()}  # type: ignore[arg-type]
                if unlabeled_stream is not None
                else None
            )
            # One seed per (run, step), the same on every rank (each uses its slice of the global
            # batch's random parameters): augmentation is reproducible, resumable, rank-independent.
            method.begin_step(step_seed(seed, epoch * n_steps + step), context.rank, context.world_size)
            try:
                loss, parts = train_step(
                    method, optimizer, labeled, unlabeled, (epoch * n_steps + step) / total_steps, device=device, amp=config.amp,
                    ddp=ddp,
                )
            except NonFiniteLoss as exc:
                kept = f"; the best checkpoint so far is kept at {best_scratch}" if best_scratch.is_file() else ""
                raise TrainingError(
                    f"{desc}: the loss became {exc.value} at epoch {epoch + 1}, step {step + 1} "
                    f"(parts: {exc.parts}); lower the learning rate ({config.lr:g}) or check the data{kept}"
                ) from None
            for key, value in {"loss": loss, **parts}.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix(loss=f"{loss:.3f}")

        # Every rank validates on the whole split: identical scores keep the schedulers in step.
        val_dice = validate(method.student, data.val, device) if data.val is not None and len(data.val) else float("nan")
        score = val_dice if not math.isnan(val_dice) else float(epoch)  # no val set: keep the last epoch
        scheduler.step(score)
        means = context.mean({k: v / n_steps for k, v in sums.items()})  # each rank's losses cover its slice
        logs = {"epoch": float(epoch), **means, "val_dice": val_dice, "lr": optimizer.param_groups[0]["lr"]}
        history.append(logs)
        if logger is not None:
            logger.log_epoch(epoch, logs)
        improved = score > best_dice
        if improved:
            best_epoch, best_dice = epoch, score
        if not context.is_main:
            context.barrier()  # wait until rank 0 has written this epoch's state
            continue
        if improved:
            save_model_checkpoint(best_scratch, method.student, config, epoch=epoch, val_dice=val_dice)
        save_atomic(
            {
                "method": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best_epoch": best_epoch,
                "best_dice": best_dice,
                "history": history,
                "train_config": asdict(config),
            },
            state_path,
        )
        tqdm.write(f"{desc} epoch {epoch + 1}/{config.epochs}: loss {logs['loss']:.4f}, val dice {val_dice:.4f}")
        context.barrier()

    if context.is_main:
        copy_file(best_scratch, best_path)
        # The output is written: the resume state has done its job (it is hundreds of MB).
        for path in (state_path, best_scratch):
            path.unlink(missing_ok=True)
    context.barrier()
    return FitResult(best_epoch=best_epoch, best_val_dice=float(history[best_epoch]["val_dice"]), history=history)
