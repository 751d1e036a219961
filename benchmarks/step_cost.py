"""Cost of one optimizer step of each training method, relative to supervised training.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src nice python benchmarks/step_cost.py [--settings default paper]
        [--reps 7] [--warmup 2] [--threads 1] [--device cpu] [--channels-last] [--breakdown]

One step is :func:`busseg.training.loop.train_step`, the function
:func:`~busseg.training.loop.fit` runs per batch (``method.loss``, ``zero_grad``,
``backward``, ``Adam.step`` and ``method.after_optimizer_step``), timed as is.
Compared, at the same labeled batch of 8 images (the loop adds the unlabeled batch on top):

* ``supervised``: 8 labeled images;
* ``supervised@12``: 12 labeled images, the same number of student images as an SSL step
  (the reference of issue 11's target);
* ``mean_teacher``: 8 labeled + 4 unlabeled, EMA teacher;
* ``dual_teacher``: 8 + 4, static + EMA teachers, UEWF, AURCL (the paper's full method);
* every other registered method (``bcp``, ``unimatch``, ...) with its own batches.

Settings: ``default`` (params.yaml: resnet18, 128 px) and ``paper`` (resnet34, 224 px).
Methods are timed round-robin (one step of each per repetition), so load from other
processes on a shared machine hits them alike; the median over repetitions is printed
with the ratio to supervised. ``--breakdown`` adds the median time of each part of a
dual_teacher step. Target (issue 11): a dual_teacher step <= 1.5x a supervised step on the
same number of student images (``supervised@12``); the extra cost is the two teacher forwards.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from busseg.models import ModelConfig, build_model
from busseg.ssl import ema_update, freeze, uewf
from busseg.training.augment import Augmenter
from busseg.training.config import TrainConfig
from busseg.training.loop import train_step
from busseg.training.methods import METHODS, DualTeacher
from busseg.training.methods.base import teacher_probabilities

#: The supervised step on as many student images as an SSL step (labeled + unlabeled).
SAME_IMAGES = "supervised@12"

SETTINGS = {
    "default": ModelConfig(encoder="resnet18", image_size=128),
    "paper": ModelConfig(encoder="resnet34", image_size=224),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["default", "paper"])
    parser.add_argument("--reps", type=int, default=7, help="timed steps per method (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels-last", action="store_true", help="run the networks in channels_last memory format")
    parser.add_argument("--breakdown", action="store_true", help="also time the parts of a dual_teacher step")
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def blob_masks(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random elliptic lesions (realistic loss values; the content does not change the cost)."""
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    centre = torch.rand(n, 2, generator=generator) - 0.5
    radius = 0.2 + 0.3 * torch.rand(n, 2, generator=generator)
    inside = ((yy - centre[:, :1, None]) / radius[:, :1, None]) ** 2 + ((xx - centre[:, 1:, None]) / radius[:, 1:, None]) ** 2
    return (inside <= 1).float()[:, None]


def make_batches(size: int, n_labeled: int, n_unlabeled: int, device: torch.device, memory_format: torch.memory_format) -> tuple[dict, dict | None]:
    g = torch.Generator().manual_seed(0)
    labeled = {"image": torch.rand(n_labeled, 1, size, size, generator=g), "mask": blob_masks(n_labeled, size, g)}
    unlabeled = {"image": torch.rand(n_unlabeled, 1, size, size, generator=g)} if n_unlabeled else None
    to = lambda batch: {k: v.to(device, memory_format=memory_format) for k, v in batch.items()}  # noqa: E731
    return to(labeled), to(unlabeled) if unlabeled else None


def make_step(name: str, model_config: ModelConfig, config: TrainConfig, device: torch.device, memory_format: torch.memory_format) -> Callable[[], None]:
    """A closure running one full optimizer step of method ``name``."""
    torch.manual_seed(0)
    config = replace(config, method=name)
    needs = METHODS[name].requirements(config)
    student = build_model(model_config).to(memory_format=memory_format)
    static = freeze(build_model(model_config).to(memory_format=memory_format)) if needs.static_teacher else None
    method = METHODS[name](student, config, static_teacher=static).to(device)
    method.train()
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=config.lr)
    n_unlabeled = config.unlabeled_batch if needs.unlabeled else 0
    labeled, unlabeled = make_batches(model_config.image_size, config.batch_size, n_unlabeled, device, memory_format)

    def step() -> None:
        train_step(method, optimizer, labeled, unlabeled, 0.5, device=device, amp=config.amp)

    return step


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def step_costs(model_config: ModelConfig, config: TrainConfig, args: argparse.Namespace, device: torch.device, memory_format: torch.memory_format) -> dict[str, float]:
    """Median seconds per step of every method, timed round-robin."""
    steps = {name: make_step(name, model_config, config, device, memory_format) for name in METHODS}
    same_images = replace(config, batch_size=config.batch_size + config.unlabeled_batch)
    steps[SAME_IMAGES] = make_step("supervised", model_config, same_images, device, memory_format)
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.reps):
        for name, step in steps.items():
            times[name].append(timed(step, device))
    return {name: statistics.median(values) for name, values in times.items()}


def dual_teacher_breakdown(model_config: ModelConfig, config: TrainConfig, args: argparse.Namespace, device: torch.device, memory_format: torch.memory_format) -> dict[str, float]:
    """Median seconds of each part of a dual_teacher step, timed separately."""
    torch.manual_seed(0)
    static = freeze(build_model(model_config).to(memory_format=memory_format))
    method = DualTeacher(build_model(model_config).to(memory_format=memory_format), config, static_teacher=static).to(device)
    method.train()
    labeled, unlabeled = make_batches(model_config.image_size, config.batch_size, config.unlabeled_batch, device, memory_format)
    x_u = unlabeled["image"]  # type: ignore[index]
    p = teacher_probabilities(static, x_u)

    def student_forward_backward() -> None:
        logits_l, logits_u, features_u = method.student_outputs(labeled, unlabeled)  # type: ignore[arg-type]
        (logits_l.sum() + logits_u.sum() + 0 * features_u.sum()).backward()

    def aurcl_forward_backward() -> None:
        features = torch.randn(len(x_u), method.student.feature_channels, *x_u.shape[-2:], device=device, requires_grad=True)
        method.aurcl(features, p).backward()  # type: ignore[misc]

    optimizer = torch.optim.Adam([q for q in method.parameters() if q.requires_grad], lr=1e-3)
    student_forward_backward()  # gradients for the optimizer step to apply
    pool = torch.randint(0, 256, (256, model_config.image_size, model_config.image_size), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    augmenter = Augmenter("strong")

    def batch_assembly() -> None:
        # What as_batch does for an in-memory dataset: index uint8 images, scale to float.
        index = torch.randint(0, len(pool), (config.batch_size + config.unlabeled_batch,))
        pool[index].float().div_(255.0).unsqueeze(1).to(device)

    parts = {
        "batch assembly (12)": batch_assembly,
        "strong view (4, augment: strong)": lambda: augmenter.student_view(x_u, generator),
        "weak labeled view (8)": lambda: augmenter.labeled(labeled, generator),  # type: ignore[arg-type]
        "student fwd+bwd (12)": student_forward_backward,
        "static teacher fwd (4)": lambda: teacher_probabilities(static, x_u),
        "EMA teacher fwd (4)": lambda: teacher_probabilities(method.ema_teacher, x_u),  # type: ignore[arg-type]
        "UEWF": lambda: uewf(p, p.flip(-1), kernel=config.uewf_kernel),
        "AURCL fwd+bwd": aurcl_forward_backward,
        "optimizer step (Adam)": optimizer.step,
        "EMA update": lambda: ema_update(method.ema_teacher, method.student, method.ema_decay),  # type: ignore[arg-type]
    }
    out = {}
    for name, fn in parts.items():
        for _ in range(args.warmup):
            fn()
        out[name] = statistics.median(timed(fn, device) for _ in range(args.reps))
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    config = TrainConfig(method="dual_teacher", batch_size=8, unlabeled_batch=4)
    print(f"device {device}, {args.threads} thread(s), channels_last={args.channels_last}, "
          f"{args.reps} timed steps per method after {args.warmup} warm-up steps; torch {torch.__version__}")
    for setting in args.settings:
        model_config = SETTINGS[setting]
        costs = step_costs(model_config, config, args, device, memory_format)
        print(f"\n{setting}: {model_config.encoder}, {model_config.image_size} px, batch 8 (SSL: 8 labeled + 4 unlabeled)")
        for name, seconds in costs.items():
            print(f"  {name:<13} {1000 * seconds:9.1f} ms/step  {seconds / costs['supervised']:5.2f}x supervised"
                  f"  {seconds / costs[SAME_IMAGES]:5.2f}x {SAME_IMAGES}")
        if args.breakdown:
            print("  dual_teacher parts:")
            for name, seconds in dual_teacher_breakdown(model_config, config, args, device, memory_format).items():
                print(f"    {name:<34} {1000 * seconds:9.1f} ms")


if __name__ == "__main__":
    main()
