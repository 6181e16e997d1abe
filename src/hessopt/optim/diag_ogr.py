"""Coordinate-wise OGR (dOGR) as a ``torch.optim`` optimizer: O(D) memory, sync-free multi-tensor step.

dOGR (J. Duda, arXiv:1901.11457 "P2", Fig. 4; R1 ``dsOGR.nb``) fits, independently per coordinate, the
regression ``g_i ≈ λ_i (θ_i − p_i)`` with exponential moving averages, ``λ_i = cov(g_i, θ_i) / var(θ_i)``,
and steps ``θ_i ← θ_i − η m_i / max(div·|λ_i|, cut)``: a saddle-free Newton step per coordinate. "This
requires updating 4 (m = mg) or here 5 size D vectors" (P2 Fig. 4). The mathematics is that of
:class:`hessopt.curvature.regression.DiagonalGradientRegression`; this class evaluates it per parameter
tensor with ``torch._foreach_*`` kernels (as ``torch.optim.Adam``'s multi-tensor path) and never reads a
value back to the host. Section numbers (§) refer to hessopt's specification ``shared/research/ogr.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch

from hessopt.curvature.regression import default_ridge

from .base import (
    HessoptOptimizer,
    check_cut,
    check_nonnegative,
    check_positive,
    check_unit_interval,
)

__all__ = ["DiagOGR", "dogr_update"]

_HYPERPARAMETERS = (
    "lr",
    "beta",
    "gamma",
    "div",
    "cut",
    "sigma0",
    "corr1",
    "ridge_rel",
    "ridge_abs",
    "fused",
    "nonfinite",
)


def _curvature(
    s: list[torch.Tensor],
    stat: list[torch.Tensor],
    w: torch.Tensor,
    *,
    corr1: bool,
    signed: bool,
    ridge: tuple[float | None, float | None],
) -> list[torch.Tensor]:
    """Per-coordinate ``λ`` (or ``|λ|`` when not ``signed``) from the statistics ``s`` and ``c`` (or ``v``).

    ``λ = c / (s + w + δ)``, or ``sqrt((s + w) v) / (s + w + δ)`` for the "c" form, with the prior weight
    ``w`` and the ridge floor ``δ = max(δ_rel·(mean(s) + w), δ_abs)`` per tensor (§8.1): the diagonal case
    of :class:`hessopt.curvature.regression.DiagonalGradientRegression` with ``h_prior = 0``; ``ridge`` is
    ``(δ_rel, δ_abs)``, None entries meaning the dtype's defaults. New tensors; where ``s + w + δ = 0``
    (possible only with ``δ_abs = 0``) ``λ = 0``.
    """
    rel, abs_ = default_ridge(s[0].dtype)
    rel = rel if ridge[0] is None else ridge[0]
    abs_ = abs_ if ridge[1] is None else ridge[1]
    moved = torch.stack([torch.count_nonzero(t) for t in s]).clamp_min(1)
    delta = torch.clamp_min(rel * (torch.stack(torch._foreach_norm(s, 1)) / moved + w), abs_)
    den = torch._foreach_add(s, w)
    torch._foreach_add_(den, list(delta.unbind()))
    if corr1:
        num = torch._foreach_sqrt(torch._foreach_mul(torch._foreach_add(s, w), stat))
    else:
        num = list(stat) if signed else torch._foreach_abs(stat)
    lam = torch._foreach_div(num, den)
    if abs_ == 0:  # only then can s + w + δ be 0 (nothing observed): λ = 0 there, as the estimator's prior
        lam = [torch.where(d > 0, x, 0.0) for x, d in zip(lam, den, strict=True)]
    return lam


def dogr_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    m: list[torch.Tensor],
    theta_mean: list[torch.Tensor],
    g_mean: list[torch.Tensor],
    s: list[torch.Tensor],
    stat: list[torch.Tensor],
    prior_weight: torch.Tensor,
    finite: torch.Tensor,
    *,
    lr: float,
    beta: float,
    gamma: float,
    div: float,
    cut: float,
    corr1: bool,
    ridge: tuple[float | None, float | None],
) -> torch.Tensor:
    """One dOGR step over a list of tensors, in place; returns the new prior weight (§3.1, P2 Fig. 4).

    ``stat`` is ``c`` (or ``v`` for ``corr1``). ``finite`` (0-dim bool) gates everything without a host
    sync: the EMA rates are multiplied by it, a non-finite gradient is replaced by 0 before any
    arithmetic, and the step's denominator becomes ``inf`` where it is False, so parameters and state
    stay bit for bit unchanged. Written with multi-tensor kernels; :class:`DiagOGR` (``fused=True``)
    compiles this same function into fused kernels.
    """
    ok = finite.to(params[0].dtype)
    a = ok * (1.0 - beta)  # EMA rate, 0 when the input is not finite
    grads = [torch.where(finite, g, 0.0) for g in grads]
    torch._foreach_lerp_(m, grads, ok * (1.0 - gamma))
    torch._foreach_lerp_(theta_mean, params, a)
    torch._foreach_lerp_(g_mean, grads, a)
    e = torch._foreach_sub(params, theta_mean)  # θ − θ̄ with the NEW mean (§2.1 order)
    r = torch._foreach_sub(grads, g_mean)
    torch._foreach_lerp_(s, torch._foreach_mul(e, e), a)
    torch._foreach_lerp_(stat, torch._foreach_mul(r, r if corr1 else e), a)
    w = torch.where(finite, prior_weight * beta, prior_weight)
    q = _curvature(s, stat, w, corr1=corr1, signed=False, ridge=ridge)  # |λ|
    # lr·m / max(div·|λ|, cut) = (lr/div)·m / max(|λ|, cut/div); the bound is inf when not finite
    torch._foreach_clamp_min_(q, (cut / div) / ok)
    torch._foreach_addcdiv_(params, m, q, value=-lr / div)
    return w


@functools.cache
def _compiled_update() -> Callable[..., torch.Tensor]:
    """:func:`dogr_update` compiled with ``torch.compile`` (fused kernels per group, dtype and shapes)."""
    return torch.compile(dogr_update, dynamic=False)


class DiagOGR(HessoptOptimizer):
    """Diagonal OGR: per-coordinate EMA gradient regression and saddle-free step (§3.1, P2 Fig. 4).

    Per coordinate, each ``step()`` does, in the notebook order (§2.1; hessopt EMA convention
    ``ema = β·ema + (1−β)·x``, Duda's ``β_D = 1 − β``)::

        m ← γ m + (1−γ) g                               (m0 = 0)
        θ̄ ← β θ̄ + (1−β) θ,   ḡ ← β ḡ + (1−β) g          (means start at the first observation)
        s ← β s + (1−β)(θ − θ̄)²,   c ← β c + (1−β)(g − ḡ)(θ − θ̄)      ("c" form: v ← β v + (1−β)(g − ḡ)²)
        λ = c / (s + w + δ)                              ("c" form: λ = sqrt((s + w) v) / (s + w + δ))
        θ ← θ − lr · m / max(div·|λ|, cut)

    ``w = sigma0·β^t`` is R1's decaying prior ``s0 = 1, c0 = 0`` (kept as a scalar per group, the same
    model), and ``δ = max(δ_rel·(mean(s) + w), δ_abs)`` the non-decaying ridge floor of §8.1 (mean over
    the coordinates of each parameter tensor that moved; ``δ_rel = sqrt(eps)``, ``δ_abs = sqrt(tiny)``
    of the dtype), so a coordinate that never moves gets ``λ → 0`` (a gradient step of size
    ``lr/cut``) rather than rounding noise.
    ``λ_i`` equals ``H_ii`` on separable functions or when the coordinates move uncorrelated; in general it
    absorbs ``Σ_j H_ij cov(θ_j, θ_i)/var(θ_i)``. Its sign is kept, so the step is saddle-free per
    coordinate.

    Args (defaults: Duda's dOGR tuning on 3-D Beale, R1 ``dsOGR.nb`` / P2 Fig. 4, §3.4 and §9; these are
    test-function settings, and ``cut`` is in curvature units, so neural networks need their own):
        lr: ``η`` (default 1). Per group.
        beta: EMA weight of old statistics (default 0.4; D: 0.6). Per group.
        gamma: EMA weight of the old momentum (default 0.3; D: 0.7). Per group.
        div: divides the Newton rate ``1/|λ|`` (default 1.4). Per group.
        cut: floor on ``div·|λ|``; every rate is at most ``lr/cut`` (default 5). Must be > 0. Per group.
        sigma0: prior variance ``s0`` (default 1, R1); 0 disables the prior. Per group.
        corr1: the "c" form (idOGR/cdOGR, §3.2): ``λ = sqrt(var g / var θ)``. The curvature SIGN IS LOST
            (no saddle repulsion) and gradient noise reads as curvature (a noise-adaptive rate). Per group.
        ridge_rel, ridge_abs: the ridge floor's constants (None: ``sqrt(eps)``, ``sqrt(tiny)`` of the
            dtype). The floor biases ``λ`` of a coordinate whose variance is far below its tensor's mean
            towards 0 (a gradient step of ``lr/cut``); ``0, 0`` gives R1's unguarded ratio. Per group.
        fused: compile the update with ``torch.compile`` into fused kernels (default False). The first
            step of each group pays the compilation (tens of seconds on a CPU; needs the C++ toolchain
            that ``torch.compile`` uses), later steps are several times cheaper than the eager
            multi-tensor path (benchmarks/step_cost.py). Same arithmetic, up to rounding. Per group.
        nonfinite: ``"skip"`` (default) or ``"raise"``; see :mod:`hessopt.optim.base`.

    State per parameter: ``m``, ``theta_mean``, ``g_mean``, ``s``, ``c`` (or ``v``), all of the parameter's
    shape: 5 D-vectors, as P2 says. Per group, in the state of the group's first parameter: ``prior_weight``
    (0-dim). A parameter whose ``.grad`` is None is skipped (its state untouched).

    Non-finite input is skipped without a host sync: with ``nonfinite="skip"`` the finiteness flag enters
    every update as a 0-dim tensor (EMA rates multiplied by it, the step's bound made infinite), so a
    non-finite loss or gradient leaves parameters and state bit for bit unchanged. Only a step that
    creates a parameter's state reads the flag once, so that state starts from a finite observation.

    Cost per step: about 20 multi-tensor element-wise kernels over the parameters (one fused kernel per
    group with ``fused=True``) and one norm per tensor (ridge floor), O(D) time and 5·D memory plus
    temporaries; no ``.item()``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        *,
        beta: float = 0.4,
        gamma: float = 0.3,
        div: float = 1.4,
        cut: float = 5.0,
        sigma0: float = 1.0,
        corr1: bool = False,
        ridge_rel: float | None = None,
        ridge_abs: float | None = None,
        fused: bool = False,
        nonfinite: str = "skip",
    ) -> None:
        defaults = self._validated(
            lr=lr,
            beta=beta,
            gamma=gamma,
            div=div,
            cut=cut,
            sigma0=sigma0,
            corr1=corr1,
            ridge_rel=ridge_rel,
            ridge_abs=ridge_abs,
            fused=fused,
            nonfinite=nonfinite,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _validated(**hp: Any) -> dict[str, Any]:
        out = dict(hp)
        out["lr"] = check_nonnegative("lr", hp["lr"])
        out["beta"] = check_unit_interval("beta", hp["beta"])
        out["gamma"] = check_unit_interval("gamma", hp["gamma"])
        out["div"] = check_positive("div", hp["div"])
        out["cut"] = check_cut(hp["cut"])
        out["sigma0"] = check_nonnegative("sigma0", hp["sigma0"])
        if not isinstance(hp["corr1"], bool):
            raise TypeError(f"corr1 must be True or False, got {hp['corr1']!r}")
        for name in ("ridge_rel", "ridge_abs"):
            if hp[name] is not None:
                out[name] = check_nonnegative(name, hp[name])
        if not isinstance(hp["fused"], bool):
            raise TypeError(f"fused must be True or False, got {hp['fused']!r}")
        return out

    @torch.no_grad()
    def curvature_estimates(self) -> list[torch.Tensor | None]:
        """The current per-coordinate curvature ``λ`` of every parameter (None before its first step).

        Signed for the regression form; ``>= 0`` for the "c" form. Shapes follow the parameters; order is
        ``param_groups`` order. Cost O(D).
        """
        out: list[torch.Tensor | None] = []
        for group in self.param_groups:
            head = self.state[group["params"][0]]
            stat = "v" if group["corr1"] else "c"
            for p in group["params"]:
                st = self.state[p]
                if "m" not in st:
                    out.append(None)
                    continue
                ridge = (group["ridge_rel"], group["ridge_abs"])
                lam = _curvature(
                    [st["s"]],
                    [st[stat]],
                    head["prior_weight"],
                    corr1=group["corr1"],
                    signed=True,
                    ridge=ridge,
                )
                out.append(lam[0])
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        """One dOGR step; returns the closure's loss (the closure is optional, as for ``Adam``)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = []
        for group in self.param_groups:
            hp = self._validated(**{k: group[k] for k in _HYPERPARAMETERS})  # a scheduler may change them
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                if any(p.grad.is_sparse for p in params):
                    raise TypeError("DiagOGR does not support sparse gradients")
                groups.append((group, hp, params))
        if not groups:
            return loss
        grads = [p.grad for _, _, ps in groups for p in ps]
        finite = self.check_nonfinite(loss, [torch.stack(torch._foreach_norm(grads, float("inf")))])
        if any("m" not in self.state[p] for _, _, ps in groups for p in ps) and not bool(finite):
            # The state is created from a parameter's first *finite* observation: this one read of the
            # flag (a host sync on an accelerator) happens only on steps that create state.
            return loss
        for group, hp, params in groups:
            self._group_step(group, hp, params, finite)
        return loss

    def _group_step(
        self, group: dict[str, Any], hp: dict[str, Any], params: list[torch.Tensor], finite: torch.Tensor
    ) -> None:
        stat = "v" if hp["corr1"] else "c"
        for p in params:
            st = self.state[p]
            if "m" not in st:  # a parameter's first observation (also for one that joins later)
                st["m"] = torch.zeros_like(p)
                st["theta_mean"] = p.detach().clone()  # mean_init "first" (§8.3b)
                st["g_mean"] = p.grad.detach().clone()
                st["s"] = torch.zeros_like(p)
                st[stat] = torch.zeros_like(p)
        head = self.state[group["params"][0]]
        if "prior_weight" not in head:
            head["prior_weight"] = torch.tensor(hp["sigma0"], dtype=params[0].dtype, device=params[0].device)
        states = [self.state[p] for p in params]
        update = _compiled_update() if hp["fused"] else dogr_update
        head["prior_weight"] = update(
            params,
            [p.grad for p in params],
            [st["m"] for st in states],
            [st["theta_mean"] for st in states],
            [st["g_mean"] for st in states],
            [st["s"] for st in states],
            [st[stat] for st in states],
            head["prior_weight"],
            finite,
            lr=hp["lr"],
            beta=hp["beta"],
            gamma=hp["gamma"],
            div=hp["div"],
            cut=hp["cut"],
            corr1=hp["corr1"],
            ridge=(hp["ridge_rel"], hp["ridge_abs"]),
        )
