"""Running a suite's task queue, serially or on a process pool, where finished tasks may add new ones.

Both suites (:mod:`hessopt.bench.functions_suite`, :mod:`hessopt.bench.nn_suite`) plan tuning tasks
whose results create evaluation tasks; this module owns the one loop that drains such a queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Executor, wait
from typing import Any, TypeVar

Task = TypeVar("Task")

__all__ = ["drain"]


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
    anything raises, pending work is cancelled and the exception propagates.
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
        pool.shutdown(wait=False, cancel_futures=True)
        raise
