"""The per-process body of the DistributedDataParallel check (``test_ddp.py``), in an importable module so
that ``torch.multiprocessing`` can also start it with "spawn" (pickled by reference).

Each rank trains the same seeded MLP, wrapped in DDP, on its half of the batch with the *mean* loss; DDP
averages the gradients, so they equal the full-batch mean gradient. The closure returns the rank's *local*
loss, as a user's closure would: optimizers that branch on loss values must average it across processes
themselves (``HessoptOptimizer.global_loss``), or the ranks take different line-search decisions.
"""

from __future__ import annotations

import gc
from datetime import timedelta
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from helpers import gloo_group

from .cases import CASES
from .harness import make_data, make_mlp

WORLD_SIZE = 2
# Ranks whose optimizers take different decisions (e.g. a line search on the local loss) call the closure,
# hence DDP's all-reduce, a different number of times and would wait on each other forever: the collective
# timeout turns that into an error.
COLLECTIVE_TIMEOUT = timedelta(seconds=20)


def rank_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s contiguous half of the float64 batch of :func:`harness.make_data`."""
    X, Y = make_data(torch.float64)
    half = X.shape[0] // WORLD_SIZE
    return X[rank * half : (rank + 1) * half], Y[rank * half : (rank + 1) * half]


def _train_case(case, X: torch.Tensor, Y: torch.Tensor, steps: int) -> list[torch.Tensor]:
    model = make_mlp(torch.float64)
    ddp = DistributedDataParallel(model)
    # the closure's loss is the rank's local mean (DDP averages the gradients, not the loss)
    opt, closure = case.setup(ddp, X, Y, list(ddp.parameters()))
    for _ in range(steps):
        closure.step()
    return [p.detach().clone() for p in model.parameters()]


def train_rank(rank: int, init_file: str, case_names: list[str], steps: int, out_dir: str) -> None:
    """Run ``steps`` steps of every named case under DDP; save each rank's final parameters."""
    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP thread pool
    with gloo_group(rank, WORLD_SIZE, init_file, COLLECTIVE_TIMEOUT):
        X, Y = rank_batch(rank)
        by_name = {c.name: c for c in CASES}
        for i, name in enumerate(case_names):
            params = _train_case(by_name[name], X, Y, steps)
            torch.save(params, Path(out_dir) / f"{i}-rank{rank}.pt")
            # Free the DDP model now, while the process group is alive: if a DDP reducer held the group's last
            # reference, its destructor would hold the GIL while joining gloo threads that need the GIL
            # (pytorch/pytorch#56297) and the process would hang.
            gc.collect()
