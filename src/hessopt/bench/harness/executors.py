"""Executors that run a suite's tasks: the local process pool (default) and Ray.

A suite is a queue of independent runs (a problem, a configuration, a seed); :func:`hessopt.bench.harness.
scheduling.drain` submits them to a :class:`concurrent.futures.Executor` and handles every result in the
driver process, which alone writes the results store. So resume, tuning-before-evaluation order and "every
run exactly once" hold whichever executor computes the runs.

:class:`RayExecutor` runs each submitted call as one Ray task (one CPU, one torch thread) on a local Ray
instance or on a cluster (``address``): ``hessopt bench nn --suite full --executor ray --address auto``.
Ray is optional (``pip install hessopt[ray]``).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["EXECUTORS", "RayExecutor"]

EXECUTORS = ("local", "ray")
"""``"local"``: a process pool of ``--workers`` processes on this machine; ``"ray"``: Ray tasks."""

WORKER_RETRIES = 2
"""Ray re-runs a task this many times when its worker process dies (never for a run that raises)."""


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run one task in a Ray worker with one intra-op thread (as the local pool's workers do)."""
    import torch

    torch.set_num_threads(1)
    return fn(*args, **kwargs)


class RayExecutor(concurrent.futures.Executor):
    """A :class:`concurrent.futures.Executor` whose calls run as Ray tasks.

    Args:
        address: a running Ray cluster (``"auto"``, ``"ray://host:10001"``, ...); None starts a local
            instance.
        num_cpus: CPUs of a local instance (None: all of this machine's); ignored with ``address``.

    Raises:
        RuntimeError: when Ray is not installed (with the command that installs it).

    On a cluster the ``hessopt`` package of the driver is shipped to the workers (Ray's ``py_modules``
    runtime environment), so only torch (and the data sets the suite needs) must be installed there. Each
    task asks for one CPU. A run that raises is stored as ``failed`` and re-run by the next invocation, as
    with the local pool; a task whose worker process dies (a node lost, or a worker still being killed
    after an interrupted suite on the same Ray instance) is retried by Ray up to :data:`WORKER_RETRIES`
    times: runs are deterministic and only the driver writes the store, so a retry cannot duplicate one.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError(
                "the Ray executor needs the ray package: pip install 'hessopt[ray]' (or pip install ray)"
            ) from exc
        import hessopt

        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            options: dict[str, Any] = {"include_dashboard": False, "configure_logging": False}
            if address is None:
                options["num_cpus"] = num_cpus
            else:
                options["runtime_env"] = {"py_modules": [hessopt]}
            ray.init(address=address, **options)
        self._remote = ray.remote(num_cpus=1, max_retries=WORKER_RETRIES)(_call)
        self._pending: set[Any] = set()
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Run ``fn(*args, **kwargs)`` as one Ray task.

        Args:
            fn: an importable (module-level) function.
            *args: its positional arguments (pickled to the worker).
            **kwargs: its keyword arguments.

        Returns:
            A future of its result.
        """
        ref = self._remote.remote(fn, args, kwargs)
        with self._lock:
            self._pending.add(ref)
        future = ref.future()
        future.add_done_callback(lambda _f, r=ref: self._forget(r))
        return future

    def _forget(self, ref: Any) -> None:
        with self._lock:
            self._pending.discard(ref)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Cancel the pending tasks (``cancel_futures``) and stop the local Ray instance if this started it.

        Args:
            wait: accepted for the Executor interface; Ray tasks are not awaited on shutdown.
            cancel_futures: cancel every task not finished yet.
        """
        if cancel_futures:
            with self._lock:
                pending = list(self._pending)
            for ref in pending:
                self._ray.cancel(ref, force=True)
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
