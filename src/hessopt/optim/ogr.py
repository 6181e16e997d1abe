"""Full-matrix OGR (online gradient regression) with saddle-free Newton steps, as a ``torch.optim`` optimizer.

The mathematics is :mod:`hessopt.curvature.regression` (:func:`~hessopt.curvature.regression.ogr_observe`,
:func:`~hessopt.curvature.regression.ogr_hessian`, :func:`~hessopt.curvature.regression.saddle_free_step`);
this module validates, keeps the state in the flat-state slot and runs the optional line search.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch

from hessopt.curvature import flat
from hessopt.curvature.linesearch import along_direction, armijo, strong_wolfe
from hessopt.curvature.regression import (
    clip_to_norm,
    default_ridge,
    first_means,
    ogr_hessian,
    ogr_initial_state,
    ogr_observe,
    saddle_free_step,
    symmetric_eigh,
)

from .base import HessoptOptimizer
from .checks import (
    REGRESSION_CHECKS,
    check_bool,
    check_choice,
    check_in_range,
    check_positive_int,
)

__all__ = ["OGR", "LINE_SEARCHES"]

LINE_SEARCHES = (None, "armijo", "strong_wolfe")

# the statistics OGR keeps in the flat-state slot (ogr_initial_state's keys)
_STAT_KEYS = ("theta_mean", "g_mean", "sigma", "cross", "grad_cov", "prior_weight", "count")
# the statistics hold Σ and C; a step adds H, its eigenvectors and a temporary of the solve
_MATRICES_AT_PEAK = 5


class OGR(HessoptOptimizer):
    """Full OGR: EMA regression Hessian over all parameters, saddle-free Newton step on the momentum.

    Each ``step()``:

    1. reads ``g`` at the current ``θ`` (after calling the closure, if given) and adds the observation
       ``(θ, g)`` to the statistics (:func:`~hessopt.curvature.regression.ogr_observe`): ``θ̄, ḡ`` first,
       then ``Σ = Cov(θ)`` and ``C = Cov(g, θ)`` with the new means, all EMAs with rate ``beta``;
    2. updates the momentum ``m ← γ m + (1−γ) g`` (``m0 = 0``);
    3. solves the symmetric least-squares Hessian ``H Σ + Σ H = C + Cᵀ`` (with the decaying prior and the
       non-decaying ridge floor), ``H = Q diag(λ) Qᵀ``;
    4. steps ``θ ← θ − Q diag(lr / max(div·|λ|, cut)) Qᵀ m``, optionally clipped to ``max_step_norm``, or,
       with a line search, searches along that direction (below).

    Hyper-parameters use hessopt's EMA convention ``ema = β·ema + (1−β)·x`` (Duda's ``β_D = 1 − β``).
    Defaults are Duda's fOGR settings for 3-D Beale (docs/algorithms/ogr.md): test-function scale, and
    ``cut`` is in curvature units, so it is scale-dependent.

    Args:
        params: parameters or param groups; one matrix couples all of them, so every hyper-parameter must be
            equal across groups and all parameters must share one dtype and device.
        lr: ``η``, the step size multiplying the per-direction rates (default 1: a full Newton step on the
            modelled parabola when ``div = 1``). 0 is legal (see below).
        beta: EMA weight of old statistics (default 0.5; Duda's 0.5). Window ``(1+β)/(1−β)`` = 3 observations.
        gamma: EMA weight of the old momentum (default 0.4; Duda's 0.6 converted). ``gamma=0`` steps on the
            raw gradient (the 2025 comparison code's OGR).
        div: divides the Newton rate ``1/|λ|`` (default 1.5).
        cut: floor on ``div·|λ|``, so every rate is at most ``lr/cut`` (default 10). Must be > 0; emulate
            "no floor" with a tiny value such as 1e-12.
        sigma0: prior variance ``s0`` (``Σ0 = s0·I``, ``C0 = s0·H_prior``), decaying like ``β^t`` (default 1).
        h_prior: prior Hessian ``h·I`` (default 0 as Duda; the 2025 comparison code uses 1). Finite.
        mean_init: ``"zero"`` (default: the EMA means start at 0, as Duda's code) or ``"first"`` (at the first
            observation). docs/algorithms/ogr.md measures both.
        corr1: the "c" form cfOGR (``corr(g, θ) = 1``): the curvature sign is LOST (no saddle repulsion) and
            gradient noise reads as curvature. Default False.
        ridge_rel, ridge_abs: the non-decaying ridge floor ``δ = max(δ_rel·tr(Σ)/D, δ_abs)`` towards
            ``h_prior`` (a hessopt guard: directions that stop moving stay at the prior instead of rounding
            noise). None = ``sqrt(eps)`` and ``sqrt(tiny)`` of the dtype. ``0, 0`` reproduces Duda's code.
        max_step_norm: clip ``‖Δθ‖`` to this value; None (default) = no clip.
        line_search: None (default), ``"armijo"`` or ``"strong_wolfe"`` (first trial ``α = 1``). The search
            runs along ``d = −Δ``; when ``d`` is not a descent direction (momentum can make it so) it runs
            along the saddle-free step of the raw gradient, which always is. With no decrease found the
            parameters stay. Requires a closure that returns the loss.
        c1, c2, max_line_search_evals: line-search constants (1e-4, 0.9, 25).
        max_memory_fraction, memory_limit_bytes: refuse (ValueError at construction) when the ~5 dense
            (D, D) matrices of a step exceed this fraction of device memory (0.5) or this many bytes.
        nonfinite: ``"skip"`` (default) or ``"raise"`` (see :mod:`hessopt.optim.base`).

    Raises:
        TypeError, ValueError: an argument out of range or of the wrong type, naming it; parameters that
            do not share one floating dtype and device (also in ``add_param_group``); D too large.

    Parameters whose ``.grad`` is None are frozen for the step (gradient counted as 0, step component 0).

    **Guarantees.** A non-finite loss or gradient never enters the statistics, the momentum or the
    parameters; neither does a step whose *result* (statistics, momentum or new parameters) would not be
    finite, e.g. an overflow from a huge ``lr``: such steps are skipped and counted in ``nonfinite_skips``
    (``"raise"``: FloatingPointError). ``lr`` must be representable in the parameters' dtype. With
    ``lr = 0`` the parameters do not move; the statistics and the momentum still observe ``(θ, g)``.

    State (flat-state slot): ``theta_mean``, ``g_mean``, ``sigma``, ``cross`` (or ``grad_cov``),
    ``prior_weight``, ``count``; the momentum ``m``; counters ``n_iter``, ``evaluations`` (finite closure
    calls), ``line_search_failures``, ``nonfinite_skips``. :meth:`hessian` returns the estimate.

    Cost per step: O(D^2) for the statistics plus two ``eigh`` of (D, D) matrices, O(D^3); memory ~5 (D, D)
    matrices. For neural networks use :class:`hessopt.optim.DiagOGR` (O(D)).

    References:
        J. Duda, arXiv:1901.11457, Fig. 1; A. Przybysz, M. Kołek, F. Sobota, J. Duda, arXiv:2512.06969;
        ``docs/algorithms/ogr.md``.
    """

    hyperparameter_checks: ClassVar = {
        **REGRESSION_CHECKS,
        "corr1": check_bool,
        "line_search": lambda name, v: check_choice(name, v, LINE_SEARCHES),
        "c1": lambda name, v: check_in_range(name, v, 0.0, 1.0),
        "c2": lambda name, v: check_in_range(name, v, 0.0, 1.0),
        "max_line_search_evals": check_positive_int,
    }
    uniform_hyperparameters: ClassVar = True
    persistent_attributes: ClassVar = ("_memory_limits",)
    dense_matrices: ClassVar = _MATRICES_AT_PEAK
    needs_eigh: ClassVar = True
    fixed_size_state: ClassVar = ("m", "its statistics")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        *,
        beta: float = 0.5,
        gamma: float = 0.4,
        div: float = 1.5,
        cut: float = 10.0,
        sigma0: float = 1.0,
        h_prior: float = 0.0,
        mean_init: str = "zero",
        corr1: bool = False,
        ridge_rel: float | None = None,
        ridge_abs: float | None = None,
        max_step_norm: float | None = None,
        line_search: str | None = None,
        c1: float = 1e-4,
        c2: float = 0.9,
        max_line_search_evals: int = 25,
        max_memory_fraction: float = 0.5,
        memory_limit_bytes: int | None = None,
        nonfinite: str = "skip",
    ) -> None:
        """Validate the arguments and set up the state (see the class docstring)."""
        self.set_memory_limits(max_memory_fraction, memory_limit_bytes)
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
            "line_search": line_search,
            "c1": c1,
            "c2": c2,
            "max_line_search_evals": max_line_search_evals,
            "nonfinite": nonfinite,
        }
        super().__init__(params, defaults)

    def flat_state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes of the flat-state slot's tensors (over D parameters)."""
        d = flat.numel(self.parameters_in_order())
        return {
            "theta_mean": (d,),
            "g_mean": (d,),
            "m": (d,),
            "sigma": (d, d),
            "cross": (d, d),
            "grad_cov": (d, d),
        }

    # ----------------------------------------------------------------- state
    def _state(self, hp: dict[str, Any]) -> dict[str, Any]:
        """The flat-state slot, initialised before the first step."""
        st = self.flat_state()
        if "m" not in st:
            params = self.parameters_in_order()
            p0 = params[0]
            init = ogr_initial_state(
                flat.numel(params), sigma0=hp["sigma0"], corr1=hp["corr1"], dtype=p0.dtype, device=p0.device
            )
            st.update(init)
            st["m"] = torch.zeros_like(init["theta_mean"])
            for key in ("n_iter", "evaluations", "line_search_failures", "nonfinite_skips"):
                self._counter(key)
        return st

    @staticmethod
    def _statistics(st: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {k: st[k] for k in _STAT_KEYS if k in st}

    def _hessian(self, hp: dict[str, Any], stats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        rel, abs_ = default_ridge(stats["sigma"].dtype, hp["ridge_rel"], hp["ridge_abs"])
        return ogr_hessian(
            stats,
            h_prior=hp["h_prior"],
            ridge_rel=rel,
            ridge_abs=abs_,
        )

    @torch.no_grad()
    def hessian(self) -> torch.Tensor:
        """The current (D, D) Hessian estimate, in ``param_groups`` order (the prior before any step)."""
        hp = self.hyperparameters()
        return self._hessian(hp, self._statistics(self._state(hp)))

    @torch.no_grad()
    def zero_gradient_point(self) -> torch.Tensor:
        """The modelled zero-gradient point ``p = θ̄ − H⁺ḡ`` (flat). The step never jumps to it."""
        st = self._state(self.hyperparameters())
        return st["theta_mean"] - torch.linalg.pinv(self.hessian(), hermitian=True) @ st["g_mean"]

    # ----------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One OGR step.

        Without a line search the closure is optional (gradients are read from ``.grad``) and the step
        reads nothing back to the host (except with ``nonfinite="raise"``). The closure follows
        ``torch.optim.LBFGS``'s convention.

        Args:
            closure: zeroes the gradients, computes the loss, calls ``backward()`` and returns the loss.

        Returns:
            The closure's loss at the starting point, or None without a closure.

        Raises:
            ValueError: a line search without a closure.
            TypeError: a line search whose closure returned None.
            FloatingPointError: ``nonfinite="raise"`` and a non-finite input or result.
        """
        hp = self.hyperparameters()
        search = hp["line_search"]
        if search is not None and closure is None:
            raise ValueError(
                f"OGR(line_search={search!r}).step needs a closure that re-evaluates the loss and "
                "gradients; pass step(closure) or use line_search=None"
            )
        st = self._state(hp)
        loss = None if closure is None else self.evaluate_closure(closure, need_loss=search is not None)
        g, mask = self.flat_grad()
        if search is not None:
            loss_t = loss if isinstance(loss, torch.Tensor) else torch.as_tensor(loss, dtype=g.dtype)
            loss_t = self.global_loss(loss_t.detach())
            finite = self.check_nonfinite(loss_t, g)
            if not bool(finite):
                return loss
        else:
            finite = self.check_nonfinite(loss, g)
        if closure is not None:  # a skipped (non-finite) evaluation is counted in nonfinite_skips only
            self.add_to_counter("evaluations", finite)
        theta = self.flat_params()
        old = self._statistics(st)
        theta_obs, g_obs = theta, g
        if mask is not None:  # parameters without a gradient are not observed: they sit at their means
            tm, gm = first_means(old, theta, g, hp["mean_init"])
            theta_obs, g_obs = torch.where(mask, theta, tm), torch.where(mask, g, gm)
        new = ogr_observe(old, theta_obs, g_obs, beta=hp["beta"], mean_init=hp["mean_init"])
        m_new = torch.lerp(st["m"], g, 1.0 - hp["gamma"])
        ok = finite & torch.stack([torch.isfinite(v).all() for v in (*new.values(), m_new)]).all()
        stats = {k: torch.where(ok, new[k], old[k]) for k in old}  # H from finite statistics only
        m = torch.where(ok, m_new, st["m"])
        lam, q = symmetric_eigh(self._hessian(hp, stats))
        delta = clip_to_norm(
            saddle_free_step((lam, q), m, eta=hp["lr"], div=hp["div"], cut=hp["cut"]), hp["max_step_norm"]
        )
        if mask is not None:
            delta = delta.masked_fill(~mask, 0)
        if search is None:
            theta_new = theta - delta
            ok = ok & torch.isfinite(theta_new).all()
        else:
            ok = ok & torch.isfinite(delta).all()
        self._refuse_nonfinite_result(finite, ok)
        st.update({k: torch.where(ok, stats[k], old[k]) for k in old})
        st["m"] = torch.where(ok, m, st["m"])
        if search is None:
            flat.assign_flat(self.parameters_in_order(), torch.where(ok, theta_new, theta))
            self.add_to_counter("n_iter", ok)
            return loss
        if bool(ok):
            self._search(hp, closure, float(loss_t), theta, g, delta, (lam, q), mask)
        return loss

    def _refuse_nonfinite_result(self, finite: torch.Tensor, ok: torch.Tensor) -> None:
        """Count (or raise for) a step whose finite input gave a non-finite result."""
        overflow = finite & ~ok
        if self.uniform_hyperparameter("nonfinite") == "raise":
            if bool(overflow):
                raise FloatingPointError(
                    "OGR: the step's result (statistics, momentum or new parameters) would not be finite, an "
                    "overflow: lower lr or raise cut; nothing was changed"
                )
            return
        self.add_to_counter("nonfinite_skips", overflow)

    def _search(
        self,
        hp: dict[str, Any],
        closure: Callable[[], Any],
        f0: float,
        theta: torch.Tensor,
        g: torch.Tensor,
        delta: torch.Tensor,
        eig: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> None:
        """Line search along ``−delta`` (or the saddle-free raw-gradient step when that is not descent)."""
        d = delta.neg()
        dphi0 = float(torch.dot(g, d))
        if not dphi0 < 0:
            d = clip_to_norm(
                saddle_free_step(eig, g, eta=hp["lr"], div=hp["div"], cut=hp["cut"]), hp["max_step_norm"]
            ).neg_()
            if mask is not None:
                d.masked_fill_(~mask, 0)
            dphi0 = float(torch.dot(g, d))
        params = self.parameters_in_order()
        if not dphi0 < 0:  # g = 0 on the free parameters: nothing to search
            return

        def evaluate(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            flat.assign_flat(params, z)
            trial = self.evaluate_closure(closure, need_loss=True)
            if not isinstance(trial, torch.Tensor):
                trial = torch.as_tensor(trial, dtype=g.dtype, device=g.device)
            return self.global_loss(trial), self.flat_grad()[0]

        phi = along_direction(evaluate, theta, d)
        if hp["line_search"] == "strong_wolfe":
            result = strong_wolfe(
                phi,
                f0,
                dphi0,
                alpha0=1.0,
                c1=hp["c1"],
                c2=hp["c2"],
                max_evals=hp["max_line_search_evals"],
                alpha_max=torch.finfo(g.dtype).max,  # trial steps stay representable in the dtype
            )
        else:
            result = armijo(
                phi, f0, dphi0, alpha0=1.0, c=hp["c1"], max_backtracks=hp["max_line_search_evals"] - 1
            )
        self.add_to_counter("evaluations", result.evaluations)
        if not result.success:
            self.add_to_counter("line_search_failures")
        if result.alpha > 0:
            flat.assign_flat(params, torch.add(theta, d, alpha=result.alpha))
            self.add_to_counter("n_iter")
        else:
            flat.assign_flat(params, theta)
