"""Running a suite's task queue, serially or on a process pool, where finished tasks may add new ones.

Both suites (:mod:`hessopt.bench.functions.suite`, :mod:`hessopt.bench.nn.suite`) plan tuning tasks
whose results create evaluation tasks; this module owns the one loop that drains such a queue
(:func:`drain`) and the worker pool and progress bar it runs under (:func:`suite_session`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from typing import Any, TypeVar

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hessopt.bench.harness.executors import EXECUTORS, RayExecutor
from hessopt.bench.harness.workers import process_pool, stop_workers

Task = TypeVar("Task")

__all__ = ["check_executor", "drain", "suite_session"]


def check_executor(executor: str, address: str | None) -> None:
    """ValueError naming the problem when ``executor``/``address`` are not a valid pair."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if address is not None and executor != "ray":
        raise ValueError("--address names a Ray cluster: use it with --executor ray")


def _start_method() -> str:
    """Fork where the platform has it (no re-import of torch per worker), else spawn."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _worker_init() -> None:
    """Worker initialiser: one intra-op thread per worker.

    One intra-op thread per worker, as torch's DataLoader workers do: the workers already use the
    cores, and OpenMP's thread pool is not fork-safe (with one thread it is never used).
    """
    torch.set_num_threads(1)


@contextlib.contextmanager
def suite_session(
    workers: int,
    has_work: bool,
    *,
    progress: bool,
    description: str,
    total: int,
    executor: str = "local",
    address: str | None = None,
) -> Iterator[tuple[Executor | None, Progress, TaskID]]:
    """The executor and progress bar of a suite.

    Args:
        workers: processes of the local pool (1: run in this process); with ``executor="ray"`` and no
            ``address``, the CPUs of the local Ray instance (1: all of this machine's).
        has_work: False when nothing will be submitted (no pool is started).
        progress: show the progress bar.
        description: the bar's label.
        total: the bar's number of steps.
        executor: ``"local"`` (a process pool of one-thread workers, forked before the bar starts its
            thread; they end with this process and are killed when the block raises,
            :func:`hessopt.bench.harness.workers.process_pool`) or ``"ray"``
            (:class:`hessopt.bench.harness.executors.RayExecutor`).
        address: the Ray cluster to connect to (``executor="ray"`` only).

    Yields:
        ``(pool, bar, bar_task)``: the executor (None to run in this process), the bar and its task.

    Raises:
        ValueError: for an unknown executor, or an address without Ray.
    """
    check_executor(executor, address)
    with contextlib.ExitStack() as stack:
        pool = None
        if executor == "ray" and has_work:
            ray_pool = RayExecutor(address, num_cpus=None if workers == 1 else workers)
            stack.callback(ray_pool.shutdown)
            pool = ray_pool
        elif workers > 1 and has_work:
            pool = stack.enter_context(process_pool(workers, _start_method(), _worker_init))
            pool.submit(int).result()  # start (fork) the workers before the progress bar starts its thread
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        bar = stack.enter_context(Progress(*columns, disable=not progress, transient=False))
        yield pool, bar, bar.add_task(description, total=total)


def drain(
    queue: deque[Task],
    execute: Callable[[Task], Any],
    on_result: Callable[[Task, Any], Iterable[Task]],
    pool: Executor | None = None,
) -> None:
    """Run every task of ``queue`` and every task that ``on_result(task, result)`` returns.

    Without a pool, tasks run in this process in queue order (new ones appended at the end). With a
    pool, all queued tasks are submitted at once and each result is handled as soon as it is ready
    (``on_result`` always runs in this process, so it may write to a store or a progress bar). If
    anything raises (Ctrl-C included), pending work is cancelled, a process pool's workers are killed,
    and the exception propagates.
    """
    if pool is None:
        while queue:
            task = queue.popleft()
            queue.extend(on_result(task, execute(task)))
        return
    futures = {pool.submit(execute, t): t for t in queue}
    queue.clear()
    try:
        while futures:
            ready, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in ready:
                task = futures.pop(fut)
                for new in on_result(task, fut.result()):
                    futures[pool.submit(execute, new)] = new
    except BaseException:
        if isinstance(pool, ProcessPoolExecutor):
            stop_workers(pool)  # kill the workers: their unfinished runs have nothing to keep
        else:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
