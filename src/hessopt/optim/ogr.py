"""Full-matrix OGR (online gradient regression) with saddle-free Newton steps, as a ``torch.optim`` optimizer.

OGR (J. Duda, arXiv:1901.11457 "P2", Fig. 1; Przybysz, Kołek, Sobota, Duda, arXiv:2512.06969 "P1") estimates
the Hessian by least-squares regression of gradients against positions, with exponential moving averages,
never inverting anything and never assuming positive definiteness; the step then divides the momentum by
``|λ|`` in the estimate's eigenbasis (saddle-free Newton), so negative curvature pushes away from saddles.
The estimator is :class:`hessopt.curvature.regression.OnlineGradientRegression`; this class is its
optimizer shell. Section numbers (§) refer to hessopt's specification ``shared/research/ogr.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from hessopt.curvature import flat
from hessopt.curvature.linesearch import along_direction, armijo, strong_wolfe
from hessopt.curvature.regression import OnlineGradientRegression, saddle_free_rates

from .base import HessoptOptimizer
from .checks import (
    check_choice,
    check_cut,
    check_dense_memory,
    check_nonnegative,
    check_one_dtype_and_device,
    check_positive,
    check_positive_int,
    check_unit_interval,
    check_wolfe_constants,
)

__all__ = ["OGR"]

LINE_SEARCHES = (None, "armijo", "strong_wolfe")

_HYPERPARAMETERS = (
    "lr",
    "beta",
    "gamma",
    "div",
    "cut",
    "sigma0",
    "h_prior",
    "mean_init",
    "corr1",
    "ridge_rel",
    "ridge_abs",
    "max_step_norm",
    "line_search",
    "c1",
    "c2",
    "max_line_search_evals",
    "nonfinite",
)
# estimator statistics kept in the flat-state slot (names of OnlineGradientRegression's state_dict)
_EST_KEYS = ("theta_mean", "g_mean", "sigma", "cross", "grad_cov", "prior_weight", "count")
# the estimator holds Σ and C; a step adds H, its eigenvectors and a temporary of the solve
_MATRICES_AT_PEAK = 5


class OGR(HessoptOptimizer):
    """Full OGR: EMA regression Hessian over all parameters, saddle-free Newton step on the momentum.

    Each ``step()`` (§2.1-2.3; P2 Fig. 1 and R1 ``SGD-ORG basic.nb``):

    1. reads ``g`` at the current ``θ`` (after calling the closure, if given) and adds the observation
       ``(θ, g)`` to the estimator: ``θ̄, ḡ`` first, then ``Σ = Cov(θ)`` and ``C = Cov(g, θ)`` with the new
       means, all EMAs with rate ``beta``;
    2. updates the momentum ``m ← γ m + (1−γ) g`` (``m0 = 0``, as R1);
    3. solves the symmetric least-squares Hessian ``H Σ + Σ H = C + Cᵀ`` (with the decaying prior and the
       non-decaying ridge floor of §8.1), ``H = Q diag(λ) Qᵀ``;
    4. steps ``θ ← θ − Q diag(lr / max(div·|λ|, cut)) Qᵀ m``, optionally clipped to ``max_step_norm``, or,
       with a line search, searches along that direction (below).

    Hyper-parameters (all converted to hessopt's EMA convention ``ema = β·ema + (1−β)·x``; Duda's
    ``β_D = 1 − β``). Defaults are Duda's fOGR settings for 3-D Beale (R1 ``SGD-sORG 3D subspace.nb``,
    ``dsOGR.nb``; §2.4 and §9): test-function scale; ``cut`` is in curvature units, so it is scale-dependent.

    Args:
        params: parameters or param groups; one matrix couples all of them, so every hyper-parameter must be
            equal across groups and all parameters must share one dtype and device.
        lr: ``η``, the step size multiplying the per-direction rates (default 1: a full Newton step on the
            modelled parabola when ``div = 1``; R1).
        beta: EMA weight of old statistics (default 0.5; D: 0.5). Window ``(1+β)/(1−β)`` = 3 observations.
        gamma: EMA weight of the old momentum (default 0.4; D: 0.6). ``gamma=0`` steps on the raw gradient
            (R2's OGR).
        div: divides the Newton rate ``1/|λ|`` (default 1.5, R1).
        cut: floor on ``div·|λ|``, so every rate is at most ``lr/cut`` (default 10, R1). Must be > 0
            (§8 pitfall 2); emulate "no floor" with a tiny value such as 1e-12.
        sigma0: prior variance ``s0`` (``Σ0 = s0·I``, ``C0 = s0·H_prior``), decaying like ``β^t``
            (default 1, R1).
        h_prior: prior Hessian (scalar ``h·I``; default 0 as R1, R2 uses 1).
        mean_init: ``"first"`` (default; the EMA means start at the first observation, §8.3b) or ``"zero"``
            (R1/R2: a phantom observation ``θ = 0, g = 0`` with the prior's decaying weight).
        corr1: the "c" form cfOGR (§3.2): ``corr(g, θ) = 1`` approximation. The curvature sign is LOST (no
            saddle repulsion) and gradient noise reads as curvature. Default False.
        ridge_rel, ridge_abs: the non-decaying ridge floor ``δ = max(δ_rel·tr(Σ)/D, δ_abs)`` towards
            ``h_prior`` (§8.1, a hessopt guard: directions that stop moving stay at the prior instead of
            rounding noise). None = ``sqrt(eps)`` and ``sqrt(tiny)`` of the dtype; it biases estimates by
            about ``δ_rel·tr(Σ)/(D·l)`` along a direction of variance ``l`` (the mean ``tr(Σ)/D`` is
            taken over the coordinates that moved, so frozen parameters change nothing). ``0, 0``
            reproduces R1/R2.
        max_step_norm: clip ``‖Δθ‖`` to this value (R2's ``max_step_norm``); None (default) = no clip.
        line_search: None (default), ``"armijo"`` or ``"strong_wolfe"`` (the searches of
            :mod:`hessopt.curvature.linesearch`, first trial ``α = 1``). The search runs along ``d = −Δ``;
            when ``d`` is not a descent direction (momentum can make it so) it runs along the saddle-free
            step of the raw gradient, ``−Q f(λ) Qᵀ g``, which always is. With no decrease found the
            parameters stay. Requires a closure.
        c1, c2, max_line_search_evals: line-search constants (1e-4, 0.9, 25).
        max_memory_fraction, memory_limit_bytes: refuse (ValueError at construction) when the ~5 dense
            (D, D) matrices of a step exceed this fraction of device memory (0.5) or this many bytes.
        nonfinite: ``"skip"`` (default) or ``"raise"`` (see :mod:`hessopt.optim.base`): a non-finite loss or
            gradient never enters the statistics, the momentum or the parameters.

    Parameters whose ``.grad`` is None are frozen for the step (gradient counted as 0, step component 0).

    State (flat-state slot): the estimator's ``theta_mean``, ``g_mean``, ``sigma``, ``cross`` (or
    ``grad_cov`` with ``corr1``), ``prior_weight``, ``count``; the momentum ``m``; counters ``n_iter``,
    ``evaluations`` (finite closure calls), ``line_search_failures``, ``nonfinite_skips``.
    :meth:`hessian` returns the estimate.

    Cost per step: O(D^2) for the statistics plus two ``eigh`` of (D, D) matrices, O(D^3); memory ~5 (D, D)
    matrices. For neural networks use :class:`hessopt.optim.DiagOGR` (O(D)).
    """

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
        mean_init: str = "first",
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
        defaults = self._validated(
            lr=lr,
            beta=beta,
            gamma=gamma,
            div=div,
            cut=cut,
            sigma0=sigma0,
            h_prior=h_prior,
            mean_init=mean_init,
            corr1=corr1,
            ridge_rel=ridge_rel,
            ridge_abs=ridge_abs,
            max_step_norm=max_step_norm,
            line_search=line_search,
            c1=c1,
            c2=c2,
            max_line_search_evals=max_line_search_evals,
            nonfinite=nonfinite,
        )
        super().__init__(params, defaults)
        self._hyperparameters()
        check_one_dtype_and_device(self.parameters_in_order(), "OGR")
        check_dense_memory(
            self.parameters_in_order(),
            matrices=_MATRICES_AT_PEAK,
            who="OGR",
            max_memory_fraction=max_memory_fraction,
            memory_limit_bytes=memory_limit_bytes,
        )
        self._estimator: OnlineGradientRegression | None = None

    # ----------------------------------------------------------------- validation
    @staticmethod
    def _validated(**hp: Any) -> dict[str, Any]:
        out = dict(hp)
        out["lr"] = check_nonnegative("lr", hp["lr"])
        out["beta"] = check_unit_interval("beta", hp["beta"])
        out["gamma"] = check_unit_interval("gamma", hp["gamma"])
        out["div"] = check_positive("div", hp["div"])
        out["cut"] = check_cut(hp["cut"])
        out["sigma0"] = check_nonnegative("sigma0", hp["sigma0"])
        if isinstance(hp["h_prior"], bool) or not isinstance(hp["h_prior"], (int, float)):
            raise TypeError(f"h_prior must be a real number (the prior Hessian h*I), got {hp['h_prior']!r}")
        out["h_prior"] = float(hp["h_prior"])
        check_choice("mean_init", hp["mean_init"], ("first", "zero"))
        if not isinstance(hp["corr1"], bool):
            raise TypeError(f"corr1 must be True or False, got {hp['corr1']!r}")
        for name in ("ridge_rel", "ridge_abs"):
            if hp[name] is not None:
                out[name] = check_nonnegative(name, hp[name])
        if hp["max_step_norm"] is not None:
            out["max_step_norm"] = check_positive("max_step_norm", hp["max_step_norm"])
        check_choice("line_search", hp["line_search"], LINE_SEARCHES)
        out["c1"], out["c2"] = check_wolfe_constants(hp["c1"], hp["c2"])
        out["max_line_search_evals"] = check_positive_int(
            "max_line_search_evals", hp["max_line_search_evals"]
        )
        return out

    def _hyperparameters(self) -> dict[str, Any]:
        """The validated hyper-parameters, equal across groups (re-validated only when a value changed)."""
        key = tuple(tuple(group[name] for name in _HYPERPARAMETERS) for group in self.param_groups)
        if getattr(self, "_hp_key", None) != key:
            hp = {name: self.uniform_hyperparameter(name) for name in _HYPERPARAMETERS}
            self._hp, self._hp_key = self._validated(**hp), key
        return self._hp

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group before the first step (the statistics have a fixed size once allocated)."""
        if self.param_groups and "m" in self.flat_state():
            raise RuntimeError(
                "OGR cannot add parameters after its first step: its statistics have a fixed size"
            )
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._estimator = None  # rebuilt from the loaded tensors at the next use

    # ----------------------------------------------------------------- state
    def _est(self, hp: dict[str, Any]) -> OnlineGradientRegression:
        """The estimator, built once and re-attached to the flat-state tensors after a load."""
        params = self.parameters_in_order()
        st = self.flat_state()
        if self._estimator is None:
            p0 = params[0]
            est = OnlineGradientRegression(
                flat.numel(params),
                beta=hp["beta"],
                sigma0=hp["sigma0"],
                h_prior=hp["h_prior"],
                mean_init=hp["mean_init"],
                corr1=hp["corr1"],
                ridge_rel=hp["ridge_rel"],
                ridge_abs=hp["ridge_abs"],
                dtype=p0.dtype,
                device=p0.device,
            )
            if "m" in st:  # resuming: attach the saved statistics
                est.load_state_dict({k: st[k] for k in est.state_dict()})
            else:
                st["m"] = torch.zeros(est.dim, dtype=p0.dtype, device=p0.device)
                for key in ("n_iter", "evaluations", "line_search_failures", "nonfinite_skips"):
                    self._counter(key)
            self._estimator = est
            self._store(est)
        elif self._estimator.beta != hp["beta"]:
            self._estimator.beta = hp["beta"]  # a scheduler may change beta between steps
        return self._estimator

    def _store(self, est: OnlineGradientRegression) -> None:
        st = self.flat_state()
        for key in _EST_KEYS:
            value = getattr(est, key)
            if value is not None:
                st[key] = value

    @torch.no_grad()
    def hessian(self) -> torch.Tensor:
        """The current (D, D) Hessian estimate, in ``param_groups`` order (the prior before any step)."""
        return self._est(self._hyperparameters()).hessian()

    @torch.no_grad()
    def zero_gradient_point(self) -> torch.Tensor:
        """The modelled zero-gradient point ``p = θ̄ − H⁺ḡ`` (flat; §2.2 iii). The step never jumps to it."""
        return self._est(self._hyperparameters()).zero_gradient_point()

    # ----------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        """One OGR step; returns the closure's loss at the starting point (None without a closure).

        Without a line search the closure is optional (gradients are read from ``.grad``) and the step
        reads nothing back to the host. The closure follows ``torch.optim.LBFGS``'s convention.
        """
        hp = self._hyperparameters()
        if hp["line_search"] is not None and closure is None:
            raise ValueError(
                f"OGR(line_search={hp['line_search']!r}).step needs a closure that re-evaluates the loss and "
                "gradients; pass step(closure) or use line_search=None"
            )
        est = self._est(hp)
        st = self.flat_state()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        g, mask = self.flat_grad()
        if hp["line_search"] is not None:
            loss_t = loss if isinstance(loss, torch.Tensor) else torch.as_tensor(loss, dtype=g.dtype)
            loss_t = self.global_loss(loss_t)
            finite = self.check_nonfinite(loss_t, g)
            if not bool(finite):
                return loss
        else:
            finite = self.check_nonfinite(loss, g)
        if closure is not None:  # a skipped (non-finite) evaluation is counted in nonfinite_skips only
            self.add_to_counter("evaluations", finite)
        theta = self.flat_params()
        est.update(theta, g, mask=finite)
        self._store(est)
        gamma = hp["gamma"]
        st["m"] = torch.where(finite, torch.lerp(st["m"], g, 1.0 - gamma), st["m"])
        lam, q = torch.linalg.eigh(est.hessian())
        rates = saddle_free_rates(lam, eta=hp["lr"], div=hp["div"], cut=hp["cut"])
        delta = q @ (rates * (q.mT @ st["m"]))
        if hp["max_step_norm"] is not None:
            norm = torch.linalg.vector_norm(delta)
            delta = delta * torch.clamp(
                hp["max_step_norm"] / norm.clamp_min(torch.finfo(norm.dtype).tiny), max=1.0
            )
        if mask is not None:
            delta = delta.masked_fill(~mask, 0)
        if hp["line_search"] is None:
            new = torch.where(finite, theta - delta, theta)
            flat.assign_flat(self.parameters_in_order(), new)
            self.add_to_counter("n_iter", finite)
            return loss
        self._search(hp, closure, float(loss_t), theta, g, delta, (rates, q), mask)
        return loss

    def _search(
        self,
        hp: dict[str, Any],
        closure: Callable[[], torch.Tensor],
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
            rates, q = eig
            d = (q @ (rates * (q.mT @ g))).neg_()
            if hp["max_step_norm"] is not None:
                norm = float(torch.linalg.vector_norm(d))
                if norm > hp["max_step_norm"]:
                    d.mul_(hp["max_step_norm"] / norm)
            if mask is not None:
                d.masked_fill_(~mask, 0)
            dphi0 = float(torch.dot(g, d))
        params = self.parameters_in_order()
        if not dphi0 < 0:  # g = 0 on the free parameters: nothing to search
            return

        def evaluate(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            flat.assign_flat(params, z)
            with torch.enable_grad():
                trial = closure()
            if not isinstance(trial, torch.Tensor):
                trial = torch.as_tensor(trial, dtype=g.dtype, device=g.device)
            return self.global_loss(trial), self.flat_grad()[0]

        phi = along_direction(evaluate, theta, d)
        if hp["line_search"] == "strong_wolfe":
            result = strong_wolfe(
                phi, f0, dphi0, alpha0=1.0, c1=hp["c1"], c2=hp["c2"], max_evals=hp["max_line_search_evals"]
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
