"""Coordinate-wise OGR (dOGR) as a ``torch.optim`` optimizer: O(D) memory, sync-free step.

The mathematics is :mod:`hessopt.curvature.diagonal` (:func:`~hessopt.curvature.diagonal.dogr_step_`);
this module validates, keeps the state and picks the eager or the compiled form.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any, ClassVar

import torch

from hessopt.curvature import diagonal as dogr
from hessopt.curvature.regression import default_ridge

from .base import HessoptOptimizer
from .checks import (
    REGRESSION_CHECKS,
    check_bool,
    check_positive,
    optional,
)

__all__ = ["DUDA_DOGR", "DiagOGR", "FUSED_MIN_NUMEL"]

#: Duda's dOGR tuning on 3-D Beale (arXiv:1901.11457, Fig. 4; his β 0.6 and γ 0.7 converted), for test
#: functions: ``DiagOGR(params, **DUDA_DOGR)``. The class defaults are for neural networks.
DUDA_DOGR = MappingProxyType(
    {
        "lr": 1.0,
        "beta": 0.4,
        "gamma": 0.3,
        "div": 1.4,
        "cut": 5.0,
        "max_coord_step": None,
        "mean_init": "zero",
    }
)

#: ``fused=None`` compiles the update of param groups with at least this many elements (smaller groups stay
#: eager: compiling costs seconds once, which a small model's steps never win back).
FUSED_MIN_NUMEL = 500_000

_COMPILE_FAILED: list[str] = []  # the first compile error of this process (then every group runs eagerly)


def _check_fused(name: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be None (compile large groups), True or False, got {value!r}")
    return value


def _finiteness_summary(grads: list[torch.Tensor], host: bool | None = None) -> torch.Tensor:
    """A vector that is finite exactly when every gradient entry is (nan and ±inf propagate); one read pass.

    Each tensor's min and max (``torch.aminmax``) on a CPU (``host``; default: the gradients' device), where
    it is about ten times faster than the inf-norm; elsewhere the multi-tensor inf-norm (one GPU kernel).
    """
    present = [g for g in grads if g.numel()]  # an empty tensor has no min, max or inf-norm
    if not present:
        return grads[0].new_zeros(0)
    if not (present[0].device.type == "cpu" if host is None else host):
        return torch.stack(torch._foreach_norm(present, float("inf")))
    return torch.stack([v for g in present for v in torch.aminmax(g)])


class DiagOGR(HessoptOptimizer):
    """Diagonal OGR: per-coordinate EMA gradient regression and a saddle-free Newton step per coordinate.

    Per coordinate, each ``step()`` does (hessopt's EMA convention ``ema = β·ema + (1−β)·x``; Duda's
    ``β_D = 1 − β``)::

        m ← γ m + (1−γ) g
        θ̄ ← β θ̄ + (1−β) θ,   ḡ ← β ḡ + (1−β) g
        s ← β s + (1−β)(θ − θ̄)²,   c ← β c + (1−β)(g − ḡ)(θ − θ̄)      ("c" form: v ← β v + (1−β)(g − ḡ)²)
        λ = (c + (w + δ)·h) / (s + w + δ)
        ("c" form: λ = (sqrt((s + w)(v + w·h²)) + δ|h|) / (s + w + δ))
        θ ← θ − clamp(lr · m / max(div·|λ|, cut), ±max_coord_step)

    ``w = sigma0·β^t`` is the decaying prior (``s0 = sigma0``, ``c0 = s0·h``) and
    ``δ = max(δ_rel·(s̄ + w), δ_abs)`` a non-decaying ridge floor, with ``s̄`` the mean of ``s`` over the
    tensor's coordinates that moved, taken before the update. ``λ_i`` equals ``H_ii`` on separable
    functions or when the coordinates move uncorrelated; its sign is kept, so the step is saddle-free per
    coordinate. The rate of every coordinate is at most ``lr/cut``, and its step at most ``max_coord_step``.

    **Defaults are for neural networks** (measured against ``torch.optim.Adam()`` on MLPs, a CNN, a deep
    autoencoder and a Fashion-MNIST MLP: docs/algorithms/ogr.md, "Network defaults"): a long statistics
    window (β 0.9), a Newton rate that the tiny ``cut`` barely caps, ``lr`` 0.1, and a per-coordinate trust
    bound ``max_coord_step = 0.01`` that keeps noisy small-curvature estimates from taking long steps.
    Duda's test-function settings are :data:`DUDA_DOGR` (``DiagOGR(params, **DUDA_DOGR)``).

    Args:
        params: parameters or param groups; every hyper-parameter below may differ per group.
        lr: ``η`` (default 0.1; Duda's functions: 1); 0 is legal (the parameters stay; see below).
        beta: EMA weight of old statistics (default 0.9, a window of 19 steps; Duda's functions: 0.4).
        gamma: EMA weight of the old momentum (default 0.3; Duda's 0.7 converted).
        div: divides the Newton rate ``1/|λ|`` (default 1.4, Duda's).
        cut: floor of ``div·|λ|``, in curvature units; must be > 0 (default 1e-4; Duda's functions: 5).
        sigma0: prior variance ``s0`` (default 1); 0 disables the prior.
        h_prior: prior curvature ``h`` that unobserved coordinates keep (default 0); finite.
        mean_init: ``"zero"`` (default: the means start at 0, as Duda's code) or ``"first"`` (at the first
            observation); docs/algorithms/ogr.md measures the two.
        corr1: the "c" form (``λ = sqrt(var g / var θ)``): the curvature SIGN IS LOST (no saddle repulsion)
            and gradient noise reads as curvature. Default False.
        ridge_rel, ridge_abs: the ridge floor's constants (None: ``sqrt(eps)``, ``sqrt(tiny)`` of the
            dtype; ``0, 0`` gives Duda's unguarded ratio).
        max_step_norm: scale each group's step to Euclidean norm at most this (None: no clip; default).
            Costs a second pass.
        max_coord_step: bound on every coordinate's step ``|Δθ_i|`` (default 0.01; None: no bound), in
            parameter units like Adam's ``lr``.
        fused: compile the update with ``torch.compile`` (one fused kernel per tensor, same arithmetic).
            None (default): for groups of at least :data:`FUSED_MIN_NUMEL` elements, falling back to the
            eager form with a warning if compilation fails; True: always (errors propagate); False: never.
            The first step of a compiled group pays the compilation (seconds to tens of seconds on a CPU).
        nonfinite: ``"skip"`` (default) or ``"raise"``; see :mod:`hessopt.optim.base`.

    Raises:
        TypeError: a hyper-parameter of the wrong type, or parameters that are not real floating point.
        ValueError: a hyper-parameter out of range (also in ``add_param_group`` and when a scheduler sets
            one), or meta-device parameters.

    **State** per parameter: ``m``, ``theta_mean``, ``g_mean``, ``s``, ``c`` (or ``v``) shaped like it, and
    the 0-dim ``prior_weight`` and ``s_mean``; counters in ``flat_state()``: ``nonfinite_skips`` (steps
    skipped for non-finite input) and ``nonfinite_results`` (steps in which some coordinate's update was
    refused). A parameter whose ``.grad`` is None is skipped (its state untouched).

    **Guarantees.** Non-finite input (loss or gradient) leaves parameters and state bit for bit unchanged
    and is counted (``nonfinite="raise"``: FloatingPointError naming the parameter). A coordinate whose
    update would not be finite (arithmetic overflow from a learning rate or gradient near the dtype's
    range) keeps its old parameter and statistics; the step is counted in ``nonfinite_results``
    (``"raise"``: FloatingPointError after the step, naming the parameter). ``lr`` must be representable in
    the parameters' dtype. With ``lr = 0`` the parameters do not move while the momentum and statistics
    keep observing (as Adam's moments do at ``lr = 0``), so a warm-up from 0 starts with a fitted model.

    **Cost** per step: one read-only finiteness pass over the gradients and, compiled, one fused pass over
    the five state vectors (eager: about 30 element-wise kernels per tensor); 5·D memory.

    References:
        J. Duda, arXiv:1901.11457, Fig. 4 (dOGR) and Fig. 7 ("c" forms); ``docs/algorithms/ogr.md``.
    """

    hyperparameter_checks: ClassVar = {
        **REGRESSION_CHECKS,
        "corr1": check_bool,
        "max_coord_step": optional(check_positive),
        "fused": _check_fused,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        *,
        beta: float = 0.9,
        gamma: float = 0.3,
        div: float = 1.4,
        cut: float = 1e-4,
        sigma0: float = 1.0,
        h_prior: float = 0.0,
        mean_init: str = "zero",
        corr1: bool = False,
        ridge_rel: float | None = None,
        ridge_abs: float | None = None,
        max_step_norm: float | None = None,
        max_coord_step: float | None = 0.01,
        fused: bool | None = None,
        nonfinite: str = "skip",
    ) -> None:
        """Validate the arguments and set up the state (see the class docstring)."""
        defaults = {
            "lr": lr,
            "beta": beta,
            "gamma": gamma,
            "div": div,
            "cut": cut,
            "sigma0": sigma0,
            "h_prior": h_prior,
            "mean_init": mean_init,
            "corr1": corr1,
            "ridge_rel": ridge_rel,
            "ridge_abs": ridge_abs,
            "max_step_norm": max_step_norm,
            "max_coord_step": max_coord_step,
            "fused": fused,
            "nonfinite": nonfinite,
        }
        super().__init__(params, defaults)

    # ----------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def curvature_estimates(self) -> list[torch.Tensor | None]:
        """The current per-coordinate curvature ``λ`` of every parameter (None before its first step).

        The floor is taken from the current statistics (as
        :class:`hessopt.curvature.diagonal.DiagonalGradientRegression` does).

        Returns:
            One tensor per parameter in ``param_groups`` order, shaped like it; signed for the regression
            form, ``>= 0`` for the "c" form. Cost O(D).
        """
        out: list[torch.Tensor | None] = []
        for group in self.param_groups:
            hp = self.group_hyperparameters(group)
            for p in group["params"]:
                st = self.state[p]
                if "m" not in st:
                    out.append(None)
                    continue
                rel, abs_ = default_ridge(p.dtype, hp["ridge_rel"], hp["ridge_abs"])
                w = st["prior_weight"]
                ridge = dogr.dogr_ridge(dogr.moved_mean(st["s"]), w, ridge_rel=rel, ridge_abs=abs_)
                stat = st["v" if hp["corr1"] else "c"]
                out.append(
                    dogr.dogr_curvature(st["s"], stat, w, ridge, h_prior=hp["h_prior"], corr1=hp["corr1"])
                )
        return out

    # ----------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One dOGR step.

        Args:
            closure: optional; re-evaluates the loss and gradients (as for ``torch.optim.Adam``).

        Returns:
            The closure's loss, or None.

        Raises:
            FloatingPointError: ``nonfinite="raise"`` and a non-finite loss, gradient or result.
            TypeError: sparse gradients.
            ValueError: a hyper-parameter set out of range, or ``corr1`` changed after the first step.
        """
        loss = None if closure is None else self.evaluate_closure(closure, need_loss=False)
        work = []
        for group in self.param_groups:
            hp = self.group_hyperparameters(group)
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                if any(p.grad.is_sparse for p in params):
                    raise TypeError("DiagOGR does not support sparse gradients")
                work.append((group, hp, params))
        if not work:
            return loss
        params = [p for _, _, ps in work for p in ps]
        grads = [p.grad for p in params]
        read = all(g.device.type == "cpu" for g in grads)  # reading the flag costs no device sync there
        finite = self.check_nonfinite(loss, grads, params=params, summary=_finiteness_summary(grads))
        creates = any("m" not in self.state[p] for p in params)
        if (read or creates) and not bool(finite):
            # the state is created from a parameter's first *finite* observation (a sync on an accelerator,
            # on such steps only)
            return loss
        refused = [self._group_step(hp, ps, finite, read) for _, hp, ps in work]
        counts = torch.cat(refused)
        overflow = finite & (counts.sum() > 0)
        if self.uniform_hyperparameter("nonfinite") == "raise" and bool(overflow):
            bad = int(torch.nonzero(counts)[0])
            raise FloatingPointError(
                f"DiagOGR: the update of parameter {self._locate(params[bad])} would not have been finite at "
                f"{int(counts[bad])} coordinates (an overflow: lower lr or raise cut); those coordinates "
                "were left unchanged"
            )
        self.add_to_counter("nonfinite_results", overflow)
        return loss

    def _locate(self, param: torch.Tensor) -> str:
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p is param:
                    return f"{pi} of param group {gi} (shape {tuple(p.shape)})"
        return "?"

    def _init_state(self, hp: dict[str, Any], p: torch.Tensor, stat: str) -> dict[str, Any]:
        st = self.state[p]
        if "m" not in st:  # a parameter's first observation (also for one that joins later)
            first = hp["mean_init"] == "first"
            st["m"] = torch.zeros_like(p)
            st["theta_mean"] = p.detach().clone() if first else torch.zeros_like(p)
            st["g_mean"] = p.grad.detach().clone() if first else torch.zeros_like(p)
            st["s"] = torch.zeros_like(p)
            st[stat] = torch.zeros_like(p)
            st["prior_weight"] = torch.tensor(hp["sigma0"], dtype=p.dtype, device=p.device)
            st["s_mean"] = torch.zeros((), dtype=p.dtype, device=p.device)
        elif stat not in st:
            raise ValueError(
                "DiagOGR: corr1 cannot change after a parameter's first step (its statistics differ)"
            )
        return st

    def _group_step(
        self, hp: dict[str, Any], params: list[torch.Tensor], finite: torch.Tensor, read: bool
    ) -> torch.Tensor:
        """Run the update of one group; returns the per-tensor counts of refused coordinates."""
        stat = "v" if hp["corr1"] else "c"
        states = [self._init_state(hp, p, stat) for p in params]
        rel, abs_ = default_ridge(params[0].dtype, hp["ridge_rel"], hp["ridge_abs"])
        scalars = {
            "rate_m": 1.0 - hp["gamma"],
            "rate": 1.0 - hp["beta"],
            "beta": hp["beta"],
            "lr_div": hp["lr"] / hp["div"],
            "bound": hp["cut"] / hp["div"],
            "h_prior": hp["h_prior"],
            "ridge_rel": rel,
            "ridge_abs": abs_,
            "max_coord_step": float("inf") if hp["max_coord_step"] is None else hp["max_coord_step"],
        }
        clip = hp["max_step_norm"] is not None
        if clip:
            scalars["max_step_norm"] = hp["max_step_norm"]
        args = (
            params,
            [p.grad for p in params],
            *(
                [st[k] for st in states]
                for k in ("m", "theta_mean", "g_mean", "s", stat, "prior_weight", "s_mean")
            ),
        )
        if self._compile(hp, params):
            tensors = {
                k: torch.tensor(v, dtype=params[0].dtype, device=params[0].device) for k, v in scalars.items()
            }
            try:
                with warnings.catch_warnings():  # torch's compiler imports its own deprecated torch.jit code
                    warnings.filterwarnings(
                        "ignore", message="`torch.jit.script", category=DeprecationWarning
                    )
                    return dogr.compiled_dogr_step()(*args, tensors, finite, corr1=hp["corr1"], clip=clip)
            except Exception as err:  # noqa: BLE001 -- any compiler failure: fall back to the eager form
                if hp["fused"] is True:
                    raise
                _COMPILE_FAILED.append(f"{type(err).__name__}: {err}")
                warnings.warn(
                    f"DiagOGR: torch.compile failed ({_COMPILE_FAILED[0][:200]}); using the eager update "
                    "(same arithmetic, slower). Pass fused=False to silence this.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if read and not clip:
            refused = dogr.dogr_step_foreach_(*args, scalars, corr1=hp["corr1"])
            if refused is not None:
                return refused
        return dogr.dogr_step_(*args, scalars, None if read else finite, corr1=hp["corr1"], clip=clip)

    @staticmethod
    def _compile(hp: dict[str, Any], params: list[torch.Tensor]) -> bool:
        if hp["fused"] is not None:
            return hp["fused"]
        return not _COMPILE_FAILED and sum(p.numel() for p in params) >= FUSED_MIN_NUMEL
