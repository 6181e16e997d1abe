"""Online gradient regression (OGR): Hessian estimates from the gradient stream alone, full-matrix form.

OGR (J. Duda, arXiv:1901.11457; A. Przybysz, M. Kołek, F. Sobota, J. Duda, arXiv:2512.06969) models the
gradient as linear in the position, ``g(θ) ≈ H (θ − p)``, and fits the symmetric ``H`` (and the
zero-gradient point ``p``) by least squares with exponentially decaying weights. Only exponential moving
averages of ``θ``, ``g`` and their (cross-)covariances are kept; no Hessian-vector product and no inversion
is needed, and ``H`` may be indefinite. The equations, defaults and deviations are on
``docs/algorithms/ogr.md``; the diagonal form is :mod:`hessopt.curvature.diagonal`, the subspace form
:mod:`hessopt.curvature.subspace`.

=====================================  ===========================================  =====================
object                                 what                                          cost per call
=====================================  ===========================================  =====================
:func:`ema_update_statistics`          the EMA update of the statistics              O(D^2) full, O(D) diag
:func:`ogr_initial_state`              the state of full OGR before any observation  O(D^2)
:func:`ogr_observe`                    one observation added to that state           O(D^2)
:func:`ogr_hessian`                    the estimate ``H`` from that state            O(D^3) (one ``eigh``)
:func:`symmetric_lstsq_hessian`        ``H Σ + Σ H = C + Cᵀ`` solved in Σ's basis    O(D^3) (one ``eigh``)
:func:`corr1_cross_covariance`         ``Σ^{1/2} Σ_g^{1/2}`` of the "c" form          O(D^3) (two ``eigh``)
:func:`saddle_free_rates`              ``f(λ) = η/max(div|λ|, cut)``                 O(D)
:func:`saddle_free_step`               ``Q diag(f(λ)) Qᵀ m``                         O(D^3) (or O(D^2))
:func:`clip_to_norm`                   scale a step to a maximum norm                O(D)
:class:`OnlineGradientRegression`      full OGR (fOGR) and its "c" form (cfOGR)       memory O(D^2)
=====================================  ===========================================  =====================

Conventions. Every EMA is ``ema = beta*ema + (1-beta)*x`` (``beta`` weighs the OLD value). Duda's code
writes ``ema += beta_D*(x - ema)``; the two agree for ``beta_D = 1 - beta``, and all defaults here are
converted. The prior of Duda's code (``Σ0 = s0·I``, ``C0 = s0·H_prior``) decays like ``s0·β^t``; the state
keeps that weight as a separate scalar (``prior_weight``), which is the same model (a decaying ridge
towards ``H_prior``) without letting rounding of ``Σ`` erase it. A non-decaying ridge floor
``δ = max(δ_rel·tr(Σ)/D, δ_abs)`` (a hessopt guard; ``δ_rel = sqrt(eps)``) keeps directions that never move
at the prior instead of at rounding noise over rounding noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "MEAN_INITS",
    "OGRStatistics",
    "OnlineGradientRegression",
    "RegressionEstimatorBase",
    "clip_to_norm",
    "corr1_cross_covariance",
    "default_ridge",
    "diagonal_saddle_free_step",
    "ema_update_statistics",
    "first_means",
    "ogr_hessian",
    "ogr_initial_state",
    "ogr_observe",
    "ridge_floor",
    "saddle_free_rates",
    "saddle_free_step",
    "symmetric_eigh",
    "symmetric_lstsq_hessian",
]

Scalar = float | Tensor

#: Accepted values of ``mean_init``: the EMA means start at 0 (Duda's code) or at the first observation.
MEAN_INITS = ("zero", "first")


class OGRStatistics(NamedTuple):
    """The statistics after one EMA update; ``cross`` and ``grad_cov`` are ``None`` when not tracked."""

    theta_mean: Tensor
    g_mean: Tensor
    sigma: Tensor
    cross: Tensor | None
    grad_cov: Tensor | None


def _check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be a float in [0, 1) (weight of the old value), got {beta!r}")
    return float(beta)


def ema_update_statistics(
    theta: Tensor,
    g: Tensor,
    theta_mean: Tensor,
    g_mean: Tensor,
    beta: float,
    *,
    sigma: Tensor,
    cross: Tensor | None = None,
    grad_cov: Tensor | None = None,
) -> OGRStatistics:
    """One OGR statistics update: means first, then the (cross-)covariances with the NEW means.

    ::

        θ̄ ← β θ̄ + (1−β) θ,   ḡ ← β ḡ + (1−β) g
        Σ ← β Σ + (1−β) (θ−θ̄)(θ−θ̄)ᵀ,   C ← β C + (1−β) (g−ḡ)(θ−θ̄)ᵀ,   Σ_g ← β Σ_g + (1−β) (g−ḡ)(g−ḡ)ᵀ

    Because the outer products use the new means, every data term enters with an extra factor ``β``
    compared with the exact weighted-covariance recursion; ``Σ``, ``C`` and ``Σ_g`` share it, so the fitted
    ``H`` is unchanged (docs/algorithms/ogr.md, "EMA order"). Change no statistic alone.

    Args:
        theta: position, ``(D,)``.
        g: gradient, ``(D,)``.
        theta_mean: EMA of ``θ``, ``(D,)``.
        g_mean: EMA of ``g``, ``(D,)``.
        beta: EMA weight of the old value, in [0, 1).
        sigma: ``Σ``, ``(D, D)`` (full form) or ``(D,)`` (diagonal form: element-wise products).
        cross: ``C`` with ``C_ij = cov(g_i, θ_j)``, or None.
        grad_cov: ``Σ_g`` (only for the "c" form), or None.

    Returns:
        New tensors (the inputs are not modified).

    Raises:
        ValueError: ``beta`` outside [0, 1) or ``sigma`` neither 1-D nor 2-D.

    References:
        J. Duda, arXiv:1901.11457, Fig. 1 (the statistics of fOGR).
    """
    beta = _check_beta(beta)
    if sigma.dim() not in (1, 2):
        raise ValueError(f"sigma must be (D,) (diagonal) or (D, D) (full), got shape {tuple(sigma.shape)}")
    full = sigma.dim() == 2
    a = 1.0 - beta
    # lerp: ema + (1−β)(x − ema), one kernel per statistic; it keeps the mean of a coordinate that never moves
    # exactly constant, so its e is exactly 0 and its variance stays exactly 0
    theta_mean = torch.lerp(theta_mean, theta, a)
    g_mean = torch.lerp(g_mean, g, a)
    e = theta - theta_mean
    r = g - g_mean
    prod = torch.outer if full else torch.mul
    new_sigma = torch.lerp(sigma, prod(e, e), a)
    new_cross = None if cross is None else torch.lerp(cross, prod(r, e), a)
    new_gcov = None if grad_cov is None else torch.lerp(grad_cov, prod(r, r), a)
    return OGRStatistics(theta_mean, g_mean, new_sigma, new_cross, new_gcov)


def default_ridge(
    dtype: torch.dtype, ridge_rel: float | None = None, ridge_abs: float | None = None
) -> tuple[float, float]:
    """The ridge-floor constants ``(δ_rel, δ_abs)``: those given, else ``(sqrt(eps), sqrt(tiny))`` of dtype.

    ``sqrt(tiny)`` is positive, far above underflow, and so small that it acts only once every direction
    has stopped moving (float64: 1.5e-154; float32: 1.1e-19).

    Args:
        dtype: a floating-point dtype.
        ridge_rel: ``δ_rel`` chosen by the user, or None for the dtype's default.
        ridge_abs: ``δ_abs`` chosen by the user, or None for the dtype's default.

    Returns:
        ``(δ_rel, δ_abs)``.
    """
    fi = torch.finfo(dtype)
    return (
        fi.eps**0.5 if ridge_rel is None else ridge_rel,
        fi.tiny**0.5 if ridge_abs is None else ridge_abs,
    )


def ridge_floor(sigma: Tensor, *, ridge_rel: float, ridge_abs: float, prior_weight: Scalar = 0.0) -> Tensor:
    """The non-decaying ridge ``δ = max(δ_rel·(v̄ + w), δ_abs)`` as a 0-dim tensor.

    ``v̄`` is the mean variance ``tr(Σ)/D`` taken over the coordinates that have moved (``Σ_ii > 0``): a
    coordinate that never moves (a frozen parameter, one without gradient) then changes nothing about the
    estimate of the others. Sync-free, O(D).

    Args:
        sigma: the data part of ``Σ``, ``(D, D)``, or ``(D,)`` for a diagonal.
        ridge_rel: ``δ_rel`` (>= 0).
        ridge_abs: ``δ_abs`` (>= 0).
        prior_weight: ``w``, the prior weight already acting on ``Σ``.

    Returns:
        ``δ``.

    Raises:
        ValueError: a negative constant.
    """
    if ridge_rel < 0 or ridge_abs < 0:
        raise ValueError(f"ridge_rel and ridge_abs must be >= 0, got {ridge_rel!r} and {ridge_abs!r}")
    var = (sigma.diagonal() if sigma.dim() == 2 else sigma).clamp_min(0)
    mean_var = var.sum() / torch.count_nonzero(var).clamp_min(1) + prior_weight
    return torch.clamp_min(ridge_rel * mean_var, ridge_abs)


def symmetric_eigh(a: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` of a symmetric matrix with subnormal entries flushed to 0.

    LAPACK's float32 ``eigh`` returns nan for matrices with subnormal entries (statistics that decayed below
    the dtype's smallest normal number); such entries carry nothing the ridge floor does not dominate.

    Args:
        a: symmetric ``(D, D)``; only the lower triangle is read.

    Returns:
        ``(eigenvalues, eigenvectors)`` in ascending order.
    """
    tiny = torch.finfo(a.dtype).tiny
    return torch.linalg.eigh(torch.where(a.abs() < tiny, 0.0, a))


def _prior_in_basis(h_prior: Scalar | Tensor | None, basis: Tensor) -> Tensor | None:
    """``Oᵀ H_prior O`` for a scalar (``h·I``), a (diagonal) vector or a symmetric matrix; None for 0/None."""
    d = basis.shape[-1]
    if h_prior is None or (isinstance(h_prior, (int, float)) and h_prior == 0):
        return None
    h = torch.as_tensor(h_prior, dtype=basis.dtype, device=basis.device)
    if h.dim() == 0:
        return h * torch.eye(d, dtype=basis.dtype, device=basis.device)
    if h.shape == (d,):
        return basis.mT @ (h.unsqueeze(-1) * basis)
    if h.shape == (d, d):
        return basis.mT @ h @ basis
    raise ValueError(
        f"h_prior must be a scalar, a ({d},) diagonal or a ({d}, {d}) matrix, got {tuple(h.shape)}"
    )


def symmetric_lstsq_hessian(
    sigma: Tensor | tuple[Tensor, Tensor],
    cross: Tensor,
    *,
    prior_weight: Scalar = 0.0,
    h_prior: Scalar | Tensor | None = None,
    ridge: Scalar = 0.0,
) -> Tensor:
    """Symmetric least-squares Hessian: the solution of a Lyapunov equation.

    Minimising ``E‖g̃ − H θ̃‖²`` over symmetric ``H`` gives ``H Σ + Σ H = C + Cᵀ``; with the prior/ridge weight
    ``w = prior_weight + ridge`` towards ``H_prior`` it is ``H (Σ + wI) + (Σ + wI) H = C + Cᵀ + 2w H_prior``.
    In ``Σ``'s eigenbasis ``Σ = O diag(l) Oᵀ``, with ``B = Oᵀ(C + Cᵀ)O`` and ``P = Oᵀ H_prior O``::

        H = O [ (B_ij + 2w P_ij) / (l_i + l_j + 2w) ] Oᵀ

    The numerator is ``C + Cᵀ`` over ``l_i + l_j``, with no factor 0.5 (a ``0.5(C + Cᵀ)`` halves ``H`` and
    doubles every step). Where a denominator is ``<= eps·max(denominators)`` the entry is set to ``P_ij``
    (the solution closest to ``H_prior``), so the result is finite for finite input, even for ``w = 0`` and
    singular ``Σ``. The result is exactly symmetric and equivariant: ``(QᵀΣQ, QᵀCQ) ↦ QᵀHQ``.

    Args:
        sigma: the symmetric ``(D, D)`` covariance of positions (only its lower triangle is read), or its
            eigendecomposition ``(l, O)``. Negative eigenvalues (rounding) are clamped to 0.
        cross: ``C`` with ``C_ij = cov(g_i, θ_j)``, ``(D, D)``; only ``C + Cᵀ`` is used.
        prior_weight: the decaying weight ``s0·β^t`` of the prior (float >= 0 or 0-dim tensor, unchecked).
        h_prior: a scalar (``h·I``), a ``(D,)`` diagonal or a symmetric ``(D, D)`` matrix (default 0).
        ridge: the non-decaying floor of :func:`ridge_floor` (float >= 0 or 0-dim tensor).

    Returns:
        The symmetric ``(D, D)`` estimate. Cost: one ``eigh``, O(D^3).

    Raises:
        ValueError: shapes that do not match, or a negative float weight.

    References:
        J. Duda, arXiv:1901.11457, Fig. 1 ("symmetrized Hessian estimator"); ``docs/algorithms/ogr.md``.
    """
    if isinstance(sigma, tuple):
        l, basis = sigma
    else:
        if sigma.dim() != 2 or sigma.shape[0] != sigma.shape[1]:
            raise ValueError(
                f"sigma must be a square (D, D) matrix or a tuple (l, O), got {tuple(sigma.shape)}"
            )
        l, basis = symmetric_eigh(sigma)
    d = basis.shape[-1]
    if cross.shape != (d, d):
        raise ValueError(f"cross must have shape ({d}, {d}) like sigma, got {tuple(cross.shape)}")
    for name, v in (("prior_weight", prior_weight), ("ridge", ridge)):
        if not isinstance(v, Tensor) and v < 0:
            raise ValueError(f"{name} must be >= 0, got {v!r}")
    w = prior_weight + ridge
    l = l.clamp_min(0)
    b = basis.mT @ (cross + cross.mT) @ basis
    p = _prior_in_basis(h_prior, basis)
    den = l.unsqueeze(-1) + l.unsqueeze(-2) + 2 * w
    ok = den > torch.finfo(den.dtype).eps * den.max()
    safe = torch.where(ok, den, 1.0)
    m = torch.where(ok, b / safe, 0.0) if p is None else torch.where(ok, (b + 2 * w * p) / safe, p)
    h = basis @ m @ basis.mT
    return 0.5 * (h + h.mT)


def _psd_sqrt(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(A^{1/2}, l, O)`` of a symmetric PSD matrix (negative rounding eigenvalues clamped to 0)."""
    l, o = symmetric_eigh(0.5 * (a + a.mT))
    return (o * l.clamp_min(0).sqrt()) @ o.mT, l, o


def corr1_cross_covariance(sigma: Tensor, grad_cov: Tensor) -> Tensor:
    """The "c" forms' stand-in for ``C``: ``S_θ S_g`` with ``S_θ = Σ^{1/2}``, ``S_g = Σ_g^{1/2}``.

    cfOGR approximates cov(g, θ) "as var(g), var(θ) eigenvectors being perfectly correlated"
    (arXiv:1901.11457, Fig. 7), i.e. replaces ``C + Cᵀ`` by ``S_θ S_g + S_g S_θ``; pass the result as
    ``cross`` to :func:`symmetric_lstsq_hessian`. In 1-D it gives ``λ = sqrt(var g / var θ) >= 0``: the
    curvature's SIGN IS LOST (no saddle repulsion) and gradient NOISE READS AS CURVATURE.

    Args:
        sigma: ``Σ = Cov(θ)``, ``(D, D)``.
        grad_cov: ``Σ_g = Cov(g)``, ``(D, D)``.

    Returns:
        ``S_θ S_g``. Cost: two ``eigh``, O(D^3).

    References:
        J. Duda, arXiv:1901.11457, Fig. 7.
    """
    s_theta, _, _ = _psd_sqrt(sigma)
    s_g, _, _ = _psd_sqrt(grad_cov)
    return s_theta @ s_g


def _check_step_args(eta: float, div: float, cut: float) -> None:
    if not isinstance(eta, (int, float)) or not 0.0 <= eta < float("inf"):
        raise ValueError(f"eta must be a finite float >= 0, got {eta!r}")
    if not isinstance(div, (int, float)) or not 0.0 < div < float("inf"):
        raise ValueError(f"div must be a finite float > 0, got {div!r}")
    if not isinstance(cut, (int, float)) or not 0.0 < cut < float("inf"):
        raise ValueError(
            f"cut must be a finite float > 0, got {cut!r} (cut = 0 would allow unbounded steps; emulate "
            "maxalpha = inf with a tiny cut such as 1e-12)"
        )


def saddle_free_rates(lam: Tensor, *, eta: float, div: float, cut: float) -> Tensor:
    """Per-direction learning rates ``f(λ) = η / max(div·|λ|, cut)``.

    "Suggested 1/λ learning rates undergo absolute value as in SFN, then are divided by div, then bounded
    by 1/cut" (arXiv:1901.11457, Fig. 1 caption). ``|λ|`` makes a step along negative curvature move AWAY
    from the maximum (saddle-free); ``f(λ) <= η/cut`` always, so zero or unobserved curvature gives a
    bounded gradient step. A nan ``λ`` gets the bound ``η/cut`` too.

    Args:
        lam: eigenvalues (or per-coordinate curvatures).
        eta: step size ``η >= 0`` (0 gives zero rates: a learning rate a scheduler brought to 0).
        div: divisor of the Newton rate, > 0.
        cut: floor of ``div·|λ|``, > 0.

    Returns:
        The rates, shaped like ``lam``. Cost O(D).

    Raises:
        ValueError: an argument out of range, naming it.
    """
    _check_step_args(eta, div, cut)
    return eta / torch.fmax(div * lam.abs(), torch.tensor(cut, dtype=lam.dtype, device=lam.device))


def saddle_free_step(
    h: Tensor | tuple[Tensor, Tensor], m: Tensor, *, eta: float, div: float, cut: float
) -> Tensor:
    """The saddle-free OGR step ``Δ = Q diag(f(λ)) Qᵀ m``; use ``θ ← θ − Δ``.

    With ``H = diag(1, −1)`` and ``η = div = 1`` the step from ``(x, y)`` with ``m = ∇f`` lands at
    ``(0, 2y)``, where Newton lands on the saddle ``(0, 0)``.

    Args:
        h: the symmetric ``(D, D)`` estimate (``eigh`` reads its lower triangle; O(D^3)) or its eigenpairs
            ``(λ, Q)`` (then O(D^2)).
        m: the momentum (or the raw gradient), ``(D,)``.
        eta: as :func:`saddle_free_rates`.
        div: as :func:`saddle_free_rates`.
        cut: as :func:`saddle_free_rates`.

    Returns:
        ``Δ``, ``(D,)``.

    Raises:
        ValueError: wrong shapes or arguments out of range.

    References:
        J. Duda, arXiv:1901.11457, Fig. 1; ``docs/algorithms/ogr.md`` ("Step").
    """
    if isinstance(h, tuple):
        lam, q = h
    else:
        if h.dim() != 2 or h.shape[0] != h.shape[1]:
            raise ValueError(
                f"h must be a square (D, D) matrix or a tuple (eigvals, eigvecs), got {tuple(h.shape)}"
            )
        lam, q = symmetric_eigh(h)
    if m.shape != lam.shape:
        raise ValueError(
            f"m must have shape {tuple(lam.shape)} (one entry per eigenvalue), got {tuple(m.shape)}"
        )
    return q @ (saddle_free_rates(lam, eta=eta, div=div, cut=cut) * (q.mT @ m))


def diagonal_saddle_free_step(lam: Tensor, m: Tensor, *, eta: float, div: float, cut: float) -> Tensor:
    """Coordinate-wise saddle-free step ``Δ_i = η m_i / max(div·|λ_i|, cut)`` (the dOGR step map).

    Args:
        lam: per-coordinate curvature.
        m: momentum, shaped like ``lam``.
        eta: as :func:`saddle_free_rates`.
        div: as :func:`saddle_free_rates`.
        cut: as :func:`saddle_free_rates`.

    Returns:
        ``Δ``; use ``θ ← θ − Δ``. Cost O(D).

    Raises:
        ValueError: ``m`` not shaped like ``lam``, or arguments out of range.
    """
    if m.shape != lam.shape:
        raise ValueError(f"m must have the shape of lam {tuple(lam.shape)}, got {tuple(m.shape)}")
    return saddle_free_rates(lam, eta=eta, div=div, cut=cut) * m


def clip_to_norm(step: Tensor, max_norm: float | None) -> Tensor:
    """``step`` scaled to Euclidean norm at most ``max_norm`` (unchanged for None); sync-free.

    Args:
        step: any tensor.
        max_norm: the bound (> 0), or None.

    Returns:
        The scaled step.
    """
    if max_norm is None:
        return step
    norm = torch.linalg.vector_norm(step)
    return step * torch.clamp(max_norm / norm.clamp_min(torch.finfo(norm.dtype).tiny), max=1.0)


# --------------------------------------------------------------------------------------- full OGR state
def ogr_initial_state(
    dim: int, *, sigma0: float, corr1: bool, dtype: torch.dtype, device: torch.device | str | None = None
) -> dict[str, Tensor]:
    """The state of full OGR before any observation.

    Args:
        dim: D.
        sigma0: prior variance ``s0`` (the initial ``prior_weight``).
        corr1: keep ``grad_cov`` (the "c" form) instead of ``cross``.
        dtype: of the state.
        device: of the state.

    Returns:
        ``{"theta_mean", "g_mean": (D,), "sigma", "cross" or "grad_cov": (D, D), "prior_weight": 0-dim,
        "count": 0-dim int64}``, all zero except ``prior_weight = sigma0``.
    """
    kw = {"dtype": dtype, "device": device}
    stat = "grad_cov" if corr1 else "cross"
    return {
        "theta_mean": torch.zeros(dim, **kw),
        "g_mean": torch.zeros(dim, **kw),
        "sigma": torch.zeros(dim, dim, **kw),
        stat: torch.zeros(dim, dim, **kw),
        "prior_weight": torch.tensor(float(sigma0), **kw),
        "count": torch.zeros((), dtype=torch.int64, device=device),
    }


def first_means(
    state: Mapping[str, Tensor], theta: Tensor, g: Tensor, mean_init: str
) -> tuple[Tensor, Tensor]:
    """The means an observation starts from: the observation itself before the first one with ``"first"``.

    Args:
        state: holds ``theta_mean``, ``g_mean`` and the int64 ``count``.
        theta: the observed position.
        g: the observed gradient.
        mean_init: ``"zero"`` (the stored means) or ``"first"``.

    Returns:
        ``(θ̄, ḡ)`` to update. Sync-free (``torch.where`` on ``count == 0``).
    """
    if mean_init == "zero":
        return state["theta_mean"], state["g_mean"]
    first = state["count"] == 0
    return torch.where(first, theta, state["theta_mean"]), torch.where(first, g, state["g_mean"])


def ogr_observe(
    state: Mapping[str, Tensor], theta: Tensor, g: Tensor, *, beta: float, mean_init: str
) -> dict[str, Tensor]:
    """Full OGR's state after one observation ``(θ, g)`` (new tensors; ``state`` is not modified).

    :func:`ema_update_statistics` from the means of :func:`first_means`; the prior weight decays by
    ``β`` and ``count`` grows by one.

    Args:
        state: from :func:`ogr_initial_state` or a previous call.
        theta: the observed position, ``(D,)``.
        g: the observed gradient, ``(D,)``.
        beta: EMA weight of the old values.
        mean_init: ``"zero"`` or ``"first"``.

    Returns:
        The new state (same keys).
    """
    tm, gm = first_means(state, theta, g, mean_init)
    stats = ema_update_statistics(
        theta, g, tm, gm, beta, sigma=state["sigma"], cross=state.get("cross"), grad_cov=state.get("grad_cov")
    )
    new = {"theta_mean": stats.theta_mean, "g_mean": stats.g_mean, "sigma": stats.sigma}
    new.update({"cross": stats.cross} if "cross" in state else {"grad_cov": stats.grad_cov})
    new["prior_weight"] = state["prior_weight"] * beta
    new["count"] = state["count"] + 1
    return new


def _corr1_prior(h_prior: Tensor) -> tuple[Scalar | Tensor, Tensor]:
    """The "c" form's prior: target ``|H_prior|`` (sign-free) and ``Σ_g``'s prior ``H_prior²``."""
    d = None if h_prior.dim() == 0 else h_prior.shape[0]
    if d is None:
        return abs(float(h_prior)), h_prior.square()
    lam, q = symmetric_eigh(h_prior)
    return (q * lam.abs()) @ q.mT, h_prior @ h_prior


def ogr_hessian(
    state: Mapping[str, Tensor],
    *,
    h_prior: float | Tensor,
    ridge_rel: float,
    ridge_abs: float,
) -> Tensor:
    """The symmetric ``(D, D)`` estimate ``H`` of full OGR's state, with its prior and ridge floor.

    The regression form solves :func:`symmetric_lstsq_hessian` on ``(Σ, C)`` with weight
    ``prior_weight + δ`` towards ``H_prior`` (``δ`` from :func:`ridge_floor`). The "c" form (a state with
    ``grad_cov``) replaces ``C + Cᵀ`` by ``S_θ S_g + S_g S_θ`` with ``S_θ = (Σ + wI)^{1/2}`` and
    ``S_g = (Σ_g + w H_prior²)^{1/2}``, and pulls towards ``|H_prior|``.

    Args:
        state: from :func:`ogr_observe`.
        h_prior: a float (``h·I``) or a symmetric ``(D, D)`` tensor.
        ridge_rel: the floor's ``δ_rel``.
        ridge_abs: the floor's ``δ_abs``.

    Returns:
        ``H``: finite for finite state, also when ``Σ`` is rank-deficient. Cost: one ``eigh`` (three for
        the "c" form).
    """
    sigma, w = state["sigma"], state["prior_weight"]
    ridge = ridge_floor(sigma, ridge_rel=ridge_rel, ridge_abs=ridge_abs, prior_weight=w)
    if "cross" in state:
        return symmetric_lstsq_hessian(sigma, state["cross"], prior_weight=w, h_prior=h_prior, ridge=ridge)
    h = torch.as_tensor(h_prior, dtype=sigma.dtype, device=sigma.device)
    target, prior_gcov = _corr1_prior(h)
    eye = torch.eye(sigma.shape[0], dtype=sigma.dtype, device=sigma.device)
    s_theta, l, o = _psd_sqrt(sigma + w * eye)
    s_g, _, _ = _psd_sqrt(state["grad_cov"] + w * (prior_gcov * eye if prior_gcov.dim() == 0 else prior_gcov))
    return symmetric_lstsq_hessian((l, o), s_theta @ s_g, h_prior=target, ridge=ridge)


# --------------------------------------------------------------------------------------- estimator classes
class RegressionEstimatorBase:
    """Shared state handling of the OGR estimators: validation, observation, masking, ``state_dict``.

    Subclasses set ``_stat_names`` and the statistics' attributes and implement ``_observe``.

    Args:
        dim: D, the number of (flattened) parameters.
        beta: EMA weight of the old statistics, in [0, 1).
        sigma0: prior variance ``s0`` (>= 0, finite).
        mean_init: ``"zero"`` or ``"first"``.
        ridge_rel: ridge-floor ``δ_rel`` (>= 0); None = :func:`default_ridge` of ``dtype``.
        ridge_abs: ridge-floor ``δ_abs`` (>= 0); None = :func:`default_ridge` of ``dtype``.
        dtype: floating-point dtype of the state (default: torch's default dtype).
        device: device of the state (default CPU).

    Raises:
        ValueError, TypeError: an argument out of range or of the wrong type, naming it.
    """

    _stat_names: tuple[str, ...]

    def __init__(
        self,
        dim: int,
        beta: float,
        sigma0: float,
        mean_init: str,
        ridge_rel: float | None,
        ridge_abs: float | None,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> None:
        """Validate the arguments and set up the state (see the class docstring)."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.beta = _check_beta(beta)
        if (
            isinstance(sigma0, bool)
            or not isinstance(sigma0, (int, float))
            or not 0.0 <= sigma0 < float("inf")
        ):
            raise ValueError(
                f"sigma0 (prior variance s0, Σ0 = s0·I) must be a finite float >= 0, got {sigma0!r}"
            )
        if mean_init not in MEAN_INITS:
            raise ValueError(f'mean_init must be "zero" or "first", got {mean_init!r}')
        self.dtype = torch.get_default_dtype() if dtype is None else dtype
        if not self.dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {self.dtype}")
        self.ridge_rel, self.ridge_abs = (float(v) for v in default_ridge(self.dtype, ridge_rel, ridge_abs))
        if self.ridge_rel < 0 or self.ridge_abs < 0:
            raise ValueError(f"ridge_rel and ridge_abs must be >= 0, got {ridge_rel!r} and {ridge_abs!r}")
        self.dim, self.sigma0, self.mean_init = dim, float(sigma0), mean_init
        self.device = torch.device("cpu") if device is None else torch.device(device)
        kw = {"dtype": self.dtype, "device": self.device}
        self.theta_mean = torch.zeros(dim, **kw)
        self.g_mean = torch.zeros(dim, **kw)
        self.prior_weight = torch.tensor(self.sigma0, **kw)
        self.count = torch.zeros((), dtype=torch.int64, device=self.device)

    def _check_input(self, x: Tensor, name: str) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.shape != (self.dim,):
            raise ValueError(f"{name} must be a flat tensor of shape ({self.dim},), got {tuple(x.shape)}")
        if x.dtype != self.dtype:
            raise ValueError(f"{name} has dtype {x.dtype}; the estimator was built with dtype={self.dtype}")
        return x.detach()

    def _observe(self, theta: Tensor, g: Tensor, theta_mean: Tensor, g_mean: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def update(self, theta: Tensor, g: Tensor, *, mask: Tensor | None = None) -> None:
        """Add one observation (position ``theta``, gradient ``g``; flat): means first, then the statistics.

        The prior weight ``s0·β^t`` decays by ``β`` at every update. No host-device synchronisation.

        Args:
            theta: the observed position, ``(D,)`` of the estimator's dtype.
            g: the observed gradient, ``(D,)`` of the estimator's dtype.
            mask: an optional 0-dim bool tensor; where it is False the whole state is left unchanged (the
                sync-free way to skip an observation, e.g. ``mask = torch.isfinite(g).all()``). Without a
                mask the input must be finite.

        Raises:
            TypeError, ValueError: inputs of the wrong type, shape or dtype.
        """
        theta, g = self._check_input(theta, "theta"), self._check_input(g, "g")
        if mask is not None and (not isinstance(mask, Tensor) or mask.dim() != 0 or mask.dtype != torch.bool):
            raise TypeError("mask must be a 0-dim bool tensor (or None)")
        tm, gm = first_means(self._state(), theta, g, self.mean_init)
        new = self._observe(theta, g, tm, gm)
        new["prior_weight"] = self.prior_weight * self.beta
        new["count"] = self.count + 1
        for name, value in new.items():
            setattr(self, name, value if mask is None else torch.where(mask, value, getattr(self, name)))

    def _state(self) -> dict[str, Tensor]:
        names = ("theta_mean", "g_mean", *self._stat_names, "prior_weight", "count")
        return {n: getattr(self, n) for n in names}

    def state_dict(self) -> dict[str, Tensor]:
        """All state as tensors (clones): the means, the statistics, ``prior_weight`` and ``count``."""
        return {n: v.clone() for n, v in self._state().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a :meth:`state_dict` of an estimator with the same construction arguments.

        Args:
            state: from :meth:`state_dict`.

        Raises:
            ValueError: other keys or shapes, naming them.
        """
        own = self._state()
        if set(state) != set(own):
            raise ValueError(f"state keys must be {sorted(own)}, got {sorted(state)}")
        for name, ref in own.items():
            if tuple(state[name].shape) != tuple(ref.shape):
                raise ValueError(
                    f"state[{name!r}] must have shape {tuple(ref.shape)}, got {tuple(state[name].shape)}"
                )
            setattr(self, name, state[name].detach().to(dtype=ref.dtype, device=self.device).clone())


class OnlineGradientRegression(RegressionEstimatorBase):
    """Full OGR (fOGR): online symmetric least-squares Hessian of the gradient stream.

    State (O(D^2) memory): ``theta_mean``, ``g_mean``, the data parts of ``sigma`` = Cov(θ) and ``cross`` =
    Cov(g, θ) (or ``grad_cov`` = Cov(g) for ``corr1=True``), ``prior_weight`` = ``s0·β^t`` and ``count``:
    the state of :func:`ogr_initial_state`, updated by :func:`ogr_observe`; :meth:`hessian` is
    :func:`ogr_hessian`.

    Args:
        dim: D, the number of (flattened) parameters.
        beta: EMA weight of the old statistics. Default 0.5 = Duda's fOGR (his 0.5 converted).
        sigma0: prior variance ``s0`` (``Σ0 = s0·I``); default 1. 0 disables the prior.
        h_prior: prior Hessian, scalar (``h·I``) or symmetric ``(D, D)``; default 0 (Duda; the 2025
            comparison code uses I). Finite.
        mean_init: ``"zero"`` (default, Duda's code: the means start at 0) or ``"first"`` (they start at
            the first observation); docs/algorithms/ogr.md compares them.
        ridge_rel: ridge-floor ``δ_rel``; None = :func:`default_ridge` of ``dtype``.
        ridge_abs: ridge-floor ``δ_abs``; None = :func:`default_ridge` of ``dtype``.
        corr1: the "c" form cfOGR (arXiv:1901.11457, Fig. 7); see :func:`corr1_cross_covariance`. The
            curvature SIGN IS LOST (``H`` is PSD) and gradient noise reads as curvature.
        dtype: of the state (default: torch's default dtype); inputs must match it.
        device: of the state (default CPU).

    Raises:
        ValueError, TypeError: an argument out of range or of the wrong type, naming it.

    References:
        J. Duda, arXiv:1901.11457, Fig. 1; Przybysz et al., arXiv:2512.06969; ``docs/algorithms/ogr.md``.
    """

    def __init__(
        self,
        dim: int,
        *,
        beta: float = 0.5,
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
        h = torch.as_tensor(h_prior, **kw).clone()
        if h.dim() != 0 and h.shape != (dim, dim):
            raise ValueError(
                f"h_prior must be a scalar or a ({dim}, {dim}) matrix, got shape {tuple(h.shape)}"
            )
        if not bool(torch.isfinite(h).all()):
            raise ValueError("h_prior must be finite")
        if h.dim() == 2:
            if not torch.allclose(h, h.mT, rtol=1e-6, atol=1e-12):
                raise ValueError("h_prior must be symmetric; pass (A + A.T) / 2")
            h = 0.5 * (h + h.mT)
        self.corr1 = bool(corr1)
        self.h_prior = h  # 0-dim (h·I) or (D, D)
        self._stat_names = ("sigma", "grad_cov") if self.corr1 else ("sigma", "cross")
        init = ogr_initial_state(
            dim, sigma0=self.sigma0, corr1=self.corr1, dtype=self.dtype, device=self.device
        )
        self.sigma = init["sigma"]
        self.cross = init.get("cross")
        self.grad_cov = init.get("grad_cov")

    def _observe(self, theta: Tensor, g: Tensor, theta_mean: Tensor, g_mean: Tensor) -> dict[str, Any]:
        stats = ema_update_statistics(
            theta,
            g,
            theta_mean,
            g_mean,
            self.beta,
            sigma=self.sigma,
            cross=self.cross,
            grad_cov=self.grad_cov,
        )
        return {
            "theta_mean": stats.theta_mean,
            "g_mean": stats.g_mean,
            **{n: getattr(stats, n) for n in self._stat_names},
        }

    @torch.no_grad()
    def hessian(self) -> Tensor:
        """The symmetric ``(D, D)`` estimate ``H`` (:func:`ogr_hessian`).

        Returns:
            ``H``; finite for finite input, also when ``Σ`` is rank-deficient (directions that never move
            stay at ``H_prior``). Near-zero curvature is not cut here; the step map's ``cut`` bounds steps.
        """
        h = float(self.h_prior) if self.h_prior.dim() == 0 else self.h_prior
        return ogr_hessian(self._state(), h_prior=h, ridge_rel=self.ridge_rel, ridge_abs=self.ridge_abs)

    @torch.no_grad()
    def zero_gradient_point(self, hessian: Tensor | None = None) -> Tensor:
        """The modelled zero-gradient point ``p = θ̄ − H⁺ ḡ``.

        Args:
            hessian: an estimate to reuse (default: :meth:`hessian`).

        Returns:
            ``p``, defined only where ``H`` is invertible: ``H⁺`` is the pseudo-inverse
            (``torch.linalg.pinv``, hermitian), so along (near-)zero curvature the point is taken at the
            mean ``θ̄``. The OGR step never jumps to ``p``. O(D^3).
        """
        h = self.hessian() if hessian is None else hessian
        return self.theta_mean - torch.linalg.pinv(h, hermitian=True) @ self.g_mean


def __getattr__(name: str) -> Any:
    # DiagonalGradientRegression lives in hessopt.curvature.diagonal (which imports this module)
    if name == "DiagonalGradientRegression":
        from hessopt.curvature.diagonal import DiagonalGradientRegression

        return DiagonalGradientRegression
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
