"""What every hessopt optimizer shares: argument checks, the non-finite policy, parameter order, flat state.

:class:`HessoptOptimizer` is a :class:`torch.optim.Optimizer` subclass; concrete optimizers subclass it
and keep their ``step`` thin over the functional cores in :mod:`hessopt.curvature`.

**Flat-state slot.** Optimizers whose state is one vector (or matrix) over all parameters, rather than a
tensor per parameter, keep it in ``self.state[p0]``, where ``p0`` is the first parameter of the first
group, as ``torch.optim.LBFGS`` does. :meth:`HessoptOptimizer.flat_state` returns that dict. Because it is
an entry of ``self.state``, ``state_dict()`` saves it under parameter index 0 and ``load_state_dict()``
restores it. Torch's ``load_state_dict`` casts every tensor of a parameter's state except ``"step"`` to
that parameter's dtype; this class undoes that for integer and bool tensors (counters, flags), so
checkpoints resume bit for bit. Floating-point state must therefore have the parameters' dtype.

**Non-finite policy** (DESIGN.md, "Non-finite input"): a nan/inf loss or gradient never enters the state.
``nonfinite="skip"`` (default) makes the step a no-op (parameters and state unchanged) and adds one to
the int64 counter ``flat_state()["nonfinite_skips"]``; ``nonfinite="raise"`` raises
:class:`FloatingPointError` naming the loss or the parameter whose gradient was not finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from hessopt.curvature import flat

from .checks import NONFINITE_POLICIES, check_choice

__all__ = ["HessoptOptimizer"]

class HessoptOptimizer(torch.optim.Optimizer):
    """Base class of hessopt optimizers (see the module docstring for the flat-state slot and policies).

    Subclasses pass their validated hyper-parameters as ``defaults``; ``defaults`` must contain
    ``"nonfinite"`` (validated here).
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if "nonfinite" not in defaults:
            raise TypeError(f"{type(self).__name__} must pass a 'nonfinite' entry in defaults")
        check_choice("nonfinite", defaults["nonfinite"], NONFINITE_POLICIES)
        super().__init__(params, defaults)

    # ----------------------------------------------------------------- parameters and hyper-parameters
    def parameters_in_order(self) -> list[torch.Tensor]:
        """All parameters, in ``param_groups`` order (the order :mod:`hessopt.curvature.flat` uses)."""
        return [p for group in self.param_groups for p in group["params"]]

    def parameters_with_grad(self) -> list[torch.Tensor]:
        """The parameters whose ``.grad`` is not None, in ``param_groups`` order."""
        return [p for p in self.parameters_in_order() if p.grad is not None]

    def flat_params(self) -> torch.Tensor:
        """All parameters as one flat vector (a copy), in ``param_groups`` order."""
        return flat.flatten([p.detach() for p in self.parameters_in_order()])

    def flat_grad(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All gradients as one flat vector, in ``param_groups`` order, and the mask of present grads.

        A parameter whose ``.grad`` is None contributes zeros (as in ``torch.optim.LBFGS``). The mask is a
        bool vector, True where a gradient was present, or None when every parameter has a gradient (so
        callers can skip masking). Sparse gradients raise TypeError.
        """
        params = self.parameters_in_order()
        grads, missing = [], False
        for p in params:
            if p.grad is None:
                grads.append(torch.zeros_like(p))
                missing = True
            elif p.grad.is_sparse:
                raise TypeError(f"{type(self).__name__} does not support sparse gradients")
            else:
                grads.append(p.grad)
        g = flat.flatten(grads)
        if not missing:
            return g, None
        mask = flat.flatten([torch.full_like(p, p.grad is not None, dtype=torch.bool) for p in params])
        return g, mask

    def uniform_hyperparameter(self, name: str) -> Any:
        """The value of ``name`` shared by all param groups; ValueError naming it when groups differ.

        For optimizers whose update couples all parameters (one matrix over all of them), per-group values
        are meaningless.
        """
        values = [group[name] for group in self.param_groups]
        first = values[0]
        for i, v in enumerate(values[1:], start=1):
            if v != first:
                raise ValueError(
                    f"{type(self).__name__} uses one {name} for all parameters, but param group {i} has "
                    f"{name}={v!r} and group 0 has {name}={first!r}; set the same {name} in every group"
                )
        return first

    # ----------------------------------------------------------------- flat-state slot
    def flat_state(self) -> dict[str, Any]:
        """The state dict of the first parameter: the documented slot for whole-vector state."""
        return self.state[self.param_groups[0]["params"][0]]

    def _counter(self, key: str) -> torch.Tensor:
        st = self.flat_state()
        if key not in st:
            st[key] = torch.zeros((), dtype=torch.int64, device=self.param_groups[0]["params"][0].device)
        return st[key]

    def add_to_counter(self, key: str, amount: torch.Tensor | int = 1) -> None:
        """``flat_state()[key] += amount`` as a new int64 tensor (no host sync; a bool tensor counts 0/1)."""
        self.flat_state()[key] = self._counter(key) + amount

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As :meth:`torch.optim.Optimizer.load_state_dict`, keeping integer/bool state tensors' dtypes.

        Torch casts every non-``"step"`` state tensor to its parameter's dtype; counters and flags are put
        back with their saved dtype (on the parameter's device), so a resumed run is bit for bit the same.
        """
        keep: dict[int, dict[str, torch.Tensor]] = {}
        for index, pstate in state_dict["state"].items():
            if isinstance(pstate, dict):
                exact = {
                    k: v
                    for k, v in pstate.items()
                    if isinstance(v, torch.Tensor) and not (v.is_floating_point() or v.is_complex())
                }
                if exact:
                    keep[index] = exact
        super().load_state_dict(state_dict)
        if not keep:
            return
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        index_to_param = dict(zip(saved_ids, self.parameters_in_order(), strict=True))
        for index, exact in keep.items():
            param = index_to_param.get(index)
            if param is None:
                continue
            for k, v in exact.items():
                self.state[param][k] = v.to(device=param.device, copy=True)

    # ----------------------------------------------------------------- non-finite policy
    @staticmethod
    def all_finite(
        loss: torch.Tensor | float | None, grads: torch.Tensor | Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """0-dim bool tensor: True when ``loss`` (if given) and every gradient entry are finite. No sync."""
        if isinstance(grads, torch.Tensor):
            finite = torch.isfinite(grads).all()
        else:
            finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        if loss is not None:
            loss_t = torch.as_tensor(loss, device=finite.device)
            finite = finite & torch.isfinite(loss_t).all()
        return finite

    def check_nonfinite(
        self, loss: torch.Tensor | float | None, grads: torch.Tensor | Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Apply the ``nonfinite`` policy to a loss and gradients; return the 0-dim bool "all finite".

        ``"skip"``: counts a non-finite input in ``flat_state()["nonfinite_skips"]`` (no host sync); the
        caller must then leave parameters and state unchanged where the returned flag is False.
        ``"raise"``: reads the flag (one sync) and raises FloatingPointError naming the loss or the first
        parameter (group and index) whose gradient has nan/inf entries. ``grads`` is either the flat
        gradient (parameters in ``param_groups`` order) or one tensor per parameter in that order.
        """
        finite = self.all_finite(loss, grads)
        if self.uniform_hyperparameter("nonfinite") == "raise":
            if not bool(finite):
                raise FloatingPointError(self._describe_nonfinite(loss, grads))
            return finite
        self.add_to_counter("nonfinite_skips", ~finite)
        return finite

    def _describe_nonfinite(
        self, loss: torch.Tensor | float | None, grads: torch.Tensor | Sequence[torch.Tensor]
    ) -> str:
        name = type(self).__name__
        if loss is not None and not bool(torch.isfinite(torch.as_tensor(loss)).all()):
            return f"{name}: the loss is not finite ({float(torch.as_tensor(loss).reshape(-1)[0])})"
        params = self.parameters_in_order()
        per_param = flat.unflatten(grads, params) if isinstance(grads, torch.Tensor) else list(grads)
        locations = [
            (gi, pi) for gi, group in enumerate(self.param_groups) for pi in range(len(group["params"]))
        ]
        for (gi, pi), g, p in zip(locations, per_param, params, strict=False):
            bad = int((~torch.isfinite(g)).sum())
            if bad:
                return (
                    f"{name}: the gradient of parameter {pi} of param group {gi} "
                    f"(shape {tuple(p.shape)}) has {bad} non-finite entries"
                )
        return f"{name}: non-finite gradient"

    # ----------------------------------------------------------------- distributed
    @staticmethod
    def global_loss(loss: torch.Tensor) -> torch.Tensor:
        """The loss averaged over the processes of the default ``torch.distributed`` group, if one exists.

        DDP averages gradients but not the loss; optimizers that branch on loss values (line searches) use
        this so that every process takes the same decisions. Without an initialised process group it
        returns ``loss`` unchanged. Cost: one all-reduce of a scalar.
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return loss
        reduced = loss.detach().clone().reshape(())
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced / dist.get_world_size()
