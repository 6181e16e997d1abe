"""Exact curvature (hessopt.curvature.exact) against closed forms and scipy."""

import numpy as np
import pytest
import scipy.optimize as so
import torch

from hessopt.curvature import exact


def _rosen(x):
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def test_hessian_and_hvp_match_scipy_rosen():
    rng = np.random.default_rng(0)
    x = rng.normal(size=6)
    xt = torch.tensor(x)
    np.testing.assert_allclose(exact.hessian(_rosen, xt).numpy(), so.rosen_hess(x), rtol=1e-12, atol=1e-10)
    v = rng.normal(size=6)
    np.testing.assert_allclose(
        exact.hvp(_rosen, xt, torch.tensor(v)).numpy(), so.rosen_hess_prod(x, v), rtol=1e-12, atol=1e-10
    )
    np.testing.assert_allclose(
        exact.hessian_diagonal(_rosen, xt, chunk_size=4).numpy(), np.diag(so.rosen_hess(x)), rtol=1e-12
    )


def test_quadratic_hessian_is_the_matrix():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(7, 7, generator=g, dtype=torch.float64)
    a = a + a.T
    x = torch.randn(7, generator=g, dtype=torch.float64)
    h = exact.hessian(lambda z: 0.5 * z @ a @ z + z.sum(), x)
    torch.testing.assert_close(h, a, rtol=1e-13, atol=1e-13)


def test_linear_regression_hessian_closed_form():
    # loss = mean over N*k of (W x + b - t)^2; w.r.t. vec(W) (row-major) then b:
    # d2/dW_ij dW_i'j' = 2/(N k) sum_n x_nj x_nj' delta_ii'; bias block 2/k * I / ... (see below)
    torch.manual_seed(0)
    n, d, k = 9, 4, 3
    model = torch.nn.Linear(d, k).double()
    x = torch.randn(n, d, dtype=torch.float64)
    t = torch.randn(n, k, dtype=torch.float64)
    h = exact.model_hessian(model, torch.nn.functional.mse_loss, x, t)
    xa = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)  # augmented input [x, 1]
    gram = 2.0 / (n * k) * xa.T @ xa  # (d+1, d+1), same for every output row i
    expected = torch.zeros(k * d + k, k * d + k, dtype=torch.float64)
    for i in range(k):
        w_idx = list(range(i * d, (i + 1) * d)) + [k * d + i]
        expected[np.ix_(w_idx, w_idx)] = gram
    torch.testing.assert_close(h, expected, rtol=1e-12, atol=1e-12)


def test_model_quantities_agree_and_do_not_touch_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(), torch.nn.Linear(5, 2)
    ).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))
    before = {n: b.clone() for n, b in model.named_buffers()}
    loss = torch.nn.functional.cross_entropy
    h = exact.model_hessian(model, loss, x, y)
    assert (h - h.T).abs().max() <= 1e-10 * h.abs().max()
    v = torch.randn(h.shape[0], dtype=torch.float64)
    torch.testing.assert_close(exact.model_hvp(model, loss, x, y, v), h @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(exact.model_hessian_diagonal(model, loss, x, y), torch.diagonal(h))
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n

    # independent reference: autograd double backward of the module's own loss (full matrix, row by row);
    # this is what caught torch.func's vmapped Hessian being wrong for train-mode BatchNorm
    h_ref = torch.stack(
        [
            torch.autograd.functional.vhp(
                exact.model_loss_function(model, loss, x, y)[0],
                torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
                e,
            )[1]
            for e in torch.eye(h.shape[0], dtype=torch.float64)
        ]
    )
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-12)
    params = list(model.parameters())
    g = torch.autograd.grad(loss(model(x), y), params, create_graph=True)
    flat_g = torch.cat([gi.reshape(-1) for gi in g])
    hv = torch.autograd.grad(flat_g @ v, params)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in hv]), h @ v, rtol=1e-10, atol=1e-12)


def test_params_subset_and_errors():
    model = torch.nn.Linear(3, 2).double()
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    h_b = exact.model_hessian(model, torch.nn.functional.mse_loss, x, t, params=[model.bias])
    torch.testing.assert_close(h_b, torch.eye(2, dtype=torch.float64) * 2.0 / 2)  # 2/(N k) * N
    with pytest.raises(ValueError, match="params"):
        exact.model_hessian(model, torch.nn.functional.mse_loss, x, t, params=[torch.zeros(2)])
    with pytest.raises(ValueError, match="x must be a 1-D"):
        exact.hessian(_rosen, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="v must have the shape"):
        exact.hvp(_rosen, torch.zeros(3), torch.zeros(2))


def test_model_hessian_diagonal_with_a_mean_squared_error():
    """MSE (mean) made forward-over-reverse products raise in torch 2.13; the diagonal is still exact."""
    from hessopt.curvature.exact import model_hessian_diagonal

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat):
        chunks, at = {}, 0
        for n, s in zip(names, shapes, strict=True):
            chunks[n] = flat[at : at + s.numel()].reshape(s)
            at += s.numel()
        return torch.nn.functional.mse_loss(torch.func.functional_call(model, chunks, (x,)), y)

    expected = torch.diagonal(torch.func.hessian(loss)(theta))
    got = model_hessian_diagonal(model, torch.nn.functional.mse_loss, x, y)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
