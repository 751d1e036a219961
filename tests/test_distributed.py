"""DDP pieces on CPU: batch norm over the global batch, the launcher's checks and errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from busseg.distributed import CpuSyncBatchNorm, DistContext, convert_sync_batchnorm
from busseg.launch import check_nproc
from busseg.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _sync_bn_worker(rank: int, world: int, init_file: str, x: torch.Tensor, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)), torch.device("cpu"))
    net = nn.parallel.DistributedDataParallel(net)
    part = x.chunk(world)[rank]
    loss = net(part).square().mean()
    loss.backward()
    grads = [p.grad for p in net.module.parameters()]
    torch.save({"grads": grads, "running_mean": net.module[1].running_mean, "running_var": net.module[1].running_var},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_over_two_ranks_equals_one_process_on_the_global_batch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    x = torch.randn(8, 1, 10, 10)
    mp.start_processes(_sync_bn_worker, args=(2, str(tmp_path / "init"), x, str(tmp_path)), nprocs=2, start_method="spawn")
    torch.manual_seed(0)
    single = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    single(x).square().mean().backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for a, b in zip(got["grads"], [p.grad for p in single.parameters()]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got["running_mean"], single[1].running_mean, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got["running_var"], single[1].running_var, rtol=1e-4, atol=1e-6)


def test_converted_network_keeps_its_weights_and_state_dict_keys() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with torch.no_grad():
        net[1].weight.fill_(2.0)
        net[1].running_mean.fill_(0.5)
    keys = set(net.state_dict())
    converted = convert_sync_batchnorm(net, torch.device("cpu"))
    assert isinstance(converted[1], CpuSyncBatchNorm)
    assert set(converted.state_dict()) == keys
    assert float(converted[1].weight[0].detach()) == 2.0 and float(converted[1].running_mean[0]) == 0.5


def test_one_process_context_is_main_and_means_are_identity() -> None:
    context = DistContext()
    assert context.is_main and not context.distributed
    assert context.mean({"loss": 1.5}) == {"loss": 1.5}
    context.barrier()


@pytest.mark.parametrize("bad", [0, -1, True, 10_000])
def test_bad_nproc_names_the_parameter(bad) -> None:
    with pytest.raises(ConfigError, match="runtime.nproc"):
        check_nproc(bad, "cpu")


def test_launcher_reports_a_bad_nproc_as_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "busseg.launch", "--nproc", "abc", "--device", "cpu", "x.py"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith("error: parameter 'runtime.nproc'")
    assert "Traceback" not in proc.stderr


def test_launcher_names_the_rank_that_died(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text(
        "import os, sys\n"
        "rank = int(os.environ['RANK'])\n"
        "print(f'rank {rank} of {os.environ[\"WORLD_SIZE\"]}')\n"
        "sys.exit(3 if rank == 1 else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-m", "busseg.launch", "--nproc", "2", "--device", "cpu", str(script)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "rank 1 (exit code 3) failed" in proc.stderr
    assert "Traceback" not in proc.stderr
