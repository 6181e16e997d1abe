"""Online gradient regression (OGR): Hessian estimates from the gradient stream alone.

OGR (J. Duda, arXiv:1901.11457, "P2"; Przybysz, Kołek, Sobota, Duda, arXiv:2512.06969, "P1") models the
gradient as linear in the position, ``g(θ) ≈ H (θ − p)``, and fits the symmetric ``H`` (and the zero-gradient
point ``p``) by least squares with exponentially decaying weights. Only exponential moving averages of
``θ``, ``g`` and their (cross-)covariances are kept; no Hessian-vector product and no inversion is needed,
and ``H`` may be indefinite. Equation and section numbers (§) refer to hessopt's specification
``shared/research/ogr.md``.

=====================================  ===========================================  =====================
object                                 what                                          cost per call
=====================================  ===========================================  =====================
:func:`ema_update_statistics`          the EMA update of the statistics (§2.1)       O(D^2) full, O(D) diag
:func:`symmetric_lstsq_hessian`        ``H Σ + Σ H = C + Cᵀ`` solved in Σ's basis    O(D^3) (one ``eigh``)
:func:`corr1_cross_covariance`         ``Σ^{1/2} Σ_g^{1/2}`` of the "c" form (§3.2)   O(D^3) (two ``eigh``)
:func:`saddle_free_step`               ``Q diag(f(λ)) Qᵀ m``, ``f = η/max(div|λ|, cut)``  O(D^3) (or O(D^2))
:func:`diagonal_saddle_free_step`      the same for a diagonal estimate              O(D)
:class:`OnlineGradientRegression`      full OGR (fOGR) and its "c" form (cfOGR)       memory O(D^2)
:class:`DiagonalGradientRegression`    coordinate-wise OGR (dOGR) and "c" form        memory 5 D-vectors
=====================================  ===========================================  =====================

Conventions. Every EMA is ``ema = beta*ema + (1-beta)*x`` (``beta`` weighs the OLD value). Duda's notebooks
and ReadHegel/pytorch-ogr write ``ema += beta_D*(x - ema)``; the two agree for ``beta_D = 1 - beta``, and all
defaults here are converted. The prior of the notebooks (``Σ0 = s0·I``, ``C0 = s0·H_prior``) decays like
``s0·β^t``; the estimators keep that weight as a separate scalar (``prior_weight``), which is the same model
(§2.2: the prior is a decaying ridge towards ``H_prior``) without letting rounding of ``Σ`` erase it. A
non-decaying ridge floor ``δ = max(δ_rel·tr(Σ)/D, δ_abs)`` (§8.1, a hessopt choice; ``δ_rel = sqrt(eps)``)
keeps directions that never move at the prior instead of at rounding noise over rounding noise.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "OGRStatistics",
    "ema_update_statistics",
    "default_ridge",
    "ridge_floor",
    "symmetric_lstsq_hessian",
    "corr1_cross_covariance",
    "saddle_free_rates",
    "saddle_free_step",
    "diagonal_saddle_free_step",
    "OnlineGradientRegression",
    "DiagonalGradientRegression",
]

Scalar = float | Tensor


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
    """One OGR statistics update in the order of Duda's notebooks (R1 ``SGD-ORG basic.nb``; §2.1).

    Means first, then the (cross-)covariances with the NEW means::

        θ̄ ← β θ̄ + (1−β) θ,   ḡ ← β ḡ + (1−β) g
        Σ ← β Σ + (1−β) (θ−θ̄)(θ−θ̄)ᵀ,   C ← β C + (1−β) (g−ḡ)(θ−θ̄)ᵀ,   Σ_g ← β Σ_g + (1−β) (g−ḡ)(g−ḡ)ᵀ

    Convention: ``β`` is the weight of the old value (hessopt/Adam); Duda's ``ema += β_D (x − ema)`` is the
    same update with ``β_D = 1 − β``. Because the outer products use the new means, every data term enters
    with an extra factor ``β`` compared with the exact weighted-covariance recursion ``β(Σ + (1−β) e eᵀ)``,
    ``e = θ − θ̄_old`` (§8.3a); ``Σ``, ``C`` and ``Σ_g`` share it, so the fitted ``H`` is unchanged. Change no
    statistic alone.

    ``sigma`` (and ``cross``, ``grad_cov``) are ``(D, D)`` for the full form or ``(D,)`` for the diagonal form
    (then the products are element-wise: ``s``, ``c``, ``v`` of §3.1-3.2). ``cross`` (``C``, with
    ``C_ij = cov(g_i, θ_j)``) and ``grad_cov`` (``Σ_g``, only for the "c" form) are optional. The inputs are
    not modified; new tensors are returned. Cost O(D^2) full, O(D) diagonal.
    """
    beta = _check_beta(beta)
    if sigma.dim() not in (1, 2):
        raise ValueError(f"sigma must be (D,) (diagonal) or (D, D) (full), got shape {tuple(sigma.shape)}")
    full = sigma.dim() == 2
    a = 1.0 - beta
    # Every EMA is evaluated as the fused lerp ema + (1−β)(x − ema) = β·ema + (1−β)·x (one kernel per
    # statistic); it also keeps the mean of a coordinate that never moves exactly constant, so its e is
    # exactly 0 and its variance stays exactly 0.
    theta_mean = torch.lerp(theta_mean, theta, a)
    g_mean = torch.lerp(g_mean, g, a)
    e = theta - theta_mean
    r = g - g_mean
    prod = torch.outer if full else torch.mul
    new_sigma = torch.lerp(sigma, prod(e, e), a)
    new_cross = None if cross is None else torch.lerp(cross, prod(r, e), a)
    new_gcov = None if grad_cov is None else torch.lerp(grad_cov, prod(r, r), a)
    return OGRStatistics(theta_mean, g_mean, new_sigma, new_cross, new_gcov)


def default_ridge(dtype: torch.dtype) -> tuple[float, float]:
    """hessopt's ridge-floor constants ``(δ_rel, δ_abs) = (sqrt(eps), sqrt(tiny))`` of ``dtype`` (§8.1).

    ``sqrt(eps)`` is the spec's choice; ``sqrt(tiny)`` is positive, far above underflow, and so small that it
    acts only once every direction has stopped moving (float64: 1.5e-154; float32: 1.1e-19).
    """
    fi = torch.finfo(dtype)
    return fi.eps**0.5, fi.tiny**0.5


def ridge_floor(sigma: Tensor, *, ridge_rel: float, ridge_abs: float, prior_weight: Scalar = 0.0) -> Tensor:
    """The non-decaying ridge ``δ = max(δ_rel·(v̄ + w), δ_abs)`` of §8.1 as a 0-dim tensor.

    ``sigma`` is the data part of ``Σ`` (``(D, D)``, or ``(D,)`` for a diagonal); ``w`` is the prior weight
    already acting on it. ``v̄`` is the mean variance ``tr(Σ)/D`` of §8.1, taken over the coordinates that
    have moved (``Σ_ii > 0``): a coordinate that never moves (a frozen parameter, one without gradient)
    then changes nothing about the estimate of the others. Sync-free, O(D).
    """
    if ridge_rel < 0 or ridge_abs < 0:
        raise ValueError(f"ridge_rel and ridge_abs must be >= 0, got {ridge_rel!r} and {ridge_abs!r}")
    var = (sigma.diagonal() if sigma.dim() == 2 else sigma).clamp_min(0)
    mean_var = var.sum() / torch.count_nonzero(var).clamp_min(1) + prior_weight
    return torch.clamp_min(ridge_rel * mean_var, ridge_abs)


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
    """Symmetric least-squares Hessian: the solution of a Lyapunov equation (P2 Fig. 1, R1; §2.2).

    Minimising ``E‖g̃ − H θ̃‖²`` over symmetric ``H`` gives ``H Σ + Σ H = C + Cᵀ``; with the prior/ridge weight
    ``w = prior_weight + ridge`` towards ``H_prior`` it is ``H (Σ + wI) + (Σ + wI) H = C + Cᵀ + 2w H_prior``.
    In ``Σ``'s eigenbasis ``Σ = O diag(l) Oᵀ``, with ``B = Oᵀ(C + Cᵀ)O`` and ``P = Oᵀ H_prior O``::

        H = O [ (B_ij + 2w P_ij) / (l_i + l_j + 2w) ] Oᵀ

    Note the numerator is ``C + Cᵀ`` over ``l_i + l_j``, with no factor 0.5 (pitfall §8.4: a ``0.5(C + Cᵀ)``
    halves ``H`` and doubles every step). ``prior_weight`` is the decaying weight ``s0·β^t`` of the prior when
    ``sigma`` and ``cross`` are data-only statistics, ``ridge`` the non-decaying floor of :func:`ridge_floor`;
    both pull towards ``H_prior`` (default 0), so only their sum enters.

    Args:
        sigma: the symmetric ``(D, D)`` covariance of positions (only its lower triangle is read, as by
            ``torch.linalg.eigh``), or its eigendecomposition ``(l, O)`` (to reuse one). Negative
            eigenvalues (rounding) are clamped to 0 before the weight is added.
        cross: ``C`` with ``C_ij = cov(g_i, θ_j)``, ``(D, D)``; only ``C + Cᵀ`` is used.
        prior_weight, ridge: non-negative floats or 0-dim tensors (tensors are unchecked: no device sync).
        h_prior: a scalar (``h·I``), a ``(D,)`` diagonal or a symmetric ``(D, D)`` matrix.

    Rank deficiency: where a denominator is ``<= eps·max(denominators)`` (nothing, or only rounding, is known
    about that entry) the entry is set to ``P_ij``: the solution closest to ``H_prior`` in Frobenius norm, the
    pseudo-inverse convention. So the result is finite for finite input, even for ``w = 0`` and singular Σ.
    The result is exactly symmetric and equivariant: ``(QᵀΣQ, QᵀCQ) ↦ QᵀHQ``. Cost: one ``eigh``, O(D^3).
    """
    if isinstance(sigma, tuple):
        l, basis = sigma
    else:
        if sigma.dim() != 2 or sigma.shape[0] != sigma.shape[1]:
            raise ValueError(
                f"sigma must be a square (D, D) matrix or a tuple (l, O), got {tuple(sigma.shape)}"
            )
        l, basis = torch.linalg.eigh(sigma)  # reads the lower triangle
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
    l, o = torch.linalg.eigh(0.5 * (a + a.mT))
    return (o * l.clamp_min(0).sqrt()) @ o.mT, l, o


def corr1_cross_covariance(sigma: Tensor, grad_cov: Tensor) -> Tensor:
    """The "c" forms' stand-in for ``C``: ``S_θ S_g`` with ``S_θ = Σ^{1/2}``, ``S_g = Σ_g^{1/2}`` (§3.2).

    cfOGR (R1 ``cOGR variants.nb``, P2 Fig. 7) approximates cov(g, θ) "as var(g), var(θ) eigenvectors being
    perfectly correlated", i.e. replaces ``C + Cᵀ`` by ``S_θ S_g + S_g S_θ``; pass the result as ``cross`` to
    :func:`symmetric_lstsq_hessian`. In 1-D it gives ``λ = sqrt(var g / var θ) >= 0``: the curvature's SIGN
    IS LOST (no saddle repulsion; a negative-curvature direction reads as positive) and gradient NOISE READS
    AS CURVATURE (noise alone makes var g, hence λ, large). Exact only for ``|H|`` when ``Σ`` commutes with
    ``H`` and the gradient is noise-free. Cost: two ``eigh``, O(D^3).
    """
    s_theta, _, _ = _psd_sqrt(sigma)
    s_g, _, _ = _psd_sqrt(grad_cov)
    return s_theta @ s_g


def _check_step_args(eta: float, div: float, cut: float) -> None:
    for name, v in (("eta", eta), ("div", div)):
        if not isinstance(v, (int, float)) or not 0.0 < v < float("inf"):
            raise ValueError(f"{name} must be a finite float > 0, got {v!r}")
    if not isinstance(cut, (int, float)) or not 0.0 < cut < float("inf"):
        raise ValueError(
            f"cut must be a finite float > 0, got {cut!r} (cut = 0 would allow unbounded steps; emulate "
            "maxalpha = inf with a tiny cut such as 1e-12)"
        )


def saddle_free_rates(lam: Tensor, *, eta: float, div: float, cut: float) -> Tensor:
    """Per-direction learning rates ``f(λ) = η / max(div·|λ|, cut)`` (P2 Fig. 1 caption; §2.3).

    "Suggested 1/λ learning rates undergo absolute value as in SFN, then are divided by div, then bounded by
    1/cut" (P2). ``|λ|`` makes a step along negative curvature move AWAY from the maximum (saddle-free);
    ``f(λ) <= η/cut`` always, so zero or unobserved curvature gives a bounded gradient step. ``cut > 0`` is
    required. Defaults live in the optimizers (Duda's fOGR: η = 1, div = 1.5, cut = 10). Cost O(D).
    """
    _check_step_args(eta, div, cut)
    return eta / torch.clamp_min(div * lam.abs(), cut)


def saddle_free_step(
    h: Tensor | tuple[Tensor, Tensor], m: Tensor, *, eta: float, div: float, cut: float
) -> Tensor:
    """The saddle-free OGR step ``Δ = Q diag(f(λ)) Qᵀ m`` (R1 notebooks, P2 Fig. 1; §2.3); use ``θ ← θ − Δ``.

    ``h`` is the symmetric ``(D, D)`` estimate (``eigh`` reads its lower triangle; O(D^3)) or its eigenpairs
    ``(λ, Q)`` (then O(D^2)). ``m`` is the momentum (or the raw gradient for R2's γ = 0). With
    ``H = diag(1, −1)`` and ``η = div = 1`` the step from ``(x, y)`` with ``m = ∇f`` lands at ``(0, 2y)``,
    where Newton lands on the saddle ``(0, 0)``. :func:`saddle_free_rates` gives ``f`` and the argument rules.
    """
    if isinstance(h, tuple):
        lam, q = h
    else:
        if h.dim() != 2 or h.shape[0] != h.shape[1]:
            raise ValueError(
                f"h must be a square (D, D) matrix or a tuple (eigvals, eigvecs), got {tuple(h.shape)}"
            )
        lam, q = torch.linalg.eigh(h)  # reads the lower triangle
    if m.shape != lam.shape:
        raise ValueError(
            f"m must have shape {tuple(lam.shape)} (one entry per eigenvalue), got {tuple(m.shape)}"
        )
    return q @ (saddle_free_rates(lam, eta=eta, div=div, cut=cut) * (q.mT @ m))


def diagonal_saddle_free_step(lam: Tensor, m: Tensor, *, eta: float, div: float, cut: float) -> Tensor:
    """Coordinate-wise saddle-free step ``Δ_i = η m_i / max(div·|λ_i|, cut)`` (dOGR, R1; §3.1), O(D)."""
    if m.shape != lam.shape:
        raise ValueError(f"m must have the shape of lam {tuple(lam.shape)}, got {tuple(m.shape)}")
    return saddle_free_rates(lam, eta=eta, div=div, cut=cut) * m


class _RegressionEstimator:
    """Shared state handling: EMA means, prior weight, sample count, input checks, ``state_dict``."""

    _stat_names: tuple[str, ...]

    def __init__(self, dim, beta, sigma0, mean_init, ridge_rel, ridge_abs, dtype, device) -> None:
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
        if mean_init not in ("first", "zero"):
            raise ValueError(f'mean_init must be "first" or "zero", got {mean_init!r}')
        self.dtype = torch.get_default_dtype() if dtype is None else dtype
        if not self.dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {self.dtype}")
        rel, abs_ = default_ridge(self.dtype)
        self.ridge_rel = rel if ridge_rel is None else float(ridge_rel)
        self.ridge_abs = abs_ if ridge_abs is None else float(ridge_abs)
        if self.ridge_rel < 0 or self.ridge_abs < 0:
            raise ValueError(f"ridge_rel and ridge_abs must be >= 0, got {ridge_rel!r} and {ridge_abs!r}")
        self.dim, self.sigma0, self.mean_init = dim, float(sigma0), mean_init
        self.device = torch.device("cpu") if device is None else torch.device(device)
        kw = {"dtype": self.dtype, "device": self.device}
        self.theta_mean = torch.zeros(dim, **kw)
        self.g_mean = torch.zeros(dim, **kw)
        self.prior_weight = torch.tensor(self.sigma0, **kw)
        self.count = torch.zeros((), dtype=torch.int64, device=self.device)
        self._started = False  # True once count > 0 is known on the host

    def _check_input(self, x: Tensor, name: str) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.shape != (self.dim,):
            raise ValueError(f"{name} must be a flat tensor of shape ({self.dim},), got {tuple(x.shape)}")
        if x.dtype != self.dtype:
            raise ValueError(f"{name} has dtype {x.dtype}; the estimator was built with dtype={self.dtype}")
        return x.detach()

    @torch.no_grad()
    def update(self, theta: Tensor, g: Tensor, *, mask: Tensor | None = None) -> None:
        """Add one observation (position ``theta``, gradient ``g``; flat) with the §2.1 update.

        With ``mean_init="first"`` (hessopt default, §8.3b) the means start at the first sample; ``"zero"``
        reproduces R1/R2 (a phantom observation θ = 0, g = 0 that decays like the prior). The prior weight
        ``s0·β^t`` decays by ``β`` at every update.

        ``mask``: an optional 0-dim bool tensor; where it is False the whole state is left unchanged. This is
        the sync-free way to skip an observation (e.g. ``mask = torch.isfinite(g).all()``: a non-finite input
        never enters the state, since ``torch.where`` does not propagate the unselected branch). Without a
        mask the input must be finite. No host-device synchronisation; O(D^2) full, O(D) diagonal.
        """
        theta, g = self._check_input(theta, "theta"), self._check_input(g, "g")
        if mask is not None and (not isinstance(mask, Tensor) or mask.dim() != 0 or mask.dtype != torch.bool):
            raise TypeError("mask must be a 0-dim bool tensor (or None)")
        theta_mean, g_mean = self.theta_mean, self.g_mean
        if self.mean_init == "first" and not self._started:
            first = self.count == 0
            theta_mean, g_mean = torch.where(first, theta, theta_mean), torch.where(first, g, g_mean)
        stats = ema_update_statistics(theta, g, theta_mean, g_mean, self.beta, **self._stats())
        new = {
            "theta_mean": stats.theta_mean,
            "g_mean": stats.g_mean,
            **{name: getattr(stats, name) for name in self._stat_names},
            "prior_weight": self.prior_weight * self.beta,
            "count": self.count + 1,
        }
        for name, value in new.items():
            setattr(self, name, value if mask is None else torch.where(mask, value, getattr(self, name)))
        # host-side knowledge that count > 0 (a masked update may not have counted), to skip the first-sample
        # selection without reading count back from the device
        self._started = self._started or mask is None

    def _stats(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self._stat_names}

    def _ridge(self) -> Tensor:
        return ridge_floor(
            self.sigma, ridge_rel=self.ridge_rel, ridge_abs=self.ridge_abs, prior_weight=self.prior_weight
        )

    def state_dict(self) -> dict[str, Tensor]:
        """All state as tensors (clones): the means, the statistics, ``prior_weight`` and ``count``."""
        names = ("theta_mean", "g_mean", *self._stat_names, "prior_weight", "count")
        return {n: getattr(self, n).clone() for n in names}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a :meth:`state_dict` (same construction arguments); shapes and keys are checked."""
        own = self.state_dict()
        if set(state) != set(own):
            raise ValueError(f"state keys must be {sorted(own)}, got {sorted(state)}")
        for name, ref in own.items():
            if tuple(state[name].shape) != tuple(ref.shape):
                raise ValueError(
                    f"state[{name!r}] must have shape {tuple(ref.shape)}, got {tuple(state[name].shape)}"
                )
            setattr(self, name, state[name].detach().to(dtype=ref.dtype, device=self.device).clone())
        self._started = bool(self.count > 0)


class OnlineGradientRegression(_RegressionEstimator):
    """Full OGR (fOGR): online symmetric least-squares Hessian of the gradient stream (P1, P2 Fig. 1; §2).

    State (O(D^2) memory): ``theta_mean``, ``g_mean``, the data parts of ``sigma`` = Cov(θ) and ``cross`` =
    Cov(g, θ) (or ``grad_cov`` = Cov(g) for ``corr1=True``), ``prior_weight`` = ``s0·β^t`` and ``count``. The
    notebooks' prior ``Σ0 = s0·I``, ``C0 = s0·H_prior`` is carried by ``prior_weight`` (§2.2: a decaying ridge
    towards ``H_prior``); on top, :meth:`hessian` adds the non-decaying floor
    ``δ = max(δ_rel·tr(Σ)/D, δ_abs)`` (§8.1; the mean over coordinates that moved) towards the same
    ``H_prior``.

    Args:
        dim: D, the number of (flattened) parameters.
        beta: EMA weight of the old statistics. Default 0.5 = Duda's fOGR (R1 ``SGD-ORG basic.nb``, D: 0.5).
        sigma0: prior variance ``s0`` (``Σ0 = s0·I``); default 1 (R1). 0 disables the prior.
        h_prior: prior Hessian, scalar (``h·I``) or symmetric ``(D, D)``; default 0 (R1; R2 uses I). Kept
            as given (0-dim or ``(D, D)``) in the attribute ``h_prior``.
        mean_init: ``"first"`` (default, §8.3b) or ``"zero"`` (R1/R2).
        ridge_rel, ridge_abs: ridge-floor constants; ``None`` = :func:`default_ridge` of ``dtype``.
        corr1: the "c" form cfOGR (§3.2, R1 ``cOGR variants.nb``): ``C + Cᵀ`` is replaced by
            ``Σ^{1/2}Σ_g^{1/2} + Σ_g^{1/2}Σ^{1/2}``, with prior ``Σ_g0 = s0·H_prior²``. The curvature SIGN IS
            LOST (``H`` is PSD: no saddle repulsion) and gradient noise reads as curvature; see
            :func:`corr1_cross_covariance`.
        dtype, device: of the state (default: torch's default dtype, CPU); inputs must match the dtype.

    Cost: :meth:`update` O(D^2); :meth:`hessian` one ``eigh`` O(D^3) (three with ``corr1``).
    """

    def __init__(
        self,
        dim: int,
        *,
        beta: float = 0.5,
        sigma0: float = 1.0,
        h_prior: float | Tensor = 0.0,
        mean_init: str = "first",
        ridge_rel: float | None = None,
        ridge_abs: float | None = None,
        corr1: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dim, beta, sigma0, mean_init, ridge_rel, ridge_abs, dtype, device)
        kw = {"dtype": self.dtype, "device": self.device}
        h = torch.as_tensor(h_prior, **kw).clone()
        if h.dim() != 0 and h.shape != (dim, dim):
            raise ValueError(
                f"h_prior must be a scalar or a ({dim}, {dim}) matrix, got shape {tuple(h.shape)}"
            )
        if h.dim() == 2:
            if not torch.allclose(h, h.mT, rtol=1e-6, atol=1e-12):
                raise ValueError("h_prior must be symmetric; pass (A + A.T) / 2")
            h = 0.5 * (h + h.mT)
        self.corr1 = bool(corr1)
        self.h_prior = h  # 0-dim (h·I) or (D, D)
        if not self.corr1:
            self._target = float(h) if h.dim() == 0 else h  # a Python scalar lets the solve skip the prior
        elif h.dim() == 0:
            self._target, self._prior_gcov = abs(float(h)), h.square() * torch.eye(dim, **kw)
        else:
            lam, q = torch.linalg.eigh(h)
            self._target = (q * lam.abs()) @ q.mT  # |H_prior|: the c-form's (sign-free) prior curvature
            self._prior_gcov = h @ h
        self._stat_names = ("sigma", "grad_cov") if self.corr1 else ("sigma", "cross")
        self.sigma = torch.zeros(dim, dim, **kw)
        self.cross = None if self.corr1 else torch.zeros(dim, dim, **kw)
        self.grad_cov = torch.zeros(dim, dim, **kw) if self.corr1 else None

    @torch.no_grad()
    def hessian(self) -> Tensor:
        """The symmetric ``(D, D)`` estimate ``H`` (:func:`symmetric_lstsq_hessian` with prior and floor).

        Finite for finite input, also when ``Σ`` is rank-deficient (directions that never move stay at
        ``H_prior``). Near-zero curvature is not cut here; the step map's ``cut`` bounds the step.
        """
        if not self.corr1:
            return symmetric_lstsq_hessian(
                self.sigma,
                self.cross,
                prior_weight=self.prior_weight,
                h_prior=self._target,
                ridge=self._ridge(),
            )
        w = self.prior_weight
        s_theta, l, o = _psd_sqrt(self.sigma + w * torch.eye(self.dim, dtype=self.dtype, device=self.device))
        s_g, _, _ = _psd_sqrt(self.grad_cov + w * self._prior_gcov)
        return symmetric_lstsq_hessian((l, o), s_theta @ s_g, h_prior=self._target, ridge=self._ridge())

    @torch.no_grad()
    def zero_gradient_point(self, hessian: Tensor | None = None) -> Tensor:
        """The modelled zero-gradient point ``p = θ̄ − H⁺ ḡ`` (§2.2 iii); pass ``hessian`` to reuse one.

        ``p`` is defined only where ``H`` is invertible; ``H⁺`` is the pseudo-inverse (``torch.linalg.pinv``,
        hermitian, default cutoff ``D·eps`` relative to the largest ``|λ|``), so along (near-)zero curvature
        the point is taken at the mean ``θ̄``. Not used by the OGR step (which never jumps to ``p``). O(D^3).
        """
        h = self.hessian() if hessian is None else hessian
        return self.theta_mean - torch.linalg.pinv(h, hermitian=True) @ self.g_mean


class DiagonalGradientRegression(_RegressionEstimator):
    """Coordinate-wise OGR (dOGR): ``λ_i = cov(g_i, θ_i) / var(θ_i)`` (R1 ``dsOGR.nb``, P2 Fig. 4; §3.1).

    "Requires updating 4 (m = mg) or here 5 size D vectors" (P2 Fig. 4): ``theta_mean``, ``g_mean``, ``sigma``
    (``s``, var θ), ``cross`` (``c``, cov(g, θ)) or ``grad_cov`` (``v``, var g) for ``corr1``, plus the
    scalars ``prior_weight`` and ``count``. Initial values as R1: ``s = s0 = 1`` (as ``prior_weight``),
    ``c = 0`` (``c0 = s0·h_prior``). ``λ_i`` equals ``H_ii`` exactly on separable functions or when the
    coordinates move uncorrelated; otherwise it absorbs ``Σ_j H_ij cov(θ_j, θ_i)/var(θ_i)``. The sign is
    kept (saddle-free per coordinate). With prior weight ``w`` and floor ``δ`` (:func:`ridge_floor` over all
    coordinates, as the full form): ``λ_i = (c_i + (w+δ) h_i) / (s_i + w + δ)``, i.e. the 1-D case of
    :func:`symmetric_lstsq_hessian`.

    ``corr1=True`` is the "c" form idOGR/cdOGR (R1 ``dsOGR.nb``, ``cdOGR minimalistic.nb``; §3.2):
    ``λ_i = sqrt(v_i / s_i)`` (with prior and floor: ``(sqrt((s_i+w)(v_i+w h_i²)) + δ|h_i|)/(s_i+w+δ)``). The
    curvature SIGN IS LOST (λ >= 0: no saddle repulsion) and gradient NOISE READS AS CURVATURE (noise alone
    makes v, hence λ, large: a noise-adaptive learning rate, P3).

    Args: as :class:`OnlineGradientRegression`, with ``h_prior`` a scalar or a ``(D,)`` vector and default
    ``beta = 0.4`` (Duda's dOGR tuning, R1 ``dsOGR.nb``, D: 0.6). Cost O(D) per call, no ``eigh``, sync-free.
    """

    def __init__(
        self,
        dim: int,
        *,
        beta: float = 0.4,
        sigma0: float = 1.0,
        h_prior: float | Tensor = 0.0,
        mean_init: str = "first",
        ridge_rel: float | None = None,
        ridge_abs: float | None = None,
        corr1: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dim, beta, sigma0, mean_init, ridge_rel, ridge_abs, dtype, device)
        kw = {"dtype": self.dtype, "device": self.device}
        h = torch.as_tensor(h_prior, **kw)
        if h.dim() == 0:
            h = h.expand(dim).clone()
        if h.shape != (dim,):
            raise ValueError(f"h_prior must be a scalar or a ({dim},) vector, got shape {tuple(h.shape)}")
        self.h_prior = h
        self.corr1 = bool(corr1)
        self._stat_names = ("sigma", "grad_cov") if self.corr1 else ("sigma", "cross")
        self.sigma = torch.zeros(dim, **kw)
        self.cross = None if self.corr1 else torch.zeros(dim, **kw)
        self.grad_cov = torch.zeros(dim, **kw) if self.corr1 else None

    @torch.no_grad()
    def diagonal(self) -> Tensor:
        """The ``(D,)`` curvature estimates ``λ_i``; finite for finite input (zero denominator: the prior)."""
        w, delta = self.prior_weight, self._ridge()
        s = self.sigma.clamp_min(0) + w
        den = s + delta
        if self.corr1:
            num = (
                s * (self.grad_cov.clamp_min(0) + w * self.h_prior.square())
            ).sqrt() + delta * self.h_prior.abs()
            target = self.h_prior.abs()
        else:
            num = self.cross + (w + delta) * self.h_prior
            target = self.h_prior
        ok = den > 0
        return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), target)

    @torch.no_grad()
    def zero_gradient_point(self, diagonal: Tensor | None = None) -> Tensor:
        """Per-coordinate zero-gradient point ``p_i = θ̄_i − ḡ_i/λ_i`` (§3.3 in each coordinate).

        Defined only where ``λ_i ≠ 0``; as a pseudo-inverse, ``p_i = θ̄_i`` where ``λ_i = 0`` or where
        ``ḡ_i/λ_i`` overflows. Pass ``diagonal`` to reuse an estimate. O(D).
        """
        lam = self.diagonal() if diagonal is None else diagonal
        nz = lam != 0
        q = self.g_mean / torch.where(nz, lam, torch.ones_like(lam))
        return self.theta_mean - torch.where(nz & torch.isfinite(q), q, torch.zeros_like(q))
