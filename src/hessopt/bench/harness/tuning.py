"""Grid tuning of step sizes on seeds kept apart from the evaluation seeds.

Protocol (DeepOBS practice, arXiv:1903.05499: a log grid, best by final performance, on seeds separate
from the evaluation starts): every point of a method's grid (the Cartesian product of the method's
``tune``) is run on the *tuning* seeds only, scored by the geometric mean of the per-seed results (for the
test functions: the best ``f - f_min`` within the step budget), and the point with the smallest score is
chosen; ties go to the first point in grid order (the smallest step size). Each value is floored at
``FLOOR`` = 1e-300 (:mod:`hessopt.bench.harness.stats`) before the logarithm, so that runs that reach
``f - f_min = 0`` (or a slightly negative value from rounding) keep the logarithm finite; a run that
never produced a finite value scores ``inf``. :func:`tune` refuses seed sets that intersect the
evaluation seeds, so the chosen value never saw an evaluation start.

Cost: ``len(grid)`` evaluations of the tuning seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hessopt.bench.harness.stats import geometric_mean

__all__ = ["Tunable", "TuningOutcome", "grid_points", "tune"]


class Tunable(Protocol):
    """What tuning needs of a method: its grids and how a grid point becomes a configuration."""

    tune: Mapping[str, Sequence[float]]

    def config(self, tuned: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The full configuration of one grid point."""
        ...


def grid_points(method: Tunable) -> list[dict[str, float]]:
    """Every combination of the method's tuned values, in grid order (last name varying fastest)."""
    names = list(method.tune)
    return [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*(method.tune[n] for n in names))
    ]


@dataclass(frozen=True)
class TuningOutcome:
    """The chosen values, their score, and every trial ``{"params": ..., "objective": ...}``."""

    chosen: dict[str, float]
    objective: float
    trials: list[dict[str, Any]]


def tune(
    method: Tunable,
    evaluate: Callable[[Sequence[Mapping[str, Any]], Sequence[int]], Sequence[Sequence[float]]],
    *,
    tuning_seeds: Sequence[int],
    evaluation_seeds: Iterable[int],
) -> TuningOutcome:
    """Choose ``method``'s tuned hyper-parameters on ``tuning_seeds``.

    ``evaluate(configs, seeds)`` runs the method under each full configuration ``method.config(point)``
    of the grid on those seeds and returns, per configuration, one result per seed (smaller is better);
    it receives the whole grid at once so that it may batch it. A method that tunes nothing gets
    ``chosen = {}`` without any evaluation.
    """
    tuning_seeds = [int(s) for s in tuning_seeds]
    if not tuning_seeds:
        raise ValueError("tuning_seeds must not be empty")
    overlap = sorted(set(tuning_seeds) & {int(s) for s in evaluation_seeds})
    if overlap:
        raise ValueError(
            f"tuning seeds overlap the evaluation seeds (e.g. {overlap[:5]}); choose a tuning seed range "
            "disjoint from the evaluation starts"
        )
    if not method.tune:
        return TuningOutcome({}, math.nan, [])
    points = grid_points(method)
    results = list(evaluate([method.config(p) for p in points], tuning_seeds))
    if len(results) != len(points):
        raise ValueError(f"evaluate returned {len(results)} result lists for {len(points)} configurations")
    trials: list[dict[str, Any]] = []
    best_index, best_score = 0, math.inf
    for i, (point, values) in enumerate(zip(points, results, strict=True)):
        if len(values) != len(tuning_seeds):
            raise ValueError(f"evaluate returned {len(values)} results for {len(tuning_seeds)} seeds")
        score = geometric_mean(values)
        trials.append({"params": point, "objective": score})
        if score < best_score:
            best_index, best_score = i, score
    return TuningOutcome(dict(points[best_index]), trials[best_index]["objective"], trials)
