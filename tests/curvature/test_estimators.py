"""curvature.estimators.diagonal: every method against an independent reference (float64).

Numbered comments refer to the acceptance checks of docs/algorithms/hesscale.md ("Tests"). BackPACK
(``backpack-for-pytorch``, the ``peers`` extra) is a second, independent reference when installed.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hesscale_helpers import F64, exact_diagonals, ggn_diagonals, hesscale_diagonals, max_abs_diff
from torch import nn
from torch.func import functional_call, hessian, jacrev

from hessopt.curvature import estimators, hesscale
from hessopt.curvature.estimators import ESTIMATORS, diagonal
from hessopt.curvature.loss_curvature import loss_spec, sample_output_factor


def _net(act=nn.Tanh, out=3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), act(), nn.Linear(4, out)).double()


LOSSES = {
    "ce": (lambda: nn.CrossEntropyLoss(), lambda n: torch.randint(0, 3, (n,))),
    "mse": (lambda: nn.MSELoss(), lambda n: torch.randn(n, 3, dtype=F64)),
    "bce": (lambda: nn.BCEWithLogitsLoss(), lambda n: torch.rand(n, 3, dtype=F64)),
}


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("n", [1, 5])
def test_exact_and_ggn_against_torch_func(loss_name, n):  # check 12
    model = _net()
    make_loss, make_y = LOSSES[loss_name]
    loss = make_loss()
    x, y = torch.randn(n, 3, dtype=F64), make_y(n)
    assert max_abs_diff(diagonal(model, loss, x, y, "exact"), exact_diagonals(model, loss, x, y)) <= 1e-12
    assert max_abs_diff(diagonal(model, loss, x, y, "ggn"), ggn_diagonals(model, loss, x, y)) <= 1e-12


def test_grad_squared_and_hesscale_methods_and_no_side_effects():
    model = _net()
    loss = nn.CrossEntropyLoss()
    x, y = torch.randn(5, 3, dtype=F64), torch.randint(0, 3, (5,))
    g = torch.autograd.grad(loss(model(x), y), list(model.parameters()))
    expected = {n: t * t for (n, _), t in zip(model.named_parameters(), g, strict=True)}
    assert max_abs_diff(diagonal(model, loss, x, y, "grad_squared"), expected) == 0.0
    first = next(model.parameters())
    hesscale._accumulate(first, "bl89", torch.ones_like(first))  # the user's pending diagonal survives
    for method in ("hesscale", "hesscale_gn", "bl89"):
        ours = diagonal(model, loss, x, y, method)
        assert max_abs_diff(ours, hesscale_diagonals(copy.deepcopy(model), loss, x, y, method)) <= 1e-15
    assert all(p.grad is None for p in model.parameters())
    assert hesscale.peek_diagonal(first)[0] == "bl89"
    assert list(diagonal(model, loss, x, y, "ggn")) == [n for n, _ in model.named_parameters()]


def test_ggn_mc_enumerated_over_labels_is_the_ggn():  # check 12
    model = _net()
    loss = nn.CrossEntropyLoss()
    x, y = torch.randn(2, 3, dtype=F64), torch.randint(0, 3, (2,))
    ggn = diagonal(model, loss, x, y, "ggn")
    params = {n: p.detach() for n, p in model.named_parameters()}

    def single(ps, xi):
        return functional_call(model, ps, (xi.unsqueeze(0),)).squeeze(0)

    with torch.no_grad():
        q = torch.softmax(model(x), 1)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for c0 in range(3):
        for c1 in range(3):
            onehot = F.one_hot(torch.tensor([c0, c1]), 3).to(F64)
            s = (q - onehot) / 2**0.5  # sqrt(1/N) (q - e_ŷ) for the mean over N = 2
            est = estimators._ggn_mc(single, params, x, [s])
            weight = q[0, c0] * q[1, c1]
            for k in total:
                total[k] += weight * est[k]
    assert max_abs_diff(total, ggn) <= 1e-14


LOSSES_SUM = {
    "ce": lambda: nn.CrossEntropyLoss(reduction="sum"),
    "mse": lambda: nn.MSELoss(reduction="sum"),
    "bce": lambda: nn.BCEWithLogitsLoss(reduction="sum"),
}


@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_sampled_factor_has_the_output_hessian_as_covariance(loss_name):
    loss = LOSSES_SUM[loss_name]()
    torch.manual_seed(3)
    z, y = torch.randn(1, 3, dtype=F64), LOSSES[loss_name][1](1)
    h = hessian(lambda v: loss(v, y))(z).reshape(3, 3)
    n = 40_000  # one draw per copy of the example (sum reduction: each row is one example's factor)
    zs, ys = z.expand(n, 3).contiguous(), y.expand(n, *y.shape[1:]).contiguous()
    s = sample_output_factor(loss_spec(loss), zs, ys, torch.Generator().manual_seed(0))
    cov = s.T @ s / n
    assert float((cov - h).abs().max()) <= 0.02 * float(h.abs().max()) + 1e-12


def test_ggn_mc_and_hutchinson_averages_converge():  # check 13 (general net)
    model = _net(nn.Sigmoid)
    loss = nn.CrossEntropyLoss()
    x, y = torch.randn(4, 3, dtype=F64), torch.randint(0, 3, (4,))
    m = 10_000
    gen = torch.Generator().manual_seed(1)
    hut = diagonal(model, loss, x, y, "hutchinson", samples=m, generator=gen)
    fn_names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    theta = torch.cat([p.detach().reshape(-1) for p in params])

    def f(t):
        chunks = t.split([p.numel() for p in params])
        ps = {n: c.reshape(p.shape) for n, c, p in zip(fn_names, chunks, params, strict=True)}
        return loss(functional_call(model, ps, (x,)), y)

    h = hessian(f)(theta)
    se = ((h * h).sum(1) - h.diagonal() ** 2).div(m).sqrt()  # the variance of the signed v∘Hv mean
    est = torch.cat([hut[n].reshape(-1) for n in fn_names])
    assert bool(((est - h.diagonal()).abs() <= 5 * se + 1e-12).all())
    mc = diagonal(model, loss, x, y, "ggn_mc", samples=4000, generator=torch.Generator().manual_seed(2))
    ggn = diagonal(model, loss, x, y, "ggn")
    assert max_abs_diff(mc, ggn) <= 0.1 * max(float(v.abs().max()) for v in ggn.values())


class _Bias(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.randn(4, dtype=F64))

    def forward(self, x):
        return x + self.b


def test_one_hutchinson_probe_is_exact_for_a_diagonal_hessian():  # check 13
    model, loss = _Bias(), nn.MSELoss()
    x, y = torch.randn(3, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    est = diagonal(model, loss, x, y, "hutchinson", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(est["b"], torch.full((4,), 2 / 4, dtype=F64), rtol=0, atol=1e-15)


def test_arguments_are_validated():
    model, loss = _net(), nn.MSELoss()
    x, y = torch.randn(2, 3, dtype=F64), torch.randn(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="method must be one of"):
        diagonal(model, loss, x, y, "kfac")
    with pytest.raises(ValueError, match="samples"):
        diagonal(model, loss, x, y, "ggn", samples=3)
    with pytest.raises(ValueError, match="samples"):
        diagonal(model, loss, x, y, "hutchinson", samples=0)
    assert set(ESTIMATORS) >= {"exact", "ggn", "ggn_mc", "hutchinson", "grad_squared", "hesscale", "bl89"}


# ------------------------------------------------------------------------------ BackPACK
def _backpack_models():
    torch.manual_seed(4)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 3)).double()
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)).double()
    return [(mlp, torch.randn(6, 3, dtype=F64)), (cnn, torch.randn(6, 1, 4, 4, dtype=F64))]


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("loss_name", ["ce", "mse"])
def test_ggn_diagonal_matches_backpack(loss_name):
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import DiagGGNExact, DiagGGNMC

    make_loss, make_y = LOSSES[loss_name]
    for model, x in _backpack_models():
        y = make_y(x.shape[0])
        ours = diagonal(model, make_loss(), x, y, "ggn")
        bp_model, bp_loss = backpack.extend(copy.deepcopy(model)), backpack.extend(make_loss())
        with backpack.backpack(DiagGGNExact()):
            bp_loss(bp_model(x), y).backward()
        theirs = {n: p.diag_ggn_exact for n, p in bp_model.named_parameters()}
        assert max_abs_diff(ours, theirs) <= 1e-12
        bp_model.zero_grad()
        with backpack.backpack(DiagGGNMC(mc_samples=3000)):
            bp_loss(bp_model(x), y).backward()
        mc = {n: p.diag_ggn_mc for n, p in bp_model.named_parameters()}
        assert max_abs_diff(mc, ours) <= 0.1 * max(float(v.abs().max()) for v in ours.values())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_relu_hesscale_equals_backpack_ggn_and_exact():
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import DiagGGNExact

    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = torch.randn(5, 3, dtype=F64), torch.randn(5, 3, dtype=F64)
    ours = hesscale_diagonals(model, nn.MSELoss(), x, y)  # one hidden ReLU layer, MSE: exact
    bp_model, bp_loss = backpack.extend(copy.deepcopy(model)), backpack.extend(nn.MSELoss())
    with backpack.backpack(DiagGGNExact()):
        bp_loss(bp_model(x), y).backward()
    assert max_abs_diff(ours, {n: p.diag_ggn_exact for n, p in bp_model.named_parameters()}) <= 1e-12
    assert max_abs_diff(ours, exact_diagonals(model, nn.MSELoss(), x, y)) <= 1e-12


def test_jacrev_reference_is_consistent():
    """The test helper itself: J^T H J from jacrev equals the Hessian for a linear model."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 2)).double()
    x, y = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    assert (
        max_abs_diff(ggn_diagonals(model, nn.MSELoss(), x, y), exact_diagonals(model, nn.MSELoss(), x, y))
        <= 1e-15
    )
    assert jacrev is not None
