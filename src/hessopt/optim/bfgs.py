"""BFGS with a dense inverse-Hessian approximation, as a ``torch.optim`` optimizer.

Textbook BFGS (Nocedal & Wright, *Numerical Optimization*, 2nd ed., 2006, Algorithm 6.1; "NW"): the
direction is ``d = -H g``, a line search picks the step length, and ``H`` is updated with the pair
``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k`` by :func:`hessopt.curvature.quasi_newton.bfgs_inverse_update`.
This is the baseline of the BFGS-vs-OGR comparison (Przybysz, Kołek, Sobota, Duda, arXiv:2512.06969).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch

from hessopt.curvature import flat
from hessopt.curvature.linesearch import along_direction, armijo, strong_wolfe
from hessopt.curvature.quasi_newton import CURVATURE_FAILURE_MODES, bfgs_inverse_update

from .base import HessoptOptimizer
from .checks import (
    check_bool,
    check_choice,
    check_in_range,
    check_nonnegative,
    check_positive_int,
    optional,
)

__all__ = ["BFGS", "LINE_SEARCHES", "INITIAL_SCALINGS"]

LINE_SEARCHES = ("strong_wolfe", "armijo", None)
INITIAL_SCALINGS = ("nocedal_wright", "identity")

# BFGS holds H and, during an update, two more (D, D) matrices: the memory check counts three.
_MATRICES_AT_PEAK = 3


class BFGS(HessoptOptimizer):
    """BFGS quasi-Newton method with a dense (D, D) inverse-Hessian approximation over all parameters.

    One ``step()`` is one BFGS iteration (NW Algorithm 6.1):

    * **With a line search** (default ``line_search="strong_wolfe"``; or ``"armijo"``) ``step(closure)``
      evaluates the closure at the current point, takes ``d = -H g``, searches ``alpha`` along ``d``
      starting from ``alpha0 = lr``, moves to ``x + alpha d`` and updates ``H`` with
      ``s = alpha d`` and ``y = g(x + alpha d) - g(x)`` from the same closure. The closure is required.
      While ``H`` is still the unscaled identity (first step, or after a restart) the first trial is
      ``lr * min(1, 1/||d||)``, a steepest-descent step of length at most ``lr``, as scipy
      (``1.01/||g||``) and ``torch.optim.LBFGS`` (``1/||g||_1``) do: ``d = -g`` is not scaled to the
      curvature, so the unit step can be arbitrarily long (NW section 3.5 on initial step lengths).
      The closure is called once at the start and once per trial, so a deterministic problem costs one
      evaluation more per iteration than ``scipy.optimize.minimize(method="BFGS")`` unless
      ``reuse_evaluation=True``. ``.grad`` is left as computed at the last trial, which need not be the
      accepted point.
    * **Without a line search** (``line_search=None``) the step is ``theta <- theta - lr H g``: ``lr`` is
      applied once (never ``lr^2``, a bug of the 2025 comparison code; docs/algorithms/bfgs.md). The
      closure may be omitted; the gradients are then read from ``.grad``. The pair ``(s, y)`` is formed
      at the *next* call, from the position and gradient stored at this one, and ``H`` is updated before
      the next direction is taken;
      the ``H`` returned by :meth:`inverse_hessian` after a step is therefore the one that step used.
      This path reads nothing back to the host.

    Args:
        params: parameters or param groups. All must share one dtype (float32/float64) and device; the
            matrix couples all of them, so every hyper-parameter must be equal across groups.
        lr: with a line search, the first trial step ``alpha0`` (default 1, the quasi-Newton unit step,
            NW section 3.5); without, the fixed step size. 0 is legal (what a scheduler may produce): the
            step then evaluates the closure and moves nothing (with a line search no trial is made and ``H``
            stays; without, the pair formed at the next call has ``s = 0`` and is skipped). ``lr`` must be
            representable in the parameters' dtype.
        line_search: ``"strong_wolfe"`` (NW Alg. 3.5/3.6), ``"armijo"`` (backtracking, tau = 0.5; does not
            guarantee ``s^T y > 0``, so updates may be skipped), or None (fixed ``lr``).
        initial_scaling: ``"nocedal_wright"`` (default): before the first update, ``H0 = (s^T y / y^T y) I``
            (NW eq. 6.20); the first step uses ``H = I``. ``"identity"``: ``H0 = I`` throughout, as scipy.
        curvature_failure: ``"skip"`` (default): no update when ``s^T y <= curvature_eps ||s|| ||y||``, so
            ``H`` stays positive definite. ``"scipy"``: always update, ``rho = 1000`` when ``s^T y == 0``
            (``scipy.optimize`` behaviour).
        curvature_eps: tolerance of the skip rule; default None = ``sqrt(machine eps)`` of the dtype
            (:func:`hessopt.curvature.quasi_newton.default_curvature_eps`).
        c1, c2: Wolfe constants (NW p. 142: 1e-4 and 0.9 for quasi-Newton); Armijo uses ``c1`` only.
        max_line_search_evals: closure evaluations per line search (25); Armijo backtracks at most
            ``max_line_search_evals - 1`` times.
        tolerance_grad: ``step()`` does nothing when ``max|g| <= tolerance_grad``. Default 0.0: no early
            stop, except that an exactly zero gradient (nothing to do) is a no-op.
        reuse_evaluation: line-search modes only. False (default): every step starts with a closure call.
            True: when the parameters are bit for bit where the previous step left them, the loss and
            gradient of that step's accepted trial are reused instead (one evaluation less per iteration,
            matching scipy's evaluation count); the returned loss is then that cached value and ``.grad``
            keeps the last trial's gradients. Only for deterministic closures: with mini-batches each step
            must see its own batch. The cache (``x_last``, ``g_last``, ``f_last``, ``mask_last``) is part of
            the state.
        max_memory_fraction: refuse (ValueError, at construction) when BFGS's peak working set, three
            (D, D) matrices, would exceed this fraction of the device's memory (physical memory on CPU,
            free memory on CUDA). Default 0.5.
        memory_limit_bytes: explicit limit in bytes for that working set, replacing the fraction rule.
        nonfinite: ``"skip"`` (default) or ``"raise"``; see :mod:`hessopt.optim.base`. A non-finite loss
            or gradient at the start of a step leaves parameters and ``H`` unchanged. Non-finite values at
            line-search trial points are not input errors: the search treats them as a too-long step.

    Line-search safeguards: when ``d = -H g`` is not a descent direction (possible only with
    ``curvature_failure="scipy"`` or by rounding), ``H`` is reset to ``I`` and ``d = -g``. When the search
    finds no point lower than the current one, the parameters are left where they were and ``H`` is reset
    to ``I`` (with the initial scaling re-applied at the next update): a restart along steepest descent.
    At a minimum where rounding hides any further decrease, every later step thus spends
    ``max_line_search_evals`` evaluations and leaves the parameters in place; use ``tolerance_grad`` (or
    stop on ``line_search_failures``) to end such runs.

    Parameters whose ``.grad`` is None at the start of a step are frozen for that step: their gradient
    counts as zero and their component of the step is zeroed, so they are not changed.

    State (flat-state slot of :mod:`hessopt.optim.base`, all tensors, saved by ``state_dict()``): ``H``
    (D, D); ``scaled`` (bool: an update has been applied since the last (re)start); int64 counters
    ``n_iter`` (steps that moved), ``evaluations`` (closure calls, except the one call of a step skipped
    for non-finite input, which only ``nonfinite_skips`` counts, so that a skipped step leaves the rest
    of the state untouched: total calls = ``evaluations + nonfinite_skips``), ``curvature_skips``,
    ``line_search_failures`` (searches that did not meet their conditions), ``restarts`` and
    ``nonfinite_skips``; with ``line_search=None`` also ``x_prev``, ``g_prev`` (D,) and ``has_prev``
    (bool); with ``reuse_evaluation=True`` the cache described there.

    Guarantees: a step whose new parameters would not be finite (an overflow of ``-lr H g``) is refused
    and counted in ``nonfinite_skips`` (``nonfinite="raise"``: FloatingPointError); line-search trials
    never accept a non-finite point, and an update that would make ``H`` non-finite is skipped.

    Cost per step: O(D^2) time for ``H g`` and the update, plus the closure evaluations; memory three
    (D, D) matrices at peak. For large D use hessopt's diagonal or subspace methods instead.

    Raises:
        TypeError, ValueError: an argument out of range or of the wrong type, naming it (also for groups
            added later); parameters that do not share one floating dtype and device; D too large.

    References:
        J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., Springer 2006, ch. 6;
        ``docs/algorithms/bfgs.md``.
    """

    hyperparameter_checks: ClassVar = {
        "lr": check_nonnegative,
        "line_search": lambda name, v: check_choice(name, v, LINE_SEARCHES),
        "initial_scaling": lambda name, v: check_choice(name, v, INITIAL_SCALINGS),
        "curvature_failure": lambda name, v: check_choice(name, v, CURVATURE_FAILURE_MODES),
        "curvature_eps": optional(check_nonnegative),
        "c1": lambda name, v: check_in_range(name, v, 0.0, 1.0),
        "c2": lambda name, v: check_in_range(name, v, 0.0, 1.0),
        "max_line_search_evals": check_positive_int,
        "tolerance_grad": check_nonnegative,
        "reuse_evaluation": check_bool,
    }
    uniform_hyperparameters: ClassVar = True
    persistent_attributes: ClassVar = ("_memory_limits",)
    dense_matrices: ClassVar = _MATRICES_AT_PEAK
    fixed_size_state: ClassVar = ("H", "its matrix")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        *,
        line_search: str | None = "strong_wolfe",
        initial_scaling: str = "nocedal_wright",
        curvature_failure: str = "skip",
        curvature_eps: float | None = None,
        c1: float = 1e-4,
        c2: float = 0.9,
        max_line_search_evals: int = 25,
        tolerance_grad: float = 0.0,
        reuse_evaluation: bool = False,
        max_memory_fraction: float = 0.5,
        memory_limit_bytes: int | None = None,
        nonfinite: str = "skip",
    ) -> None:
        """Validate the arguments and set up the state (see the class docstring)."""
        self.set_memory_limits(max_memory_fraction, memory_limit_bytes)
        defaults = {
            "lr": lr,
            "line_search": line_search,
            "initial_scaling": initial_scaling,
            "curvature_failure": curvature_failure,
            "curvature_eps": curvature_eps,
            "c1": c1,
            "c2": c2,
            "max_line_search_evals": max_line_search_evals,
            "tolerance_grad": tolerance_grad,
            "reuse_evaluation": reuse_evaluation,
            "nonfinite": nonfinite,
        }
        super().__init__(params, defaults)

    def flat_state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes of the flat-state slot's tensors (over D parameters)."""
        d = flat.numel(self.parameters_in_order())
        vectors = ("x_prev", "g_prev", "x_last", "g_last", "mask_last")
        return {"H": (d, d), **{k: (d,) for k in vectors}}

    # ----------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        st = self.flat_state()
        if "H" not in st:
            params = self.parameters_in_order()
            p0 = params[0]
            D = flat.numel(params)
            st["H"] = torch.eye(D, dtype=p0.dtype, device=p0.device)
            st["scaled"] = torch.zeros((), dtype=torch.bool, device=p0.device)
            for key in ("n_iter", "evaluations", "curvature_skips", "line_search_failures", "restarts"):
                self._counter(key)
            self._counter("nonfinite_skips")
        return st

    def inverse_hessian(self) -> torch.Tensor:
        """A copy of the current (D, D) inverse-Hessian approximation, in ``param_groups`` order.

        Returns:
            ``H``; before the first step the identity that the first step uses.
        """
        return self._state()["H"].clone()

    def _restart(self, st: dict[str, Any]) -> None:
        st["H"] = torch.eye(st["H"].shape[0], dtype=st["H"].dtype, device=st["H"].device)
        st["scaled"] = torch.zeros_like(st["scaled"])
        self.add_to_counter("restarts")

    def _update(
        self,
        st: dict[str, Any],
        s: torch.Tensor,
        y: torch.Tensor,
        hp: dict[str, Any],
        gate: torch.Tensor | None,
    ) -> None:
        """Apply the BFGS update of ``(s, y)`` to ``st["H"]`` where ``gate`` (0-dim bool or None) allows."""
        H = st["H"]
        scale = None
        if hp["initial_scaling"] == "nocedal_wright":
            sy, yy = torch.dot(s, y), torch.dot(y, y)
            use = (~st["scaled"]) & (sy > 0) & (yy > 0)
            scale = torch.where(use, sy / torch.where(use, yy, torch.ones_like(yy)), torch.ones_like(sy))
        H_new, ok = bfgs_inverse_update(
            H, s, y, curvature_failure=hp["curvature_failure"], eps=hp["curvature_eps"], scale=scale
        )
        ok = ok & torch.isfinite(H_new).all()
        if gate is not None:
            ok = ok & gate
            self.add_to_counter("curvature_skips", gate & ~ok)
        else:
            self.add_to_counter("curvature_skips", ~ok)
        st["H"] = torch.where(ok, H_new, H)
        st["scaled"] = st["scaled"] | ok

    # ----------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One BFGS iteration.

        Args:
            closure: follows ``torch.optim.LBFGS``'s convention: it zeroes the gradients, computes the loss,
                calls ``backward()`` and returns the loss. It runs with gradients enabled. Required with a
                line search.

        Returns:
            The closure's loss at the starting point (None without a closure).

        Raises:
            ValueError: a line search without a closure.
            TypeError: a line search whose closure returned None (``return loss`` forgotten).
            FloatingPointError: ``nonfinite="raise"`` and a non-finite loss, gradient or step.
        """
        hp = self.hyperparameters()
        if hp["line_search"] is not None and closure is None:
            raise ValueError(
                f"BFGS(line_search={hp['line_search']!r}).step needs a closure that re-evaluates the loss "
                "and gradients; pass step(closure), or use BFGS(line_search=None) for fixed-lr steps"
            )
        st = self._state()
        cached = self._cached_evaluation(st) if hp["reuse_evaluation"] and hp["line_search"] else None
        if cached is not None:
            loss, g, mask = cached
        else:
            loss = None
            if closure is not None:
                loss = self.evaluate_closure(closure, need_loss=hp["line_search"] is not None)
            g, mask = self.flat_grad()
        evaluated = cached is None and closure is not None
        if hp["line_search"] is None:
            self._fixed_step(st, hp, loss, g, mask, evaluated)
        else:
            assert closure is not None
            self._search_step(st, hp, closure, loss, g, mask, evaluated)
        return loss

    def _cached_evaluation(
        self, st: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """The previous step's final (loss, gradient, grad mask) if the parameters are still exactly there."""
        if "x_last" not in st or not torch.equal(self.flat_params(), st["x_last"]):
            return None
        mask = st["mask_last"]
        return st["f_last"].clone(), st["g_last"], None if bool(mask.all()) else mask

    def _fixed_step(
        self,
        st: dict[str, Any],
        hp: dict[str, Any],
        loss: Any,
        g: torch.Tensor,
        mask: torch.Tensor | None,
        evaluated: bool,
    ) -> None:
        finite = self.check_nonfinite(loss, g)
        if evaluated:
            self.add_to_counter("evaluations", finite)
        active = finite & (g.abs().amax() > hp["tolerance_grad"])
        x = self.flat_params()
        if "x_prev" in st:
            self._update(st, x - st["x_prev"], g - st["g_prev"], hp, gate=active & st["has_prev"])
            st["x_prev"] = torch.where(active, x, st["x_prev"])
            st["g_prev"] = torch.where(active, g, st["g_prev"])
            st["has_prev"] = st["has_prev"] | active
        else:
            st["x_prev"], st["g_prev"], st["has_prev"] = (
                x,
                torch.where(active, g, torch.zeros_like(g)),
                active,
            )
        d = torch.mv(st["H"], g).neg_()
        if mask is not None:
            d = d.masked_fill_(~mask, 0)
        x_new = torch.add(x, d, alpha=hp["lr"])
        moved = active & torch.isfinite(x_new).all()  # an overflowing step (huge lr) is refused
        overflow = active & ~moved
        if self.uniform_hyperparameter("nonfinite") == "raise":
            if bool(overflow):
                raise FloatingPointError(
                    "BFGS: the step -lr*H*g would make parameters non-finite (an overflow: lower lr); the "
                    "parameters were left unchanged"
                )
        else:
            self.add_to_counter("nonfinite_skips", overflow)
        flat.assign_flat(self.parameters_in_order(), torch.where(moved, x_new, x))
        self.add_to_counter("n_iter", moved)

    def _search_step(
        self,
        st: dict[str, Any],
        hp: dict[str, Any],
        closure: Callable[[], torch.Tensor],
        loss: Any,
        g: torch.Tensor,
        mask: torch.Tensor | None,
        evaluated: bool,
    ) -> None:
        if not isinstance(loss, torch.Tensor):
            loss = torch.as_tensor(loss, dtype=g.dtype, device=g.device)
        loss = self.global_loss(loss)
        if not bool(self.check_nonfinite(loss, g)):
            return
        if evaluated:
            self.add_to_counter("evaluations")
        if float(g.abs().amax()) <= hp["tolerance_grad"] or hp["lr"] == 0:
            return  # lr = 0 (a scheduler's value): no trial step, nothing changes
        d = torch.mv(st["H"], g).neg_()
        if mask is not None:
            d = d.masked_fill_(~mask, 0)
        dphi0 = float(torch.dot(g, d))
        if not dphi0 < 0:
            self._restart(st)
            d = g.neg() if mask is None else g.neg().masked_fill_(~mask, 0)
            dphi0 = float(torch.dot(g, d))
            if not dphi0 < 0:  # every parameter that has a gradient has a zero one: nothing to do
                return
        params = self.parameters_in_order()
        x = self.flat_params()
        trial_masks: list[tuple[torch.Tensor, torch.Tensor | None]] = []

        def evaluate(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            flat.assign_flat(params, z)
            trial_loss = self.evaluate_closure(closure, need_loss=True)
            if not isinstance(trial_loss, torch.Tensor):
                trial_loss = torch.as_tensor(trial_loss, dtype=g.dtype, device=g.device)
            g_trial, mask_trial = self.flat_grad()
            if hp["reuse_evaluation"]:
                trial_masks.append((g_trial, mask_trial))
            return self.global_loss(trial_loss), g_trial

        phi = along_direction(evaluate, x, d)
        f0 = float(loss)
        alpha0 = hp["lr"]
        if not bool(st["scaled"]):
            alpha0 *= min(1.0, 1.0 / float(torch.linalg.vector_norm(d)))
        if hp["line_search"] == "strong_wolfe":
            result = strong_wolfe(
                phi,
                f0,
                dphi0,
                alpha0=alpha0,
                c1=hp["c1"],
                c2=hp["c2"],
                max_evals=hp["max_line_search_evals"],
                alpha_max=torch.finfo(g.dtype).max,  # trial steps stay representable in the dtype
            )
        else:
            result = armijo(
                phi, f0, dphi0, alpha0=alpha0, c=hp["c1"], max_backtracks=hp["max_line_search_evals"] - 1
            )
        self.add_to_counter("evaluations", result.evaluations)
        if not result.success:
            self.add_to_counter("line_search_failures")
        if result.alpha > 0 and result.payload is not None:
            x_new = torch.add(x, d, alpha=result.alpha)
            flat.assign_flat(params, x_new)
            self._update(st, x_new - x, result.payload - g, hp, gate=None)
            self.add_to_counter("n_iter")
            last = (
                x_new,
                result.f,
                result.payload,
                next((m for gt, m in trial_masks if gt is result.payload), None),
            )
        else:
            flat.assign_flat(params, x)
            self._restart(st)
            last = (x, f0, g, mask)
        if hp["reuse_evaluation"]:
            st["x_last"], st["g_last"] = last[0], last[2]
            st["f_last"] = torch.tensor(last[1], dtype=g.dtype, device=g.device)
            st["mask_last"] = torch.ones_like(g, dtype=torch.bool) if last[3] is None else last[3]
