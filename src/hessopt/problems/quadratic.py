"""Quadratic test functions ``f(x) = 1/2 x^T A x + b^T x + c`` with a known, constant Hessian ``A``.

Quadratics are where curvature estimators can be checked exactly: OGR's regression recovers ``A`` from
exact gradients (a random indefinite 10-D quadratic), BFGS's secant pairs satisfy
``y = A s``, and a Newton step lands on the stationary point. :func:`random_quadratic` builds ``A`` with
prescribed eigenvalues in a random orthonormal basis, so the spectrum, the condition number and the
stationary point are all known.

Cost: one evaluation is O(dim^2) per point; construction does one symmetric eigendecomposition, O(dim^3).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from hessopt.problems.functions import BenchmarkFunction, _check_float_dtype, _check_int

__all__ = ["QuadraticFunction", "random_quadratic"]


class QuadraticFunction(BenchmarkFunction):
    """``f(x) = 1/2 x^T A x + b^T x + c`` for a symmetric ``A`` (``hessian_matrix``), batched over ``x``.

    Args:
        hessian_matrix: symmetric ``(dim, dim)`` floating tensor ``A`` (symmetric to ``100 dim eps`` of its
            dtype relative to its largest entry; it is stored as ``(A + A^T) / 2``). It is the Hessian
            everywhere.
        b: linear term, shape ``(dim,)`` (default 0).
        c: constant term (default 0).
        lower, upper: box for starts and clamping (default [-5, 5], hessopt's choice).
        x0: standard start (default 0).
        name: name shown in reports.

    Analysis (in float64, from ``eigh(A)``; ``eps`` is that of ``A``'s dtype, and an eigenvalue counts as 0
    when ``|λ| <= dim eps max|λ|``):

    * ``eigenvalues``: ascending eigenvalues of ``A``; ``convex`` is ``min λ >= 0``.
    * ``stationary_point``: the minimum-norm solution of ``A x = -b`` as a tuple, or ``None`` when ``b`` has
      a component of relative size ``> sqrt(eps)`` in the null space of ``A`` (then no stationary point).
    * ``f_min`` and ``minimizers``: for convex ``A`` with a stationary point ``x_s``,
      ``f_min = f(x_s) = c + b^T x_s / 2`` and ``minimizers = (x_s,)`` (the unique minimizer when ``A`` is
      positive definite, the minimum-norm one of an affine set when ``A`` is singular). Otherwise ``f`` is
      unbounded below on ``R^dim``: ``f_min = -inf`` and ``minimizers = ()``. These are unconstrained: the
      box only bounds starts.
    """

    def __init__(
        self,
        hessian_matrix: Tensor,
        b: Tensor | None = None,
        c: float = 0.0,
        *,
        lower: float = -5.0,
        upper: float = 5.0,
        x0: Sequence[float] | None = None,
        name: str = "quadratic",
    ) -> None:
        a = hessian_matrix
        if not isinstance(a, Tensor):
            raise TypeError(f"hessian_matrix must be a torch.Tensor, got {type(a).__name__}")
        if not a.is_floating_point():
            raise ValueError(f"hessian_matrix must have a floating dtype, got {a.dtype}")
        if a.dim() != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
            raise ValueError(
                f"hessian_matrix must be a non-empty square (dim, dim) matrix, got {tuple(a.shape)}"
            )
        if not bool(torch.isfinite(a).all()):
            raise ValueError("hessian_matrix must be finite")
        dim = a.shape[0]
        eps = torch.finfo(a.dtype).eps
        scale = float(a.abs().max())
        asym = float((a - a.T).abs().max())
        if asym > 100 * dim * eps * scale:
            raise ValueError(
                f"hessian_matrix must be symmetric; max |A - A^T| = {asym:.3g} (symmetrize it: (A + A.T) / 2)"
            )
        a = 0.5 * (a + a.T)
        if b is None:
            b = torch.zeros(dim, dtype=a.dtype, device=a.device)
        if not isinstance(b, Tensor):
            raise TypeError(f"b must be a torch.Tensor or None, got {type(b).__name__}")
        if not b.is_floating_point() or b.shape != (dim,) or not bool(torch.isfinite(b).all()):
            raise ValueError(
                f"b must be a finite floating tensor of shape ({dim},), got {b.dtype} {tuple(b.shape)}"
            )
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c):
            raise ValueError(f"c must be a finite float, got {c!r}")
        self.hessian_matrix = a.detach().clone()
        self.b = b.detach().to(dtype=a.dtype, device=a.device).clone()
        self.c = float(c)

        a64 = self.hessian_matrix.to(device="cpu", dtype=torch.float64)
        b64 = self.b.to(device="cpu", dtype=torch.float64)
        lam, vecs = torch.linalg.eigh(a64)
        zero_tol = dim * eps * float(lam.abs().max())
        nonzero = lam.abs() > zero_tol
        coeffs = vecs.T @ b64
        null_part = float(torch.linalg.vector_norm(coeffs[~nonzero]))
        has_stationary = null_part <= math.sqrt(eps) * max(
            float(torch.linalg.vector_norm(b64)), 1e-300
        )
        safe_lam = torch.where(nonzero, lam, torch.ones_like(lam))
        x_s = -(vecs @ torch.where(nonzero, coeffs / safe_lam, torch.zeros_like(coeffs)))
        self.eigenvalues = lam
        self.stationary_point = tuple(x_s.tolist()) if has_stationary else None
        convex = bool(lam[0] >= -zero_tol)
        if convex and has_stationary:
            f_min = self.c + 0.5 * float(b64 @ x_s)
            minimizers: list[tuple[float, ...]] = [tuple(x_s.tolist())]
        else:
            f_min = -math.inf
            minimizers = []
        super().__init__(
            name=name, dim=dim, lower=lower, upper=upper, x0=(0.0,) * dim if x0 is None else x0,
            f_min=f_min, minimizers=minimizers, convex=convex,
        )

    def __repr__(self) -> str:
        return f"QuadraticFunction(dim={self.dim}, name={self.name!r})"

    def _evaluate(self, x: Tensor) -> Tensor:
        a = self.hessian_matrix.to(dtype=x.dtype, device=x.device)
        b = self.b.to(dtype=x.dtype, device=x.device)
        return 0.5 * ((x @ a) * x).sum(-1) + x @ b + self.c


def random_quadratic(
    dim: int,
    *,
    kind: str = "indefinite",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    eig_range: tuple[float, float] = (0.1, 10.0),
) -> QuadraticFunction:
    """A random quadratic ``f(x) = 1/2 (x - x*)^T A (x - x*)`` with a prescribed spectrum.

    The eigenvalue magnitudes are geometrically spaced from ``eig_range[0]`` to ``eig_range[1]`` (so the
    condition number is ``eig_range[1] / eig_range[0]``; default (0.1, 10), condition number 100, a hessopt
    choice). ``kind="spd"`` keeps them positive: ``x*`` is the minimizer and ``f_min = 0``.
    ``kind="indefinite"`` negates ``dim // 2`` of them, chosen at random (needs ``dim >= 2``): ``x*`` is a
    saddle point with value 0, ``stationary_point`` gives it, and ``f_min = -inf`` (unbounded below;
    ``minimizers = ()``). The eigenvectors are the columns of a Haar-random orthogonal matrix (QR of a
    Gaussian matrix with the signs of R's diagonal divided out; F. Mezzadri, Notices AMS 54(5), 2007) and
    ``x*`` is uniform in [-1, 1]^dim, all drawn from a CPU ``torch.Generator`` seeded ``seed``. In the
    ``A, b, c`` form: ``b = -A x*``, ``c = x*^T A x* / 2``. Built in float64, then ``A`` and ``b`` are cast
    to ``dtype``. Box [-5, 5]^dim, ``x0 = 0``.
    """
    dim = _check_int(dim, "dim", 1)
    seed = _check_int(seed, "seed", 0)
    dtype = _check_float_dtype(dtype)
    if kind not in ("indefinite", "spd"):
        raise ValueError(f"kind must be 'indefinite' or 'spd', got {kind!r}")
    if kind == "indefinite" and dim < 2:
        raise ValueError("kind='indefinite' needs dim >= 2 (one eigenvalue of each sign); use kind='spd'")
    if not (isinstance(eig_range, Sequence) and len(eig_range) == 2):
        raise ValueError(f"eig_range must be a pair (smallest, largest) of magnitudes, got {eig_range!r}")
    lo, hi = float(eig_range[0]), float(eig_range[1])
    if not (0.0 < lo <= hi < math.inf):
        raise ValueError(f"eig_range must satisfy 0 < smallest <= largest < inf, got {eig_range!r}")

    gen = torch.Generator().manual_seed(seed)
    steps = torch.arange(dim, dtype=torch.float64) / max(dim - 1, 1)
    lam = lo * (hi / lo) ** steps
    if kind == "indefinite":
        negative = torch.randperm(dim, generator=gen)[: dim // 2]
        lam[negative] = -lam[negative]
    gauss = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    q = q * torch.sign(torch.diagonal(r))
    a = (q * lam) @ q.T
    a = 0.5 * (a + a.T)
    x_star = 2.0 * torch.rand(dim, generator=gen, dtype=torch.float64) - 1.0
    b = -(a @ x_star)
    c = 0.5 * float(x_star @ a @ x_star)
    return QuadraticFunction(a.to(dtype), b.to(dtype), c, name=f"random_quadratic_{kind}_{dim}d_seed{seed}")
