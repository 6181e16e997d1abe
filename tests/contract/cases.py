"""The cases of the optimizer contract battery, read from the one method registry.

Every :class:`~hessopt.bench.methods.Contract` of every registered method is a case: its id is the
method's name (with the contract's label in parentheses), and every check in ``test_contract.py`` and
``test_ddp.py`` runs on it. To put a new optimizer through the battery, give its registry entry a
``contract`` (``src/hessopt/bench/methods.py``); nothing here changes.

``torch.optim.Adam`` is registered as a *control* (``adam(control)``): it passes every check that applies
to any ``torch.optim`` optimizer, which shows the battery itself is sound. It has no non-finite policy, so
the non-finite "skip" checks are expected to fail on it (they run as strict xfail, proving they can fail)
and the "raise" checks do not apply to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hessopt.bench.methods import Contract, Method, all_methods

from .harness import Closure

__all__ = ["CASES", "CHECK_KEYS", "OptimizerCase", "case_ids"]

#: Checks that a case may declare not applicable (``Contract.not_applicable``):
#: ``"nonfinite_raise"``: the ``nonfinite="raise"`` policy; ``"nonfinite_after_steps"``: a non-finite
#: closure after some finite steps (the first-step variant always runs); ``"closure_called_first"``: that
#: ``step`` returns the loss of the closure's *first* call in that step; ``"nonfinite_gradient"``: an inf
#: injected into a gradient (optimizers that compute their gradients themselves); ``"unused_parameter"``:
#: a parameter outside the loss (optimizers that take the model refuse parameters not in it).
CHECK_KEYS = (
    "nonfinite_raise",
    "nonfinite_after_steps",
    "closure_called_first",
    "nonfinite_gradient",
    "unused_parameter",
)


@dataclass(frozen=True)
class OptimizerCase:
    """One registered method under one of its contracts (see :class:`hessopt.bench.methods.Contract`)."""

    method: Method
    contract: Contract

    def __post_init__(self) -> None:
        if unknown := set(self.contract.not_applicable) - set(CHECK_KEYS):
            raise ValueError(f"{self.name}: unknown not_applicable keys {sorted(unknown)}; see CHECK_KEYS")

    @property
    def name(self) -> str:
        """The case id."""
        label = self.contract.label
        return f"{self.method.name}({label})" if label else self.method.name

    def setup(
        self, model: nn.Module, X: torch.Tensor, Y: torch.Tensor, params: Any = None, **overrides: Any
    ) -> tuple[torch.optim.Optimizer, Closure]:
        """The optimizer over ``params`` (default: the model's) with the contract's configuration, and the
        closure over ``(X, Y)`` that steps it.

        Optimizers that need the model get it with a fresh ``nn.MSELoss()`` module, which the closure
        then uses as its loss; ``overrides`` change the configuration (invalid-argument checks).
        """
        config = self.method.contract_config(self.contract, overrides)
        params = list(model.parameters()) if params is None else params
        loss_fn = nn.MSELoss()
        opt = self.method.build(params, config, model=model, loss_fn=loss_fn)
        return opt, Closure(model, opt, X, Y, loss_fn, takes_batch=self.method.drive == "batch")

    @property
    def needs_closure(self) -> bool:
        """Whether ``step()`` requires a closure."""
        return self.method.needs_closure(self.contract)

    def __getattr__(self, name: str) -> Any:
        # the contract's fields (group_hparam, invalid, skips_nonfinite, ...) read as the case's own
        if name in Contract.__dataclass_fields__:
            return getattr(self.contract, name)
        raise AttributeError(name)


CASES: list[OptimizerCase] = [OptimizerCase(m, c) for m in all_methods() for c in m.contract]


def case_ids(cases: Sequence[OptimizerCase]) -> list[str]:
    """The test ids of ``cases``."""
    return [c.name for c in cases]


def _check_unique(cases: Sequence[OptimizerCase]) -> Mapping[str, OptimizerCase]:
    ids = case_ids(cases)
    if len(set(ids)) != len(ids):
        raise ValueError(f"contract case ids must be unique, got {ids}")
    return {c.name: c for c in cases}


_check_unique(CASES)
