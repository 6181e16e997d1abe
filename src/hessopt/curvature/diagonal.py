"""Coordinate-wise OGR (dOGR): the functional core of :class:`hessopt.optim.DiagOGR` and its estimator.

dOGR (J. Duda, arXiv:1901.11457, Fig. 4) fits, independently per coordinate, the regression
``g_i ≈ λ_i (θ_i − p_i)`` with exponential moving averages and steps
``θ_i ← θ_i − η m_i / max(div·|λ_i|, cut)``: a saddle-free Newton step per coordinate. Equations, defaults
and the deviations from the paper are on ``docs/algorithms/ogr.md`` ("Diagonal OGR").

==================================  ==========================================================  =====
object                              what                                                        cost
==================================  ==========================================================  =====
:func:`dogr_observe`                the EMA update of ``θ̄, ḡ, s, c`` (or ``v``), new tensors     O(D)
:func:`moved_mean`                  mean of ``s`` over the coordinates that moved                O(D)
:func:`dogr_ridge`                  the ridge floor ``δ = max(δ_rel·(s̄ + w), δ_abs)``            O(1)
:func:`dogr_curvature`              ``λ = (c + (w+δ)h) / (s + w + δ)`` (or the "c" form)          O(D)
:func:`dogr_step_`                  one optimizer step over a list of tensors, in place          O(D)
:func:`compiled_dogr_step`          :func:`dogr_step_` compiled with ``torch.compile``           O(D)
:class:`DiagonalGradientRegression` the estimator on one flat vector, for analysis              O(D)
==================================  ==========================================================  =====

:func:`dogr_step_` is written with plain tensor operations per parameter tensor: eagerly it is the
single-tensor form (one kernel per operation); :func:`compiled_dogr_step` turns it into one fused kernel
per tensor (torch's multi-tensor ``foreach`` form is not kept: the compiled form is faster, and one copy
of the arithmetic serves both).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from hessopt.curvature.regression import RegressionEstimatorBase

__all__ = [
    "DOGR_STATE_KEYS",
    "DiagonalGradientRegression",
    "compiled_dogr_step",
    "dogr_curvature",
    "dogr_observe",
    "dogr_proposal",
    "dogr_ridge",
    "dogr_step_",
    "dogr_step_foreach_",
    "moved_mean",
]

Scalar = float | Tensor

#: Per-tensor state of :func:`dogr_step_`, in its argument order (``stat`` is ``c``, or ``v`` for ``corr1``).
DOGR_STATE_KEYS = ("m", "theta_mean", "g_mean", "s", "stat", "prior_weight", "s_mean")


def dogr_observe(
    theta: Tensor,
    g: Tensor,
    theta_mean: Tensor,
    g_mean: Tensor,
    s: Tensor,
    stat: Tensor,
    *,
    rate: Scalar,
    corr1: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One EMA update of the per-coordinate statistics, means first (new tensors; inputs unchanged).

    With ``rate = 1 − β`` (hessopt's convention ``ema = β·ema + (1−β)·x``)::

        θ̄ ← lerp(θ̄, θ, rate),  ḡ ← lerp(ḡ, g, rate)
        s ← lerp(s, (θ − θ̄)², rate),  c ← lerp(c, (g − ḡ)(θ − θ̄), rate)
        ("c" form: v ← lerp(v, (g − ḡ)², rate) instead of c)

    with the NEW means in the products, as Duda's code does (arXiv:1901.11457, Fig. 4).

    Args:
        theta: position, any shape.
        g: gradient, shaped like ``theta``.
        theta_mean: EMA of ``θ``.
        g_mean: EMA of ``g``.
        s: EMA variance of ``θ``.
        stat: EMA ``c = cov(g, θ)``, or ``v = var g`` when ``corr1``.
        rate: ``1 − β``, a float or a 0-dim tensor.
        corr1: update ``v`` (the "c" form) instead of ``c``.

    Returns:
        The new ``(θ̄, ḡ, s, stat)``.
    """
    tm = torch.lerp(theta_mean, theta, rate)
    gm = torch.lerp(g_mean, g, rate)
    e = theta - tm
    r = g - gm
    return tm, gm, torch.lerp(s, e * e, rate), torch.lerp(stat, r * r if corr1 else r * e, rate)


def moved_mean(s: Tensor) -> Tensor:
    """Mean of ``s`` over its nonzero entries (the coordinates that moved), 0 if none; a 0-dim tensor."""
    return s.sum() / torch.count_nonzero(s).clamp_min(1)


def dogr_ridge(s_mean: Tensor, prior_weight: Scalar, *, ridge_rel: Scalar, ridge_abs: Scalar) -> Tensor:
    """The non-decaying ridge floor ``δ = max(δ_rel·(s̄ + w), δ_abs)`` (a 0-dim tensor).

    Args:
        s_mean: mean variance ``s̄`` of the tensor's moved coordinates (:func:`moved_mean`).
        prior_weight: the decaying prior weight ``w = sigma0·β^t``.
        ridge_rel: ``δ_rel`` (:func:`hessopt.curvature.regression.default_ridge` gives the default).
        ridge_abs: ``δ_abs``.

    Returns:
        ``δ``.
    """
    return torch.clamp_min(ridge_rel * (s_mean + prior_weight), ridge_abs)


def dogr_curvature(
    s: Tensor,
    stat: Tensor,
    prior_weight: Scalar,
    ridge: Scalar,
    *,
    h_prior: Scalar,
    corr1: bool,
) -> Tensor:
    """Per-coordinate curvature: the 1-D symmetric least-squares solve with prior and ridge floor.

    ``λ = (c + (w + δ)·h) / (s + (w + δ))``; for the "c" form
    ``λ = (sqrt((s + w)(v + w·h²)) + δ·|h|) / (s + w + δ) >= 0`` (the sign is lost). Where the denominator
    is 0 (only with ``δ_abs = 0`` and nothing observed) the result is the prior ``h`` (``|h|``).

    Args:
        s: EMA variance of ``θ``.
        stat: ``c``, or ``v`` for ``corr1``.
        prior_weight: ``w``, the decaying prior weight.
        ridge: ``δ`` (:func:`dogr_ridge`).
        h_prior: the prior curvature ``h`` (a float, 0-dim tensor or tensor like ``s``).
        corr1: the "c" form.

    Returns:
        ``λ``, shaped like ``s``.

    References:
        J. Duda, arXiv:1901.11457, Fig. 4 (dOGR) and Fig. 7 (the "c" forms); ``docs/algorithms/ogr.md``.
    """
    if corr1:
        num = torch.sqrt((s + prior_weight) * (stat + prior_weight * h_prior * h_prior)) + ridge * abs(
            h_prior
        )
        den = s + prior_weight + ridge
        target = abs(h_prior)
    else:
        weight = prior_weight + ridge
        num = stat + weight * h_prior
        den = s + weight
        target = h_prior
    lam = num / den
    return torch.where(den > 0, lam, target)


def dogr_proposal(
    p: Tensor,
    g: Tensor,
    m: Tensor,
    theta_mean: Tensor,
    g_mean: Tensor,
    s: Tensor,
    stat: Tensor,
    prior_weight: Tensor,
    s_mean: Tensor,
    hp: dict[str, Scalar],
    corr1: bool,
) -> tuple[Tensor, ...]:
    """One tensor's proposal: new ``(m, θ̄, ḡ, s, stat, w)`` and the step ``Δ`` (``θ ← θ − Δ``), out of place.

    The arithmetic of :func:`dogr_step_` for one tensor, without the guard and without writing anything.

    Args:
        p: the parameter.
        g: its gradient.
        m: momentum.
        theta_mean: EMA of ``θ``.
        g_mean: EMA of ``g``.
        s: EMA variance of ``θ``.
        stat: ``c`` (or ``v`` for ``corr1``).
        prior_weight: the 0-dim prior weight before this step.
        s_mean: the 0-dim mean of ``s`` over moved coordinates before this step.
        hp: as :func:`dogr_step_`.
        corr1: the "c" form.

    Returns:
        ``(m, θ̄, ḡ, s, stat, w, Δ)``.
    """
    m1 = torch.lerp(m, g, hp["rate_m"])
    tm1, gm1, s1, st1 = dogr_observe(p, g, theta_mean, g_mean, s, stat, rate=hp["rate"], corr1=corr1)
    w1 = prior_weight * hp["beta"]
    ridge = dogr_ridge(s_mean, w1, ridge_rel=hp["ridge_rel"], ridge_abs=hp["ridge_abs"])
    lam = dogr_curvature(s1, st1, w1, ridge, h_prior=hp["h_prior"], corr1=corr1)
    # lr·m / max(div·|λ|, cut) = (lr/div)·m / max(|λ|, cut/div); a nan λ (overflowed statistics) fails the
    # comparison and gets the bound, so the rate stays in [0, lr/cut]
    a = lam.abs()
    step = hp["lr_div"] * m1 / torch.where(a > hp["bound"], a, hp["bound"])
    step = torch.clamp(step, -hp["max_coord_step"], hp["max_coord_step"])  # the per-coordinate trust bound
    return m1, tm1, gm1, s1, st1, w1, step


def dogr_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    m: Sequence[Tensor],
    theta_mean: Sequence[Tensor],
    g_mean: Sequence[Tensor],
    s: Sequence[Tensor],
    stat: Sequence[Tensor],
    prior_weight: Sequence[Tensor],
    s_mean: Sequence[Tensor],
    hp: dict[str, Scalar],
    gate: Tensor | None,
    *,
    corr1: bool,
    clip: bool,
) -> Tensor:
    """One dOGR step over a list of parameter tensors, in place; returns the counts of refused coordinates.

    Per tensor, in this order (arXiv:1901.11457, Fig. 4; hessopt's EMA convention)::

        m ← γ m + (1−γ) g
        θ̄, ḡ, s, c ← dogr_observe(...)                      (new means in the products)
        w ← β w;   δ ← dogr_ridge(s̄_before, w)              (s̄: moved_mean of s before this update)
        λ ← dogr_curvature(s, c, w, δ, h)
        Δ ← (lr/div)·m / max(|λ|, cut/div)                   (= lr·m / max(div·|λ|, cut))
        θ ← θ − clamp(Δ, ±max_coord_step)
        s̄ ← moved_mean(s)                                    (kept for the next step's floor)

    The floor uses the mean variance from *before* this update, so its reduction is computed in the same
    pass that writes ``s`` (one pass over the tensors instead of two).

    Guards: a coordinate whose new parameter, momentum or statistics would not be finite (an overflow: a
    learning rate or gradient near the dtype's range) keeps all its old values and is counted; with
    ``gate`` False (non-finite input) every coordinate keeps its values and the prior weight stays.

    Args:
        params: the parameter tensors (updated in place).
        grads: their gradients (any finite or non-finite values; a False ``gate`` ignores them).
        m: momentum per tensor (updated in place, as every state list).
        theta_mean: EMA of ``θ`` per tensor.
        g_mean: EMA of ``g`` per tensor.
        s: EMA variance of ``θ`` per tensor.
        stat: ``c`` (or ``v`` for ``corr1``) per tensor.
        prior_weight: the 0-dim prior weight ``w`` per tensor.
        s_mean: the 0-dim mean of ``s`` over moved coordinates per tensor (for the next floor).
        hp: ``rate_m = 1−γ``, ``rate = 1−β``, ``beta``, ``lr_div = lr/div``, ``bound = cut/div``,
            ``h_prior``, ``ridge_rel``, ``ridge_abs``, ``max_coord_step`` (the bound on every ``|Δ_i|``;
            ``inf`` for none) and, with ``clip``, ``max_step_norm``: floats or 0-dim tensors.
        gate: a 0-dim bool tensor (False: leave everything unchanged) or None (no gating).
        corr1: the "c" form.
        clip: scale the whole list's step ``Δ`` to norm at most ``hp["max_step_norm"]`` (two passes).

    Returns:
        An int64 vector with one entry per tensor: the number of its coordinates whose update was refused
        (all of them when ``gate`` is False).

    References:
        J. Duda, arXiv:1901.11457, Fig. 4; ``docs/algorithms/ogr.md``.
    """
    states = list(zip(params, grads, m, theta_mean, g_mean, s, stat, prior_weight, s_mean, strict=True))
    if not clip:
        refused = [_commit(st, dogr_proposal(*st, hp, corr1), None, gate) for st in states]
        return torch.stack(refused)
    props = [dogr_proposal(*st, hp, corr1) for st in states]
    squares = [torch.where(torch.isfinite(pr[-1]), pr[-1], 0.0).square().sum() for pr in props]
    norm = torch.stack(squares).sum().sqrt()
    scale = torch.clamp(hp["max_step_norm"] / norm.clamp_min(torch.finfo(norm.dtype).tiny), max=1.0)
    refused = [_commit(st, pr, scale, gate) for st, pr in zip(states, props, strict=True)]
    return torch.stack(refused)


def _commit(
    state: tuple[Tensor, ...], prop: tuple[Tensor, ...], scale: Tensor | None, gate: Tensor | None
) -> Tensor:
    """Write one tensor's proposal where it is finite (and ``gate`` allows); return the refused count."""
    p, _g, m, tm, gm, s, stat, w, s_mean = state
    m1, tm1, gm1, s1, st1, w1, step = prop
    p1 = p - (step if scale is None else step * scale)
    # x·0 is 0 for finite x and nan otherwise: one exact test for all six (vectorises, unlike isfinite)
    good = (p1 * 0 + m1 * 0 + tm1 * 0 + gm1 * 0 + s1 * 0 + st1 * 0) == 0
    for old, new in ((p, p1), (m, m1), (tm, tm1), (gm, gm1), (s, s1), (stat, st1)):
        old.copy_(torch.where(good if gate is None else good & gate, new, old))
    if gate is None:
        w.copy_(w1)
        s_mean.copy_(moved_mean(s))
    else:
        good = good & gate
        w.copy_(torch.where(gate, w1, w))
        s_mean.copy_(torch.where(gate, moved_mean(s), s_mean))
    return (~good).sum()


def _max_abs(tensors: Sequence[Tensor]) -> Tensor:
    """The largest ``|x|`` over a list of tensors (nan and inf propagate); ``torch.aminmax`` per tensor."""
    present = [t for t in tensors if t.numel()]
    if not present:
        return torch.zeros((), dtype=tensors[0].dtype)
    return torch.stack([v for t in present for v in torch.aminmax(t)]).abs().max()


def _unguarded_is_exact(
    tensors: Sequence[Sequence[Tensor]], hp: dict[str, float], *, corr1: bool, dtype: torch.dtype
) -> bool:
    """Whether no intermediate of the update can overflow for these magnitudes (reads them on the host).

    With ``X`` the largest ``|g|, |θ|, |m|, |θ̄|, |ḡ|, s, |c|`` (or ``v``) and ``F`` the dtype's largest value,
    every intermediate is at most about ``16 X^4`` ("c" form), ``4 X^2`` (regression form) and
    ``X (1 + lr/cut)`` (the new parameter) plus prior terms; all must stay below ``F / 4``.
    """
    big = torch.finfo(dtype).max / 4
    x = float(torch.stack([_max_abs(t) for t in tensors]).max())
    h = abs(hp["h_prior"])
    terms = [
        x,
        16 * x**4 if corr1 else 4 * x * x,
        x * (1 + hp["lr_div"] / hp["bound"]),
        h * (1 + h) * (1 + x),
    ]
    return all(t <= big for t in terms)  # False for a nan or inf x


def dogr_step_foreach_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    m: Sequence[Tensor],
    theta_mean: Sequence[Tensor],
    g_mean: Sequence[Tensor],
    s: Sequence[Tensor],
    stat: Sequence[Tensor],
    prior_weight: Sequence[Tensor],
    s_mean: Sequence[Tensor],
    hp: dict[str, float],
    *,
    corr1: bool,
) -> Tensor | None:
    """The multi-tensor, in-place form of :func:`dogr_step_` for finite input on the host (CPU).

    Same operations in the same order as :func:`dogr_step_` (so the same bits), evaluated with
    ``torch._foreach_*`` kernels in place and two temporaries: about 17 passes instead of about 45. It
    has no per-coordinate guard, so it first reads the largest magnitude of the inputs and state (one
    read-only pass) and runs only when no intermediate can overflow (:func:`_unguarded_is_exact`);
    otherwise it changes nothing and returns None, and the caller runs :func:`dogr_step_`. Without
    ``max_step_norm`` (no clip).

    Args:
        params: as :func:`dogr_step_`.
        grads: as :func:`dogr_step_`, all finite (the caller has checked).
        m: as :func:`dogr_step_`.
        theta_mean: as :func:`dogr_step_`.
        g_mean: as :func:`dogr_step_`.
        s: as :func:`dogr_step_`.
        stat: as :func:`dogr_step_`.
        prior_weight: as :func:`dogr_step_`.
        s_mean: as :func:`dogr_step_`.
        hp: as :func:`dogr_step_`, with Python floats.
        corr1: the "c" form.

    Returns:
        Zeros, one per tensor (no coordinate refused), or None when the input is too large for this form.
    """
    dtype = params[0].dtype
    if not _unguarded_is_exact((grads, params, m, theta_mean, g_mean, s, stat), hp, corr1=corr1, dtype=dtype):
        return None
    n = len(params)
    w1 = [w * hp["beta"] for w in prior_weight]
    ridge = [
        dogr_ridge(sm, w, ridge_rel=hp["ridge_rel"], ridge_abs=hp["ridge_abs"])
        for sm, w in zip(s_mean, w1, strict=True)
    ]
    torch._foreach_lerp_(m, grads, hp["rate_m"])
    torch._foreach_lerp_(theta_mean, params, hp["rate"])
    torch._foreach_lerp_(g_mean, grads, hp["rate"])
    e = torch._foreach_sub(params, theta_mean)
    r = torch._foreach_sub(grads, g_mean)
    torch._foreach_mul_(r, r if corr1 else e)
    torch._foreach_mul_(e, e)
    torch._foreach_lerp_(s, e, hp["rate"])
    torch._foreach_lerp_(stat, r, hp["rate"])
    h, bound, lr_div = hp["h_prior"], hp["bound"], hp["lr_div"]
    for i in range(n):  # the curvature and the step, in the two temporaries (no further allocation)
        den, lam = e[i], r[i]
        if corr1:  # (sqrt((s + w)(v + w·h²)) + δ|h|) / ((s + w) + δ)
            torch.add(s[i], w1[i], out=den)
            torch.mul(den, stat[i] + w1[i] * h * h if h else stat[i], out=lam)
            lam.sqrt_()
            if h:
                lam.add_(ridge[i] * abs(h))
            den.add_(ridge[i])
        else:  # (c + (w + δ)·h) / (s + (w + δ))
            weight = w1[i] + ridge[i]
            torch.add(s[i], weight, out=den)
            torch.add(stat[i], weight * h, out=lam) if h else lam.copy_(stat[i])
        lam.div_(den)
        if hp["ridge_abs"] == 0:  # only then can a denominator vanish: λ is the prior there
            lam.copy_(torch.where(den > 0, lam, abs(h) if corr1 else h))
        lam.abs_().clamp_min_(bound)
        torch.mul(m[i], lr_div, out=den)
        den.div_(lam)
        if hp["max_coord_step"] != float("inf"):
            den.clamp_(-hp["max_coord_step"], hp["max_coord_step"])
        params[i].sub_(den)
        prior_weight[i].copy_(w1[i])
        s_mean[i].copy_(moved_mean(s[i]))
    return torch.zeros(n, dtype=torch.int64, device=params[0].device)


@functools.cache
def compiled_dogr_step() -> Callable[..., Tensor]:
    """:func:`dogr_step_` compiled with ``torch.compile`` (one fused kernel per tensor; same arithmetic).

    Compilation happens at the first call for each list of shapes, dtype and device (seconds to tens of
    seconds on a CPU, which needs the C++ toolchain that ``torch.compile`` uses); later calls reuse it.
    Pass the scalars of ``hp`` as 0-dim tensors so that a scheduler changing ``lr`` does not recompile.
    """
    return torch.compile(dogr_step_)


class DiagonalGradientRegression(RegressionEstimatorBase):
    """Coordinate-wise OGR estimator: ``λ_i = cov(g_i, θ_i) / var(θ_i)`` on one flat vector.

    The statistics of :func:`dogr_observe` ("4 (m = mg) or here 5 size D vectors", arXiv:1901.11457
    Fig. 4, without the momentum): ``theta_mean``, ``g_mean``, ``sigma`` (``s``, var θ), ``cross``
    (``c``, cov(g, θ)) or ``grad_cov`` (``v``, var g) for ``corr1``, plus ``prior_weight`` and ``count``.
    ``λ_i`` equals ``H_ii`` exactly on separable functions or when the coordinates move uncorrelated;
    otherwise it absorbs ``Σ_j H_ij cov(θ_j, θ_i)/var(θ_i)``. The sign is kept (saddle-free per
    coordinate). :meth:`diagonal` is :func:`dogr_curvature` with the floor :func:`dogr_ridge` of the
    current statistics: the 1-D case of :func:`hessopt.curvature.regression.symmetric_lstsq_hessian`.

    ``corr1=True`` is the "c" form (arXiv:1901.11457 Fig. 7): ``λ_i = sqrt(v_i / s_i)``. The curvature
    SIGN IS LOST (λ >= 0: no saddle repulsion) and gradient NOISE READS AS CURVATURE.

    Args:
        dim: D, the number of coordinates.
        beta: EMA weight of the old statistics (default 0.4, Duda's dOGR tuning; his 0.6 converted).
        sigma0: prior variance ``s0`` (default 1); 0 disables the prior.
        h_prior: prior curvature, a scalar or a ``(D,)`` vector (default 0).
        mean_init: ``"zero"`` (default: the means start at 0, a phantom observation θ = 0, g = 0 with the
            prior's weight, as Duda's code) or ``"first"`` (the means start at the first observation).
        ridge_rel: ridge-floor constant ``δ_rel``; None = ``sqrt(eps)`` of ``dtype``.
        ridge_abs: ridge-floor constant ``δ_abs``; None = ``sqrt(tiny)`` of ``dtype``.
        corr1: the "c" form.
        dtype: of the state (default: torch's default dtype).
        device: of the state (default CPU).

    Raises:
        ValueError, TypeError: an argument out of range, naming it.

    References:
        J. Duda, arXiv:1901.11457, Figs. 4 and 7; ``docs/algorithms/ogr.md``.
    """

    def __init__(
        self,
        dim: int,
        *,
        beta: float = 0.4,
        sigma0: float = 1.0,
        h_prior: float | Tensor = 0.0,
        mean_init: str = "zero",
        ridge_rel: float | None = None,
        ridge_abs: float | None = None,
        corr1: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """Validate the arguments and set up the state (see the class docstring)."""
        super().__init__(dim, beta, sigma0, mean_init, ridge_rel, ridge_abs, dtype, device)
        kw = {"dtype": self.dtype, "device": self.device}
        h = torch.as_tensor(h_prior, **kw)
        if h.dim() == 0:
            h = h.expand(dim).clone()
        if h.shape != (dim,):
            raise ValueError(f"h_prior must be a scalar or a ({dim},) vector, got shape {tuple(h.shape)}")
        if not bool(torch.isfinite(h).all()):
            raise ValueError("h_prior must be finite")
        self.h_prior = h
        self.corr1 = bool(corr1)
        self._stat_names = ("sigma", "grad_cov") if self.corr1 else ("sigma", "cross")
        self.sigma = torch.zeros(dim, **kw)
        self.cross = None if self.corr1 else torch.zeros(dim, **kw)
        self.grad_cov = torch.zeros(dim, **kw) if self.corr1 else None

    def _observe(self, theta: Tensor, g: Tensor, theta_mean: Tensor, g_mean: Tensor) -> dict[str, Tensor]:
        stat = self.grad_cov if self.corr1 else self.cross
        tm, gm, s, st = dogr_observe(
            theta, g, theta_mean, g_mean, self.sigma, stat, rate=1.0 - self.beta, corr1=self.corr1
        )
        return {"theta_mean": tm, "g_mean": gm, "sigma": s, self._stat_names[1]: st}

    @torch.no_grad()
    def diagonal(self) -> Tensor:
        """The ``(D,)`` curvature estimates ``λ_i``; finite for finite input (zero denominator: the prior)."""
        w = self.prior_weight
        ridge = dogr_ridge(moved_mean(self.sigma), w, ridge_rel=self.ridge_rel, ridge_abs=self.ridge_abs)
        stat = self.grad_cov if self.corr1 else self.cross
        return dogr_curvature(self.sigma, stat, w, ridge, h_prior=self.h_prior, corr1=self.corr1)

    @torch.no_grad()
    def zero_gradient_point(self, diagonal: Tensor | None = None) -> Tensor:
        """Per-coordinate zero-gradient point ``p_i = θ̄_i − ḡ_i/λ_i``.

        Args:
            diagonal: an estimate from :meth:`diagonal` to reuse (default: computed).

        Returns:
            ``p``; defined only where ``λ_i ≠ 0``: as a pseudo-inverse, ``p_i = θ̄_i`` where ``λ_i = 0`` or
            where ``ḡ_i/λ_i`` overflows.
        """
        lam = self.diagonal() if diagonal is None else diagonal
        nz = lam != 0
        q = self.g_mean / torch.where(nz, lam, torch.ones_like(lam))
        return self.theta_mean - torch.where(nz & torch.isfinite(q), q, torch.zeros_like(q))
