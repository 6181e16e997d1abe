"""BFGS inverse update: secant equation, product form, SPD, skip rule, scipy mode, quadratic termination."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hessopt.curvature.quasi_newton import (
    SCIPY_RHO_ON_ZERO_CURVATURE,
    bfgs_inverse_update,
    default_curvature_eps,
    initial_inverse_scaling,
    secant_residual,
)

D = 10
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spd(seed: int, n: int = D, cond: float = 100.0) -> torch.Tensor:
    g = _gen(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    A = Q @ torch.diag(torch.logspace(0, np.log10(cond), n, dtype=F64)) @ Q.T
    return 0.5 * (A + A.T)


def _pair(seed: int, n: int = D) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (s, y) with s^T y > 0: y = B s for a random SPD B (the secant pair of a quadratic)."""
    g = _gen(1000 + seed)
    s = torch.randn(n, generator=g, dtype=F64)
    return s, _spd(2000 + seed, n) @ s


def _product_form_numpy(H: torch.Tensor, s: torch.Tensor, y: torch.Tensor, rho: float) -> np.ndarray:
    """Independent reference: NW eq. 6.17 as matrix products in numpy (what scipy computes), O(D^3)."""
    Hn, sn, yn = H.numpy(), s.numpy(), y.numpy()
    eye = np.eye(len(sn))
    A1 = eye - rho * np.outer(sn, yn)
    A2 = eye - rho * np.outer(yn, sn)
    return A1 @ Hn @ A2 + rho * np.outer(sn, sn)


def _rel(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("seed", range(5))
def test_secant_equation_and_product_form(seed: int) -> None:
    H = torch.linalg.inv(_spd(seed))
    s, y = _pair(seed)
    assert float(s @ y) > 0
    H_new, accepted = bfgs_inverse_update(H, s, y)
    assert bool(accepted)
    assert float(secant_residual(H_new, s, y)) <= 1e-12
    ref = _product_form_numpy(H, s, y, 1.0 / float(s @ y))
    assert _rel(H_new, ref) <= 1e-12
    assert torch.equal(H_new, H_new.T), "the rank-2 form is symmetric bit for bit"


def test_secant_residual_value() -> None:
    H = torch.diag(torch.tensor([1.0, 2.0], dtype=F64))
    s = torch.tensor([3.0, 4.0], dtype=F64)
    y = torch.tensor([1.0, 1.0], dtype=F64)
    # H y - s = (1, 2) - (3, 4) = (-2, -2); ||.|| / ||s|| = sqrt(8) / 5.
    assert float(secant_residual(H, s, y)) == pytest.approx(8**0.5 / 5, rel=1e-15)


def test_spd_preserved_over_many_updates() -> None:
    H = torch.eye(D, dtype=F64)
    for k in range(30):
        s, y = _pair(k)
        H, accepted = bfgs_inverse_update(H, s, y)
        assert bool(accepted)
        assert torch.equal(H, H.T)
        assert float(torch.linalg.eigvalsh(H).min()) > 0
        assert float(secant_residual(H, s, y)) <= 1e-12


def test_skip_leaves_h_unchanged() -> None:
    H = torch.linalg.inv(_spd(3))
    s, y = _pair(3)
    # negative curvature
    H_new, accepted = bfgs_inverse_update(H, s, -y)
    assert not bool(accepted) and torch.equal(H_new, H)
    # zero curvature: y orthogonal to s
    y_orth = y - (y @ s) / (s @ s) * s
    H_new, accepted = bfgs_inverse_update(H, s, y_orth)
    assert not bool(accepted) and torch.equal(H_new, H)
    # zero step
    H_new, accepted = bfgs_inverse_update(H, torch.zeros(D, dtype=F64), y)
    assert not bool(accepted) and torch.equal(H_new, H)


def test_skip_threshold_is_relative_eps() -> None:
    eps = default_curvature_eps(F64)
    assert eps == pytest.approx(2.0**-26)
    assert default_curvature_eps(torch.float32) == pytest.approx(2.0**-11.5)
    H = torch.eye(2, dtype=F64)
    s = torch.tensor([1.0, 0.0], dtype=F64)
    # cos(angle(s, y)) = t / ||y||: just below and just above the threshold eps.
    for cosine, expect in ((0.5 * eps, False), (2.0 * eps, True)):
        y = torch.tensor([cosine, (1 - cosine**2) ** 0.5], dtype=F64)
        _, accepted = bfgs_inverse_update(H, s, y)
        assert bool(accepted) is expect
    # an explicit eps = 0 accepts any positive curvature
    y = torch.tensor([0.5 * eps, 1.0], dtype=F64)
    _, accepted = bfgs_inverse_update(H, s, y, eps=0.0)
    assert bool(accepted)


def test_scipy_mode_rho_1000_on_zero_curvature() -> None:
    H = torch.linalg.inv(_spd(5))
    s = torch.zeros(D, dtype=F64)
    y = torch.zeros(D, dtype=F64)
    s[0], y[1] = 1.5, -2.0  # s^T y == 0 exactly
    H_new, accepted = bfgs_inverse_update(H, s, y, curvature_failure="scipy")
    assert bool(accepted)
    assert _rel(H_new, _product_form_numpy(H, s, y, SCIPY_RHO_ON_ZERO_CURVATURE)) <= 1e-12
    assert SCIPY_RHO_ON_ZERO_CURVATURE == 1000.0


def test_scipy_mode_updates_on_negative_curvature() -> None:
    H = torch.linalg.inv(_spd(6))
    s, y = _pair(6)
    H_new, accepted = bfgs_inverse_update(H, s, -y, curvature_failure="scipy")
    assert bool(accepted)
    assert _rel(H_new, _product_form_numpy(H, s, -y, -1.0 / float(s @ y))) <= 1e-12
    assert float(secant_residual(H_new, s, -y)) <= 1e-12
    assert float(torch.linalg.eigvalsh(H_new).min()) < 0, "s^T y < 0 makes H indefinite"
    # and with positive curvature scipy mode equals skip mode
    a, _ = bfgs_inverse_update(H, s, y, curvature_failure="scipy")
    b, _ = bfgs_inverse_update(H, s, y)
    assert torch.equal(a, b)


def test_initial_scaling_and_scale_argument() -> None:
    s, y = _pair(7)
    gamma = initial_inverse_scaling(s, y)
    assert float(gamma) == pytest.approx(float(s @ y) / float(y @ y), rel=1e-15)
    eye = torch.eye(D, dtype=F64)
    H_new, accepted = bfgs_inverse_update(eye, s, y, scale=gamma)
    assert bool(accepted)
    assert _rel(H_new, _product_form_numpy(gamma * eye, s, y, 1.0 / float(s @ y))) <= 1e-12
    # a skipped update ignores the scale
    H_skip, accepted = bfgs_inverse_update(eye, s, -y, scale=gamma)
    assert not bool(accepted) and torch.equal(H_skip, eye)


@pytest.mark.parametrize("seed", range(3))
def test_quadratic_termination_with_exact_line_search(seed: int) -> None:
    """ogr.md section 10.11 (NW section 6.1, quadratic termination): H_D = A^-1 after D exact steps."""
    A = _spd(100 + seed)
    g_ = _gen(200 + seed)
    b = torch.randn(D, generator=g_, dtype=F64)
    x = torch.randn(D, generator=g_, dtype=F64)
    H = torch.eye(D, dtype=F64)
    g = A @ x - b
    for _ in range(D):
        d = -H @ g
        alpha = -(g @ d) / (d @ A @ d)
        x_new = x + alpha * d
        g_new = A @ x_new - b
        H, accepted = bfgs_inverse_update(H, x_new - x, g_new - g)
        assert bool(accepted)
        x, g = x_new, g_new
    A_inv = torch.linalg.inv(A)
    assert float(g.norm()) <= 1e-10
    assert float((H - A_inv).norm()) <= 1e-10 * float(A_inv.norm())


def test_float32_and_no_host_types() -> None:
    H = torch.eye(4, dtype=torch.float32)
    s = torch.tensor([1.0, 0.5, 0.0, -1.0])
    y = torch.tensor([2.0, 1.0, 0.5, -1.0])
    H_new, accepted = bfgs_inverse_update(H, s, y)
    assert (
        H_new.dtype == torch.float32 and isinstance(accepted, torch.Tensor) and accepted.dtype == torch.bool
    )
    assert float(secant_residual(H_new, s, y)) <= 1e-6


def test_bad_input() -> None:
    H = torch.eye(3, dtype=F64)
    s = torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match="curvature_failure"):
        bfgs_inverse_update(H, s, s, curvature_failure="damped")
    with pytest.raises(ValueError, match="y must be"):
        bfgs_inverse_update(H, s, torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match="square"):
        bfgs_inverse_update(torch.ones(3, 2, dtype=F64), s, s)
    with pytest.raises(TypeError, match="dtype"):
        bfgs_inverse_update(H, s.float(), s)
    with pytest.raises(ValueError, match="eps"):
        bfgs_inverse_update(H, s, s, eps=-1.0)
