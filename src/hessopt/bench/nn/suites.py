"""The neural-network suites: which problems and methods, which grid, which seeds.

Read by the runner (:mod:`hessopt.bench.nn.suite`) and the report section (:mod:`hessopt.bench.nn.report`);
it runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from hessopt.bench.methods import SuiteMethod, get_method, methods_in
from hessopt.problems.registry import Budget, Problem, get_problem

__all__ = ["FULL", "QUICK", "SUITES", "NNSuite", "get_suite"]

SUITE = "nn"
"""The methods' suite key (:class:`hessopt.bench.methods.Setting`) of every NN suite."""


@dataclass(frozen=True)
class NNSuite:
    """A suite: problems x methods, the grid (``"quick"``/``"full"``), seeds, optional budget override.

    ``budget`` replaces every problem's default budget (smoke runs); ``evaluations`` their number of
    evaluation intervals; ``limit`` keeps the first samples of each split (tests).
    """

    name: str
    problems: tuple[str, ...]
    methods: tuple[str, ...]
    grid: str
    evaluation_seeds: tuple[int, ...]
    tuning_seeds: tuple[int, ...]
    budget: Budget | None = None
    evaluations: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.grid not in ("quick", "full"):
            raise ValueError(f"grid must be 'quick' or 'full', got {self.grid!r}")
        for label, names in (("problems", self.problems), ("methods", self.methods)):
            if not names:
                raise ValueError(f"suite {self.name!r}: {label} must not be empty")
            if len(set(names)) != len(names):
                raise ValueError(f"suite {self.name!r}: {label} lists a name twice: {list(names)}")
        for p in self.problems:
            get_problem(p)
        for m in self.methods:
            get_method(m).in_suite(SUITE)
        if not self.evaluation_seeds or not self.tuning_seeds:
            raise ValueError(f"suite {self.name!r}: evaluation_seeds and tuning_seeds must not be empty")
        overlap = sorted(set(self.evaluation_seeds) & set(self.tuning_seeds))
        if overlap:
            raise ValueError(
                f"suite {self.name!r}: tuning seeds {overlap} are also evaluation seeds; tuning must never "
                "see an evaluation seed: choose disjoint ranges"
            )
        if self.evaluations is not None and self.evaluations < 1:
            raise ValueError(f"evaluations must be >= 1 or None, got {self.evaluations!r}")

    @property
    def tuning_suite(self) -> str:
        """The store suite of the tuning runs."""
        return f"{self.name}-tuning"

    def method(self, name: str) -> SuiteMethod:
        """The registered method with this suite's grid as its ``tune``."""
        return get_method(name).in_suite(SUITE, self.grid)

    def budget_of(self, problem: Problem) -> Budget:
        """The budget of ``problem`` in this suite."""
        return self.budget or problem.budget

    def evaluations_of(self, problem: Problem) -> int:
        """The number of evaluation intervals of ``problem`` in this suite."""
        return self.evaluations or problem.evaluations


_NN_METHODS = tuple(m.name for m in methods_in(SUITE))
"""Both suites run every registered method that has an ``"nn"`` setting, in registry order."""

QUICK = NNSuite(
    name="nn-quick",
    problems=("quadratic_deep", "digits_mlp", "digits_autoencoder", "mnist1d_mlp", "mnist5k_mlp"),
    methods=_NN_METHODS,
    grid="quick",
    evaluation_seeds=(0, 1),
    tuning_seeds=(10_000,),
)
"""Embedded data, quick grids (3-4 points), 1 tuning seed, 2 evaluation seeds (``make bench``)."""

FULL = NNSuite(
    name="nn-full",
    problems=("fmnist_mlp", "fmnist_2c2d", "fmnist_autoencoder", "fmnist_lstm"),
    methods=_NN_METHODS,
    grid="full",
    evaluation_seeds=(0, 1, 2),
    tuning_seeds=(10_000,),
)
"""Fashion-MNIST, full grids (7 points), 1 tuning seed, 3 evaluation seeds (``--suite full``)."""

SUITES = {"quick": QUICK, "full": FULL}


def get_suite(name: str) -> NNSuite:
    """The suite called ``name`` (``"quick"`` or ``"full"``)."""
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}") from None
