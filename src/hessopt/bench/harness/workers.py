"""Worker processes that never outlive the command that started them.

A suite's worker pool (:mod:`hessopt.bench.harness.scheduling`) and the lattice study's
(:mod:`hessopt.bench.studies.lattice`) come from :func:`process_pool`. Each worker

* ends when its parent process ends, however it ends (``kill -9`` included): on Linux the kernel
  sends it ``SIGKILL`` when the parent dies (``prctl(PR_SET_PDEATHSIG)``), and on every platform a
  daemon thread polls ``os.getppid()`` every :data:`POLL_SECONDS` and exits the worker once it changes;
* ignores ``SIGINT`` (a Ctrl-C reaches the whole process group: the parent handles it) and takes
  ``SIGTERM``'s default action (a parent's Python handler is inherited by a forked worker);

and when the block under :func:`process_pool` raises (an error, Ctrl-C, ``SIGTERM`` turned into an
exception by the CLI), the queued work is cancelled and the workers are killed at once rather than
waited for: only the parent writes results, so a worker's unfinished run has nothing to keep.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["POLL_SECONDS", "die_with_parent", "process_pool", "stop_workers"]

POLL_SECONDS = 0.5
"""How often a worker's watcher thread checks that its parent is still alive."""

_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> None:
    """Linux: ask the kernel to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watcher thread still covers it


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(POLL_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process end when process ``parent_pid``, its parent, ends.

    Call it first thing in a worker (:func:`process_pool` does). Also resets the signal handlers a
    worker must not inherit: ``SIGINT`` is ignored, ``SIGTERM`` gets its default action.

    Args:
        parent_pid: the pid of the process that created the pool.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="hessopt-parent-watch", daemon=True).start()


def _initialize(parent_pid: int, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's queued work and kill its worker processes now (their running tasks are lost).

    Args:
        pool: the pool to stop.
    """
    # ProcessPoolExecutor.kill_workers() exists from Python 3.14 only; before, the processes are
    # reachable through the executor's private table, which shutdown() clears: read it first
    kill = getattr(pool, "kill_workers", None)
    if kill is not None:
        kill()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            proc.kill()


@contextlib.contextmanager
def process_pool(
    workers: int,
    start_method: str,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers die with this process and are killed if the block raises.

    Args:
        workers: the number of worker processes.
        start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"`` (see :mod:`multiprocessing`).
        initializer: called in each worker after the parent-death guard (must pickle for spawn).
        initargs: its arguments.

    Yields:
        The pool; on a normal exit it is shut down after its work is done.
    """
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(start_method),
        initializer=_initialize,
        initargs=(os.getpid(), initializer, initargs),
    )
    try:
        yield pool
    except BaseException:
        stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
