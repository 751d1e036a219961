"""The CUDA paths (bf16 autocast, datasets on the GPU, channels_last, NCCL DDP).

Marked ``cuda`` and skipped without a GPU: ``benchmarks/gpu_check.sh`` runs them on a GPU machine.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from busseg.data.dataset import as_batch
from busseg.models import build_model
from busseg.runtime import seed_everything
from busseg.training.checkpoint import load_model, read_checkpoint
from busseg.training.config import TrainConfig
from busseg.training.loop import fit
from busseg.training.methods import get_method

from training.test_loop import tiny_data  # tests/ is on sys.path (pytest rootdir-relative imports)

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


@pytest.mark.parametrize("augment", ["none", "strong"])
@pytest.mark.parametrize("method_name", ["supervised", "mean_teacher", "dual_teacher", "bcp", "unimatch"])
def test_fit_with_bf16_autocast_on_cuda(tiny_prepared: Path, tiny_model_config, tmp_path: Path, method_name: str, augment: str) -> None:
    config = TrainConfig(method=method_name, epochs=2, steps_per_epoch=3, batch_size=4, unlabeled_batch=2, amp=True,
                         augment=augment, aurcl_variant="prototype" if augment == "strong" else "paper")
    data = tiny_data(tiny_prepared)
    if method_name != "supervised":
        data.unlabeled = data.labeled
    seed_everything(0)
    cls = get_method(method_name)
    static = build_model(tiny_model_config).eval() if cls.requirements(config).static_teacher else None
    result = fit(cls(build_model(tiny_model_config), config, static_teacher=static), data, config, device=CUDA, seed=0,
                 best_path=tmp_path / "best.pt", progress=False)
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in result.history)
    # The checkpoint is device-free: it loads on the CPU.
    assert load_model(tmp_path / "best.pt", "cpu")(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    assert read_checkpoint(tmp_path / "best.pt")["model"]


def test_batches_from_a_dataset_on_the_gpu_equal_cpu_batches(tiny_prepared: Path) -> None:
    data = tiny_data(tiny_prepared)
    cpu = as_batch(data.labeled, [3, 1, 2])
    data.labeled.to_device(CUDA)
    gpu = as_batch(data.labeled, [3, 1, 2])
    assert gpu["image"].device.type == "cuda"
    for key in ("image", "mask"):
        assert torch.equal(gpu[key].cpu(), cpu[key])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_rank_nccl_launch(tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(
        "import torch, torch.distributed as dist\n"
        "from busseg.distributed import init_process_group, rank_device\n"
        "context = init_process_group(torch.device('cuda'))\n"
        "t = torch.ones(1, device=rank_device(torch.device('cuda'), context))\n"
        "dist.all_reduce(t)\n"
        "assert float(t) == 2.0\n"
    )
    proc = subprocess.run([sys.executable, "-m", "busseg.launch", "--nproc", "2", "--device", "cuda", str(script)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
