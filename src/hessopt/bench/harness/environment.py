"""Where a run happens: the host, torch, the CPU and Python, recorded with every run and invocation."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
from typing import Any

__all__ = ["environment", "invocation_environment", "torch_version"]


def torch_version() -> str:
    """The installed torch version, or ``"unknown"``."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Where a run happens: host, torch version and threads, CPU model and count, Python, platform.

    Returns:
        A JSON-serialisable dict. torch is imported here (only here) to read its thread count.
    """
    import torch

    return {
        "hostname": socket.gethostname(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def invocation_environment(workers: int) -> dict[str, Any]:
    """The environment of a suite's invocation: :func:`environment` plus its worker setting.

    Args:
        workers: the invocation's worker processes (1: runs in the invoking process).

    Returns:
        :func:`environment` with ``workers``, ``worker_threads`` (torch threads per run: 1 in worker
        processes) and, when ``workers`` exceeds the CPU count, a ``warning`` saying so (the runs then
        compete for cores and their timings are slower; the report repeats it).
    """
    import torch

    env = {
        **environment(),
        "workers": workers,
        "worker_threads": 1 if workers > 1 else torch.get_num_threads(),
    }
    cpus = os.cpu_count() or 1
    if workers > cpus:
        env["warning"] = f"{workers} workers on {cpus} CPUs: runs competed for cores, timings are slower"
    return env
