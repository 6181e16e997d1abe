"""OGR estimators (hessopt.curvature.regression, .parabola) against closed forms, scipy and torch.func.

The estimator's equations are in docs/algorithms/ogr.md. Everything runs in float64 unless stated.
"""

import math

import pytest
import scipy.linalg as sl
import torch

from hessopt.curvature.parabola import ParabolaRegression
from hessopt.curvature.regression import (
    DiagonalGradientRegression,
    OnlineGradientRegression,
    corr1_cross_covariance,
    diagonal_saddle_free_step,
    ema_update_statistics,
    ridge_floor,
    saddle_free_rates,
    saddle_free_step,
    symmetric_lstsq_hessian,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _sym(d, gen):
    a = torch.randn(d, d, generator=gen, dtype=F64)
    return 0.5 * (a + a.T)


def _orth(d, gen):
    return torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))[0]


def _rel(a, b):
    return (torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b)).item()


def _feed(est, h, b, thetas, noise=None):
    for k, th in enumerate(thetas):
        g = h @ th + b if h.dim() == 2 else h * th + b
        est.update(th, g if noise is None else g + noise[k])


# ---------------------------------------------------------------- check 1: the Lyapunov solve


def test_lyapunov_residual_symmetry_and_equivariance():
    gen, d = _gen(0), 10
    a = torch.randn(d, d, generator=gen, dtype=F64)
    sigma = a @ a.T / d + 0.1 * torch.eye(d, dtype=F64)
    c = torch.randn(d, d, generator=gen, dtype=F64)
    h = symmetric_lstsq_hessian(sigma, c)
    assert torch.equal(h, h.T)
    rhs = c + c.T
    assert torch.linalg.matrix_norm(h @ sigma + sigma @ h - rhs) <= 1e-12 * torch.linalg.matrix_norm(rhs)
    q = _orth(d, gen)
    h_rot = symmetric_lstsq_hessian(q.T @ sigma @ q, q.T @ c @ q)
    assert torch.linalg.matrix_norm(h_rot - q.T @ h @ q) <= 1e-12 * torch.linalg.matrix_norm(h)
    # the eigendecomposition may be passed instead of the matrix
    torch.testing.assert_close(symmetric_lstsq_hessian(torch.linalg.eigh(sigma), c), h, rtol=0, atol=1e-14)


@pytest.mark.parametrize("prior", ["scalar", "vector", "matrix"])
def test_prior_and_ridge_match_scipy_lyapunov(prior):
    # H (Σ + wI) + (Σ + wI) H = C + Cᵀ + 2w H_prior, with w = prior_weight + ridge (docs/algorithms/ogr.md)
    gen, d = _gen(1), 7
    a = torch.randn(d, 3, generator=gen, dtype=F64)
    sigma = a @ a.T  # rank 3: the weight makes it solvable
    c = torch.randn(d, d, generator=gen, dtype=F64)
    hp = {"scalar": -0.7, "vector": torch.randn(d, generator=gen, dtype=F64), "matrix": _sym(d, gen)}[prior]
    hp_mat = torch.as_tensor(hp, dtype=F64)
    hp_mat = hp_mat * torch.eye(d, dtype=F64) if hp_mat.dim() == 0 else hp_mat
    hp_mat = torch.diag(hp_mat) if hp_mat.dim() == 1 else hp_mat
    w = 0.3 + 0.05
    ref = sl.solve_continuous_lyapunov(
        (sigma + w * torch.eye(d, dtype=F64)).numpy(), (c + c.T + 2 * w * hp_mat).numpy()
    )
    h = symmetric_lstsq_hessian(sigma, c, prior_weight=0.3, h_prior=hp, ridge=torch.tensor(0.05, dtype=F64))
    torch.testing.assert_close(h, torch.from_numpy(ref), rtol=1e-11, atol=1e-12)


def test_rank_deficient_sigma_without_ridge_is_finite_and_closest_to_prior():
    gen, d, r = _gen(2), 6, 3
    u = _orth(d, gen)[:, :r]
    sigma = u @ torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=F64)) @ u.T
    h_true, h_prior = _sym(d, gen), _sym(d, gen)
    c = h_true @ sigma  # exact data: C = HΣ
    h = symmetric_lstsq_hessian(sigma, c, h_prior=h_prior)
    assert torch.isfinite(h).all()
    rhs = c + c.T
    assert torch.linalg.matrix_norm(h @ sigma + sigma @ h - rhs) <= 1e-12 * torch.linalg.matrix_norm(rhs)
    p = torch.eye(d, dtype=F64) - u @ u.T  # the block nothing is known about stays at the prior
    torch.testing.assert_close(p @ h @ p, p @ h_prior @ p, rtol=0, atol=1e-12)
    torch.testing.assert_close(h @ u, h_true @ u, rtol=0, atol=1e-12)  # observed columns are recovered
    assert torch.isfinite(symmetric_lstsq_hessian(torch.zeros(d, d, dtype=F64), c)).all()


# ---------------------------------------------------------------- check 2: exact recovery on quadratics


@pytest.mark.parametrize(
    ("beta", "n", "sigma0", "mean_init"),
    [(0.5, 60, 1.0, "zero"), (0.5, 60, 1.0, "first"), (0.8, 200, 1.0, "zero"), (0.5, 20, 0.0, "first")],
)
def test_exact_recovery_of_indefinite_quadratic(beta, n, sigma0, mean_init):
    d = 10
    for seed in range(3):
        gen = _gen(100 + seed)
        h, b = _sym(d, gen), torch.randn(d, generator=gen, dtype=F64)
        assert torch.linalg.eigvalsh(h).min() < 0 < torch.linalg.eigvalsh(h).max()
        x0 = torch.randn(d, generator=gen, dtype=F64)
        h_func = torch.func.hessian(lambda x, h=h, b=b: 0.5 * x @ h @ x + b @ x)(x0)
        est = OnlineGradientRegression(
            d, beta=beta, sigma0=sigma0, mean_init=mean_init, ridge_rel=0.0, ridge_abs=0.0, dtype=F64
        )
        _feed(est, h, b, torch.randn(n, d, generator=gen, dtype=F64))
        est_h = est.hessian()
        assert _rel(est_h, h) <= 1e-10
        assert _rel(est_h, h_func) <= 1e-10
        if mean_init == "first":  # the zero-gradient point of g = Hθ + b is −H⁻¹b
            p = est.zero_gradient_point(est_h)
            torch.testing.assert_close(p, -torch.linalg.solve(h, b), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- check 3: straight-line motion


@pytest.mark.parametrize(("n", "ridge_rel", "unobserved_tol"), [(40, 0.0, 1e-2), (300, 1e-8, 1e-5)])
def test_straight_line_keeps_unobserved_block_at_prior(n, ridge_rel, unobserved_tol):
    gen, d = _gen(3), 10
    h, b = _sym(d, gen), torch.randn(d, generator=gen, dtype=F64)
    u = torch.randn(d, generator=gen, dtype=F64)
    u = u / u.norm()
    c0 = torch.randn(d, generator=gen, dtype=F64)
    t = torch.randn(n, 1, generator=gen, dtype=F64)
    est = OnlineGradientRegression(
        d, beta=0.5, sigma0=1.0, ridge_rel=ridge_rel, ridge_abs=0.0, mean_init="first", dtype=F64
    )
    _feed(est, h, b, c0 + t * u)
    est_h = est.hessian()
    p = torch.eye(d, dtype=F64) - torch.outer(u, u)
    assert abs(u @ est_h @ u - u @ h @ u) <= 1e-8 * abs(u @ h @ u)
    assert (p @ (est_h - h) @ u).norm() <= 1e-8 * (p @ h @ u).norm()
    assert torch.linalg.matrix_norm(p @ est_h @ p) <= unobserved_tol  # H_prior = 0


# ------------------------------------------------------- check 4 (estimator level): a fixed coordinate


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(("ridge", "n"), [("default", 10_000), ("none", 2_000)])
def test_never_moving_coordinate_stays_finite(dtype, ridge, n):
    # f = x²/2 + y² + 0·z observed at noisy random (x, y) and a fixed z; without a floor on the denominator
    # the notebook solve became non-finite after ~150 (float32) / ~300 (float64) updates (docs: ogr.md)
    gen = _gen(4)
    kw = {} if ridge == "default" else {"ridge_rel": 0.0, "ridge_abs": 0.0}
    est = OnlineGradientRegression(3, beta=0.5, mean_init="first", dtype=dtype, **kw)
    curv = torch.tensor([1.0, 2.0, 0.0], dtype=dtype)
    thetas = torch.randn(n, 3, generator=gen, dtype=dtype)
    thetas[:, 2] = 0.3
    grads = curv * thetas + 0.1 * torch.randn(n, 3, generator=gen, dtype=dtype) * curv.sign()
    for k in range(n):
        est.update(thetas[k], grads[k])
        if k % 25 == 0 or k == n - 1:
            h = est.hessian()
            step = saddle_free_step(h, grads[k], eta=1.0, div=1.5, cut=10.0)
            assert torch.isfinite(h).all() and torch.isfinite(step).all(), k
    assert all(torch.isfinite(v).all() for v in est.state_dict().values())
    assert est.sigma[2].abs().max() == 0 and est.cross[2].abs().max() == 0  # the constant z adds nothing
    assert torch.isfinite(est.zero_gradient_point()).all()
    h = est.hessian()
    torch.testing.assert_close(h[:2, :2], torch.diag(curv[:2]), rtol=0.2, atol=0.3)  # noisy, but sane
    if ridge == "default":  # the floor keeps the unobserved row at the prior (0)
        assert h[2].abs().max() <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_converged_run_all_statistics_vanish_stays_finite(dtype):
    # noise-free: x, y converge, so tr(Σ) → 0 and only the absolute floor (or the cut) is left
    est = OnlineGradientRegression(3, dtype=dtype)
    curv = torch.tensor([1.0, 2.0, 0.0], dtype=dtype)
    theta = torch.tensor([1.0, -0.5, 0.3], dtype=dtype)
    for _ in range(500):
        g = curv * theta
        est.update(theta, g)
        step = saddle_free_step(est.hessian(), g, eta=1.0, div=1.5, cut=1.0)
        assert torch.isfinite(step).all()
        theta = theta - step
    assert torch.isfinite(est.hessian()).all() and torch.isfinite(theta).all()
    assert theta[:2].abs().max() < 1e-20


# ---------------------------------------------------------------- check 5: EMA ordering


def test_notebook_ordering_equals_exact_weighted_covariance():
    gen, d, n, beta = _gen(5), 6, 30, 0.7
    h, b = _sym(d, gen), torch.randn(d, generator=gen, dtype=F64)
    thetas = torch.randn(n, d, generator=gen, dtype=F64)
    grads = thetas @ h + b + 0.3 * torch.randn(n, d, generator=gen, dtype=F64)  # noisy: not exactly linear
    est = OnlineGradientRegression(
        d, beta=beta, sigma0=0.0, ridge_rel=0.0, ridge_abs=0.0, mean_init="first", dtype=F64
    )
    for th, g in zip(thetas, grads, strict=True):
        est.update(th, g)
    # exact EMA-weighted statistics from scratch: weights β^(n-1) for the first sample, (1-β)β^(n-k) after
    wts = torch.tensor([beta ** (n - 1)] + [(1 - beta) * beta ** (n - k) for k in range(2, n + 1)], dtype=F64)
    assert abs(wts.sum().item() - 1) < 1e-14
    tm, gm = wts @ thetas, wts @ grads
    sigma_w = (wts[:, None] * (thetas - tm)).T @ (thetas - tm)
    cross_w = (wts[:, None] * (grads - gm)).T @ (thetas - tm)
    torch.testing.assert_close(est.theta_mean, tm, rtol=1e-13, atol=1e-13)
    # the notebook order (outer products with the new means) carries one extra factor β in every data term
    torch.testing.assert_close(est.sigma, beta * sigma_w, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(est.cross, beta * cross_w, rtol=1e-12, atol=1e-13)
    assert _rel(est.hessian(), symmetric_lstsq_hessian(sigma_w, cross_w)) <= 1e-12


# ---------------------------------------------------------------- check 6: saddle-free step map


def test_saddle_free_step_doubles_distance_from_saddle():
    h = torch.diag(torch.tensor([1.0, -1.0], dtype=F64))
    x0, y0 = 0.7, -0.3
    theta = torch.tensor([x0, y0], dtype=F64)
    g = h @ theta
    new = theta - saddle_free_step(h, g, eta=1.0, div=1.0, cut=1e-12)
    torch.testing.assert_close(new, torch.tensor([0.0, 2 * y0], dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(
        theta - torch.linalg.solve(h, g), torch.zeros(2, dtype=F64), rtol=0, atol=1e-15
    )
    torch.testing.assert_close(
        theta - diagonal_saddle_free_step(torch.diagonal(h), g, eta=1.0, div=1.0, cut=1e-12),
        new,
        rtol=0,
        atol=0,
    )


def test_saddle_free_rates_bounded_and_zero_curvature_is_a_gradient_step():
    lam = torch.cat([torch.zeros(1, dtype=F64), torch.logspace(-20, 5, 40, dtype=F64)])
    lam = torch.cat([lam, -lam])
    eta, div, cut = 0.7, 1.5, 1e-3
    rates = saddle_free_rates(lam, eta=eta, div=div, cut=cut)
    assert (rates <= eta / cut * (1 + 1e-15)).all() and (rates > 0).all()
    big = lam.abs() * div > cut
    torch.testing.assert_close(rates[big], eta / (div * lam.abs()[big]), rtol=1e-15, atol=0)
    m = torch.tensor([0.3, -2.0], dtype=F64)
    torch.testing.assert_close(
        saddle_free_step(torch.zeros(2, 2, dtype=F64), m, eta=eta, div=div, cut=cut), eta * m / cut
    )
    for bad in ({"cut": 0.0}, {"div": 0.0}, {"eta": -1.0}, {"cut": float("inf")}):
        args = {"eta": eta, "div": div, "cut": cut, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            saddle_free_rates(lam, **args)


# ---------------------------------------------------------------- check 8: dOGR and the "c" forms


@pytest.mark.parametrize("mean_init", ["first", "zero"])
def test_diagonal_regression_on_separable_quadratic(mean_init):
    gen, d = _gen(8), 10
    a = torch.randn(d, generator=gen, dtype=F64)
    a[::2] = -a[::2].abs()
    b = torch.randn(d, generator=gen, dtype=F64)
    thetas = torch.randn(60, d, generator=gen, dtype=F64)
    kw = {"beta": 0.5, "mean_init": mean_init, "ridge_rel": 0.0, "ridge_abs": 0.0, "dtype": F64}
    est = DiagonalGradientRegression(d, **kw)
    _feed(est, a, b, thetas)
    assert ((est.diagonal() - a).abs() / a.abs()).max() <= 1e-10
    c_est = DiagonalGradientRegression(d, corr1=True, **kw)
    _feed(c_est, a, b, thetas)
    assert ((c_est.diagonal() - a.abs()).abs() / a.abs()).max() <= 1e-10  # the sign is lost
    if mean_init == "first":
        torch.testing.assert_close(est.zero_gradient_point(), -b / a, rtol=1e-9, atol=1e-9)


def test_diagonal_matches_full_solve_on_diagonal_statistics():
    # the dOGR formula, prior and floor are the 1-D case of the Lyapunov solve (full form on diagonal Σ, C)
    gen, d = _gen(9), 5
    hp = torch.randn(d, generator=gen, dtype=F64)
    for corr1 in (False, True):
        diag = DiagonalGradientRegression(d, h_prior=hp, corr1=corr1, ridge_rel=1e-3, dtype=F64)
        full = OnlineGradientRegression(d, h_prior=torch.diag(hp), corr1=corr1, ridge_rel=1e-3, dtype=F64)
        for _ in range(3):
            diag.update(torch.randn(d, generator=gen, dtype=F64), torch.randn(d, generator=gen, dtype=F64))
        stats = ("sigma", "grad_cov") if corr1 else ("sigma", "cross")
        full.load_state_dict({k: torch.diag(v) if k in stats else v for k, v in diag.state_dict().items()})
        torch.testing.assert_close(torch.diagonal(full.hessian()), diag.diagonal(), rtol=1e-13, atol=1e-14)


def test_full_corr1_form_gives_absolute_curvature_when_it_can():
    gen, d = _gen(10), 6
    # commuting Σ and A: S_θS_g + S_gS_θ = O diag(2|a| l) Oᵀ, so H = |A|
    o = _orth(d, gen)
    lvar = torch.rand(d, generator=gen, dtype=F64) + 0.1
    a = torch.randn(d, generator=gen, dtype=F64)
    sigma = o @ torch.diag(lvar) @ o.T
    amat = o @ torch.diag(a) @ o.T
    h = symmetric_lstsq_hessian(sigma, corr1_cross_covariance(sigma, amat @ sigma @ amat))
    torch.testing.assert_close(h, o @ torch.diag(a.abs()) @ o.T, rtol=1e-12, atol=1e-12)
    # class level: g = −3θ + b (a negative-curvature bowl) reads as +3·I
    est = OnlineGradientRegression(d, corr1=True, ridge_rel=0.0, ridge_abs=0.0, dtype=F64)
    b = torch.randn(d, generator=gen, dtype=F64)
    _feed(est, -3.0 * torch.eye(d, dtype=F64), b, torch.randn(60, d, generator=gen, dtype=F64))
    assert _rel(est.hessian(), 3.0 * torch.eye(d, dtype=F64)) <= 1e-10


# ---------------------------------------------------------------- check 9: 1-D parabola


def test_parabola_along_a_fixed_line():
    gen, d = _gen(11), 5
    h, b = _sym(d, gen), torch.randn(d, generator=gen, dtype=F64)
    u = torch.randn(d, generator=gen, dtype=F64)
    u = u / u.norm()
    c = torch.randn(d, generator=gen, dtype=F64)
    est = ParabolaRegression(beta=0.5, ridge_rel=0.0, ridge_abs=0.0, dtype=F64)
    for t in torch.randn(40, generator=gen, dtype=F64):
        th = c + t * u
        est.update(th, h @ th + b, 2.5 * u)  # any positive multiple of u is the same direction
    lam, p = est.fit()
    curv = u @ h @ u
    t_star = -(u @ (h @ c + b)) / curv  # zero of the directional derivative along the line
    assert abs(lam - curv) <= 1e-10 * abs(curv)
    assert abs(p - (c @ u + t_star)) <= 1e-10 * max(1.0, abs(c @ u + t_star).item())
    before = est.state_dict()
    est.update(c, h @ c + b, torch.zeros(d, dtype=F64))  # a zero direction carries no information
    after = est.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_parabola_zero_curvature_gives_finite_vertex():
    est = ParabolaRegression(dtype=F64, ridge_rel=0.0, ridge_abs=0.0, sigma0=0.0)
    u = torch.tensor([1.0, 0.0], dtype=F64)
    for x in (0.0, 1.0, -2.0):
        est.update(torch.tensor([x, 5.0], dtype=F64), torch.tensor([0.5, 1.0], dtype=F64), u)  # constant g
    lam, p = est.fit()
    assert lam.item() == 0.0 and torch.isfinite(p) and p == est.state_dict()["theta_mean"][0]


# ---------------------------------------------------------------- check 12: EMA convention


def test_one_ema_step_equals_duda_update_with_converted_beta():
    gen, d, beta = _gen(12), 4, 0.3
    beta_d = 1 - beta  # Duda's weight of the NEW sample
    theta, g, tm, gm = (torch.randn(d, generator=gen, dtype=F64) for _ in range(4))
    sigma, cross, gcov = (_sym(d, gen) for _ in range(3))
    out = ema_update_statistics(theta, g, tm, gm, beta, sigma=sigma, cross=cross, grad_cov=gcov)
    tm_d = tm + beta_d * (theta - tm)
    gm_d = gm + beta_d * (g - gm)
    e, r = theta - tm_d, g - gm_d
    torch.testing.assert_close(out.theta_mean, tm_d, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(out.g_mean, gm_d, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(
        out.sigma, sigma + beta_d * (torch.outer(e, e) - sigma), rtol=1e-14, atol=1e-15
    )
    torch.testing.assert_close(
        out.cross, cross + beta_d * (torch.outer(r, e) - cross), rtol=1e-14, atol=1e-15
    )
    torch.testing.assert_close(
        out.grad_cov, gcov + beta_d * (torch.outer(r, r) - gcov), rtol=1e-14, atol=1e-15
    )
    diag = ema_update_statistics(
        theta, g, tm, gm, beta, sigma=torch.diagonal(sigma), cross=torch.diagonal(cross)
    )
    torch.testing.assert_close(diag.sigma, torch.diagonal(out.sigma), rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(diag.cross, torch.diagonal(out.cross), rtol=1e-15, atol=1e-15)
    assert diag.grad_cov is None


# ---------------------------------------------------------------- state, floor, validation


def test_state_dict_round_trip_resumes_bit_for_bit():
    gen, d = _gen(13), 4
    data = torch.randn(20, 2, d, generator=gen, dtype=F64)
    for cls in (OnlineGradientRegression, DiagonalGradientRegression):
        a, b = cls(d, dtype=F64), cls(d, dtype=F64)
        for th, g in data[:10]:
            a.update(th, g)
        b.load_state_dict(a.state_dict())
        for th, g in data[10:]:
            a.update(th, g)
            b.update(th, g)
        assert all(
            torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
        )
        with pytest.raises(ValueError, match="state keys"):
            b.load_state_dict({"sigma": a.sigma})
        bad = a.state_dict()
        bad["theta_mean"] = torch.zeros(d + 1, dtype=F64)
        with pytest.raises(ValueError, match="theta_mean"):
            b.load_state_dict(bad)


def test_masked_update_keeps_state_and_skips_non_finite_input():
    gen, d = _gen(14), 3
    for cls in (OnlineGradientRegression, DiagonalGradientRegression):
        est = cls(d, dtype=F64)
        bad = torch.tensor([1.0, float("nan"), float("inf")], dtype=F64)
        est.update(torch.ones(d, dtype=F64), bad, mask=torch.isfinite(bad).all())
        assert est.count.item() == 0 and all(torch.isfinite(v).all() for v in est.state_dict().values())
        ref = cls(d, dtype=F64)
        for _ in range(4):  # a masked-out first call must not spoil the first-sample means
            th, g = torch.randn(d, generator=gen, dtype=F64), torch.randn(d, generator=gen, dtype=F64)
            est.update(th, g, mask=torch.tensor(True))
            ref.update(th, g)
        assert all(
            torch.equal(x, y)
            for x, y in zip(est.state_dict().values(), ref.state_dict().values(), strict=True)
        )
        with pytest.raises(TypeError, match="mask"):
            est.update(th, g, mask=True)


def test_ridge_floor_formula():
    sigma = torch.diag(torch.tensor([4.0, 2.0, 0.0], dtype=F64))
    # mean variance over the coordinates that moved, (4 + 2) / 2, plus the prior weight 1
    assert ridge_floor(sigma, ridge_rel=0.1, ridge_abs=1e-9, prior_weight=1.0).item() == pytest.approx(0.4)
    sigma = torch.diag(torch.tensor([4.0, 2.0, 3.0], dtype=F64))
    assert ridge_floor(sigma, ridge_rel=0.1, ridge_abs=1e-9, prior_weight=1.0).item() == pytest.approx(0.4)
    assert ridge_floor(torch.zeros(3, dtype=F64), ridge_rel=0.1, ridge_abs=1e-9).item() == 1e-9
    est = OnlineGradientRegression(3, dtype=torch.float32)
    assert est.ridge_rel == pytest.approx(math.sqrt(torch.finfo(torch.float32).eps))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 1.0}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"sigma0": -1.0}, "sigma0"),
        ({"mean_init": "mean"}, "mean_init"),
        ({"ridge_rel": -1.0}, "ridge_rel"),
        ({"h_prior": torch.ones(2, 2, dtype=F64).triu()}, "symmetric"),
        ({"h_prior": torch.ones(3, dtype=F64)}, "h_prior"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OnlineGradientRegression(2, dtype=F64, **kwargs)


def test_input_validation():
    est = OnlineGradientRegression(3, dtype=F64)
    with pytest.raises(ValueError, match="theta"):
        est.update(torch.zeros(4, dtype=F64), torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="dtype"):
        est.update(torch.zeros(3, dtype=F64), torch.zeros(3, dtype=torch.float32))
    with pytest.raises(TypeError, match="g"):
        est.update(torch.zeros(3, dtype=F64), [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="dim"):
        DiagonalGradientRegression(0)
    with pytest.raises(ValueError, match="cross"):
        symmetric_lstsq_hessian(torch.eye(3, dtype=F64), torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match="ridge"):
        symmetric_lstsq_hessian(torch.eye(3, dtype=F64), torch.eye(3, dtype=F64), ridge=-1.0)
