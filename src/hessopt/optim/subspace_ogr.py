"""Subspace OGR as a ``torch.optim`` optimizer: OGR in a d-dimensional online-PCA subspace, O(dD) memory.

The mathematics is :mod:`hessopt.curvature.subspace` (:func:`~hessopt.curvature.subspace.subspace_step_`);
this module validates, keeps the state and owns the generator of the random initial basis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch

from hessopt.curvature import flat
from hessopt.curvature import subspace as sub
from hessopt.curvature.regression import default_ridge, ridge_floor, symmetric_lstsq_hessian

from .base import HessoptOptimizer
from .checks import (
    REGRESSION_CHECKS,
    check_bool,
    check_choice,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    optional,
)

__all__ = ["DUDA_SUBSPACE_OGR", "SubspaceOGR"]

#: Duda's dsOGR settings for 3-D Beale (arXiv:1901.11457, Fig. 4; his β 0.6, γ 0.7 converted), for test
#: functions: ``SubspaceOGR(params, **DUDA_SUBSPACE_OGR)`` (``rank=1`` uses ``mix=0.3``). The class
#: defaults are for neural networks.
DUDA_SUBSPACE_OGR = MappingProxyType(
    {
        "lr": 1.0,
        "beta": 0.4,
        "gamma": 0.3,
        "div": 1.5,
        "cut": 6.0,
        "rank": 2,
        "rotation_rate": 0.1,
        "mix": 0.4,
        "outside": "dogr",
        "max_coord_step": None,
    }
)

_GENERATOR_STATE_SIZE = torch.Generator().get_state().numel()


def _check_seed(name: str, value: Any) -> int:
    return check_positive_int(name, value, minimum=0)


class SubspaceOGR(HessoptOptimizer):
    """OGR in a d-dimensional subspace tracked by online PCA; diagonal OGR or momentum SGD outside it.

    Each ``step()`` (:func:`hessopt.curvature.subspace.subspace_step_`; hessopt's EMA convention
    ``ema = β·ema + (1−β)·x``, Duda's ``β_D = 1 − β``):

    1. momentum ``m`` and the means ``θ̄, ḡ`` of every coordinate;
    2. the basis ``V`` (d orthonormal directions over all parameters) rotates towards the gradient: Oja's
       subspace rule ``V ← orth(V + Γ (V ĝ) ĝᵀ)`` with ``ĝ = g/‖g‖`` (default; it converges to the top-d
       principal subspace of the gradients), or Duda's prototype ``rotation="duda"`` (every row plus
       ``Γg``, then Gram-Schmidt; it tracks the mean gradient, not the principal subspace);
    3. the d×d statistics ``S = Cov(Vθ)``, ``K = Cov(Vg, Vθ)`` are rotated with the basis and updated with
       the projections ``x = V(θ − θ̄)``, ``y = V(g − ḡ)``; ``H_V`` is their symmetric least-squares
       solution (prior and ridge floor as :class:`hessopt.optim.OGR`);
    4. one QR-method step rotates the basis inside its span so that ``H_V`` tends to diagonal;
    5. the step: inside the subspace the saddle-free Newton step ``Vᵀ f(H_V) V m`` with
       ``f(λ) = lr / max(div·|λ|, cut)``; outside, ``outside="dogr"`` (default) mixes in the diagonal OGR
       step ``Δ_d`` of every coordinate: ``θ ← θ − [Δ_d − mix·(VᵀVΔ_d − Vᵀf(H_V)Vm)]`` (dsOGR), and
       ``outside="sgd"`` adds ``lr·outside_scale·(m − VᵀVm)`` (Duda's prototype, with its α = 0.001 at
       η = 1).

    **Defaults are for neural networks** (docs/algorithms/ogr.md, "Network defaults"): β 0.9, a tiny
    ``cut``, ``lr`` 0.1 and the per-coordinate trust bound ``max_coord_step = 0.01`` on the total step. Duda's
    test-function settings are :data:`DUDA_SUBSPACE_OGR`.

    Args:
        params: parameters or param groups; the subspace couples all of them, so every hyper-parameter
            must be equal across groups; one dtype and device.
        lr: ``η`` of the subspace (and diagonal) steps (default 0.1); 0 is legal.
        beta: EMA weight of old statistics (default 0.9; Duda's dsOGR: 0.4, his 0.6 converted).
        gamma: EMA weight of the old momentum (default 0.3; his 0.7 converted).
        div: divides the Newton rate ``1/|λ|`` (default 1.5).
        cut: floor of ``div·|λ|`` (default 1e-4; Duda's dsOGR: 6); > 0.
        sigma0: prior variance of the subspace (and diagonal) statistics (default 1).
        h_prior: prior curvature (default 0); finite.
        mean_init: ``"zero"`` (default) or ``"first"``, as :class:`hessopt.optim.OGR`.
        ridge_rel: ridge floor ``δ_rel`` (None: ``sqrt(eps)`` of the dtype).
        ridge_abs: ridge floor ``δ_abs`` (None: ``sqrt(tiny)`` of the dtype).
        rank: d, the subspace dimension (default 2); at most the number of parameters.
        rotation: ``"oja"`` (default) or ``"duda"``.
        rotation_rate: Γ (default 0.1).
        qr: take one QR-method step per update (default True).
        outside: ``"dogr"`` (default) or ``"sgd"``.
        mix: the dsOGR weight ``w`` of the subspace step inside the span (default 0.4; ``outside="dogr"``).
        outside_scale: the rate of ``outside="sgd"`` as a multiple of ``lr`` (default 1e-3), so that a
            scheduler scales both parts.
        max_step_norm: scale the whole step to Euclidean norm at most this (None: no clip; default).
        max_coord_step: bound on every coordinate of the total step (default 0.01; None: no bound).
        seed: seed of the generator of the random initial basis (default 0); its state is saved.
        nonfinite: ``"skip"`` (default) or ``"raise"``.

    Raises:
        TypeError, ValueError: an argument out of range or of the wrong type, naming it (also for groups
            added later); parameters that do not share one floating dtype and device; ``rank`` larger than
            the number of parameters.

    **State.** Per parameter: ``m``, ``theta_mean``, ``g_mean`` shaped like it, ``basis`` of shape
    ``(rank, *shape)`` (the blocks ``U_j`` of ``V = C·U``), and for ``outside="dogr"`` the diagonal OGR
    statistics ``s``, ``c``, ``dogr_weight``, ``s_mean``. In ``flat_state()``: ``basis_mix`` (``C``),
    ``sigma`` and ``cross`` (d×d), ``prior_weight``, ``count``, ``generator`` (the basis generator's
    state) and ``nonfinite_skips``. The basis is drawn at the first step over the parameters that have a
    gradient then (parameters that join later start with a zero block), so it does not depend on parameters
    that never receive a gradient. Everything is a tensor: ``state_dict()`` resumes bit for bit.

    **Guarantees.** Non-finite input, or a step whose result would not be finite, changes nothing and is
    counted in ``nonfinite_skips`` (``nonfinite="raise"``: FloatingPointError). With ``lr = 0`` the
    parameters do not move; statistics and basis keep observing.

    **Distributed.** Every quantity derives from the (DDP-averaged) gradient and the parameters, and the
    initial basis from the seeded generator, so all ranks stay identical without extra communication.

    **Cost** per step: O(dD + d³) time (one GEMM reading the basis, one applying it, one rank-one update,
    about 15 element-wise passes, ``eigh`` and QR of d×d) plus O(d²D) every
    :data:`hessopt.curvature.subspace.REFRESH_EVERY` steps; memory ``(d + 3)·D`` (``+ 2·D`` for
    ``outside="dogr"``). On an accelerator one host sync per step (the refresh schedule and ``eigh``).

    References:
        J. Duda, arXiv:1901.11457 (abstract; Figs. 4 and 7: subspace and dsOGR variants);
        ``docs/algorithms/ogr.md``.
    """

    hyperparameter_checks: ClassVar = {
        **REGRESSION_CHECKS,
        "rank": check_positive_int,
        "rotation": lambda name, v: check_choice(name, v, sub.ROTATIONS),
        "rotation_rate": check_nonnegative,
        "qr": check_bool,
        "outside": lambda name, v: check_choice(name, v, sub.OUTSIDE_RULES),
        "mix": lambda name, v: check_in_range(name, v, 0.0, 1.0, low_open=False, high_open=False),
        "outside_scale": check_nonnegative,
        "max_coord_step": optional(check_positive),
        "seed": _check_seed,
    }
    uniform_hyperparameters: ClassVar = True
    fixed_size_state: ClassVar = ("basis_mix", "its basis")
    needs_eigh: ClassVar = True
    one_dtype_and_device: ClassVar = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        *,
        beta: float = 0.9,
        gamma: float = 0.3,
        div: float = 1.5,
        cut: float = 1e-4,
        sigma0: float = 1.0,
        h_prior: float = 0.0,
        mean_init: str = "zero",
        ridge_rel: float | None = None,
        ridge_abs: float | None = None,
        rank: int = 2,
        rotation: str = "oja",
        rotation_rate: float = 0.1,
        qr: bool = True,
        outside: str = "dogr",
        mix: float = 0.4,
        outside_scale: float = 1e-3,
        max_step_norm: float | None = None,
        max_coord_step: float | None = 0.01,
        seed: int = 0,
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
            "ridge_rel": ridge_rel,
            "ridge_abs": ridge_abs,
            "rank": rank,
            "rotation": rotation,
            "rotation_rate": rotation_rate,
            "qr": qr,
            "outside": outside,
            "mix": mix,
            "outside_scale": outside_scale,
            "max_step_norm": max_step_norm,
            "max_coord_step": max_coord_step,
            "seed": seed,
            "nonfinite": nonfinite,
        }
        super().__init__(params, defaults)

    # ----------------------------------------------------------------- validation and state layout
    def check_group(self, group: Mapping[str, Any]) -> None:
        """The base checks (one dtype and device) and ``rank`` at most the number of parameters.

        Args:
            group: the param group being added or re-validated.

        Raises:
            TypeError, ValueError: naming the problem.
        """
        super().check_group(group)
        total = flat.numel(self.all_parameters_with(group))
        if group["rank"] > total:
            raise ValueError(f"rank must be at most the number of parameters ({total}), got {group['rank']}")

    def flat_state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes of the flat-state slot's d×d tensors and generator state."""
        d = self.param_groups[0]["rank"]
        return {"basis_mix": (d, d), "sigma": (d, d), "cross": (d, d), "generator": (_GENERATOR_STATE_SIZE,)}

    def expected_state_shape(
        self, key: str, value: torch.Tensor, param: torch.Tensor, *, flat_slot: bool
    ) -> tuple[int, ...] | None:
        """As the base class, with ``basis`` of shape ``(rank, *param.shape)``."""
        if key == "basis":
            return (self.param_groups[0]["rank"], *param.shape)
        return super().expected_state_shape(key, value, param, flat_slot=flat_slot)

    def _init_state(self, hp: dict[str, Any], params: list[torch.Tensor]) -> dict[str, Any]:
        """The flat slot and the per-parameter state (the random basis at the first step)."""
        st = self.flat_state()
        p0 = params[0]
        kw = {"dtype": p0.dtype, "device": p0.device}
        new = [p for p in params if "m" not in self.state[p]]
        if "basis_mix" not in st:
            d = hp["rank"]
            if flat.numel(params) < d:
                raise ValueError(
                    f"SubspaceOGR: rank={d} exceeds the {flat.numel(params)} parameters that have a gradient "
                    "at the first step"
                )
            gen = torch.Generator().manual_seed(hp["seed"])
            blocks = sub.random_basis([p.shape for p in new], d, generator=gen, **kw)
            st.update(
                basis_mix=torch.eye(d, **kw),
                sigma=torch.zeros(d, d, **kw),
                cross=torch.zeros(d, d, **kw),
                prior_weight=torch.tensor(hp["sigma0"], **kw),
                count=torch.zeros((), dtype=torch.int64, device=p0.device),
                generator=gen.get_state(),
            )
            self._counter("nonfinite_skips")
        else:
            blocks = [torch.zeros((hp["rank"], *p.shape), **kw) for p in new]
        first = hp["mean_init"] == "first"
        for p, block in zip(new, blocks, strict=True):
            ps = self.state[p]
            ps["m"] = torch.zeros_like(p)
            ps["theta_mean"] = p.detach().clone() if first else torch.zeros_like(p)
            ps["g_mean"] = p.grad.detach().clone() if first else torch.zeros_like(p)
            ps["basis"] = block
            if hp["outside"] == "dogr":
                ps["s"] = torch.zeros_like(p)
                ps["c"] = torch.zeros_like(p)
                ps["dogr_weight"] = torch.tensor(hp["sigma0"], **kw)
                ps["s_mean"] = torch.zeros((), **kw)
        for p in params:
            if hp["outside"] == "dogr" and "s" not in self.state[p]:
                raise ValueError("SubspaceOGR: outside cannot change to 'dogr' after the first step")
        return st

    # ----------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def basis(self) -> list[torch.Tensor | None]:
        """The current basis ``V`` per parameter (``C·U``), None for parameters without state.

        Returns:
            One tensor of shape ``(rank, *shape)`` per parameter in ``param_groups`` order; the rows of the
            concatenation are orthonormal. Cost O(d²D).
        """
        mix = self.flat_state().get("basis_mix")
        out: list[torch.Tensor | None] = []
        for p in self.parameters_in_order():
            u = self.state[p].get("basis")
            out.append(None if u is None else (mix @ u.reshape(u.shape[0], -1)).reshape(u.shape))
        return out

    @torch.no_grad()
    def subspace_hessian(self) -> torch.Tensor:
        """The current d×d estimate ``H_V`` in the basis of :meth:`basis` (the prior before any step).

        Returns:
            ``H_V``, symmetric (d, d).
        """
        hp = self.hyperparameters()
        st = self.flat_state()
        rel, abs_ = default_ridge(st["sigma"].dtype, hp["ridge_rel"], hp["ridge_abs"])
        ridge = ridge_floor(st["sigma"], ridge_rel=rel, ridge_abs=abs_, prior_weight=st["prior_weight"])
        return symmetric_lstsq_hessian(
            st["sigma"], st["cross"], prior_weight=st["prior_weight"], h_prior=hp["h_prior"], ridge=ridge
        )

    # ----------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One SubspaceOGR step.

        Args:
            closure: optional; re-evaluates the loss and gradients.

        Returns:
            The closure's loss, or None.

        Raises:
            FloatingPointError: ``nonfinite="raise"`` and a non-finite input or result.
            TypeError: sparse gradients.
        """
        hp = self.hyperparameters()
        loss = None if closure is None else self.evaluate_closure(closure, need_loss=False)
        params = self.parameters_with_grad()
        if not params:
            return loss
        if any(p.grad.is_sparse for p in params):
            raise TypeError("SubspaceOGR does not support sparse gradients")
        grads = [p.grad for p in params]
        finite = self.check_nonfinite(loss, grads, params=params)
        if any("m" not in self.state[p] for p in params) and not bool(finite):
            return loss  # state is created from a finite observation only
        st = self._init_state(hp, params)
        rel, abs_ = default_ridge(params[0].dtype, hp["ridge_rel"], hp["ridge_abs"])
        scalars = {
            "rate_m": 1.0 - hp["gamma"],
            "rate": 1.0 - hp["beta"],
            "beta": hp["beta"],
            "lr": hp["lr"],
            "div": hp["div"],
            "cut": hp["cut"],
            "lr_div": hp["lr"] / hp["div"],
            "bound": hp["cut"] / hp["div"],
            "h_prior": hp["h_prior"],
            "ridge_rel": rel,
            "ridge_abs": abs_,
            "rotation_rate": hp["rotation_rate"],
            "outside_rate": hp["lr"] * hp["outside_scale"],
            "mix": hp["mix"],
            "max_step_norm": hp["max_step_norm"],
            "max_coord_step": float("inf") if hp["max_coord_step"] is None else hp["max_coord_step"],
        }
        states = [self.state[p] for p in params]
        dogr_state = None
        if hp["outside"] == "dogr":
            dogr_state = [(s["s"], s["c"], s["dogr_weight"], s["s_mean"]) for s in states]
        ok = sub.subspace_step_(
            params,
            grads,
            [s["m"] for s in states],
            [s["theta_mean"] for s in states],
            [s["g_mean"] for s in states],
            [s["basis"] for s in states],
            dogr_state,
            {
                "mix": st["basis_mix"],
                "sigma": st["sigma"],
                "cross": st["cross"],
                "prior_weight": st["prior_weight"],
            },
            scalars,
            finite,
            rotation=hp["rotation"],
            outside=hp["outside"],
            qr=hp["qr"],
            clip=hp["max_step_norm"] is not None,
        )
        overflow = finite & ~ok
        if hp["nonfinite"] == "raise":
            if bool(overflow):
                raise FloatingPointError(
                    "SubspaceOGR: the step's result would not be finite (an overflow: lower lr or raise "
                    "cut); nothing was changed"
                )
        else:
            self.add_to_counter("nonfinite_skips", overflow)
        st["count"] = st["count"] + ok
        # refresh on schedule, and whenever the implicit factor C has become ill-conditioned (Duda's rule
        # with a large Γ‖g‖ can do that within a few steps)
        due = (st["count"] % sub.REFRESH_EVERY == 0) | (
            torch.linalg.cond(st["basis_mix"]) > sub.MAX_MIX_CONDITION
        )
        if bool(ok & due):
            basis = [self.state[p]["basis"] for p in self.parameters_in_order() if "basis" in self.state[p]]
            sub.refresh_basis_(basis, st["basis_mix"], st["sigma"], st["cross"])
        return loss
