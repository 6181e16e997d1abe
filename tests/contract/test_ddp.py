"""DistributedDataParallel equivalence (DESIGN.md, "Scaling out"): marker ``ddp``.

For every case with ``supports_ddp``: 2 processes (gloo, CPU, FileStore rendezvous in tmp_path), each with
half of the batch, reach after ``STEPS`` steps the same parameters (float64, to the case's ``ddp_atol``) as
one process on the whole batch with the mean loss, and both ranks hold identical parameters. One pair of
processes runs all cases (starting processes costs time); the comparisons are reported per case.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.multiprocessing as mp

from .cases import CASES, case_ids
from .ddp_worker import WORLD_SIZE, train_rank
from .harness import make_data, make_mlp, run

pytestmark = [
    pytest.mark.ddp,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available"),
]

STEPS = 4
# "fork" saves each child the seconds of re-importing torch; the children run single-threaded
# (ddp_worker.train_rank), as torch's DataLoader workers do, so the parent's OpenMP pool is never needed.
START_METHOD = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
# A healthy run takes seconds; a hang (ranks waiting on each other) fails instead of blocking the suite.
JOIN_TIMEOUT_S = 60
DDP_CASES = [c for c in CASES if c.supports_ddp]


def _single_process(case) -> list[torch.Tensor]:
    model = make_mlp(torch.float64)
    X, Y = make_data(torch.float64)
    opt, closure = case.setup(model, X, Y)
    run(opt, closure, STEPS)
    return [p.detach().clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[list[torch.Tensor], list[list[torch.Tensor]]]]:
    """``{case name: (single-process parameters, [rank 0 parameters, rank 1 parameters])}``.

    The single-process runs come first: they pay, in this process, for torch's lazy imports on the first
    optimizer construction (seconds), which the forked ranks then inherit.
    """
    reference = {c.name: _single_process(c) for c in DDP_CASES}
    tmp = tmp_path_factory.mktemp("ddp")
    names = [c.name for c in DDP_CASES]
    ranks = mp.start_processes(
        train_rank,
        args=(str(tmp / "filestore"), names, STEPS, str(tmp)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method=START_METHOD,
    )
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not ranks.join(timeout=0.5):  # re-raises a rank's exception
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail(f"the DDP ranks did not finish within {JOIN_TIMEOUT_S} s (hang in a collective?)")
    return {
        name: (
            reference[name],
            [torch.load(tmp / f"{i}-rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)],
        )
        for i, name in enumerate(names)
    }


@pytest.mark.parametrize("case", DDP_CASES, ids=case_ids(DDP_CASES))
def test_ddp_matches_single_process_on_full_batch(case, results) -> None:
    single, (rank0, rank1) = results[case.name]
    start = list(make_mlp(torch.float64).parameters())
    for i, (p0, p1, q, s) in enumerate(zip(rank0, rank1, single, start, strict=True)):
        assert torch.equal(p0, p1), f"parameter {i} differs between ranks"
        assert not torch.equal(q, s), f"parameter {i} did not move in the single-process run"
        torch.testing.assert_close(
            p0, q, rtol=0, atol=case.ddp_atol, msg=lambda m, i=i: f"parameter {i}, DDP vs one process: {m}"
        )
