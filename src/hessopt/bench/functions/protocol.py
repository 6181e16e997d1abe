"""The test-function protocol: the suite's name, its sizes and rules, and the store's problem names.

Read by the runner (:mod:`hessopt.bench.functions.suite`) and the report section
(:mod:`hessopt.bench.functions.report`); it runs nothing. The protocol follows the 2025 OGR-vs-BFGS
comparison (arXiv:2512.06969 and its public benchmark code; docs/benchmarks/functions.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from hessopt.problems.functions import BenchmarkFunction, get_function, protocol_functions

__all__ = ["CHECKPOINTS", "FULL", "QUICK", "SUITE", "Protocol", "problem_id", "resolve_functions"]

SUITE = "functions"
CHECKPOINTS = (50, 250, 2000)
"""Step budgets of the protocol (the 2025 benchmark code plots 50, 250 and 2000 steps)."""


@dataclass(frozen=True)
class Protocol:
    """Sizes and rules of one test-function suite (defaults: the full protocol).

    ``tune_starts`` tuning runs start from seeds ``tune_seed0 + i`` (disjoint from ``seed0 + i``).
    """

    starts: int = 200
    steps: int = 2000
    noise_std: float = 0.0
    gtol: float = 1e-8
    stall_steps: int = 5
    seed0: int = 42
    tune_starts: int = 20
    tune_seed0: int = 10_000

    def __post_init__(self) -> None:
        for name in ("starts", "steps", "tune_starts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("seed0", "tune_seed0", "stall_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std must be finite and >= 0, got {self.noise_std!r}")
        if not self.gtol >= 0:
            raise ValueError(f"gtol must be >= 0, got {self.gtol!r}")
        overlap = set(self.evaluation_seeds) & set(self.tuning_seeds)
        if overlap:
            raise ValueError(
                f"tuning seeds {self.tune_seed0}..{self.tune_seed0 + self.tune_starts - 1} overlap the "
                f"evaluation seeds {self.seed0}..{self.seed0 + self.starts - 1}; move tune_seed0"
            )

    @property
    def evaluation_seeds(self) -> range:
        """The seeds of the evaluation starts."""
        return range(self.seed0, self.seed0 + self.starts)

    @property
    def tuning_seeds(self) -> range:
        """The seeds of the tuning starts (disjoint from the evaluation seeds)."""
        return range(self.tune_seed0, self.tune_seed0 + self.tune_starts)

    @property
    def use_gtol(self) -> bool:
        """Early stopping on the gradient norm is meaningful only with exact gradients."""
        return self.noise_std == 0.0

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """The protocol budgets below ``steps``, then ``steps``."""
        return tuple(c for c in CHECKPOINTS if c < self.steps) + (self.steps,)

    @property
    def record_steps(self) -> tuple[int, ...]:
        """Steps at which the best-so-far curve is stored: 0, the checkpoints, ~4 per decade."""
        grid = {0, *self.checkpoints}
        k = 0
        while (s := round(10 ** (k / 4))) <= self.steps:
            grid.add(s)
            k += 1
        return tuple(sorted(grid))


FULL = Protocol()
"""200 starts x 2000 steps, 20 tuning starts."""
QUICK = Protocol(starts=20, steps=250, tune_starts=5)
"""20 starts x 250 steps, 5 tuning starts (``hessopt bench functions --quick``)."""


def problem_id(fn: BenchmarkFunction) -> str:
    """The store's problem name of a test function: ``"<name>-<dim>d"``."""
    return f"{fn.name}-{fn.dim}d"


def resolve_functions(names: Iterable[str | BenchmarkFunction] | None) -> list[BenchmarkFunction]:
    """The protocol's nine functions for None, else each name through ``get_function`` (n-D: 10-D)."""
    if names is None:
        return protocol_functions()
    out = [n if isinstance(n, BenchmarkFunction) else get_function(n) for n in names]
    if not out:
        raise ValueError("functions must name at least one test function")
    ids = [problem_id(f) for f in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"functions lists a function twice: {ids}")
    return out
