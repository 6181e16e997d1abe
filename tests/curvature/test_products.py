"""Block GGN/Hessian products against explicit matrices (hessian-free.md, checks 1, 3 and 12)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev

from hessopt.curvature.products import (
    BlockCurvature,
    ModelFunction,
    NonDeterministicCurvatureError,
    OutputActivationError,
    check_deterministic,
    check_logits_output,
    example_gradient_squares,
)

F64 = torch.float64
N = 8


def _mlp(out: int = 3, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, out)).to(F64)


def _batch(kind: str, out: int = 3, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 5, generator=gen, dtype=F64)
    if kind == "ce":
        y = torch.randint(0, out, (N,), generator=gen)
    else:
        y = torch.rand(N, out, generator=gen, dtype=F64)
    return x, y


LOSSES = {
    "ce": nn.CrossEntropyLoss(),
    "mse": nn.MSELoss(),
    "bce": nn.BCEWithLogitsLoss(),
    "generic": lambda z, y: F.mse_loss(z, y, reduction="sum") / 7.0,
}


def _explicit(model, loss_fn, x, y, curvature="ggn"):
    """Dense GGN (J^T H J with jacrev and hessian) or loss Hessian, in named_parameters order."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflat(t):
        out, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            out[n] = t[i : i + s.numel()].view(s)
            i += s.numel()
        return out

    def z_of(t):
        return functional_call(model, unflat(t), (x,))

    if curvature == "hessian":
        return hessian(lambda t: loss_fn(z_of(t), y))(theta)
    z = z_of(theta)
    J = jacrev(z_of)(theta).reshape(z.numel(), -1)
    H = hessian(lambda o: loss_fn(o, y))(z).reshape(z.numel(), z.numel())
    return J.T @ H @ J


def _block_diag(M, sizes):
    out = torch.zeros_like(M)
    i = 0
    for s in sizes:
        out[i : i + s, i : i + s] = M[i : i + s, i : i + s]
        i += s
    return out


def _operator(model, loss_fn, x, y, **kw):
    params = dict(model.named_parameters())
    blocks = kw.pop("blocks", [["0.weight", "0.bias"], ["2.weight", "2.bias"]])
    return BlockCurvature(model, loss_fn, (x,), y, params, blocks, **kw)


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("backend", ["loop", "vmap"])
@pytest.mark.parametrize("jvp", ["reverse", "forward"])
def test_block_ggn_equals_explicit_blocks(loss, backend, jvp) -> None:
    model = _mlp()
    x, y = _batch(loss)
    G = _explicit(model, LOSSES[loss], x, y)
    op = _operator(model, LOSSES[loss], x, y, backend=backend, jvp=jvp)
    assert op.sizes == [24, 15]
    Gbd = _block_diag(G, op.sizes)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(G.shape[0], generator=gen, dtype=F64)
        torch.testing.assert_close(op.matvec(v), Gbd @ v, rtol=0, atol=1e-10)
        torch.testing.assert_close(op.full_matvec(v), G @ v, rtol=0, atol=1e-10)
    # inactive blocks are not computed (zeros), active ones unchanged
    v = torch.randn(G.shape[0], generator=gen, dtype=F64)
    out = op.matvec(v, active=[False, True])
    assert torch.equal(out[:24], torch.zeros(24, dtype=F64))
    torch.testing.assert_close(out[24:], (Gbd @ v)[24:], rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["loop", "vmap"])
def test_block_hessian_equals_explicit_blocks(backend) -> None:
    model = _mlp()
    x, y = _batch("ce")
    Hs = _explicit(model, LOSSES["ce"], x, y, curvature="hessian")
    op = _operator(model, LOSSES["ce"], x, y, curvature="hessian", backend=backend)
    v = torch.randn(Hs.shape[0], generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.testing.assert_close(op.matvec(v), _block_diag(Hs, op.sizes) @ v, rtol=0, atol=1e-10)
    torch.testing.assert_close(op.quadratic_form(v), v @ Hs @ v, rtol=0, atol=1e-10)


def test_scale_and_per_tensor_blocks_and_fixed_parameters() -> None:
    model = _mlp()
    x, y = _batch("mse")
    G = _explicit(model, LOSSES["mse"], x, y)
    blocks = [["0.weight"], ["0.bias"], ["2.weight"], ["2.bias"]]
    op = _operator(model, LOSSES["mse"], x, y, blocks=blocks, scale=2.5)
    v = torch.randn(G.shape[0], generator=torch.Generator().manual_seed(5), dtype=F64)
    torch.testing.assert_close(op.matvec(v), 2.5 * _block_diag(G, [20, 4, 12, 3]) @ v, rtol=0, atol=1e-10)
    # a partial set of blocks: the other parameters are held fixed (the GGN restricted to the block)
    op2 = _operator(model, LOSSES["mse"], x, y, blocks=[["2.weight", "2.bias"]])
    torch.testing.assert_close(op2.matvec(v[24:]), G[24:, 24:] @ v[24:], rtol=0, atol=1e-10)


@pytest.mark.parametrize("loss", ["ce", "mse", "bce"])
def test_quadratic_form_equals_explicit(loss) -> None:
    model = _mlp()
    x, y = _batch(loss)
    G = _explicit(model, LOSSES[loss], x, y)
    op = _operator(model, LOSSES[loss], x, y)
    v = torch.randn(G.shape[0], generator=torch.Generator().manual_seed(6), dtype=F64)
    torch.testing.assert_close(op.quadratic_form(v), v @ G @ v, rtol=0, atol=1e-10)


def test_lstm_blocks_double_backward_equals_forward_mode() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True).to(F64)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = lstm, nn.Linear(4, 2).to(F64)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    net = Net()
    x = torch.randn(5, 6, 3, dtype=F64)
    y = torch.randint(0, 2, (5,))
    names = [n for n, _ in net.named_parameters()]
    blocks = [[n for n in names if n.endswith(s)] for s in ("_l0", "_l1")] + [["head.weight", "head.bias"]]
    params = dict(net.named_parameters())
    rev = BlockCurvature(net, nn.CrossEntropyLoss(), (x,), y, params, blocks, jvp="reverse")
    fwd = BlockCurvature(net, nn.CrossEntropyLoss(), (x,), y, params, blocks, jvp="forward")
    v = torch.randn(sum(rev.sizes), dtype=F64)
    torch.testing.assert_close(rev.matvec(v), fwd.matvec(v), rtol=0, atol=1e-12)


def test_batchnorm_buffers_untouched_and_dropout_detected() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)).to(F64).train()
    before = {n: b.clone() for n, b in model.named_buffers()}
    x, y = _batch("ce")
    params = dict(model.named_parameters())
    blocks = [[n] for n in params]

    def build():
        return BlockCurvature(model, nn.CrossEntropyLoss(), (x,), y, params, blocks)

    v = torch.randn(sum(build().sizes), dtype=F64)
    check_deterministic(build, v, module=model)  # train-mode BatchNorm is deterministic
    build().matvec(v)
    build().full_matvec(v)
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), f"buffer {n} changed"

    dropout = nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.5), nn.Tanh(), nn.Linear(4, 3)).to(F64).train()
    params = dict(dropout.named_parameters())

    def build_dropout():
        return BlockCurvature(dropout, nn.CrossEntropyLoss(), (x,), y, params, [list(params)])

    with pytest.raises(NonDeterministicCurvatureError, match=r"dropout modules \['1'\].*eval"):
        check_deterministic(build_dropout, torch.randn(39, dtype=F64), module=dropout)
    dropout.eval()
    check_deterministic(build_dropout, torch.randn(39, dtype=F64), module=dropout)


@pytest.mark.parametrize(
    ("last", "fix"),
    [(nn.Softmax(dim=1), "CrossEntropyLoss"), (nn.LogSoftmax(dim=1), "NLLLoss"), (nn.Sigmoid(), "BCEWith")],
)
def test_probability_output_raises_naming_the_fix(last, fix) -> None:
    model = nn.Sequential(nn.Linear(5, 3), nn.Sequential(nn.Tanh(), last)).to(F64)
    with pytest.raises(OutputActivationError, match=rf"{type(last).__name__} module '1.1'.*logits.*{fix}"):
        check_logits_output(model, (torch.randn(2, 5, dtype=F64),))
    check_logits_output(_mlp(), (torch.randn(2, 5, dtype=F64),))  # logits: fine


def test_example_gradient_squares_match_a_loop() -> None:
    model = _mlp()
    x, y = _batch("ce")
    params = {n: p.detach() for n, p in model.named_parameters()}
    names = list(params)
    z = model(x).detach().requires_grad_()
    e = torch.autograd.grad(F.cross_entropy(z, y), z)[0]
    got = example_gradient_squares(ModelFunction(model, (x,), params), params, names, e, chunk_size=3)
    expected = torch.zeros_like(got)
    for i in range(N):
        model.zero_grad()
        (model(x[i : i + 1]) * e[i : i + 1]).sum().backward()
        expected += torch.cat([p.grad.reshape(-1) for p in model.parameters()]) ** 2
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)
