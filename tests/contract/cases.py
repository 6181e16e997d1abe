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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hessopt.bench.methods import Contract, Method, all_methods

__all__ = ["CASES", "CHECK_KEYS", "OptimizerCase", "case_ids"]

#: Checks that a case may declare not applicable (``Contract.not_applicable``):
#: ``"nonfinite_raise"``: the ``nonfinite="raise"`` policy; ``"nonfinite_after_steps"``: a non-finite
#: closure after some finite steps (the first-step variant always runs); ``"closure_called_first"``: that
#: ``step`` returns the loss of the closure's *first* call in that step.
CHECK_KEYS = ("nonfinite_raise", "nonfinite_after_steps", "closure_called_first")


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

    @property
    def make(self) -> Callable[..., torch.optim.Optimizer]:
        """``make(params_or_groups, **overrides)``: the optimizer with the contract's configuration."""

        def make(params: Any, **overrides: Any) -> torch.optim.Optimizer:
            return self.method.factory(params, self.method.contract_config(self.contract, overrides))

        return make

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
