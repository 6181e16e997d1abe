"""Statistics shared by the suites, studies and reports."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["FLOOR", "geometric_mean"]

FLOOR = 1e-300
"""Values are floored here before logarithms (geometric means, log plots)."""


def geometric_mean(values: Iterable[float], floor: float = FLOOR) -> float:
    """Geometric mean with a floor: ``exp(mean(log(max(v, floor))))``.

    Args:
        values: the values; a NaN or ``inf`` makes the result ``inf``.
        floor: values below it count as it (keeps zeros and rounding negatives finite in the log).

    Returns:
        The geometric mean; NaN for empty input.
    """
    logs = []
    for v in values:
        v = float(v)
        if math.isnan(v) or v == math.inf:
            return math.inf
        logs.append(math.log(max(v, floor)))
    if not logs:
        return math.nan
    return math.exp(sum(logs) / len(logs))
