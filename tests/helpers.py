"""Helpers shared by the test modules: processes seen through /proc, waiting, a tiny NN suite, DDP groups."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from hessopt.bench.nn.suites import NNSuite
from hessopt.problems.registry import Budget


def process_state(pid: int) -> str | None:
    """The one-letter state of process ``pid`` (``"R"``, ``"S"``, ``"Z"``, ...), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    return process_state(pid) not in (None, "Z")


def children(pid: int) -> list[int]:
    """The running (non-zombie) processes whose parent is ``pid``."""
    out = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` every 50 ms until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def tiny_suite(
    name: str = "nn-test",
    problems: tuple[str, ...] = ("quadratic_deep",),
    methods: tuple[str, ...] = ("momentum", "lbfgs"),
    *,
    steps: int = 5,
    evaluations: int = 1,
    **fields: Any,
) -> NNSuite:
    """A quick-grid NN suite of a few steps: evaluation seeds 0, 1 and tuning seed 100 unless given."""
    return NNSuite(
        name=name,
        problems=problems,
        methods=methods,
        grid="quick",
        evaluation_seeds=fields.pop("evaluation_seeds", (0, 1)),
        tuning_seeds=fields.pop("tuning_seeds", (100,)),
        budget=Budget(steps=steps),
        evaluations=evaluations,
        **fields,
    )


@contextmanager
def gloo_group(rank: int, world_size: int, init_file: str, timeout: timedelta) -> Iterator[None]:
    """A gloo process group for one rank of a DDP test; on success every rank meets before it is destroyed.

    Garbage is collected first, so that no DDP reducer outlives the group (pytorch/pytorch#56297), and the
    barrier keeps a rank from tearing the group down while another still uses it.
    """
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=timeout
    )
    try:
        yield
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
