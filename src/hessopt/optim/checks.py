"""Argument checks shared by every hessopt optimizer.

Each returns the validated value or raises an error that names the argument, the value received and what
is accepted. The per-hyper-parameter checks have the signature ``check(name, value) -> value`` so that an
optimizer can declare them in :attr:`hessopt.optim.base.HessoptOptimizer.hyperparameter_checks`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch

from hessopt.curvature import flat
from hessopt.curvature.regression import MEAN_INITS

__all__ = [
    "NONFINITE_POLICIES",
    "REGRESSION_CHECKS",
    "check_bool",
    "check_choice",
    "check_cut",
    "check_dense_memory",
    "check_finite_real",
    "check_in_range",
    "check_lr_fits_dtype",
    "check_nonnegative",
    "check_one_dtype_and_device",
    "check_eigh_dtype",
    "check_params_real_floating",
    "check_positive",
    "check_positive_int",
    "check_unit_interval",
    "check_wolfe_constants",
    "device_memory_bytes",
    "optional",
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


def check_eigh_dtype(params: Sequence[torch.Tensor], who: str) -> None:
    """Refuse half precision for methods that eigendecompose their estimate (torch has no half ``eigh``)."""
    for i, p in enumerate(params):
        if p.dtype not in (torch.float32, torch.float64):
            raise TypeError(
                f"{who} needs float32 or float64 parameters: it eigendecomposes its curvature estimate, "
                f"which torch does not support in {p.dtype} (parameter {i}); keep the model in float32 "
                "(model.float(), with torch.autocast for the forward pass), or use DiagOGR, which runs in "
                "bfloat16"
            )


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


# --------------------------------------------------------------------- values that may be None, flags, reals
def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is True or False; else TypeError naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_finite_real(name: str, value: Any) -> float:
    """``value`` as a finite float (any sign); nan and ±inf are refused with a ValueError naming ``name``."""
    v = _real(name, value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def optional(check: Any) -> Any:
    """A validator that accepts None and otherwise applies ``check(name, value)``."""

    def check_or_none(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)

    return check_or_none


def check_params_real_floating(params: Sequence[torch.Tensor], who: str) -> None:
    """Every parameter is a real floating-point tensor that holds data (not on the ``meta`` device).

    Raises TypeError (integer, bool or complex dtype) or ValueError (meta device) naming the parameter's
    position and what to do instead.
    """
    for i, p in enumerate(params):
        if not p.dtype.is_floating_point or p.is_complex():
            raise TypeError(
                f"{who} needs real floating-point parameters (float16/bfloat16/float32/float64); parameter "
                f"{i} has dtype {p.dtype}: convert the model, e.g. model.float()"
            )
        if p.device.type == "meta":
            raise ValueError(
                f"{who} cannot optimize parameter {i}: it is on the 'meta' device and holds no data; "
                "materialise the model first (e.g. model.to_empty(device=...) and initialise it)"
            )


def check_lr_fits_dtype(lr: float, dtype: torch.dtype, who: str, *, name: str = "lr") -> None:
    """``lr`` must be representable in the parameters' dtype (at most ``torch.finfo(dtype).max``)."""
    limit = torch.finfo(dtype).max
    if lr > limit:
        raise ValueError(
            f"{who}: {name}={lr!r} exceeds the largest {dtype} ({limit:.3g}), so the step cannot be computed "
            f"in the parameters' dtype; use a smaller {name}"
        )


def _check_cut(name: str, value: Any) -> float:
    return check_cut(value)


def _check_mean_init(name: str, value: Any) -> str:
    return check_choice(name, value, MEAN_INITS)


#: The checks of the hyper-parameters that every OGR optimizer shares (the regression statistics and the
#: saddle-free step): OGR, DiagOGR and SubspaceOGR extend this table with their own.
REGRESSION_CHECKS: Mapping[str, Callable[[str, Any], Any]] = MappingProxyType(
    {
        "lr": check_nonnegative,
        "beta": check_unit_interval,
        "gamma": check_unit_interval,
        "div": check_positive,
        "cut": _check_cut,
        "sigma0": check_nonnegative,
        "h_prior": check_finite_real,
        "mean_init": _check_mean_init,
        "ridge_rel": optional(check_nonnegative),
        "ridge_abs": optional(check_nonnegative),
        "max_step_norm": optional(check_positive),
    }
)
