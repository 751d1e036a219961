"""Multi-process training with PyTorch DDP: the process group, rank rules, CPU sync batch norm.

Ranks are started by torchrun (``busseg.launch``, which dvc.yaml calls with
``runtime.nproc``); each rank finds its place in the environment torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``). The rules busseg follows:

* the global batch and the optimizer-step budget do not depend on the number of ranks:
  each rank takes a disjoint ``1 / world_size`` slice of every global batch
  (:func:`busseg.training.loop.index_batches`), DDP averages the gradients, and batch norm
  statistics are computed over the global batch (``SyncBatchNorm``), so an N-rank run
  follows the 1-rank run's loss history up to float rounding;
* only rank 0 writes: outputs, resume state, logs and checkpoints; the others wait at a
  barrier, so a resumed run reads one consistent state;
* gloo on CPU, NCCL on CUDA (one GPU per rank, ``cuda:LOCAL_RANK``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op in a one-process run)."""
        if self.distributed:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each scalar across ranks (for logging losses computed on each rank's slice)."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(tensor)
        return {k: float(v) / self.world_size for k, v in zip(keys, tensor.tolist())}


def context_from_env() -> DistContext:
    """The rank, world size and local rank torchrun put in the environment (1 process without it)."""
    return DistContext(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_process_group(device: torch.device) -> DistContext:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA); 1 process: nothing to do.

    On CUDA each rank uses ``cuda:LOCAL_RANK``; the caller should move its work there
    (:func:`rank_device`).
    """
    context = context_from_env()
    if context.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(context.local_rank)
        dist.init_process_group(backend=backend)
    return context


def rank_device(device: torch.device, context: DistContext) -> torch.device:
    """``cuda:LOCAL_RANK`` for a CUDA run with several ranks, else ``device`` unchanged."""
    if device.type == "cuda" and context.distributed:
        return torch.device("cuda", context.local_rank)
    return device


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _GlobalMoments(torch.autograd.Function):
    """Sum a tensor over ranks, with the gradient summed over ranks too (all_reduce is linear)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm over the global batch of all ranks, for CPU (gloo) runs.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors; this is the same computation in plain
    autograd: per-channel sums of x and x^2 are all-reduced, so every rank normalises with
    the global batch's mean and variance and the running statistics match a one-process
    run. A subclass of ``BatchNorm2d`` with the same parameters and buffers, so checkpoints
    load into the ordinary network. In eval mode (or with one rank) it is ``BatchNorm2d``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torch's name
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        dims = (0, 2, 3)
        count = torch.tensor([input.numel() / input.shape[1]], dtype=input.dtype)
        moments = torch.cat([input.sum(dims), (input * input).sum(dims), count])
        moments = _GlobalMoments.apply(moments)
        channels = input.shape[1]
        n = moments[-1]
        mean = moments[:channels] / n
        var = moments[channels : 2 * channels] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (n.detach() / (n.detach() - 1))
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = (1, channels, 1, 1)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm over the global batch: ``nn.SyncBatchNorm`` on CUDA, :class:`CpuSyncBatchNorm` on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CpuSyncBatchNorm):
        replacement = CpuSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        if module.affine:
            replacement.weight.requires_grad_(module.weight.requires_grad)
            replacement.bias.requires_grad_(module.bias.requires_grad)
        return replacement
    for name, child in module.named_children():
        setattr(module, name, _convert_cpu(child))
    return module
