"""Per-process body of the DistributedDataParallel check of ``test_hessian_free_ddp.py`` (importable, so
``torch.multiprocessing`` can start it by reference)."""

from __future__ import annotations

from datetime import timedelta

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from helpers import gloo_group
from hessopt.optim.hessian_free import BlockDiagonalHessianFree

WORLD_SIZE = 2
STEPS = 3


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(torch.float64)


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(16, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (16,), generator=gen))
        for _ in range(STEPS)
    ]


def train(model: nn.Module, batches, rank: int | None = None) -> list[torch.Tensor]:
    """``STEPS`` steps with the curvature batch equal to the (local) batch; returns the parameters."""
    net = model if rank is None else DistributedDataParallel(model)
    opt = BlockDiagonalHessianFree(
        list(net.parameters()), model=net, loss_fn=nn.CrossEntropyLoss(), curvature_fraction=1.0
    )
    for x, y in batches:
        if rank is not None:
            half = x.shape[0] // WORLD_SIZE
            x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        opt.step(x, y)
    return [p.detach().clone() for p in model.parameters()]


def run_rank(rank: int, init_file: str, out_dir: str) -> None:
    """Train on this rank's half of every batch under DDP; save the parameters."""
    torch.set_num_threads(1)
    with gloo_group(rank, WORLD_SIZE, init_file, timedelta(seconds=30)):
        torch.save(train(make_model(), make_batches(), rank), f"{out_dir}/rank{rank}.pt")
