"""BFGS inverse-Hessian update (Sherman-Morrison form) and secant diagnostics, as pure tensor functions.

Notation (Nocedal & Wright, *Numerical Optimization*, 2nd ed., 2006, ch. 6 -- "NW" below): ``H`` is the
(D, D) approximation of the *inverse* Hessian, ``s = x_{k+1} - x_k`` the step, ``y = g_{k+1} - g_k`` the
gradient change and ``rho = 1 / (s^T y)``. The BFGS inverse update (NW eq. 6.17) is

    H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T.

Multiplying out the product for a symmetric ``H`` gives the "expanded form"

    H+ = H - rho (H y s^T + s y^T H) + (rho + rho^2 y^T H y) s s^T,

which is a symmetric rank-2 correction ``H + s v^T + v s^T`` with
``v = -rho H y + (rho + rho^2 y^T H y) s / 2``.
:func:`bfgs_inverse_update` evaluates it as ``K + K^T`` with ``K = s v^T + H / 2``: one matrix-vector
product and one outer product, O(D^2) time, no D^3 matrix product. Because floating-point addition is
commutative, the result is symmetric *bit for bit* (this is the symmetrisation ``(H+ + H+^T) / 2``, done
without an extra matrix).

Nothing here reads a tensor back to the host: decisions (skip the update or not) are 0-dim bool tensors
and selections use :func:`torch.where`, so the functions can run inside a CUDA stream without syncs.
"""

from __future__ import annotations

import torch

__all__ = [
    "CURVATURE_FAILURE_MODES",
    "SCIPY_RHO_ON_ZERO_CURVATURE",
    "bfgs_inverse_update",
    "default_curvature_eps",
    "initial_inverse_scaling",
    "secant_residual",
]

#: Accepted values of ``curvature_failure`` (see :func:`bfgs_inverse_update`).
CURVATURE_FAILURE_MODES = ("skip", "scipy")

#: The ``rho`` that ``scipy.optimize.minimize(method="BFGS")`` substitutes when ``y^T s == 0``
#: (``scipy/optimize/_optimize.py``, ``_minimize_bfgs``; scipy 1.17).
SCIPY_RHO_ON_ZERO_CURVATURE = 1000.0


def default_curvature_eps(dtype: torch.dtype) -> float:
    """Default tolerance of the skip rule: ``sqrt(machine epsilon)`` of ``dtype``.

    1.5e-8 for float64, 3.5e-4 for float32. The skip rule ``s^T y <= eps ||s|| ||y||`` then rejects pairs
    whose angle cosine is below that value, i.e. pairs whose computed ``s^T y`` is not clearly positive
    given its own rounding error (a hessopt choice, docs/algorithms/bfgs.md; NW section 6.1 discusses
    skipping the update when the curvature condition fails).
    """
    return float(torch.finfo(dtype).eps) ** 0.5


def _check_pair(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> None:
    if H.dim() != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be a square (D, D) matrix, got shape {tuple(H.shape)}")
    D = H.shape[0]
    for name, v in (("s", s), ("y", y)):
        if v.dim() != 1 or v.shape[0] != D:
            raise ValueError(f"{name} must be a 1-D tensor of length D={D}, got shape {tuple(v.shape)}")
        if v.dtype != H.dtype or v.device != H.device:
            raise TypeError(
                f"{name} must have H's dtype and device ({H.dtype}, {H.device}), got ({v.dtype}, {v.device})"
            )
    if not H.dtype.is_floating_point:
        raise TypeError(f"H must be a real floating-point tensor, got {H.dtype}")


def bfgs_inverse_update(
    H: torch.Tensor,
    s: torch.Tensor,
    y: torch.Tensor,
    *,
    curvature_failure: str = "skip",
    eps: float | None = None,
    scale: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One BFGS update of the inverse-Hessian approximation (NW eq. 6.17), in O(D^2).

    Args:
        H: symmetric (D, D) inverse-Hessian approximation (an asymmetry from rounding is averaged out of
            the result). Not modified.
        s: step ``x_{k+1} - x_k``, shape (D,).
        y: gradient change ``g_{k+1} - g_k``, shape (D,).
        curvature_failure: what to do when the curvature condition ``s^T y > 0`` is not clearly met.
            ``"skip"`` (default): return ``H`` unchanged when ``s^T y <= eps * ||s|| * ||y||`` (this keeps
            ``H`` positive definite: NW section 6.1). ``"scipy"``: reproduce
            ``scipy.optimize.minimize(method="BFGS")``: always update, with ``rho = 1 / (s^T y)`` except
            ``rho = 1000`` when ``s^T y == 0`` exactly; a negative ``s^T y`` then makes ``H`` indefinite.
        eps: relative tolerance of the skip rule; default :func:`default_curvature_eps` (``sqrt`` of the
            dtype's machine epsilon). Ignored by ``"scipy"``.
        scale: if given, the update is applied to ``scale * H`` instead of ``H`` (NW eq. 6.20: with
            ``H = I`` and ``scale =`` :func:`initial_inverse_scaling`, this is the scaled first update),
            without forming ``scale * H`` as a separate matrix. A skipped update returns ``H`` unscaled.

    Returns:
        ``(H_new, accepted)``: ``H_new`` is a new, exactly symmetric tensor (``H`` itself, bit for bit,
        when the update is skipped); ``accepted`` is a 0-dim bool tensor on ``H``'s
        device, True when the update was applied. No host synchronisation.

    The result satisfies the secant equation ``H_new y = s`` (NW eq. 6.15) and is positive definite when
    ``H`` is and ``s^T y > 0`` (NW section 6.1). Cost: one (D, D) matrix-vector product, one outer product
    and two (D, D) additions; peak memory two (D, D) temporaries besides ``H``.
    """
    _check_pair(H, s, y)
    if curvature_failure not in CURVATURE_FAILURE_MODES:
        raise ValueError(
            f"curvature_failure must be one of {CURVATURE_FAILURE_MODES}, got {curvature_failure!r}"
        )
    sy = torch.dot(s, y)
    if curvature_failure == "skip":
        tol = default_curvature_eps(H.dtype) if eps is None else float(eps)
        if tol < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        accepted = sy > tol * torch.linalg.vector_norm(s) * torch.linalg.vector_norm(y)
        # rho = 0 turns the correction into an exact zero, so a skipped update returns H bit for bit.
        rho = torch.where(
            accepted, 1.0 / torch.where(accepted, sy, torch.ones_like(sy)), torch.zeros_like(sy)
        )
    else:
        zero = sy == 0
        rho = torch.where(
            zero,
            torch.full_like(sy, SCIPY_RHO_ON_ZERO_CURVATURE),
            1.0 / torch.where(zero, torch.ones_like(sy), sy),
        )
        accepted = torch.ones((), dtype=torch.bool, device=H.device)
    if scale is None:
        c = torch.ones_like(sy)
    else:
        c = torch.where(accepted, torch.as_tensor(scale, dtype=H.dtype, device=H.device), torch.ones_like(sy))
    # The update of c*H: (c*H) y = c*(H y) and y^T (c*H) y = c*(y^T H y), so c*H itself is never formed.
    Hy = c * torch.mv(H, y)
    yHy = torch.dot(y, Hy)
    v = (0.5 * (rho + rho * rho * yHy)) * s - rho * Hy
    # H+ = K + K^T with K = s v^T + H/2: exactly symmetric in floating point, whatever H's rounding.
    K = torch.outer(s, v)
    K.addcmul_(H, 0.5 * c)
    H_new = K + K.mT
    del K
    if curvature_failure == "skip":
        # Guard against 0 * inf in the correction: a skipped update must leave H exactly as it was.
        H_new = torch.where(accepted, H_new, H)
    return H_new, accepted


def initial_inverse_scaling(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The scalar ``gamma = s^T y / y^T y`` of NW eq. 6.20, the initial guess ``H0 = gamma I``.

    NW recommends applying it after the first step has been taken and before the first update, so that
    ``H0`` has the size of the true inverse curvature along the latest step. Returns a 0-dim tensor; it is
    positive exactly when ``s^T y > 0`` (callers should use it only then) and undefined (nan/inf) for
    ``y = 0``. Cost O(D).
    """
    if s.dim() != 1 or s.shape != y.shape:
        raise ValueError(
            f"s and y must be 1-D tensors of equal length, got {tuple(s.shape)}, {tuple(y.shape)}"
        )
    return torch.dot(s, y) / torch.dot(y, y)


def secant_residual(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Relative residual of the secant equation, ``||H y - s|| / ||s||`` (NW eq. 6.15), as a 0-dim tensor.

    Zero (to rounding) for the ``H`` returned by an accepted :func:`bfgs_inverse_update` of ``(s, y)``.
    Cost: one (D, D) matrix-vector product.
    """
    _check_pair(H, s, y)
    return torch.linalg.vector_norm(torch.mv(H, y) - s) / torch.linalg.vector_norm(s)
