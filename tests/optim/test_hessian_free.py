"""BlockDiagonalHessianFree / HessianFree (hessian-free.md, checks 7-14, plus the optimizer contract)."""

from __future__ import annotations

import copy
import io
import math
import pickle

import numpy as np
import pytest
import scipy.optimize
import torch
import torch.nn.functional as F
from torch import nn

import hessopt.optim.hessian_free as hf_module
from hessopt.curvature.cg import CGResult
from hessopt.curvature.damping import levenberg_marquardt, undamped_model_change
from hessopt.curvature.products import NonDeterministicCurvatureError, OutputActivationError
from hessopt.optim.hessian_free import BlockDiagonalHessianFree, HessianFree

F64 = torch.float64


def _mlp(seed=0, dtype=F64, out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, out)).to(dtype)


def _batch(n=32, seed=1, dtype=F64, classes=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, y


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _run(opt, batches):
    return [opt.step(x, y) for x, y in batches]


def _batches(k, seed=1, **kw):
    return [_batch(seed=seed + i, **kw) for i in range(k)]


# ------------------------------------------------------------------------------------ 7. equivalences
def test_one_block_equals_hessian_free() -> None:
    a, b = _mlp(), _mlp()
    opt_a = BlockDiagonalHessianFree(a, loss_fn=nn.CrossEntropyLoss(), blocks=[list(a.parameters())])
    opt_b = HessianFree(b, loss_fn=nn.CrossEntropyLoss())
    assert opt_b.block_sizes() == [sum(p.numel() for p in b.parameters())]
    batches = _batches(4)
    _run(opt_a, batches)
    _run(opt_b, batches)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    assert opt_a.last_step["cg_iterations"] == opt_b.last_step["cg_iterations"]


class _TwoNets(nn.Module):
    """Two independent sub-networks, outputs concatenated: with MSE the GGN is block-diagonal."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)
        self.b = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 2)).to(F64)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


def test_block_diagonal_ggn_model_gives_the_hf_step() -> None:
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(16, 5, generator=gen, dtype=F64), torch.randn(16, 4, generator=gen, dtype=F64)
    kw = dict(loss_fn=nn.MSELoss(), cg_tolerance=1e-13, cg_progress_eps=None, backtracking=False)
    one, two = _TwoNets(), _TwoNets()
    opt1 = BlockDiagonalHessianFree(one, blocks="single", **kw)
    opt2 = BlockDiagonalHessianFree(two, blocks=[list(two.a.parameters()), list(two.b.parameters())], **kw)
    for _ in range(3):
        opt1.step(x, y)
        opt2.step(x, y)
    for p, q in zip(one.parameters(), two.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)
    assert len(opt2.last_step["cg_iterations"]) == 2


# ------------------------------------------------------------------------------------ 8. LM rule
def test_rho_is_one_on_a_linear_least_squares_model_and_damping_drops() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 2).to(F64)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=gen, dtype=F64)
    y = x @ torch.randn(5, 2, generator=gen, dtype=F64) + 0.1 * torch.randn(40, 2, generator=gen, dtype=F64)
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.MSELoss(), curvature_fraction=1.0, cg_max_iterations=3)
    lam = 1.0
    for _ in range(4):
        opt.step(x, y)
        assert abs(opt.last_step["rho"] - 1.0) <= 1e-10
        lam *= 2 / 3
        assert math.isclose(opt.last_step["damping"], lam, rel_tol=1e-14)


@pytest.mark.parametrize(
    ("rho", "factor"),
    [
        (-math.inf, 1.5),
        (0.0, 1.5),
        (0.2499, 1.5),
        (0.25, 1.0),
        (0.5, 1.0),
        (0.75, 1.0),
        (0.7501, 2 / 3),
        (1.0, 2 / 3),
    ],
)
def test_levenberg_marquardt_boundaries(rho, factor) -> None:
    new, clamped = levenberg_marquardt(2.0, rho)
    assert new == 2.0 * factor and not clamped
    assert levenberg_marquardt(1e-8, 1.0) == (1e-8, True)
    assert levenberg_marquardt(1e8, -1.0) == (1e8, True)


def test_rho_uses_the_undamped_model() -> None:
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(6, 6, generator=gen, dtype=F64)
    G = a @ a.T
    g, p = torch.randn(6, generator=gen, dtype=F64), torch.randn(6, generator=gen, dtype=F64)
    undamped = float(g @ p + 0.5 * p @ G @ p)
    for lam in (0.0, 0.1, 10.0):
        phi = float(g @ p + 0.5 * p @ (G + lam * torch.eye(6, dtype=F64)) @ p)
        assert math.isclose(undamped_model_change(phi, lam, float(p @ p)), undamped, rel_tol=1e-12)


class _Trap(nn.Module):
    """Linear model whose output turns nan beyond a bound: a long step lands on a nan loss."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1).to(F64)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()

    def forward(self, x):
        z = self.linear(x)
        return torch.where(z.abs() < 50, z, torch.full_like(z, float("nan")))


def test_nan_at_the_trial_point_rejects_grows_damping_and_keeps_state() -> None:
    model = _Trap()
    x = torch.eye(3, dtype=F64).repeat(4, 1)
    y = torch.full((12, 1), 100.0, dtype=F64)
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.MSELoss(), damping=1e-3, curvature_fraction=1.0)
    opt._checked = True  # the determinism probe would itself evaluate the trap
    for p, w in zip(model.parameters(), ([[0.1, 0.2, 0.3]], [0.1]), strict=True):
        with torch.no_grad():
            p.copy_(torch.tensor(w, dtype=F64))
    opt._state()
    for p in model.parameters():
        opt.state[p]["warm_start"] = torch.full_like(p, 0.5)
    params = _params(model)
    state = copy.deepcopy(opt.state_dict())
    opt.step(x, y)
    assert opt.last_step["accepted"] is False and "non-finite" in opt.last_step["rejected"]
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    after = opt.state_dict()
    for i in range(2):
        assert torch.equal(after["state"][i]["warm_start"], state["state"][i]["warm_start"])
    assert float(after["state"][0]["damping"]) == pytest.approx(1.5e-3, rel=1e-12)
    assert int(after["state"][0]["nonfinite_rejections"]) == 1
    assert int(after["state"][0]["rejected_steps"]) == 1


# ------------------------------------------------------------------------------------ 9. warm start
def test_warm_start_is_095_times_the_final_not_the_backtracked_iterate(monkeypatch) -> None:
    seen = []
    real = hf_module.block_cg

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        seen.append((kwargs.get("x0"), result))
        return result

    monkeypatch.setattr(hf_module, "block_cg", spy)
    model = _mlp()
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss(), damping=1e-3)
    backtracked = False
    for x, y in _batches(6):
        opt.step(x, y)
        backtracked |= opt.last_step["backtrack_index"] != seen[-1][1].stored_at[-1]
    assert seen[0][0] is None
    for (_, previous), (x0, _) in zip(seen[:-1], seen[1:], strict=True):
        torch.testing.assert_close(x0, 0.95 * previous.x, rtol=0, atol=0)
    assert backtracked, "no step backtracked: the check would not distinguish final from chosen iterate"


# ------------------------------------------------------------------------------------ 10. Armijo
def test_armijo_accepts_the_exact_newton_step() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 2).to(F64)
    x, _ = _batch(30)
    y = torch.randn(30, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    opt = HessianFree(model, loss_fn=nn.MSELoss(), damping=1e-8, curvature_fraction=1.0, cg_tolerance=1e-12)
    opt.step(x, y)
    assert opt.last_step["alpha"] == 1.0
    sol = np.linalg.lstsq(np.c_[x.numpy(), np.ones(30)], y.numpy(), rcond=None)[0]
    np.testing.assert_allclose(model.weight.detach().numpy(), sol[:5].T, atol=1e-6)


def test_armijo_shrinks_by_08() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 1).to(F64)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(40, 5, generator=gen, dtype=F64)
    x[:10] *= 0.05  # the curvature rows see a far flatter problem: the Newton step is far too long
    y = torch.randn(40, 1, generator=gen, dtype=F64)
    opt = HessianFree(model, loss_fn=nn.MSELoss(), damping=1e-6, backtracking=False, cg_tolerance=1e-12)
    before = float(F.mse_loss(model(x), y).detach())
    opt.step(x, y)
    alpha = opt.last_step["alpha"]
    k = round(math.log(alpha) / math.log(0.8))
    assert k >= 1 and math.isclose(alpha, 0.8**k, rel_tol=1e-12)
    assert float(F.mse_loss(model(x), y).detach()) < before


def test_armijo_failure_after_60_shrinks_leaves_parameters() -> None:
    model = _mlp()
    x, y = _batch()
    z0 = model(x).detach()

    def kinked(z, t):  # gradient and curvature of cross-entropy, but any move of z costs 1e9 |dz|
        return F.cross_entropy(z, t) + 1e9 * (z - z0).abs().sum()

    opt = BlockDiagonalHessianFree(model, loss_fn=kinked, curvature_fraction=1.0, check_determinism=False)
    params = _params(model)
    opt.step(x, y)
    assert opt.last_step["alpha"] == 0.0 and opt.last_step["rejected"] == "Armijo line search failed"
    assert opt.last_step["loss_evaluations"] >= 60
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    st = opt.flat_state()
    assert int(st["line_search_failures"]) == 1 and int(st["rejected_steps"]) == 1


def test_ascent_direction_is_rejected_and_resets_the_warm_start(monkeypatch) -> None:
    real = hf_module.block_cg

    def flipped(*args, **kwargs):
        r = real(*args, **kwargs)
        return CGResult(
            -r.x, [-s for s in r.stored], r.stored_at, r.stored_phi, r.iterations, r.reasons, r.sweeps
        )

    model = _mlp()
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss())
    x, y = _batch()
    opt.step(x, y)
    monkeypatch.setattr(hf_module, "block_cg", flipped)
    params = _params(model)
    opt.step(*_batch(seed=2))
    assert opt.last_step["rejected"] == "not a descent direction" and opt.last_step["alpha"] == 0.0
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
        assert not opt.state[p]["warm_start"].any()


# ------------------------------------------------------------------------------------ 11. reductions
@pytest.mark.parametrize(
    ("mean_loss", "sum_loss", "divisor"),
    [
        (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="sum"), lambda x: x.shape[0]),
        (nn.MSELoss(), nn.MSELoss(reduction="sum"), lambda x: x.shape[0] * 3),
    ],
    ids=["cross_entropy", "mse"],
)
@pytest.mark.parametrize("fraction", [1.0, 0.25])
def test_sum_reduction_with_scaled_damping_gives_the_mean_step(
    mean_loss, sum_loss, divisor, fraction
) -> None:
    a, b = _mlp(), _mlp()
    batches = _batches(3)
    if isinstance(mean_loss, nn.MSELoss):
        gen = torch.Generator().manual_seed(9)
        batches = [(x, torch.randn(x.shape[0], 3, generator=gen, dtype=F64)) for x, _ in batches]
    n = divisor(batches[0][0])
    kw = dict(curvature_fraction=fraction, preconditioner="martens")
    opt_a = BlockDiagonalHessianFree(a, loss_fn=mean_loss, damping=0.5, **kw)
    opt_b = BlockDiagonalHessianFree(
        b, loss_fn=sum_loss, damping=0.5 * n, damping_bounds=(1e-8 * n, 1e8 * n), **kw
    )
    _run(opt_a, batches)
    _run(opt_b, batches)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)
    assert math.isclose(opt_a.last_step["damping"] * n, opt_b.last_step["damping"], rel_tol=1e-10)


# ------------------------------------------------------------------------------------ 12. determinism
def test_train_mode_dropout_fails_the_probe() -> None:
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.3), nn.Tanh(), nn.Linear(8, 3)).to(F64).train()
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(NonDeterministicCurvatureError, match=r"dropout modules \['1'\]"):
        opt.step(*_batch())
    model.eval()
    opt.step(*_batch())


def test_batchnorm_running_statistics_change_only_by_the_gradient_forward() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).to(F64).train()
    reference = copy.deepcopy(model)
    x, y = _batch()
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss(), preconditioner="martens")
    opt.step(x, y)
    reference(x)  # one training forward pass on the gradient batch
    assert model[1].training  # the preconditioner's eval-mode switch is undone
    for (n, b), r in zip(model.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(b, r), f"buffer {n}"
    assert opt.last_step["accepted"]


def test_model_ending_in_softmax_raises() -> None:
    model = nn.Sequential(nn.Linear(5, 3), nn.Softmax(dim=1)).to(F64)
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(OutputActivationError, match="return the logits"):
        opt.step(*_batch())


# ------------------------------------------------------------------------------------ 13. convergence
def test_converges_to_lstsq() -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 3).to(F64)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(50, 6, generator=gen, dtype=F64)
    y = torch.randn(50, 3, generator=gen, dtype=F64)
    blocks = [[model.weight], [model.bias]]  # two blocks: the weight-bias coupling is dropped
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.MSELoss(), blocks=blocks, curvature_fraction=1.0)
    for _ in range(40):
        opt.step(x, y)
    sol = np.linalg.lstsq(np.c_[x.numpy(), np.ones(50)], y.numpy(), rcond=None)[0]
    np.testing.assert_allclose(model.weight.detach().numpy(), sol[:6].T, atol=1e-8)
    np.testing.assert_allclose(model.bias.detach().numpy(), sol[6], atol=1e-8)


def test_converges_to_scipy_l2_logistic_regression_on_digits() -> None:
    from sklearn.datasets import load_digits

    data = load_digits(n_class=2)
    X = torch.tensor(data.data / 16.0, dtype=F64)
    Y = torch.tensor(data.target, dtype=F64).unsqueeze(1)
    kappa = 1e-2

    def objective(w):
        wt = torch.tensor(w, dtype=F64)
        z = X @ wt[:64].unsqueeze(1) + wt[64]
        return float(F.binary_cross_entropy_with_logits(z, Y) + 0.5 * kappa * (wt[:64] ** 2).sum())

    def gradient(w):
        wt = torch.tensor(w, dtype=F64, requires_grad=True)
        z = X @ wt[:64].unsqueeze(1) + wt[64]
        f = F.binary_cross_entropy_with_logits(z, Y) + 0.5 * kappa * (wt[:64] ** 2).sum()
        return torch.autograd.grad(f, wt)[0].numpy()

    ref = scipy.optimize.minimize(
        objective, np.zeros(65), jac=gradient, method="BFGS", options={"gtol": 1e-12}
    )
    model = nn.Linear(64, 1).to(F64)
    groups = [{"params": [model.weight], "weight_decay": kappa}, {"params": [model.bias]}]
    opt = BlockDiagonalHessianFree(
        groups, model=model, loss_fn=nn.BCEWithLogitsLoss(), curvature_fraction=1.0
    )
    for _ in range(30):
        opt.step(X, Y)
    w = np.r_[model.weight.detach().numpy().ravel(), model.bias.detach().numpy()]
    assert abs(objective(w) - ref.fun) <= 1e-6


def test_defaults_train_a_digits_mlp() -> None:
    from hessopt.problems.data import load_digits

    d = load_digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss())
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):
        idx = torch.randint(0, d.x_train.shape[0], (128,), generator=gen)
        opt.step(d.x_train[idx], d.y_train[idx])
    with torch.no_grad():
        assert F.cross_entropy(model(d.x_train), d.y_train) < 0.25
        assert (model(d.x_test).argmax(1) == d.y_test).float().mean() > 0.9


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_lstm_layers_are_separate_blocks_and_train() -> None:
    from hessopt.problems.models import lstm_classifier

    model = lstm_classifier(hidden_size=8, num_layers=3).to(F64)
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss(), preconditioner="martens")
    assert [len(n) for n in opt.block_names()] == [4, 4, 4, 2]
    assert opt.block_names()[1] == [
        "lstm.weight_ih_l1",
        "lstm.weight_hh_l1",
        "lstm.bias_ih_l1",
        "lstm.bias_hh_l1",
    ]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 784, generator=gen, dtype=F64), torch.randint(0, 10, (32,), generator=gen)
    first = opt.step(x, y)
    for _ in range(3):
        opt.step(x, y)
    assert F.cross_entropy(model(x), y) < first


# ------------------------------------------------------------------------------------ 14. contract
def _train(opt, k, seed=1, dtype=F64):
    return [float(opt.step(x, y)) for x, y in _batches(k, seed=seed, dtype=dtype)]


def test_state_dict_resume_is_bit_for_bit() -> None:
    a = _mlp()
    opt_a = BlockDiagonalHessianFree(a, loss_fn=nn.CrossEntropyLoss())
    _train(opt_a, 6)

    b = _mlp()
    opt_b = BlockDiagonalHessianFree(b, loss_fn=nn.CrossEntropyLoss())
    batches = _batches(6)
    _run(opt_b, batches[:3])
    buffer = io.BytesIO()
    torch.save({"model": b.state_dict(), "opt": opt_b.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    c = _mlp(seed=5)
    c.load_state_dict(ckpt["model"])
    opt_c = BlockDiagonalHessianFree(c, loss_fn=nn.CrossEntropyLoss())
    opt_c.load_state_dict(ckpt["opt"])
    _run(opt_c, batches[3:])
    for p, q in zip(a.parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q)
    sa, sc = opt_a.state_dict(), opt_c.state_dict()
    for i in sa["state"]:
        for k, v in sa["state"][i].items():
            assert torch.equal(v, sc["state"][i][k]) and v.dtype == sc["state"][i][k].dtype, k


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_continue_identically(how) -> None:
    model = _mlp()
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss())
    _train(opt, 2)
    twin = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    assert twin.model is not model
    _train(opt, 3, seed=10)
    _train(twin, 3, seed=10)
    for p, q in zip(model.parameters(), twin.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(opt.flat_state()["damping"], twin.flat_state()["damping"])


def test_float32_trains_and_keeps_dtype() -> None:
    model = _mlp(dtype=torch.float32)
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss())
    losses = _train(opt, 5, dtype=torch.float32)
    assert losses[-1] < losses[0]
    for p in model.parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
        assert opt.state[p]["warm_start"].dtype == torch.float32
    assert opt.flat_state()["damping"].dtype == torch.float32


@pytest.mark.parametrize("policy", ["skip", "raise"])
def test_nonfinite_loss_is_skipped_or_raised(policy) -> None:
    model = _mlp()
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss(), nonfinite=policy)
    _train(opt, 2)
    params, state = _params(model), copy.deepcopy(opt.state_dict())
    x, y = _batch()
    x[3, 0] = float("nan")
    if policy == "raise":
        with pytest.raises(FloatingPointError, match="loss"):
            opt.step(x, y)
    else:
        assert math.isnan(float(opt.step(x, y)))
        assert int(opt.flat_state()["nonfinite_skips"]) == 1
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    after = opt.state_dict()["state"]
    for i in state["state"]:
        for k, v in state["state"][i].items():
            if k != "nonfinite_skips":
                assert torch.equal(v, after[i][k]), k


def test_lr_zero_is_a_no_op_and_lr_scales_the_step() -> None:
    model = _mlp()
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss(), lr=0.0)
    params = _params(model)
    x, y = _batch()
    loss = opt.step(x, y)
    assert torch.equal(loss, F.cross_entropy(model(x), y).detach())
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, q)
    assert opt.state_dict()["state"] == {}


def test_step_with_a_closure_explains_the_call() -> None:
    model = _mlp()
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match=r"step\(inputs, targets\), not a closure"):
        opt.step(lambda: F.cross_entropy(model(_batch()[0]), _batch()[1]))


BAD = [
    ({"lr": -1.0}, "lr"),
    ({"damping": 0.0}, "damping"),
    ({"damping_bounds": (1.0, 0.1)}, "damping_bounds"),
    ({"damping_bounds": 3}, "damping_bounds"),
    ({"curvature_fraction": 0.0}, "curvature_fraction"),
    ({"curvature_fraction": 1.5}, "curvature_fraction"),
    ({"curvature": "fisher"}, "curvature"),
    ({"backend": "threads"}, "backend"),
    ({"jvp": "both"}, "jvp"),
    ({"cg_max_iterations": 0}, "cg_max_iterations"),
    ({"cg_min_iterations": -1}, "cg_min_iterations"),
    ({"cg_progress_eps": 0.0}, "cg_progress_eps"),
    ({"cg_tolerance": -1.0}, "cg_tolerance"),
    ({"preconditioner": "jacobi"}, "preconditioner"),
    ({"preconditioner_exponent": 1.5}, "preconditioner_exponent"),
    ({"line_search": "wolfe"}, "line_search"),
    ({"armijo_c": 1.0}, "armijo_c"),
    ({"armijo_shrink": 0.0}, "armijo_shrink"),
    ({"armijo_max_shrinks": -1}, "armijo_max_shrinks"),
    ({"warm_start": 1.0}, "warm_start"),
    ({"rho_model": "exact"}, "rho_model"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"nonfinite": "ignore"}, "nonfinite"),
    ({"blocks": "tensors"}, "blocks"),
    ({"blocks": []}, "blocks"),
    ({"loss_fn": nn.MSELoss(reduction="none")}, "reduction"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_arguments_name_the_argument(kwargs, name) -> None:
    model = _mlp()
    with pytest.raises(ValueError, match=name):
        BlockDiagonalHessianFree(model, **{"loss_fn": nn.CrossEntropyLoss(), **kwargs})


def test_structural_errors() -> None:
    model, other = _mlp(), _mlp()
    with pytest.raises(ValueError, match="not a parameter of model"):
        BlockDiagonalHessianFree(list(other.parameters()), model=model, loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match="model must be the nn.Module"):
        BlockDiagonalHessianFree(list(model.parameters()), loss_fn=nn.CrossEntropyLoss())
    params = list(model.parameters())
    with pytest.raises(ValueError, match="partition"):
        BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss(), blocks=[params[:2]])
    with pytest.raises(ValueError, match="appears in blocks 0 and 1"):
        BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss(), blocks=[params, params[:1]])
    with pytest.raises(ValueError, match="uses one lr"):
        BlockDiagonalHessianFree(
            [{"params": params[:2], "lr": 0.5}, {"params": params[2:]}],
            model=model,
            loss_fn=nn.CrossEntropyLoss(),
        )


def test_load_state_dict_with_wrong_shapes_raises() -> None:
    a = _mlp()
    opt = BlockDiagonalHessianFree(a, loss_fn=nn.CrossEntropyLoss())
    _train(opt, 1)
    saved = opt.state_dict()
    saved["state"][1]["warm_start"] = torch.zeros(7, dtype=F64)
    with pytest.raises(ValueError, match="'warm_start' of parameter 1"):
        BlockDiagonalHessianFree(_mlp(), loss_fn=nn.CrossEntropyLoss()).load_state_dict(saved)


def test_layer_blocks_and_tied_weights() -> None:
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
            self.dec.weight = self.enc.weight

        def forward(self, x):
            return self.head(torch.tanh(self.dec(torch.tanh(self.enc(x)))))

    model = Tied().to(F64)
    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss())
    assert opt.block_names() == [["enc.weight", "enc.bias", "dec.bias"], ["head.weight", "head.bias"]]
    x, y = torch.randn(8, 4, dtype=F64), torch.randint(0, 2, (8,))
    opt.step(x, y)
    assert torch.equal(model.enc.weight, model.dec.weight)
