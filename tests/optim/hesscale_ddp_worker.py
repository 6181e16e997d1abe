"""Per-rank body of the AdaHesScale DistributedDataParallel test (importable, for torch.multiprocessing)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from helpers import gloo_group

WORLD_SIZE = 2
STEPS = 4


def make_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded tanh MLP (HesScale's second-order terms active) and a batch of 8 regression examples."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    return model, x, y


def train(
    model: nn.Module, forward: nn.Module, x: torch.Tensor, y: torch.Tensor, make_opt
) -> list[torch.Tensor]:
    """``STEPS`` steps of ``make_opt(params)`` with the mean squared error; final parameters."""
    loss_fn = nn.MSELoss()
    opt = make_opt(model.parameters())
    opt.attach(forward, loss_fn)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_fn(forward(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def train_rank(rank: int, init_file: str, out_dir: str, kind: str) -> None:
    """One rank: half of the batch, DDP-wrapped model, save the final parameters."""
    from hessopt.optim.hesscale import AdaHesScale, AdaHesScaleGN

    make = AdaHesScale if kind == "hesscale" else AdaHesScaleGN
    torch.set_num_threads(1)
    with gloo_group(rank, WORLD_SIZE, init_file, timedelta(seconds=30)):
        model, x, y = make_problem()
        half = x.shape[0] // WORLD_SIZE
        ddp = DistributedDataParallel(model)
        params = train(model, ddp, x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half],
                       lambda ps: make(ps, lr=0.05))  # fmt: skip
        torch.save(params, Path(out_dir) / f"{kind}-rank{rank}.pt")
        del ddp
