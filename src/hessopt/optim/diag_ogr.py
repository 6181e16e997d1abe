"""Coordinate-wise OGR (dOGR) as a ``torch.optim`` optimizer: O(D) memory, sync-free multi-tensor step.

dOGR (J. Duda, arXiv:1901.11457 "P2", Fig. 4; R1 ``dsOGR.nb``) fits, independently per coordinate, the
regression ``g_i ≈ λ_i (θ_i − p_i)`` with exponential moving averages, ``λ_i = cov(g_i, θ_i) / var(θ_i)``,
and steps ``θ_i ← θ_i − η m_i / max(div·|λ_i|, cut)``: a saddle-free Newton step per coordinate. "This
requires updating 4 (m = mg) or here 5 size D vectors" (P2 Fig. 4). The mathematics is that of
:class:`hessopt.curvature.regression.DiagonalGradientRegression`; this class evaluates it per parameter
tensor with ``torch._foreach_*`` kernels (as ``torch.optim.Adam``'s multi-tensor path). On a CPU it reads
the step's finiteness flag (free there) and runs the update unmasked; elsewhere the flag gates the update
as a tensor. Section numbers (§) refer to hessopt's specification ``shared/research/ogr.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch

from hessopt.curvature.regression import default_ridge

from .base import HessoptOptimizer
from .checks import (
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
    (possible only with ``δ_abs = 0``) ``λ = 0``. Cost per tensor: two read-only reductions (the count of
    moved coordinates and ``Σ s``) and three element-wise passes (five for the "c" form). The regression
    form adds ``w + δ`` to ``s`` in one pass, ``s + (w + δ)``: one rounding instead of the two of
    ``(s + w) + δ`` (the "c" form needs ``s + w`` for its numerator and keeps that order), and takes
    ``|λ|`` in place as ``|c / den|``, which equals ``|c| / den`` bit for bit (IEEE division is correctly
    rounded and odd in ``c``; ``den >= 0``).
    """
    rel, abs_ = default_ridge(s[0].dtype)
    rel = rel if ridge[0] is None else ridge[0]
    abs_ = abs_ if ridge[1] is None else ridge[1]
    moved = torch.stack([torch.count_nonzero(t) for t in s]).clamp_min(1)
    delta = torch.clamp_min(rel * (_sums(s) / moved + w), abs_)
    if corr1:  # sqrt((s + w) v) / ((s + w) + δ)
        den = torch._foreach_add(s, [w] * len(s))  # List overload: a 0-dim w is not read back
        lam = torch._foreach_mul(den, stat)
        torch._foreach_sqrt_(lam)
        torch._foreach_add_(den, list(delta.unbind()))
        torch._foreach_div_(lam, den)
    else:  # c / (s + (w + δ))
        den = torch._foreach_add(s, list((delta + w).unbind()))
        lam = torch._foreach_div(stat, den)
        if not signed:
            torch._foreach_abs_(lam)
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
    finite: torch.Tensor | None,
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

    ``stat`` is ``c`` (or ``v`` for ``corr1``). ``finite`` selects one of two paths with the same arithmetic:

    * a 0-dim bool tensor: the **gated** path, for accelerators, where reading the flag would be a host
      sync. The flag gates everything: the EMA rates are multiplied by it, a non-finite gradient is
      replaced by 0 before any arithmetic, and the step's denominator becomes ``inf`` where it is False,
      so parameters and state stay bit for bit unchanged. The rates, the bound and the prior weight enter
      the multi-tensor kernels as 0-dim tensors through their List overloads, so nothing is read back
      to the host (tested by profiling for ``item()``). Costs one more pass over the gradients (a copy).
    * None: the **ungated** path. The caller has read the flag, found it True, and skips the call
      otherwise (free on a CPU, where :class:`DiagOGR` takes this path). Plain Python-float rates, no
      masking. On finite input both paths give bit-identical parameters and state: with ``ok = 1`` the
      gated rates ``ok·(1−β)``, ``ok·(1−γ)`` and bound ``(cut/div)/ok`` are the Python floats rounded to
      the parameters' dtype, which is the value the kernels use for a Python-float rate; ``β·w`` is the
      same product in both; the mask ``where(True, g, 0)`` copies ``g``.

    Per tensor: 3 lerps for the means, 2 subtractions and 2 in-place products for the centred data, 2
    lerps for the statistics, :func:`_curvature`, a clamp and the ``addcdiv`` step: 14 element-wise passes
    (16 for the "c" form) and two read-only reductions, two D-sized temporaries at a time (and the
    masked gradients' copy on the gated path). :class:`DiagOGR`
    (``fused=True``) compiles this same function (gated) into fused kernels.
    """
    if finite is None:
        rate_m, rate, bound = 1.0 - gamma, 1.0 - beta, cut / div
        w = prior_weight * beta
    else:
        ok = finite.to(params[0].dtype)
        # 0-dim tensors, passed as per-tensor lists: the multi-tensor kernels' Scalar overloads would read
        # a tensor rate back to the host (.item(), a device sync), their List overloads take tensors
        n = len(params)
        rate_m = [ok * (1.0 - gamma)] * n
        rate = [ok * (1.0 - beta)] * n  # EMA rate, 0 when the input is not finite
        bound = [(cut / div) / ok] * n  # the bound is inf when not finite: the step is 0
        grads = [torch.where(finite, g, 0.0) for g in grads]
        w = torch.where(finite, prior_weight * beta, prior_weight)
    torch._foreach_lerp_(m, grads, rate_m)
    torch._foreach_lerp_(theta_mean, params, rate)
    torch._foreach_lerp_(g_mean, grads, rate)
    e = torch._foreach_sub(params, theta_mean)  # θ − θ̄ with the NEW mean (§2.1 order)
    r = torch._foreach_sub(grads, g_mean)
    torch._foreach_mul_(r, r if corr1 else e)  # (g − ḡ)² or (g − ḡ)(θ − θ̄), in place
    torch._foreach_mul_(e, e)
    torch._foreach_lerp_(s, e, rate)
    torch._foreach_lerp_(stat, r, rate)
    del e, r  # freed before the curvature's two temporaries: at most two D-sized ones at a time
    q = _curvature(s, stat, w, corr1=corr1, signed=False, ridge=ridge)  # |λ|
    # lr·m / max(div·|λ|, cut) = (lr/div)·m / max(|λ|, cut/div)
    torch._foreach_clamp_min_(q, bound)
    torch._foreach_addcdiv_(params, m, q, value=-lr / div)
    return w


def _sums(s: list[torch.Tensor]) -> torch.Tensor:
    """``Σ s`` per tensor as a vector (``s >= 0``: a lerp of squares, so this is its 1-norm).

    On a CPU ``torch.sum`` per tensor (several times faster there than the 1-norm kernel); elsewhere one
    multi-tensor 1-norm (one kernel on a GPU). The two differ only in the summation's rounding.
    """
    if s[0].device.type == "cpu":
        return torch.stack([t.sum() for t in s])
    return torch.stack(torch._foreach_norm(s, 1))


def _flag_read_is_free(grads: list[torch.Tensor]) -> bool:
    """Whether reading the step's finiteness flag costs no device sync: all gradients (hence the flag) are
    on the CPU."""
    return all(g.device.type == "cpu" for g in grads)


def _finiteness_summary(grads: list[torch.Tensor], cpu: bool) -> torch.Tensor:
    """A vector that is finite exactly when every gradient entry is finite (nan and ±inf propagate).

    Each tensor's min and max (``torch.aminmax``) on a CPU, where it is about ten times faster than the
    inf-norm; elsewhere the multi-tensor inf-norm (one kernel on a GPU). One read-only pass over D.
    """
    present = [g for g in grads if g.numel()]  # an empty tensor has no min, max or inf-norm
    if not present:
        return grads[0].new_zeros(0)
    if not cpu:
        return torch.stack(torch._foreach_norm(present, float("inf")))
    return torch.stack([v for g in present for v in torch.aminmax(g)])


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

    Non-finite input (``nonfinite="skip"``) leaves parameters and state bit for bit unchanged and adds one
    to ``flat_state()["nonfinite_skips"]``. When every gradient is on the CPU the step reads the
    finiteness flag (no device sync there) and returns early when it is False; the update then runs
    unmasked (see :func:`dogr_update`, bit-identical to the gated form). Elsewhere the flag enters every
    update as a 0-dim tensor (EMA rates multiplied by it, the step's bound made infinite), and only a step
    that creates a parameter's state reads it, so that state starts from a finite observation.
    ``fused=True`` always compiles the gated form (the mask costs no pass of its own there).

    Cost per step: one read-only finiteness pass over the gradients, about 15 multi-tensor element-wise
    kernels over the parameters (one fused kernel per group with ``fused=True``) and two read-only
    reductions per tensor (ridge floor), O(D) time and 5·D memory plus two D-sized temporaries.
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
        read = _flag_read_is_free(grads)
        finite = self.check_nonfinite(loss, [_finiteness_summary(grads, read)])
        creates = any("m" not in self.state[p] for _, _, ps in groups for p in ps)
        if (read or creates) and not bool(finite):
            # Read where it is free (CPU), and where the step creates state: the state is created from a
            # parameter's first *finite* observation (a host sync on an accelerator, on such steps only).
            return loss
        for group, hp, params in groups:
            self._group_step(group, hp, params, finite, gate=not read)
        return loss

    def _group_step(
        self,
        group: dict[str, Any],
        hp: dict[str, Any],
        params: list[torch.Tensor],
        finite: torch.Tensor,
        *,
        gate: bool,
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
        fused = hp["fused"]  # compiled: always the gated form (fused into its kernels)
        update = _compiled_update() if fused else dogr_update
        head["prior_weight"] = update(
            params,
            [p.grad for p in params],
            [st["m"] for st in states],
            [st["theta_mean"] for st in states],
            [st["g_mean"] for st in states],
            [st["s"] for st in states],
            [st[stat] for st in states],
            head["prior_weight"],
            finite if gate or fused else None,
            lr=hp["lr"],
            beta=hp["beta"],
            gamma=hp["gamma"],
            div=hp["div"],
            cut=hp["cut"],
            corr1=hp["corr1"],
            ridge=(hp["ridge_rel"], hp["ridge_abs"]),
        )
