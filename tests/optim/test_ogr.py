"""OGR and DiagOGR optimizers: the shells against the estimators, and end-to-end checks
(docs/algorithms/ogr.md, "Checked against independent references")."""

import math

import pytest
import torch
from torch.func import hessian as func_hessian

from hessopt.curvature.diagonal import DiagonalGradientRegression
from hessopt.curvature.regression import (
    OnlineGradientRegression,
    diagonal_saddle_free_step,
    ogr_observe,
    saddle_free_step,
)
from hessopt.optim.diag_ogr import DiagOGR
from hessopt.optim.ogr import OGR

F64 = torch.float64


def _saddle(x):  # f = x^2/2 - y^2/2 + y^4/4: saddle at 0, minima (0, ±1) with f = -1/4
    return x[0] ** 2 / 2 - x[1] ** 2 / 2 + x[1] ** 4 / 4


def _run(opt, x, f, steps):
    for _ in range(steps):
        opt.zero_grad()
        f(x).backward()
        opt.step()


def test_ogr_step_equals_estimator_plus_step_map():
    """The optimizer is the estimator + momentum + the saddle-free map, nothing else."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=F64)
    a = a + a.T
    b = torch.randn(4, generator=g, dtype=F64)

    def f(x):
        return 0.5 * x @ a @ x + b @ x + 0.1 * (x**4).sum()

    x = torch.randn(4, generator=g, dtype=F64).requires_grad_()
    opt = OGR([x], lr=0.7, beta=0.6, gamma=0.3, div=1.2, cut=3.0)
    ref_x = x.detach().clone()
    est = OnlineGradientRegression(4, beta=0.6, dtype=F64)
    m = torch.zeros(4, dtype=F64)
    for _ in range(25):
        gx = torch.func.grad(f)(ref_x)
        est.update(ref_x, gx)
        m = 0.3 * m + 0.7 * gx
        ref_x = ref_x - saddle_free_step(est.hessian(), m, eta=0.7, div=1.2, cut=3.0)
        _run(opt, x, f, 1)
        torch.testing.assert_close(x.detach(), ref_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(opt.hessian(), est.hessian(), rtol=1e-12, atol=1e-12)


def test_ogr_recovers_quadratic_hessian_along_its_own_trajectory():
    """On an indefinite quadratic the estimate along OGR's own path equals torch.func.hessian."""
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=F64))
    a = q @ torch.diag(torch.tensor([3.0, 1.5, 0.7, -0.5, -2.0], dtype=F64)) @ q.T
    b = torch.randn(5, generator=g, dtype=F64)

    def f(x):
        return 0.5 * x @ a @ x + b @ x

    x = torch.randn(5, generator=g, dtype=F64).requires_grad_()
    # no prior and no ridge floor: the data alone determine H once Σ has full rank. (The quadratic is
    # unbounded below, so the saddle-free steps run away along negative curvature: few steps.)
    opt = OGR([x], sigma0=0.0, ridge_rel=0.0, ridge_abs=0.0, cut=1.0, mean_init="first")
    _run(opt, x, f, 8)
    h_true = func_hessian(f)(x.detach())
    err = torch.linalg.matrix_norm(opt.hessian() - h_true) / torch.linalg.matrix_norm(h_true)
    assert err < 1e-8, float(err)


@pytest.mark.parametrize(("cut", "max_steps", "paper_steps"), [(1.0, 60, 33), (10.0, 200, 115)])
def test_ogr_escapes_saddle_where_newton_does_not(cut, max_steps, paper_steps):
    """From (1, 1e-3) OGR reaches f < -1/4 + 1e-8 and sees an eigenvalue < -0.5 (Newton stays at 0)."""
    x = torch.tensor([1.0, 1e-3], dtype=F64, requires_grad=True)
    opt = OGR([x], beta=0.5, gamma=0.4, lr=1.0, div=1.5, cut=cut)
    reached, min_eig = None, math.inf
    for k in range(1, max_steps + 1):
        _run(opt, x, _saddle, 1)
        min_eig = min(min_eig, float(torch.linalg.eigvalsh(opt.hessian()).min()))
        if reached is None and float(_saddle(x.detach())) < -0.25 + 1e-8:
            reached = k
    assert reached is not None and reached <= max_steps, reached
    assert min_eig < -0.5
    # exact Newton from the same start goes to the saddle
    z = torch.tensor([1.0, 1e-3], dtype=F64)
    for _ in range(20):
        z = z - torch.linalg.solve(func_hessian(_saddle)(z), torch.func.grad(_saddle)(z))
    assert float(z.abs().max()) < 1e-12


def test_ogr_saddle_free_step_moves_away_along_negative_curvature():
    """Through the optimizer: with H = diag(1, -1) known, the step from (x0, y0) lands at (0, 2 y0)."""
    x = torch.tensor([0.3, 0.2], dtype=F64, requires_grad=True)
    opt = OGR([x], lr=1.0, div=1.0, cut=1e-12, gamma=0.0, sigma0=1e-300)

    def quad(z):
        return 0.5 * z[0] ** 2 - 0.5 * z[1] ** 2

    # feed exact statistics of H = diag(1, -1): a few exploratory observations into the state
    st = opt._state(opt.hyperparameters())
    for p in torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=F64):
        st.update(ogr_observe(opt._statistics(st), p, torch.func.grad(quad)(p), beta=0.5, mean_init="zero"))
    x.grad = None
    opt.zero_grad()
    quad(x).backward()
    opt.step()
    torch.testing.assert_close(x.detach(), torch.tensor([0.0, 0.4], dtype=F64), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_ogr_stays_finite_when_a_coordinate_never_moves(dtype):
    """f = x^2/2 + y^2 + 0 z over 10,000 steps: all state finite, z unchanged."""
    x = torch.tensor([1.0, -2.0, 0.5], dtype=dtype, requires_grad=True)
    opt = OGR([x])

    def f(z):
        return z[0] ** 2 / 2 + z[1] ** 2 + 0 * z[2]

    _run(opt, x, f, 10_000)
    assert x.detach()[2] == 0.5
    for v in opt.flat_state().values():
        if v.is_floating_point():
            assert torch.isfinite(v).all()
    assert torch.isfinite(opt.hessian()).all()
    assert float(f(x.detach())) < 1e-6


@pytest.mark.parametrize("line_search", ["armijo", "strong_wolfe"])
def test_ogr_line_search_solves_rosenbrock(line_search):
    x = torch.tensor([-1.2, 1.0], dtype=F64, requires_grad=True)

    def rosen(z):
        return 100 * (z[1] - z[0] ** 2) ** 2 + (1 - z[0]) ** 2

    opt = OGR([x], line_search=line_search)

    def closure():
        opt.zero_grad()
        loss = rosen(x)
        loss.backward()
        return loss

    losses = [float(opt.step(closure).detach()) for _ in range(300)]
    assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:], strict=False))  # monotone: searched steps
    assert float(rosen(x.detach())) < 1e-10
    with pytest.raises(ValueError, match="closure"):
        opt.step()


def test_ogr_max_step_norm_clips():
    x = torch.tensor([10.0, -10.0], dtype=F64, requires_grad=True)
    opt = OGR([x], max_step_norm=0.01, cut=1e-6)
    before = x.detach().clone()
    _run(opt, x, lambda z: (z**2).sum() * 1e-4, 1)
    assert float(torch.linalg.vector_norm(x.detach() - before)) <= 0.01 * (1 + 1e-12)


def test_ogr_refuses_matrices_that_do_not_fit():
    p = torch.zeros(10_000, requires_grad=True)
    with pytest.raises(ValueError, match="DiagOGR"):
        OGR([p], memory_limit_bytes=10**6)


# ----------------------------------------------------------------------------------------------- DiagOGR
@pytest.mark.parametrize("corr1", [False, True])
def test_diag_ogr_equals_estimator_plus_step_map(corr1):
    """DiagOGR's step equals DiagonalGradientRegression + momentum + the step map (equal floors:
    ridge_rel 0)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, generator=g, dtype=F64) * 3

    def f(x):
        return 0.5 * (a * x * x).sum() + 0.05 * (x**4).sum() + x[0] * x[1]

    x = torch.randn(6, generator=g, dtype=F64).requires_grad_()
    opt = DiagOGR(
        [x], lr=0.8, beta=0.5, gamma=0.2, div=1.3, cut=2.0, corr1=corr1, ridge_rel=0.0, max_coord_step=None
    )
    est = DiagonalGradientRegression(6, beta=0.5, corr1=corr1, ridge_rel=0.0, dtype=F64)
    ref_x, m = x.detach().clone(), torch.zeros(6, dtype=F64)
    for _ in range(40):
        gx = torch.func.grad(f)(ref_x)
        est.update(ref_x, gx)
        m = 0.2 * m + 0.8 * gx
        ref_x = ref_x - diagonal_saddle_free_step(est.diagonal(), m, eta=0.8, div=1.3, cut=2.0)
        _run(opt, x, f, 1)
        torch.testing.assert_close(x.detach(), ref_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(opt.curvature_estimates()[0], est.diagonal(), rtol=1e-12, atol=1e-12)


def test_diag_ogr_recovers_separable_curvature_along_its_own_trajectory():
    """Exact separable curvature along the optimizer's own path. Exactness needs no prior and no ridge
    floor: with s0 = 1 the decaying prior biases converging coordinates as fast as their variance decays,
    and the relative floor takes over for the fastest-converging ones after ~8 steps."""
    a = torch.tensor([4.0, 2.0, 1.0, -1.0, -3.0, 0.5, 6.0, -0.3, 1.5, 2.5], dtype=F64)
    b = torch.linspace(-1, 1, 10, dtype=F64)

    def f(x):
        return 0.5 * (a * x * x).sum() + (b * x).sum()

    x = torch.linspace(1.3, 0.6, 10, dtype=F64).requires_grad_()  # no coordinate starts stationary
    opt = DiagOGR([x], sigma0=0.0, ridge_rel=0.0, ridge_abs=0.0, cut=0.5, mean_init="first")
    _run(opt, x, f, 12)
    lam = opt.curvature_estimates()[0]
    assert float(((lam - a) / a).abs().max()) < 1e-8


def test_diag_ogr_several_tensors_and_groups_match_single_group_per_tensor():
    """Groups are independent: two groups step exactly like two optimizers, one per tensor."""
    w1 = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    w2 = torch.randn(5, dtype=F64, generator=torch.Generator().manual_seed(1))

    def f(u, v):
        return (u.sin() ** 2).sum() + (v**2 * torch.arange(5, dtype=F64)).sum()

    a1, a2 = w1.clone().requires_grad_(), w2.clone().requires_grad_()
    opt = DiagOGR([{"params": [a1], "lr": 0.5}, {"params": [a2], "cut": 2.0}])
    b1, b2 = w1.clone().requires_grad_(), w2.clone().requires_grad_()
    o1, o2 = DiagOGR([b1], lr=0.5), DiagOGR([b2], cut=2.0)
    for _ in range(20):
        for o in (opt, o1, o2):
            o.zero_grad()
        f(a1, a2).backward()
        f(b1, b2).backward()
        opt.step()
        o1.step()
        o2.step()
    assert torch.equal(a1, b1) and torch.equal(a2, b2)


def test_diag_ogr_trains_noisy_quadratic():
    """Sanity with gradient noise: a 100-D ill-conditioned quadratic's loss falls by 100x."""
    gen = torch.Generator().manual_seed(0)
    a = torch.logspace(-1, 1, 100, dtype=F64)
    x = torch.ones(100, dtype=F64, requires_grad=True)
    opt = DiagOGR([x], cut=0.5)
    f0 = float(0.5 * (a * x.detach() ** 2).sum())
    for _ in range(300):
        opt.zero_grad()
        (0.5 * (a * x * x).sum()).backward()
        x.grad.add_(0.01 * torch.randn(100, generator=gen, dtype=F64))
        opt.step()
    assert float(0.5 * (a * x.detach() ** 2).sum()) < f0 / 100
