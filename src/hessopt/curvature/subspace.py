"""Subspace OGR: OGR statistics in a d-dimensional subspace tracked by online PCA, gradient steps outside.

J. Duda (arXiv:1901.11457, abstract): "Statistically relevant subspace is suggested by PCA of recent noisy
gradients - in online setting it can be made by slowly rotating considered directions toward new
gradients [...]. Eigendecomposition can be also performed online: with regularly performed step of QR
method to maintain diagonal Hessian. Outside the second order modeled subspace we can simultaneously
perform gradient descent." This module is the functional core of :class:`hessopt.optim.SubspaceOGR`;
equations, defaults and the deviations from Duda's prototypes are on ``docs/algorithms/ogr.md``
("Subspace OGR").

The basis ``V`` (d×D, orthonormal rows) is never one flattened copy of the model: it is kept per parameter
tensor, and it is stored as ``V = C·U`` with a small ``C`` (d×d, "mix") and per-tensor blocks ``U_j``
(d×D_j, "basis"). Rotations inside the span (online PCA's orthonormalisation, the QR step) only change
``C`` (O(d³)); the online-PCA update is a rank-one change of ``U`` (O(dD)). Products with ``V`` are
sums over tensors of ``U_j``-products (one GEMM per tensor). :func:`refresh_basis_` folds ``C`` into ``U``
and re-orthonormalises (O(d²D)), which :class:`~hessopt.optim.SubspaceOGR` does every
:data:`REFRESH_EVERY` steps against rounding drift, and whenever ``C`` has become ill-conditioned
(:data:`MAX_MIX_CONDITION`).

=================================  ================================================================  ========
object                             what                                                              cost
=================================  ================================================================  ========
:func:`random_basis`               Gaussian blocks orthonormalised over all tensors                  O(d²D)
:func:`basis_products`             ``Σ_j U_j X_j`` for per-tensor columns ``X_j``                      O(kdD)
:func:`rotate_statistics`          ``(T S Tᵀ, T K Tᵀ)``                                              O(d³)
:func:`qr_step`                    one unshifted QR-method step ``H = QR ↦ RQ``                      O(d³)
:func:`subspace_step_`             one optimizer step over a list of tensors, in place               O(dD)
:func:`refresh_basis_`             ``U ← C U``, re-orthonormalise, ``C ← I``                          O(d²D)
=================================  ================================================================  ========
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hessopt.curvature.diagonal import dogr_proposal, moved_mean
from hessopt.curvature.regression import (
    ridge_floor,
    saddle_free_rates,
    symmetric_eigh,
    symmetric_lstsq_hessian,
)

__all__ = [
    "OUTSIDE_RULES",
    "MAX_MIX_CONDITION",
    "REFRESH_EVERY",
    "ROTATIONS",
    "basis_gram",
    "basis_products",
    "orthonormalize_",
    "qr_step",
    "random_basis",
    "refresh_basis_",
    "rotate_statistics",
    "subspace_step_",
]

#: Online PCA rules: Oja's subspace rule, or Duda's prototype (every row plus Γ·g, then Gram-Schmidt).
ROTATIONS = ("oja", "duda")
#: Steps outside the subspace: momentum SGD (Duda's prototype) or the dsOGR mix with diagonal OGR.
OUTSIDE_RULES = ("sgd", "dogr")
#: :class:`hessopt.optim.SubspaceOGR` re-orthonormalises the stored basis every this many steps,
REFRESH_EVERY = 100
#: and whenever the condition number of the factor ``C`` exceeds this.
MAX_MIX_CONDITION = 10.0


def _rows(u: Tensor) -> Tensor:
    return u.reshape(u.shape[0], -1)


def basis_gram(basis: Sequence[Tensor]) -> Tensor:
    """The Gram matrix ``U Uᵀ = Σ_j U_j U_jᵀ`` of a basis kept per tensor.

    Args:
        basis: blocks ``U_j`` of shape ``(d, *shape_j)``.

    Returns:
        ``(d, d)``. Cost O(d²D).
    """
    return sum(_rows(u) @ _rows(u).mT for u in basis)


def basis_products(basis: Sequence[Tensor], columns: Sequence[Sequence[Tensor]]) -> Tensor:
    """``Σ_j U_j X_j``: the products of the basis with k vectors given per tensor (one GEMM per tensor).

    Args:
        basis: blocks ``U_j`` of shape ``(d, *shape_j)``.
        columns: per tensor ``j``, the k tensors of shape ``shape_j`` forming ``X_j`` (D_j×k).

    Returns:
        ``(d, k)``. Cost O(kdD), one read of the basis.
    """
    return sum(_rows(u) @ _stack_rows(cols).mT for u, cols in zip(basis, columns, strict=True))


def _stack_rows(cols: Sequence[Tensor]) -> Tensor:
    """The k vectors as the rows of a (k, D_j) matrix (a row-wise stack is a contiguous copy)."""
    return torch.stack([c.reshape(-1) for c in cols], 0)


def orthonormalize_(basis: Sequence[Tensor]) -> Tensor:
    """Orthonormalise the rows of a per-tensor basis in place (Cholesky QR, twice); returns the factor.

    Gram-Schmidt on the rows, in order: ``U ← L⁻¹ U`` with ``U Uᵀ = L Lᵀ``. Applied twice, so that the
    result is orthonormal to rounding even for a poorly conditioned input.

    Args:
        basis: blocks ``U_j`` of shape ``(d, *shape_j)``, modified in place.

    Returns:
        The total lower-triangular factor ``L`` with ``U_new = L⁻¹ U_old``.

    Raises:
        torch.linalg.LinAlgError: rank-deficient rows.
    """
    total = None
    for _ in range(2):
        factor = torch.linalg.cholesky(basis_gram(basis))
        for u in basis:
            _rows(u).copy_(torch.linalg.solve_triangular(factor, _rows(u), upper=False))
        total = factor if total is None else total @ factor
    return total


def random_basis(
    shapes: Sequence[torch.Size],
    rank: int,
    *,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> list[Tensor]:
    """A random d-dimensional basis with orthonormal rows, kept per tensor.

    Standard normal draws (float64, on the CPU, from ``generator``: the same on every device), then
    :func:`orthonormalize_` over all tensors together.

    Args:
        shapes: the parameter shapes.
        rank: d (at most the total number of elements).
        generator: a CPU ``torch.Generator`` (advanced by the draws).
        dtype: of the result.
        device: of the result.

    Returns:
        Blocks of shape ``(d, *shape_j)``.
    """
    draws = [torch.randn((rank, *shape), generator=generator, dtype=torch.float64) for shape in shapes]
    orthonormalize_(draws)
    return [u.to(dtype=dtype, device=device) for u in draws]


def rotate_statistics(sigma: Tensor, cross: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """The subspace statistics after a change of basis ``V_new = T V_old`` within the same span.

    ``x_new = T x_old`` for every projection, so ``S ↦ T S Tᵀ`` and ``K ↦ T K Tᵀ`` exactly: the statistics
    are those one would have accumulated in the new basis from the same data.

    Args:
        sigma: ``S``, (d, d).
        cross: ``K``, (d, d).
        t: ``T = V_new V_oldᵀ``, (d, d).

    Returns:
        ``(T S Tᵀ, T K Tᵀ)``.
    """
    return t @ sigma @ t.mT, t @ cross @ t.mT


def qr_step(h: Tensor) -> tuple[Tensor, Tensor]:
    """One unshifted QR-method step: ``H = QR ↦ RQ = QᵀHQ`` (symmetrised).

    Repeated steps drive a symmetric ``H`` to diagonal at a linear rate ``|λ_{i+1}/λ_i|``; a pair ``±λ``
    of equal magnitude is never separated (unshifted QR).

    Args:
        h: symmetric (d, d).

    Returns:
        ``(Q, QᵀHQ)``.
    """
    q, r = torch.linalg.qr(h)
    rq = r @ q
    return q, 0.5 * (rq + rq.mT)


def refresh_basis_(basis: Sequence[Tensor], mix: Tensor, sigma: Tensor, cross: Tensor) -> None:
    """Fold ``C`` into ``U``, re-orthonormalise and set ``C = I``, rotating the statistics along; in place.

    ``V = C U`` is unchanged up to the rounding drift it corrects: with ``U_f = C U`` and ``U_f U_fᵀ = LLᵀ``,
    the new basis is ``L⁻¹ U_f`` and the statistics rotate with ``T = L⁻¹ U_f U_fᵀ = Lᵀ``.

    Args:
        basis: blocks ``U_j`` (d, *shape_j), modified in place.
        mix: ``C`` (d, d), set to the identity.
        sigma: ``S`` (d, d), rotated in place.
        cross: ``K`` (d, d), rotated in place.
    """
    for u in basis:
        _rows(u).copy_(mix @ _rows(u))
    factor = torch.linalg.cholesky(basis_gram(basis))
    for u in basis:
        _rows(u).copy_(torch.linalg.solve_triangular(factor, _rows(u), upper=False))
    new_sigma, new_cross = rotate_statistics(sigma, cross, factor.mT)
    sigma.copy_(new_sigma)
    cross.copy_(new_cross)
    mix.copy_(torch.eye(mix.shape[0], dtype=mix.dtype, device=mix.device))


def _finite(*tensors: Tensor) -> Tensor:
    """0-dim bool: every entry of every tensor is finite (min and max per tensor: one fast pass each)."""
    return torch.isfinite(torch.stack([v for t in tensors if t.numel() for v in torch.aminmax(t)])).all()


def subspace_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    m: Sequence[Tensor],
    theta_mean: Sequence[Tensor],
    g_mean: Sequence[Tensor],
    basis: Sequence[Tensor],
    dogr_state: Sequence[Sequence[Tensor]] | None,
    subspace: dict[str, Tensor],
    hp: dict[str, float],
    gate: Tensor,
    *,
    rotation: str,
    outside: str,
    qr: bool,
    clip: bool,
) -> Tensor:
    """One SubspaceOGR step over a list of parameter tensors, in place; returns whether it was applied.

    With ``rate = 1−β`` and ``V`` the basis (``V = C U``)::

        m ← lerp(m, g, 1−γ);  θ̄ ← lerp(θ̄, θ, rate);  ḡ ← lerp(ḡ, g, rate)          (all D coordinates)
        V ← orth(V + Γ a vᵀ)          oja: v = g/‖g‖, a = V v (Oja's subspace rule; skipped for g = 0)
                                       duda: v = g, a = 1 (every row plus Γg, Gram-Schmidt)
        S ← T S Tᵀ, K ← T K Tᵀ        T = V_new V_oldᵀ (the statistics follow the basis)
        x = V(θ − θ̄), y = V(g − ḡ);  S ← lerp(S, x xᵀ, rate), K ← lerp(K, y xᵀ, rate), w ← β w
        H_V = symmetric least squares of (S, K) with prior w towards h and the ridge floor
        QR step: H_V = Q R;  V ← Qᵀ V, S ← Qᵀ S Q, K ← Qᵀ K Q, H_V ← R Q
        inside: Δ_V = Vᵀ f(H_V) V m,  f(λ) = lr / max(div·|λ|, cut)
        sgd:  θ ← θ − Δ_V − α (m − Vᵀ V m),  α = lr · outside_scale
        dogr: θ ← θ − [Δ_d − w_mix (Vᵀ V Δ_d − Δ_V)]      Δ_d: the diagonal OGR step of every coordinate
        (every coordinate of the total step clamped to ±max_coord_step, then optionally the norm clip)

    The orthonormalisation uses ``V Vᵀ = I`` (kept by construction; :func:`refresh_basis_` removes the
    drift): the Gram matrix of ``V + Γ a vᵀ`` is ``I + Γ(a bᵀ + b aᵀ) + Γ²‖v‖² a aᵀ`` with ``b = V v``, so
    only ``C`` changes (``C ← L⁻¹ C``) and ``U`` gets the rank-one update ``Γ (C⁻¹a) vᵀ``.

    Args:
        params: the parameter tensors (updated in place).
        grads: their gradients.
        m: momentum per tensor.
        theta_mean: EMA of ``θ`` per tensor.
        g_mean: EMA of ``g`` per tensor.
        basis: the blocks ``U_j`` (d, *shape_j).
        dogr_state: for ``outside="dogr"``, per tensor ``(s, c, prior_weight, s_mean)`` of diagonal OGR;
            else None.
        subspace: ``mix`` (C), ``sigma`` (S), ``cross`` (K): (d, d); ``prior_weight``: 0-dim; all updated
            in place.
        hp: ``rate_m``, ``rate``, ``beta``, ``lr``, ``div``, ``cut``, ``h_prior``, ``ridge_rel``,
            ``ridge_abs``, ``rotation_rate`` (Γ), ``outside_rate`` (α), ``mix`` (w_mix),
            ``max_coord_step`` (``inf`` for none), ``max_step_norm`` (with ``clip``), and for the diagonal
            part ``lr_div`` and ``bound``.
        gate: a 0-dim bool tensor; False leaves everything unchanged.
        rotation: ``"oja"`` or ``"duda"``.
        outside: ``"sgd"`` or ``"dogr"``.
        qr: take the QR-method step.
        clip: scale the step to Euclidean norm at most ``hp["max_step_norm"]``.

    Returns:
        A 0-dim bool tensor: the step was applied (``gate`` and every result finite).

    References:
        J. Duda, arXiv:1901.11457 (abstract; Figs. 4 and 7 for dsOGR); E. Oja, "Principal components,
        minor components, and linear neural networks", Neural Networks 5(6), 1992 (the subspace rule);
        ``docs/algorithms/ogr.md``.
    """
    mix, sigma, cross, w = subspace["mix"], subspace["sigma"], subspace["cross"], subspace["prior_weight"]
    d = mix.shape[0]
    eye = torch.eye(d, dtype=mix.dtype, device=mix.device)
    # ---- elementwise: momentum, means (and the diagonal OGR proposal)
    new, base = [], []
    for i in range(len(params)):
        p, g = params[i], grads[i]
        if outside == "dogr":
            s, c, wd, smd = dogr_state[i]
            m1, tm1, gm1, s1, c1, wd1, step_d = dogr_proposal(
                p, g, m[i], theta_mean[i], g_mean[i], s, c, wd, smd, hp, corr1=False
            )
            new.append((m1, tm1, gm1, s1, c1, wd1))
            base.append(step_d)
        else:
            m1 = torch.lerp(m[i], g, hp["rate_m"])
            tm1 = torch.lerp(theta_mean[i], p, hp["rate"])
            gm1 = torch.lerp(g_mean[i], g, hp["rate"])
            new.append((m1, tm1, gm1))
            base.append(hp["outside_rate"] * m1)
    rows = [
        _stack_rows((grads[i], params[i] - new[i][1], grads[i] - new[i][2], new[i][0], base[i]))
        for i in range(len(params))
    ]  # per tensor the rows g, e = θ − θ̄, r = g − ḡ, m, base
    prod = sum(_rows(u) @ b.mT for u, b in zip(basis, rows, strict=True))  # U·[g, e, r, m, base]: one read
    dots = sum(b @ g.reshape(-1) for b, g in zip(rows, grads, strict=True))  # g·[g, e, r, m, base]
    ug, rest = prod[:, 0], prod[:, 1:]  # rest: U·[e, r, m, base]
    # ---- online PCA: V' = V + Γ a vᵀ, orthonormalised
    gamma = hp["rotation_rate"]
    gnorm2 = dots[0]
    if rotation == "oja":
        valid = gnorm2 > 0
        inv = torch.where(valid, torch.rsqrt(torch.where(valid, gnorm2, 1.0)), 0.0)
        u = ug * inv  # U v
        a = b = mix @ u
        vdots = dots[1:] * inv  # v·[e, r, m, base]
        vnorm2 = valid.to(mix.dtype)
        gram = eye + (2 * gamma + gamma * gamma * vnorm2) * torch.outer(a, a)
    else:
        inv = torch.ones((), dtype=mix.dtype, device=mix.device)
        a = torch.ones(d, dtype=mix.dtype, device=mix.device)
        b = mix @ ug
        u = torch.linalg.solve(mix, a)  # C⁻¹ a
        vdots = dots[1:]
        gram = (
            eye + gamma * (torch.outer(a, b) + torch.outer(b, a)) + gamma * gamma * gnorm2 * torch.outer(a, a)
        )
    factor, info = torch.linalg.cholesky_ex(gram)
    rotate = info == 0  # a numerically singular Gram matrix (Duda's rule, huge Γ‖g‖): no rotation this step
    factor = torch.where(rotate, factor, eye)
    g_eff = torch.where(rotate, torch.as_tensor(gamma, dtype=mix.dtype, device=mix.device), 0.0)
    lower_inv = torch.linalg.solve_triangular(factor, eye, upper=False)
    t = lower_inv @ (eye + g_eff * torch.outer(a, b))
    proj = lower_inv @ (mix @ rest + g_eff * torch.outer(a, vdots))  # V_rot·[e, r, m, base]
    x, y, zm, zb = proj.unbind(1)
    mix_rot = lower_inv @ mix
    # ---- statistics in the rotated basis, then the estimate
    s_rot, k_rot = rotate_statistics(sigma, cross, t)
    s1 = torch.lerp(s_rot, torch.outer(x, x), hp["rate"])
    k1 = torch.lerp(k_rot, torch.outer(y, x), hp["rate"])
    w1 = w * hp["beta"]
    # the estimate from finite statistics only (an overflow is refused below; eigh must not see it)
    usable = _finite(s1, k1)
    s_use, k_use = torch.where(usable, s1, eye), torch.where(usable, k1, 0.0)
    ridge = ridge_floor(s_use, ridge_rel=hp["ridge_rel"], ridge_abs=hp["ridge_abs"], prior_weight=w1)
    h = symmetric_lstsq_hessian(s_use, k_use, prior_weight=w1, h_prior=hp["h_prior"], ridge=ridge)
    if qr:
        q, h = qr_step(h)
        mix_f, s1, k1 = q.mT @ mix_rot, q.mT @ s1 @ q, q.mT @ k1 @ q
        zm, zb = q.mT @ zm, q.mT @ zb
    else:
        mix_f = mix_rot
    lam, qh = symmetric_eigh(h)
    coef = qh @ (saddle_free_rates(lam, eta=hp["lr"], div=hp["div"], cut=hp["cut"]) * (qh.mT @ zm))
    zeta = coef - hp["outside_rate"] * zm if outside == "sgd" else hp["mix"] * (coef - zb)
    xi = mix_f.mT @ zeta  # Δ = base + V_fᵀ ζ = base + Uᵀ ξ + Γ v (uᵀ ξ)
    corr = g_eff * torch.dot(u, xi) * inv
    steps = [
        base[i] + (_rows(basis[i]).mT @ xi).reshape(params[i].shape) + corr * grads[i]
        for i in range(len(params))
    ]
    if clip:
        norm = torch.sqrt(sum(torch.sum(s * s) for s in steps))
        scale = torch.clamp(hp["max_step_norm"] / norm.clamp_min(torch.finfo(norm.dtype).tiny), max=1.0)
        steps = [s * scale for s in steps]
    news = [params[i] - steps[i] for i in range(len(params))]
    ok = gate & _finite(mix_f, s1, k1, w1, *news, *(t_ for n in new for t_ in n))
    # ---- commit: on the host (CPU) read ok and copy; elsewhere sync-free where(ok, new, old). The basis
    # gets its rank-one update scaled by ok.
    host = params[0].device.type == "cpu"
    if host and not bool(ok):
        return ok
    coeff = u * (g_eff * inv) if host else torch.where(ok, u * (g_eff * inv), 0.0)
    for i in range(len(params)):
        targets = (m[i], theta_mean[i], g_mean[i]) + (tuple(dogr_state[i][:3]) if outside == "dogr" else ())
        for old, value in zip((*targets, params[i]), (*new[i], news[i]), strict=True):
            old.copy_(value if host else torch.where(ok, value, old))
        _rows(basis[i]).addr_(coeff, (grads[i] if host else torch.where(ok, grads[i], 0.0)).reshape(-1))
        if outside == "dogr":
            smd = dogr_state[i][3]
            smd.copy_(torch.where(ok, moved_mean(dogr_state[i][0]), smd))
    for old, value in ((mix, mix_f), (sigma, s1), (cross, k1), (w, w1)):
        old.copy_(torch.where(ok, value, old))
    return ok
