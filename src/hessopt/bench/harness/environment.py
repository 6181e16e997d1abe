"""Where a run happens: the host, torch, the CPU and Python, recorded with every run and invocation."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
from typing import Any

__all__ = ["environment", "torch_version"]


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
