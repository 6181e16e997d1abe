"""Markdown building blocks of the report.

* :func:`fmt`, :func:`table`, :func:`order`: number formatting, pipe tables, name ordering shared by the
  report sections (:mod:`hessopt.bench.report`, :mod:`hessopt.bench.nn.report`).
* :func:`environment_lines`: the table of environments (torch version, threads, CPU) of the commands
  that wrote a store, plus the report's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["environment_lines", "fmt", "order", "table"]


def fmt(value: float | None, spec: str = ".2e") -> str:
    """``value`` formatted with ``spec``; ``None``/NaN -> ``"nan"``, infinities -> ``"inf"``/``"-inf"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown pipe table (lines, ending with a blank line)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def order(found: Iterable[str], preferred: Sequence[str]) -> list[str]:
    """The names of ``found`` in ``preferred``'s order, then the others sorted."""
    found = set(found)
    return [p for p in preferred if p in found] + sorted(found - set(preferred))


_ENV_KEYS = (
    "hostname",
    "torch",
    "torch_threads",
    "workers",
    "worker_threads",
    "cpu",
    "cpu_count",
    "python",
    "platform",
)


def environment_lines(invocations: Sequence[dict[str, Any]], now: dict[str, Any]) -> list[str]:
    """A table of the environment of each invocation, then ``now`` (the process writing the report)."""
    rows = []
    for inv in invocations:
        env = inv["environment"]
        rows.append([inv["started_at"], inv.get("suite", "-"), *(str(env.get(k, "-")) for k in _ENV_KEYS)])
    rows.append(["(this report)", "-", *(str(now.get(k, "-")) for k in _ENV_KEYS)])
    return table(["date (UTC)", "suite", *_ENV_KEYS], rows)
