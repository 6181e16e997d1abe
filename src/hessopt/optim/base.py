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

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from hessopt.curvature import flat

__all__ = [
    "NONFINITE_POLICIES",
    "HessoptOptimizer",
    "check_choice",
    "check_cut",
    "check_one_dtype_and_device",
    "check_wolfe_constants",
    "check_dense_memory",
    "check_in_range",
    "check_nonnegative",
    "check_positive",
    "check_positive_int",
    "check_unit_interval",
    "device_memory_bytes",
]

NONFINITE_POLICIES = ("skip", "raise")


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be nan")
    return value


def check_positive(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """``value`` as a float > 0 (finite unless ``allow_inf``); else ValueError/TypeError naming ``name``."""
    v = _real(name, value)
    if not v > 0 or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_nonnegative(name: str, value: Any) -> float:
    """``value`` as a finite float >= 0; else ValueError/TypeError naming ``name``."""
    v = _real(name, value)
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_unit_interval(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1) (EMA rates, fractions); else ValueError/TypeError naming ``name``."""
    v = _real(name, value)
    if not 0 <= v < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return v


def check_in_range(
    name: str, value: Any, low: float, high: float, *, low_open: bool = True, high_open: bool = True
) -> float:
    """``value`` as a float in the interval from ``low`` to ``high`` (open ends by default)."""
    v = _real(name, value)
    ok_low = v > low if low_open else v >= low
    ok_high = v < high if high_open else v <= high
    if not (ok_low and ok_high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (default 1); bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``; else ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_cut(value: Any) -> float:
    """OGR's ``cut`` (floor of ``div·|λ|``, so every rate is at most ``lr/cut``): a float > 0."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0:
        raise ValueError(
            "cut must be a positive finite number (the floor of div*|lambda|), got 0; cut = 0 would allow "
            "unbounded steps: emulate it with a tiny cut such as 1e-12"
        )
    return check_positive("cut", value)


def check_wolfe_constants(c1: Any, c2: Any) -> tuple[float, float]:
    """Line-search constants ``0 < c1 < c2 < 1`` (NW section 3.1)."""
    c1 = check_in_range("c1", c1, 0.0, 1.0)
    c2 = check_in_range("c2", c2, 0.0, 1.0)
    if not c1 < c2:
        raise ValueError(f"c1 must be smaller than c2 (Wolfe conditions), got c1={c1}, c2={c2}")
    return c1, c2


def check_one_dtype_and_device(params: Sequence[torch.Tensor], who: str) -> None:
    """Dense methods keep one matrix over all parameters: real floating point, one dtype, one device."""
    p0 = params[0]
    for i, p in enumerate(params):
        if not p.dtype.is_floating_point or p.is_complex():
            raise TypeError(f"{who} needs real floating-point parameters; parameter {i} has dtype {p.dtype}")
        if p.dtype != p0.dtype or p.device != p0.device:
            raise ValueError(
                f"{who} keeps one matrix over all parameters, so they must share one dtype and device; "
                f"parameter 0 is ({p0.dtype}, {p0.device}) and parameter {i} is ({p.dtype}, {p.device})"
            )


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


# --------------------------------------------------------------------- dense-matrix memory guard
def device_memory_bytes(device: torch.device) -> int | None:
    """Memory a dense method may plan with: free memory on CUDA, physical memory on CPU, None if unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_dense_memory(
    params: Sequence[torch.Tensor],
    *,
    matrices: int,
    who: str,
    max_memory_fraction: float = 0.5,
    memory_limit_bytes: int | None = None,
) -> None:
    """Refuse (ValueError) a method that holds ``matrices`` dense (D, D) matrices that would not fit.

    The limit is ``memory_limit_bytes`` when given, else ``max_memory_fraction`` of
    :func:`device_memory_bytes` of the first parameter's device (no check when that is unknown). The
    message names the size, the limit and the O(D)-memory alternatives.
    """
    max_memory_fraction = check_in_range(
        "max_memory_fraction", max_memory_fraction, 0.0, 1.0, high_open=False
    )
    if memory_limit_bytes is not None:
        memory_limit_bytes = check_positive_int("memory_limit_bytes", memory_limit_bytes)
    p0 = params[0]
    d = flat.numel(params)
    needed = matrices * d * d * p0.element_size()
    if memory_limit_bytes is not None:
        limit, source = memory_limit_bytes, "memory_limit_bytes"
    else:
        available = device_memory_bytes(p0.device)
        if available is None:
            return
        limit = int(max_memory_fraction * available)
        source = (
            f"max_memory_fraction={max_memory_fraction} of the {available / 2**30:.1f} GiB "
            f"of {p0.device.type} memory"
        )
    if needed > limit:
        raise ValueError(
            f"{who} over D={d} parameters needs {matrices} dense {d}x{d} {p0.dtype} matrices "
            f"({needed / 2**30:.2f} GiB) at peak, above the limit of {limit / 2**30:.2f} GiB set by "
            f"{source}. Use a method with O(D) memory instead (hessopt's DiagOGR), or raise the limit "
            "with memory_limit_bytes"
        )
