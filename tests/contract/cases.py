"""The registry of the optimizer contract battery: one :class:`OptimizerCase` per optimizer.

To register a new optimizer, append one entry to :data:`CASES`; every check in ``test_contract.py`` and
``test_ddp.py`` then runs on it. The checks and what each field means are described on the fields below;
the contract itself is DESIGN.md, "Optimizer contract" and "Non-finite input".

``torch.optim.Adam`` is registered as a *control*: it passes every check that applies to any
``torch.optim`` optimizer, which shows the battery itself is sound. It has no non-finite policy, so the
non-finite "skip" checks are expected to fail on it (they run as strict xfail, proving they can fail) and
the "raise" checks do not apply to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from hessopt.optim.bfgs import BFGS
from hessopt.optim.diag_ogr import DiagOGR
from hessopt.optim.ogr import OGR

__all__ = ["CASES", "CHECK_KEYS", "OptimizerCase", "case_ids"]

#: Checks that a case may declare not applicable (``OptimizerCase.not_applicable``):
#: ``"nonfinite_raise"``: the ``nonfinite="raise"`` policy; ``"nonfinite_after_steps"``: a non-finite
#: closure after some finite steps (the first-step variant always runs); ``"closure_called_first"``: that
#: ``step`` returns the loss of the closure's *first* call in that step (the returned loss must still be the
#: loss at the starting point).
CHECK_KEYS = ("nonfinite_raise", "nonfinite_after_steps", "closure_called_first")


@dataclass(frozen=True)
class OptimizerCase:
    """How the contract battery builds and checks one optimizer.

    Attributes:
        name: test id.
        make: ``make(params_or_groups, **overrides) -> optimizer``; carries the battery's default
            hyper-parameters for this optimizer (e.g. a learning rate suited to the small test problems).
        needs_closure: True when ``step()`` requires a closure (it may call it several times); then
            ``step()`` without one must raise TypeError/ValueError naming ``closure``.
        group_hparam: a hyper-parameter that may differ between param groups, or None when the optimizer
            requires equal hyper-parameters in all groups.
        group_hparam_off: the value of ``group_hparam`` that makes a group's step exactly zero (``lr=0``).
        shared_hparam: when ``group_hparam`` is None, ``(name, value_group_0, value_group_1)``: two unequal
            per-group values that the constructor must reject with a ValueError naming ``name``.
        invalid: ``(constructor kwargs, argument name)`` pairs: each must raise ValueError whose message
            contains the argument name.
        skips_nonfinite: True for optimizers with hessopt's ``nonfinite="skip"|"raise"`` policy (all hessopt
            optimizers). False only for controls: the skip checks then run as strict xfail.
        nonfinite_counter: path into ``state_dict()`` of the int counter of skipped non-finite steps
            (absent means 0); it is the only part of the state a skipped step may change.
        scalar_state_keys: state keys exempt from "floating state follows the parameters' dtype and device"
            (torch keeps Adam's ``step`` as a host float32 scalar); each must hold a 0-dim tensor.
        supports_ddp: run the DistributedDataParallel equivalence check (test_ddp.py).
        ddp_atol: absolute tolerance, float64, of DDP vs one process on the concatenated batch.
        group_split_atol: absolute tolerance, float64, of "two param groups with equal hyper-parameters"
            vs "one group" (0 would demand bit equality; coupled methods may sum dot products per group).
        decrease_steps, decrease_factor: on the convex least-squares problem, the loss after
            ``decrease_steps`` steps must be at most ``decrease_factor`` times the initial loss.
        not_applicable: ``{check key: reason}`` for documented behaviour that a check does not cover; the
            check (or that part of it) is skipped with the reason. Keys: see :data:`CHECK_KEYS`.
    """

    name: str
    make: Callable[..., torch.optim.Optimizer]
    needs_closure: bool
    group_hparam: str | None
    invalid: Sequence[tuple[dict[str, Any], str]]
    skips_nonfinite: bool
    supports_ddp: bool
    group_hparam_off: Any = 0.0
    shared_hparam: tuple[str, Any, Any] | None = None
    nonfinite_counter: tuple[Any, ...] | None = None
    scalar_state_keys: frozenset[str] = field(default_factory=frozenset)
    ddp_atol: float = 1e-12
    group_split_atol: float = 1e-12
    decrease_steps: int = 5
    decrease_factor: float = 0.5
    not_applicable: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.not_applicable) - set(CHECK_KEYS)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown not_applicable keys {sorted(unknown)}; known: {CHECK_KEYS}"
            )
        if (self.group_hparam is None) == (self.shared_hparam is None):
            raise ValueError(f"{self.name}: set exactly one of group_hparam and shared_hparam")
        if self.skips_nonfinite and self.nonfinite_counter is None:
            raise ValueError(f"{self.name}: an optimizer that skips non-finite steps needs nonfinite_counter")


def _adam(params: Any, **overrides: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, **{"lr": 0.1, **overrides})


def _bfgs(params: Any, **overrides: Any) -> torch.optim.Optimizer:
    return BFGS(params, **overrides)


def _ogr(params: Any, **overrides: Any) -> torch.optim.Optimizer:
    # cut = 1 (not the test-function default 10) so that the small convex problem decreases in a few steps
    return OGR(params, **{"cut": 1.0, **overrides})


def _diag_ogr(params: Any, **overrides: Any) -> torch.optim.Optimizer:
    return DiagOGR(params, **{"lr": 0.5, "cut": 1.0, "max_coord_step": None, **overrides})


# The counter of skipped non-finite steps in hessopt's flat-state slot (HessoptOptimizer.flat_state(),
# the state of parameter 0).
_FLAT_NONFINITE_COUNTER = ("state", 0, "nonfinite_skips")

_BFGS_INVALID = [
    ({"lr": -1.0}, "lr"),
    ({"line_search": "wolfe"}, "line_search"),
    ({"initial_scaling": "unit"}, "initial_scaling"),
    ({"curvature_failure": "ignore"}, "curvature_failure"),
    ({"c1": 0.0}, "c1"),
    ({"c1": 1.0}, "c1"),
    ({"c2": 1.0}, "c2"),
    ({"c1": 0.5, "c2": 0.4}, "c2"),
    ({"max_line_search_evals": 0}, "max_line_search_evals"),
    ({"tolerance_grad": -1.0}, "tolerance_grad"),
    ({"nonfinite": "ignore"}, "nonfinite"),
    ({"curvature_eps": -1.0}, "curvature_eps"),
    ({"max_memory_fraction": 0.0}, "max_memory_fraction"),
    ({"memory_limit_bytes": 0}, "memory_limit_bytes"),
    ({"memory_limit_bytes": 1000}, "memory_limit_bytes"),
]


_OGR_INVALID = [
    ({"lr": -1.0}, "lr"),
    ({"beta": 1.0}, "beta"),
    ({"gamma": -0.1}, "gamma"),
    ({"div": 0.0}, "div"),
    ({"cut": 0.0}, "cut"),
    ({"sigma0": -1.0}, "sigma0"),
    ({"mean_init": "mean"}, "mean_init"),
    ({"ridge_rel": -1.0}, "ridge_rel"),
    ({"max_step_norm": 0.0}, "max_step_norm"),
    ({"line_search": "wolfe"}, "line_search"),
    ({"c1": 0.0}, "c1"),
    ({"max_line_search_evals": 0}, "max_line_search_evals"),
    ({"nonfinite": "ignore"}, "nonfinite"),
    ({"memory_limit_bytes": 1000}, "memory_limit_bytes"),
]

_DIAG_OGR_INVALID = [
    ({"lr": -1.0}, "lr"),
    ({"beta": 1.0}, "beta"),
    ({"gamma": 1.5}, "gamma"),
    ({"div": 0.0}, "div"),
    ({"cut": 0.0}, "cut"),
    ({"sigma0": -1.0}, "sigma0"),
    ({"ridge_abs": -1.0}, "ridge_abs"),
    ({"nonfinite": "ignore"}, "nonfinite"),
]


CASES: list[OptimizerCase] = [
    OptimizerCase(
        name="torch.Adam(control)",
        make=_adam,
        needs_closure=False,
        group_hparam="lr",
        invalid=[
            ({"lr": -1.0}, "learning rate"),
            ({"betas": (0.9, 1.5)}, "beta"),
            ({"eps": -1.0}, "epsilon"),
        ],
        skips_nonfinite=False,
        supports_ddp=True,
        scalar_state_keys=frozenset({"step"}),
        group_split_atol=0.0,
        not_applicable={"nonfinite_raise": "torch.optim.Adam has no non-finite policy (control case)"},
    ),
    OptimizerCase(
        name="BFGS",
        make=_bfgs,
        needs_closure=True,
        group_hparam=None,
        shared_hparam=("c1", 1e-4, 1e-3),
        invalid=_BFGS_INVALID,
        skips_nonfinite=True,
        nonfinite_counter=_FLAT_NONFINITE_COUNTER,
        supports_ddp=True,
    ),
    OptimizerCase(
        name="BFGS(reuse_evaluation)",
        make=partial(_bfgs, reuse_evaluation=True),
        needs_closure=True,
        group_hparam=None,
        shared_hparam=("reuse_evaluation", True, False),
        invalid=(),
        skips_nonfinite=True,
        nonfinite_counter=_FLAT_NONFINITE_COUNTER,
        supports_ddp=True,
        not_applicable={
            "nonfinite_after_steps": (
                "reuse_evaluation=True starts a step from the previous step's cached evaluation (documented: "
                "deterministic closures only); a closure turning non-finite is first seen at line-search "
                "trials, where nan/inf means 'step too long'"
            ),
            "closure_called_first": "reuse_evaluation=True returns the cached loss at the starting point",
        },
    ),
    OptimizerCase(
        name="BFGS(armijo)",
        make=partial(_bfgs, line_search="armijo"),
        needs_closure=True,
        group_hparam=None,
        shared_hparam=("line_search", "armijo", "strong_wolfe"),
        invalid=(),
        skips_nonfinite=True,
        nonfinite_counter=_FLAT_NONFINITE_COUNTER,
        supports_ddp=True,
    ),
    OptimizerCase(
        name="BFGS(line_search=None)",
        make=partial(_bfgs, line_search=None, lr=0.5),
        needs_closure=False,
        group_hparam=None,
        shared_hparam=("lr", 0.5, 0.25),
        invalid=(),
        skips_nonfinite=True,
        nonfinite_counter=_FLAT_NONFINITE_COUNTER,
        supports_ddp=True,
    ),
    OptimizerCase(
        name="OGR",
        make=_ogr,
        needs_closure=False,
        group_hparam=None,
        shared_hparam=("beta", 0.5, 0.6),
        invalid=_OGR_INVALID,
        skips_nonfinite=True,
        nonfinite_counter=_FLAT_NONFINITE_COUNTER,
        supports_ddp=True,
    ),
    OptimizerCase(
        name="OGR(strong_wolfe)",
        make=partial(_ogr, line_search="strong_wolfe"),
        needs_closure=True,
        group_hparam=None,
        shared_hparam=("line_search", "strong_wolfe", None),
        invalid=(),
        skips_nonfinite=True,
        nonfinite_counter=_FLAT_NONFINITE_COUNTER,
        supports_ddp=True,
    ),
    OptimizerCase(
        name="DiagOGR",
        make=_diag_ogr,
        needs_closure=False,
        group_hparam="lr",
        invalid=_DIAG_OGR_INVALID,
        skips_nonfinite=True,
        nonfinite_counter=_FLAT_NONFINITE_COUNTER,
        supports_ddp=True,
    ),
    OptimizerCase(
        name="DiagOGR(corr1)",
        make=partial(_diag_ogr, corr1=True),
        needs_closure=False,
        group_hparam="lr",
        invalid=(),
        skips_nonfinite=True,
        nonfinite_counter=_FLAT_NONFINITE_COUNTER,
        supports_ddp=True,
    ),
]


def case_ids(cases: Sequence[OptimizerCase]) -> list[str]:
    return [c.name for c in cases]
