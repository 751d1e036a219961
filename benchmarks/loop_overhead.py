"""Training throughput of busseg's loop against a bare PyTorch loop doing the same work.

    OMP_NUM_THREADS=1 python benchmarks/loop_overhead.py [--device cpu] [--setting default]
        [--method dual_teacher] [--steps 20] [--reps 3] [--json out.json]
    python -m busseg.launch --nproc 2 --device cpu benchmarks/loop_overhead.py --ddp-only ...

Both loops train the same method on the same batches (the loop's seeded index streams) for
``--steps`` optimizer steps from the same initialisation:

* **busseg**: :func:`busseg.training.loop.fit` for one epoch of ``--steps`` steps, without a
  validation split, the one checkpoint it writes at the end timed separately and subtracted
  (the target is about the per-step overhead: batching, logging, bookkeeping);
* **bare**: ``method.loss`` / ``zero_grad`` / ``backward`` / ``Adam.step`` /
  ``after_optimizer_step`` on batches stacked beforehand, nothing else.

Prints the median seconds per step of each (over ``--reps`` repetitions, alternating), their
ratio (target: busseg <= 1.10x bare), images/s, and on CUDA the peak GPU memory. Under
``busseg.launch --nproc N`` it times the DDP loop on every rank (rank 0 prints); compare with
a 1-process run for the scaling figure (2 ranks on 2 cores: target >= 1.6x the 1-rank
throughput, i.e. the same global batch in <= 0.625x the time).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "stages"))  # stages/_params.py: the CPU-kernel environment, set before torch
import _params  # noqa: E402,F401

import torch  # noqa: E402

from busseg.data.dataset import SegmentationDataset, as_batch  # noqa: E402
from busseg.data.prepare import prepare_dataset  # noqa: E402
from busseg.data.prepared import PreparedDataset  # noqa: E402
from busseg.distributed import destroy_process_group, init_process_group, rank_device  # noqa: E402
from busseg.models import ModelConfig, build_model  # noqa: E402
from busseg.runtime import resolve_device, seed_everything  # noqa: E402
from busseg.training.checkpoint import save_model_checkpoint  # noqa: E402
from busseg.training.config import TrainConfig  # noqa: E402
from busseg.training.loop import TrainData, fit, index_batches  # noqa: E402
from busseg.training.methods import get_method  # noqa: E402

SETTINGS = {
    "default": ModelConfig(encoder="resnet18", image_size=128),
    "paper": ModelConfig(encoder="resnet34", image_size=224),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(method_name: str, model_config: ModelConfig, config: TrainConfig, device: torch.device):
    seed_everything(0)
    student = build_model(model_config)
    cls = get_method(method_name)
    static = build_model(model_config).eval() if cls.requirements(config).static_teacher else None
    return cls(student, config, static_teacher=static).to(device)


def bare_loop(method, config: TrainConfig, data: TrainData, steps: int, device: torch.device) -> float:
    """Seconds per step of the plain PyTorch loop on pre-stacked batches."""
    uses_unlabeled = method.needs.unlabeled
    n_labeled = config.batch_size  # the unlabeled batch comes on top (busseg.training.loop)
    labeled = [as_batch(data.labeled, i) for i in index_batches(len(data.labeled), n_labeled, steps, seed=0)]
    unlabeled = (
        [as_batch(data.unlabeled, i) for i in index_batches(len(data.unlabeled), config.unlabeled_batch, steps, seed=1)]
        if uses_unlabeled else [None] * steps
    )
    labeled = [{k: v.to(device) for k, v in b.items()} for b in labeled]
    unlabeled = [{k: v.to(device) for k, v in b.items()} if b is not None else None for b in unlabeled]
    method.to(memory_format=torch.channels_last)  # as fit() does
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=config.lr)
    method.train()
    synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, _ = method.loss(labeled[step], unlabeled[step], step / steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_optimizer_step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def busseg_loop(method, config: TrainConfig, data: TrainData, steps: int, device: torch.device, context) -> float:
    """Seconds per step of fit() for one epoch, minus its end-of-epoch checkpoint writes."""
    with tempfile.TemporaryDirectory(prefix="loop_overhead_") as tmp:
        scratch = Path(tmp) / "scratch"
        synchronize(device)
        start = time.perf_counter()
        fit(method, TrainData(data.labeled, data.unlabeled, None), config, device=device, seed=0,
            best_path=Path(tmp) / "best.pt", scratch_dir=scratch, progress=False, context=context)
        synchronize(device)
        total = time.perf_counter() - start
        # What fit writes once per epoch (best checkpoint + resume state), timed on its own.
        start = time.perf_counter()
        if context.is_main:
            save_model_checkpoint(Path(tmp) / "probe.pt", method.student, config, epoch=0, val_dice=0.0)
            torch.save({"method": method.state_dict()}, Path(tmp) / "probe_state.pt")
        writes = time.perf_counter() - start
    return (total - writes) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="default")
    parser.add_argument("--method", default="dual_teacher")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=64, help="synthetic images in the training pool")
    parser.add_argument("--ddp-only", action="store_true", help="time only the busseg loop (for runs under busseg.launch)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    context = init_process_group(device)
    device = rank_device(device, context)
    model_config = SETTINGS[args.setting]
    config = TrainConfig(method=args.method, epochs=1, steps_per_epoch=args.steps, batch_size=8, unlabeled_batch=4)

    with tempfile.TemporaryDirectory(prefix="loop_overhead_data_") as tmp:
        root = Path(tmp) / "synthetic"  # each rank generates the same seeded set in its own folder
        prepare_dataset("synthetic", {"kind": "synthetic", "count": args.images, "size": 256, "seed": 0}, root, progress=False)
        prepared = PreparedDataset(root)
        ids = prepared.ids
        data = TrainData(
            labeled=SegmentationDataset(prepared, ids[: len(ids) // 2], model_config.image_size, masks=prepared),
            unlabeled=SegmentationDataset(prepared, ids[len(ids) // 2 :], model_config.image_size),
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        bare_times, loop_times = [], []
        for _ in range(args.reps):
            if not args.ddp_only:
                bare_times.append(bare_loop(build(args.method, model_config, config, device), config, data, args.steps, device))
            loop_times.append(busseg_loop(build(args.method, model_config, config, device), config, data, args.steps, device, context))
    result = {
        "setting": args.setting, "method": args.method, "device": str(device), "ranks": context.world_size,
        "threads": args.threads, "steps": args.steps, "batch": config.batch_size,
        "busseg_s_per_step": statistics.median(loop_times),
        "images_per_s": config.batch_size / statistics.median(loop_times),
    }
    if bare_times:
        result["bare_s_per_step"] = statistics.median(bare_times)
        result["ratio"] = result["busseg_s_per_step"] / result["bare_s_per_step"]
    if device.type == "cuda":
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    if context.is_main:
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    destroy_process_group()


if __name__ == "__main__":
    main()
