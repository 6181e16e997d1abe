"""HesScale, HesScaleGN, BL89: exactness structure and rules against torch.func (float64).

Numbered comments refer to the acceptance checks of docs/algorithms/hesscale.md ("Tests").
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from dense_diagonal import Op, dense_diagonal
from hesscale_helpers import (
    F64,
    Shift,
    exact_diagonals,
    ggn_diagonals,
    hesscale_diagonals,
    max_abs_diff,
)
from torch import nn
from torch.func import hessian, jacrev

from hessopt.curvature import hesscale
from hessopt.curvature.hesscale_modules import pool_backward
from hessopt.curvature.loss_curvature import loss_spec, output_hessian_diagonal

EXACT = 1e-10


def _seed(s: int) -> None:
    torch.manual_seed(s)


def _linear(x, w, b):
    return F.linear(x, w, b)


# ------------------------------------------------------------------------------------- 1. seeds
LOSS_CASES = [
    ("ce", lambda r: nn.CrossEntropyLoss(reduction=r), "index"),
    (
        "ce_weight_ignore_smooth",
        lambda r: nn.CrossEntropyLoss(
            weight=torch.tensor([0.5, 2.0, 1.0, 1.5], dtype=F64),
            ignore_index=1,
            label_smoothing=0.2,
            reduction=r,
        ),
        "index",
    ),  # fmt: skip
    ("ce_soft", lambda r: nn.CrossEntropyLoss(label_smoothing=0.1, reduction=r), "soft"),
    ("mse", lambda r: nn.MSELoss(reduction=r), "real"),
    (
        "bce",
        lambda r: nn.BCEWithLogitsLoss(pos_weight=torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=F64), reduction=r),
        "unit",
    ),  # fmt: skip
    ("nll", lambda r: nn.NLLLoss(reduction=r), "index"),
]


def _targets(kind: str, n: int, c: int) -> torch.Tensor:
    if kind == "index":
        return torch.randint(0, c, (n,))
    if kind == "soft":
        return torch.softmax(torch.randn(n, c, dtype=F64), 1)
    if kind == "unit":
        return torch.rand(n, c, dtype=F64)
    return torch.randn(n, c, dtype=F64)


@pytest.mark.parametrize("case", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("n", [1, 7])
def test_seed_is_the_exact_output_hessian_diagonal(case, reduction, n):  # check 1
    _seed(n)
    name, make, kind = case
    loss = make(reduction)
    z = torch.randn(n, 4, dtype=F64)
    if name == "nll":
        z = torch.log_softmax(z, 1)
    y = _targets(kind, n, 4)
    h = hessian(lambda v: loss(v, y))(z).reshape(z.numel(), z.numel())
    seed = output_hessian_diagonal(loss_spec(loss), z, y)
    assert float((seed.reshape(-1) - h.diagonal()).abs().max()) <= 1e-14


def test_seed_closed_forms():  # check 1: the formulas themselves
    _seed(0)
    z, y = torch.randn(7, 5, dtype=F64), torch.randint(0, 5, (7,))
    q = torch.softmax(z, 1)
    for red, scale in (("mean", 1 / 7), ("sum", 1.0)):
        seed = output_hessian_diagonal(loss_spec(nn.CrossEntropyLoss(reduction=red)), z, y)
        torch.testing.assert_close(seed, (q - q * q) * scale, rtol=0, atol=1e-15)
        mse = output_hessian_diagonal(loss_spec(nn.MSELoss(reduction=red)), z, z)
        assert torch.all(mse == (2 / 35 if red == "mean" else 2.0))
        s = torch.sigmoid(z)
        bce = output_hessian_diagonal(loss_spec(nn.BCEWithLogitsLoss(reduction=red)), z, torch.rand_like(z))
        torch.testing.assert_close(bce, s * (1 - s) * (1 / 35 if red == "mean" else 1.0), rtol=0, atol=1e-15)
        nll = output_hessian_diagonal(loss_spec(nn.NLLLoss(reduction=red)), torch.log_softmax(z, 1), y)
        assert torch.all(nll == 0)


def test_cross_entropy_seed_on_spatial_outputs():  # check 1 for (N, C, H, W) logits
    _seed(1)
    loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0, 0.5], dtype=F64), label_smoothing=0.1)
    z, y = torch.randn(2, 3, 2, 2, dtype=F64), torch.randint(0, 3, (2, 2, 2))
    h = hessian(lambda v: loss(v, y))(z).reshape(z.numel(), z.numel())
    seed = output_hessian_diagonal(loss_spec(loss), z, y)
    assert float((seed.reshape(-1) - h.diagonal()).abs().max()) <= 1e-14


# ------------------------------------------------------------------------------------- 2. last layer
def _random_net(act: type[nn.Module], out: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(4, 6), act(), nn.Linear(6, 5), act(), nn.Linear(5, out)
    ).double()  # fmt: skip


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid, nn.ELU, nn.GELU, nn.SiLU])
@pytest.mark.parametrize("loss_name", ["ce", "mse", "bce"])
@pytest.mark.parametrize("method", ["hesscale", "hesscale_gn"])
def test_last_layer_is_exact(act, loss_name, method):  # check 2
    _seed(2)
    model = _random_net(act)
    x = torch.randn(7, 4, dtype=F64)
    loss, y = {
        "ce": (nn.CrossEntropyLoss(), torch.randint(0, 3, (7,))),
        "mse": (nn.MSELoss(), torch.randn(7, 3, dtype=F64)),
        "bce": (nn.BCEWithLogitsLoss(), torch.rand(7, 3, dtype=F64)),
    }[loss_name]
    ours = hesscale_diagonals(model, loss, x, y, method)
    ref = exact_diagonals(model, loss, x, y)
    assert max_abs_diff(ours, ref, ["4.weight", "4.bias"]) <= EXACT


# ------------------------------------------------------------------------------------- 3. BL89
def test_bl89_seed_is_the_target_only_logsoftmax_construction():  # check 3
    _seed(3)
    n, c = 7, 5
    z, y = torch.randn(n, c, dtype=F64), torch.randint(0, c, (n,))
    q = torch.softmax(z, 1)
    seed = output_hessian_diagonal(loss_spec(nn.CrossEntropyLoss()), z, y, bl89=True)
    expected = torch.zeros_like(z)
    expected[torch.arange(n), y] = (q[torch.arange(n), y] * (1 - q[torch.arange(n), y])) / n
    torch.testing.assert_close(seed, expected, rtol=0, atol=1e-15)
    # the construction: LogSoftmax treated elementwise (its Jacobian's and second derivative's diagonal only)
    # in front of the linear NLL loss, with NLL's exact gradient -p/N
    g_nll = torch.func.grad(lambda v: F.nll_loss(v, y))(torch.log_softmax(z, 1))
    jac = jacrev(lambda v: torch.log_softmax(v, 1))(z).reshape(n * c, n * c).diagonal()
    second = torch.stack([
        hessian(lambda v, k=k: torch.log_softmax(v, 1).reshape(-1)[k])(z).reshape(n * c, n * c)[k, k]
        for k in range(n * c)
    ])  # fmt: skip
    construction = jac * jac * 0.0 + second * g_nll.reshape(-1)  # NLL's seed is 0
    torch.testing.assert_close(seed.reshape(-1), construction, rtol=0, atol=1e-15)


def test_bl89_equals_hesscale_for_mse_and_differs_for_ce():  # check 3
    _seed(4)
    model = _random_net(nn.Tanh)
    x, y = torch.randn(5, 4, dtype=F64), torch.randn(5, 3, dtype=F64)
    a = hesscale_diagonals(model, nn.MSELoss(), x, y, "bl89")
    b = hesscale_diagonals(model, nn.MSELoss(), x, y, "hesscale")
    assert max_abs_diff(a, b) == 0.0
    yc = torch.randint(0, 3, (5,))
    a = hesscale_diagonals(model, nn.CrossEntropyLoss(), x, yc, "bl89")
    b = hesscale_diagonals(model, nn.CrossEntropyLoss(), x, yc, "hesscale")
    assert max_abs_diff(a, b) > 1e-4


def test_logsoftmax_nll_is_fused_into_the_cross_entropy_seed():
    _seed(5)
    body = _random_net(nn.Tanh)
    with_ls = nn.Sequential(body, nn.LogSoftmax(dim=1))
    x, y = torch.randn(6, 4, dtype=F64), torch.randint(0, 3, (6,))
    for method in ("hesscale", "bl89", "hesscale_gn"):
        a = hesscale_diagonals(with_ls, nn.NLLLoss(), x, y, method)
        b = hesscale_diagonals(body, nn.CrossEntropyLoss(), x, y, method)
        assert max_abs_diff({k[2:]: v for k, v in a.items()}, b) <= 1e-15


# ------------------------------------------------------------------------------------- 4. one hidden layer
ONE_HIDDEN = {
    "tanh": lambda: [nn.Tanh()],
    "sigmoid": lambda: [nn.Sigmoid()],
    "elu": lambda: [nn.ELU()],
    "softplus": lambda: [nn.Softplus(beta=1.5)],
    "chain": lambda: [nn.Tanh(), nn.Softplus(), nn.Sigmoid()],
}


@pytest.mark.parametrize("acts", list(ONE_HIDDEN), ids=list(ONE_HIDDEN))
@pytest.mark.parametrize("loss_name", ["mse", "bce"])
def test_one_hidden_layer_with_diagonal_output_hessian_is_exact(acts, loss_name):  # check 4
    _seed(6)
    model = nn.Sequential(nn.Linear(3, 5), *ONE_HIDDEN[acts](), nn.Linear(5, 2)).double()
    x = torch.randn(7, 3, dtype=F64)
    loss, y = (
        (nn.MSELoss(), torch.randn(7, 2, dtype=F64))
        if loss_name == "mse"
        else (nn.BCEWithLogitsLoss(), torch.rand(7, 2, dtype=F64))
    )
    assert max_abs_diff(hesscale_diagonals(model, loss, x, y), exact_diagonals(model, loss, x, y)) <= EXACT
    gn = hesscale_diagonals(model, loss, x, y, "hesscale_gn")
    assert max_abs_diff(gn, ggn_diagonals(model, loss, x, y)) <= EXACT


def test_one_hidden_layer_with_train_mode_dropout_is_exact():  # check 4, fixed mask
    _seed(7)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 2)).double()
    x, y = torch.randn(5, 3, dtype=F64), torch.randn(5, 2, dtype=F64)
    loss = nn.MSELoss()
    torch.manual_seed(11)
    ours = hesscale_diagonals(model, loss, x, y)
    torch.manual_seed(11)
    mask = F.dropout(torch.ones(5, 6, dtype=F64), 0.3, training=True)  # the same draw as the forward pass
    reference = nn.Sequential(model[0], model[1], _Scale(mask), model[3])
    assert (
        max_abs_diff(
            ours, {k.replace("3.", "3."): v for k, v in exact_diagonals(reference, loss, x, y).items()}
        )
        <= EXACT
    )


class _Scale(nn.Module):
    def __init__(self, factor: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("factor", factor)

    def forward(self, x):
        return x * self.factor


# ------------------------------------------------------------------------------------- 5. approximations
def _mlp_ops(act, n_layers: int) -> list[Op]:
    ops, prev = [], "x"
    for i in range(n_layers):
        ops.append(Op(_linear, [prev, f"{2 * i}.weight", f"{2 * i}.bias"], f"a{i}"))
        prev = f"a{i}"
        if i < n_layers - 1:
            ops.append(Op(act, [prev], f"h{i}"))
            prev = f"h{i}"
    return ops


def test_two_hidden_layers_structure_and_dense_agreement():  # check 5
    _seed(8)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(7, 3, dtype=F64), torch.randn(7, 2, dtype=F64)
    loss = nn.MSELoss()
    ours, ref = hesscale_diagonals(model, loss, x, y), exact_diagonals(model, loss, x, y)
    assert max_abs_diff(ours, ref, ["2.weight", "2.bias", "4.weight", "4.bias"]) <= EXACT
    assert max_abs_diff(ours, ref, ["0.weight"]) > 1e-6  # the first layer is approximated
    leaves = {"x": x, **dict(model.named_parameters())}
    dense = dense_diagonal(_mlp_ops(torch.tanh, 3), leaves, "a2", lambda z: F.mse_loss(z, y))
    assert max_abs_diff(ours, dense) <= 1e-12
    gn = hesscale_diagonals(model, loss, x, y, "hesscale_gn")
    assert (
        max_abs_diff(
            gn, dense_diagonal(_mlp_ops(torch.tanh, 3), leaves, "a2", lambda z: F.mse_loss(z, y), gn=True)
        )
        <= 1e-12
    )


def test_cross_entropy_hidden_layer_is_approximate():  # check 5
    _seed(9)
    model = nn.Sequential(nn.Linear(3, 5), nn.Sigmoid(), nn.Linear(5, 4)).double()
    x, y = torch.randn(7, 3, dtype=F64), torch.randint(0, 4, (7,))
    loss = nn.CrossEntropyLoss()
    ours, ref = hesscale_diagonals(model, loss, x, y), exact_diagonals(model, loss, x, y)
    assert max_abs_diff(ours, ref, ["0.weight"]) > 1e-6
    dense = dense_diagonal(_mlp_ops(torch.sigmoid, 2), {"x": x, **dict(model.named_parameters())}, "a1",
                           lambda z: F.cross_entropy(z, y))  # fmt: skip
    assert max_abs_diff(ours, dense) <= 1e-12


# ------------------------------------------------------------------------------------- 6. piecewise linear
def test_relu_nets_hesscale_equals_gn_and_hessian_equals_ggn():  # check 6
    _seed(10)
    mlp = nn.Sequential(
        nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 5), nn.LeakyReLU(0.1), nn.Linear(5, 3)
    ).double()
    cnn = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 3)
    ).double()  # fmt: skip
    y = torch.randint(0, 3, (5,))
    for model, x in ((mlp, torch.randn(5, 3, dtype=F64)), (cnn, torch.randn(5, 1, 4, 4, dtype=F64))):
        loss = nn.CrossEntropyLoss()
        a = hesscale_diagonals(model, loss, x, y)
        b = hesscale_diagonals(model, loss, x, y, "hesscale_gn")
        assert max_abs_diff(a, b) <= 1e-12
        assert max_abs_diff(exact_diagonals(model, loss, x, y), ggn_diagonals(model, loss, x, y)) <= 1e-12


# ------------------------------------------------------------------------------------- 7. batches
@pytest.mark.parametrize("method", ["hesscale", "hesscale_gn", "bl89"])
def test_batch_is_sum_of_examples_and_sum_reduction_scales(method):  # check 7
    _seed(12)
    model = _random_net(nn.Tanh)
    x, y = torch.randn(6, 4, dtype=F64), torch.randint(0, 3, (6,))
    batch = hesscale_diagonals(model, nn.CrossEntropyLoss(), x, y, method)
    per_example = [
        hesscale_diagonals(model, nn.CrossEntropyLoss(), x[i : i + 1], y[i : i + 1], method) for i in range(6)
    ]
    summed = {k: sum(d[k] for d in per_example) / 6 for k in batch}
    assert max_abs_diff(batch, summed) <= 1e-12
    total = hesscale_diagonals(model, nn.CrossEntropyLoss(reduction="sum"), x, y, method)
    assert max_abs_diff(total, {k: 6 * v for k, v in batch.items()}) <= 1e-12


# ------------------------------------------------------------------------------------- 8-10. convolution
def test_conv_with_one_by_one_output_map():  # check 8
    _seed(13)
    conv = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten()).double()
    x, y = torch.randn(5, 2, 3, 3, dtype=F64), torch.randint(0, 4, (5,))
    ours = hesscale_diagonals(conv, nn.CrossEntropyLoss(), x, y)
    assert max_abs_diff(ours, exact_diagonals(conv, nn.CrossEntropyLoss(), x, y)) <= EXACT
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4, 3)).double()
    yr = torch.randn(5, 3, dtype=F64)
    ours = hesscale_diagonals(net, nn.MSELoss(), x, yr)
    assert max_abs_diff(ours, exact_diagonals(net, nn.MSELoss(), x, yr)) <= EXACT
    lin = nn.Sequential(nn.Flatten(), nn.Linear(18, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        lin[1].weight.copy_(net[0].weight.reshape(4, 18))
        lin[1].bias.copy_(net[0].bias)
        lin[3].load_state_dict(net[3].state_dict())
    dense = hesscale_diagonals(lin, nn.MSELoss(), x, yr)
    torch.testing.assert_close(ours["0.weight"].reshape(4, 18), dense["1.weight"], rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (2, 1, 1, 2)]
)
def test_conv_into_mse_weight_is_exact(stride, padding, dilation, groups):  # check 9
    _seed(14)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride, padding, dilation, groups)).double()
    x = torch.randn(3, 2, 7, 7, dtype=F64)
    y = torch.randn_like(model(x)).detach()
    ours = hesscale_diagonals(model, nn.MSELoss(), x, y)
    assert max_abs_diff(ours, exact_diagonals(model, nn.MSELoss(), x, y)) <= EXACT


def test_conv_tanh_conv_feature_map_exact_and_weight_sharing_by_unfold():  # check 9
    _seed(15)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1), Shift(3, 3, 3), nn.Tanh(), nn.Conv2d(3, 2, 2, dilation=2)
    ).double()  # fmt: skip
    x = torch.randn(1, 2, 6, 6, dtype=F64)
    y = torch.randn_like(model(x)).detach()
    loss = nn.MSELoss()
    ours, ref = hesscale_diagonals(model, loss, x, y), exact_diagonals(model, loss, x, y)
    assert max_abs_diff(ours, ref, ["1.s", "3.weight", "3.bias"]) <= EXACT  # hidden feature map exact
    assert max_abs_diff(ours, ref, ["0.weight"]) > 1e-8  # weight sharing: not exact
    # independent evaluation of the conv weight rule: unfold(x∘x) contracted with the (exact) feature-map
    # diagonal, which the Shift parameter exposes
    cols = F.unfold(x * x, 3, padding=1, stride=2)  # (1, 2*9, 9 positions)
    d_map = ref["1.s"].reshape(3, 9)
    expected = torch.einsum("op,kp->ok", d_map, cols[0]).reshape(3, 2, 3, 3)
    torch.testing.assert_close(ours["0.weight"], expected, rtol=0, atol=1e-14)


def test_conv_transpose_rules():  # check 10
    _seed(16)
    single = nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)).double()
    x = torch.randn(2, 2, 3, 3, dtype=F64)
    y = torch.randn_like(single(x)).detach()
    assert (
        max_abs_diff(
            hesscale_diagonals(single, nn.MSELoss(), x, y), exact_diagonals(single, nn.MSELoss(), x, y)
        )
        <= EXACT
    )
    model = nn.Sequential(
        nn.ConvTranspose2d(2, 3, 2, stride=2),
        Shift(3, 4, 4),
        nn.Tanh(),
        nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1),
    ).double()  # fmt: skip
    x1 = torch.randn(1, 2, 2, 2, dtype=F64)
    y1 = torch.randn_like(model(x1)).detach()
    ours, ref = hesscale_diagonals(model, nn.MSELoss(), x1, y1), exact_diagonals(model, nn.MSELoss(), x1, y1)
    assert max_abs_diff(ours, ref, ["1.s", "3.weight", "3.bias"]) <= EXACT


@pytest.mark.parametrize("module,shape", [
    (nn.Conv1d(2, 3, 3, stride=2, padding=1), (2, 2, 7)),
    (nn.Conv3d(2, 2, 2, padding=1), (2, 2, 3, 3, 3)),
    (nn.ConvTranspose1d(2, 3, 3, stride=2), (2, 2, 4)),
])  # fmt: skip
def test_conv_1d_3d_and_transpose_1d_against_dense(module, shape):
    _seed(17)
    model = nn.Sequential(module, nn.Sigmoid(), nn.Flatten()).double()
    x = torch.randn(*shape, dtype=F64)
    out = model(x)
    y = torch.randint(0, out.shape[1], (shape[0],))
    ours = hesscale_diagonals(model, nn.CrossEntropyLoss(), x, y)
    m = model[0]
    ops = [
        Op(lambda x, w, b: F.conv_transpose1d(x, w, b, stride=2) if isinstance(m, nn.ConvTranspose1d)
           else m._conv_forward(x, w, b),
           ["x", "0.weight", "0.bias"], "a"),
        Op(torch.sigmoid, ["a"], "h"),
        Op(lambda h: h.flatten(1), ["h"], "z"),
    ]  # fmt: skip
    dense = dense_diagonal(
        ops, {"x": x, **dict(model.named_parameters())}, "z", lambda z: F.cross_entropy(z, y)
    )
    assert max_abs_diff(ours, dense) <= 1e-12


# ------------------------------------------------------------------------------------- 11. pooling
def test_avg_pool_and_max_pool_input_diagonals_are_exact():  # check 11
    _seed(18)
    model = nn.Sequential(Shift(2, 4, 4), nn.AvgPool2d(2), nn.Flatten()).double()
    x = torch.randn(1, 2, 4, 4, dtype=F64)
    y = torch.randn(1, 8, dtype=F64)
    ours = hesscale_diagonals(model, nn.MSELoss(), x, y)
    assert torch.allclose(ours["0.s"], torch.full_like(ours["0.s"], 2 / (8 * 16)), rtol=0, atol=1e-16)
    assert max_abs_diff(ours, exact_diagonals(model, nn.MSELoss(), x, y)) <= EXACT
    model = nn.Sequential(Shift(2, 4, 4), nn.MaxPool2d(2), nn.Flatten()).double()
    ours = hesscale_diagonals(model, nn.MSELoss(), x, y)
    assert max_abs_diff(ours, exact_diagonals(model, nn.MSELoss(), x, y)) <= EXACT


POOLS = [
    ("max", 2, {"kernel_size": 3, "stride": 1, "padding": 1, "dilation": 1, "ceil_mode": False},
     (2, 2, 5, 5)),
    ("max", 1, {"kernel_size": 2, "stride": 2, "padding": 0, "dilation": 2, "ceil_mode": True}, (2, 2, 7)),
    ("max", 3, {"kernel_size": 2, "stride": 1, "padding": 0, "dilation": 1, "ceil_mode": False},
     (1, 2, 3, 3, 3)),
    ("avg", 2, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False,
                "divisor_override": None}, (2, 2, 6, 6)),
    ("avg", 2, {"kernel_size": 2, "stride": 1, "padding": 1, "ceil_mode": False, "count_include_pad": True,
                "divisor_override": 3}, (1, 2, 4, 4)),
    ("avg", 1, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": True,
                "divisor_override": None}, (2, 2, 8)),
    ("avg", 3, {"kernel_size": 2, "stride": 2, "padding": 0, "ceil_mode": False, "count_include_pad": True,
                "divisor_override": None}, (1, 2, 4, 4, 4)),
    ("adaptive_avg", 2, {"output_size": (3, 2)}, (2, 2, 5, 7)),
    ("adaptive_avg", 1, {"output_size": 3}, (2, 2, 7)),
    ("adaptive_avg", 3, {"output_size": (2, 3, 1)}, (1, 2, 3, 5, 4)),
]  # fmt: skip


def _pool_fn(kind, dims, cfg):
    name = {"max": "max_pool", "avg": "avg_pool", "adaptive_avg": "adaptive_avg_pool"}[kind] + f"{dims}d"
    fn = getattr(F, name)
    if dims == 1 and kind == "avg":
        cfg = {k: v for k, v in cfg.items() if k != "divisor_override"}
    return lambda x: fn(x, **cfg)


@pytest.mark.parametrize("kind,dims,cfg,shape", POOLS)
def test_pool_rule_is_squared_pooling_matrix_transpose(kind, dims, cfg, shape):  # check 11
    _seed(19)
    x = torch.randn(*shape, dtype=F64)
    pool = _pool_fn(kind, dims, cfg)
    out = pool(x)
    a = jacrev(pool)(x).reshape(out.numel(), x.numel())
    d_out = torch.rand_like(out)
    full_cfg = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "count_include_pad": True,
                "divisor_override": None, "output_size": None, **cfg}  # fmt: skip
    ours = pool_backward(kind, dims, x, d_out, full_cfg)
    torch.testing.assert_close(ours.reshape(-1), (a * a).t() @ d_out.reshape(-1), rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------------- new rules
def test_batchnorm_eval_is_exact_and_train_mode_raises():
    _seed(20)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2)).double()
    with pytest.raises(hesscale.UnsupportedModelError, match=r"BatchNorm1d.*training mode"):
        hesscale.extend(model, nn.MSELoss())
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.normal_()
        model[1].bias.normal_()
    model.eval()
    x, y = torch.randn(6, 3, dtype=F64), torch.randn(6, 2, dtype=F64)
    ours = hesscale_diagonals(model, nn.MSELoss(), x, y)
    assert max_abs_diff(ours, exact_diagonals(model, nn.MSELoss(), x, y)) <= EXACT  # elementwise: exact
    conv = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)
    ).double()
    with torch.no_grad():
        conv[1].running_var.uniform_(0.5, 2.0)
        conv[1].weight.normal_()
    conv.eval()
    xc, yc = torch.randn(3, 1, 4, 4, dtype=F64), torch.randint(0, 3, (3,))
    bn = conv[1]
    ops = [
        Op(lambda x, w, b: F.conv2d(x, w, b), ["x", "0.weight", "0.bias"], "a"),
        Op(lambda a, w, b: F.batch_norm(a, bn.running_mean, bn.running_var, w, b, False, 0.0, bn.eps),
           ["a", "1.weight", "1.bias"], "n"),
        Op(torch.relu, ["n"], "r"),
        Op(lambda r: r.flatten(1), ["r"], "f"),
        Op(_linear, ["f", "4.weight", "4.bias"], "z"),
    ]  # fmt: skip
    dense = dense_diagonal(
        ops, {"x": xc, **dict(conv.named_parameters())}, "z", lambda z: F.cross_entropy(z, yc)
    )
    assert max_abs_diff(hesscale_diagonals(conv, nn.CrossEntropyLoss(), xc, yc), dense) <= 1e-12
    model.train()
    with pytest.raises(RuntimeError, match="training mode"):  # switched back after set-up: refused at forward
        ext = hesscale.extend(nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5).eval()).double(), nn.MSELoss())
        ext._model[1].train()
        ext._model(x)


class _Residual(nn.Module):
    """in-Linear, then ``h + f2(tanh(f1(h)))`` (functional tanh on h), then out-Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.f1, self.f2, self.out = (
            nn.Linear(3, 4),
            nn.Linear(4, 4),
            nn.Linear(4, 4),
            nn.Linear(4, 2),
        )
        self.act = nn.Tanh()

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        r = h + self.f2(self.act(self.f1(h)))
        return self.out(r)


def _residual_ops() -> list[Op]:
    return [
        Op(_linear, ["x", "inp.weight", "inp.bias"], "a0"),
        Op(torch.tanh, ["a0"], "h"),
        Op(_linear, ["h", "f1.weight", "f1.bias"], "a1"),
        Op(torch.tanh, ["a1"], "t"),
        Op(_linear, ["t", "f2.weight", "f2.bias"], "a2"),
        Op(torch.add, ["h", "a2"], "r"),
        Op(_linear, ["r", "out.weight", "out.bias"], "z"),
    ]


@pytest.mark.parametrize("method", ["hesscale", "hesscale_gn"])
def test_residual_branch_rule(method):
    _seed(21)
    model = _Residual().double()
    x, y = torch.randn(5, 3, dtype=F64), torch.randn(5, 2, dtype=F64)
    loss = nn.MSELoss()
    ours = hesscale_diagonals(model, loss, x, y, method)
    dense = dense_diagonal(_residual_ops(), {"x": x, **dict(model.named_parameters())}, "z",
                           lambda z: F.mse_loss(z, y), gn=method == "hesscale_gn")  # fmt: skip
    assert max_abs_diff(ours, dense) <= 1e-12
    if method == "hesscale":
        exact = exact_diagonals(model, loss, x, y)
        # after the merge (out) exact; the input layer feeds both branches: cross terms dropped
        assert max_abs_diff(ours, exact, ["out.weight", "out.bias"]) <= EXACT
        assert max_abs_diff(ours, exact, ["inp.weight"]) > 1e-6


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f1, self.f2 = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return x + self.f2(torch.sigmoid(self.f1(x)))


def test_residual_branch_parameters_into_mse_are_exact():
    _seed(22)
    model = _Block().double()
    x, y = torch.randn(6, 4, dtype=F64), torch.randn(6, 4, dtype=F64)
    ours = hesscale_diagonals(model, nn.MSELoss(), x, y)
    assert max_abs_diff(ours, exact_diagonals(model, nn.MSELoss(), x, y)) <= EXACT


class _LSTMNet(nn.Module):
    def __init__(self, layers: int, steps_out: str = "last") -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, num_layers=layers, batch_first=True)
        self.head = nn.Linear(4, 2)
        self.steps_out = steps_out

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def _lstm_ops(layers: int, steps: int, hidden: int, with_h0: bool = False) -> list[Op]:
    ops = [Op(lambda x, t=t: x[:, t], ["x"], f"x{t}") for t in range(steps)]
    prev = [f"x{t}" for t in range(steps)]
    for layer in range(layers):
        h = c = None
        if with_h0:
            h, c = f"h0_{layer}", f"c0_{layer}"
        seq = []
        for t in range(steps):
            names = [prev[t], f"lstm.weight_ih_l{layer}", f"lstm.bias_ih_l{layer}", f"lstm.bias_hh_l{layer}"]
            if h is None:
                ops.append(Op(lambda x, w, b1, b2: F.linear(x, w, b1) + b2, names, f"z{layer}{t}"))
            else:
                ops.append(Op(lambda x, w, b1, b2, hp, wh: F.linear(x, w, b1) + b2 + F.linear(hp, wh),
                              [*names, h, f"lstm.weight_hh_l{layer}"], f"z{layer}{t}"))  # fmt: skip
            for k, (g, act) in enumerate(
                (("i", torch.sigmoid), ("f", torch.sigmoid), ("g", torch.tanh), ("o", torch.sigmoid))
            ):
                ops.append(
                    Op(
                        lambda z, k=k, act=act: act(z[:, k * hidden : (k + 1) * hidden]),
                        [f"z{layer}{t}"],
                        f"{g}{layer}{t}",
                    )
                )
            if c is None:
                ops.append(Op(lambda i, g: i * g, [f"i{layer}{t}", f"g{layer}{t}"], f"c{layer}{t}"))
            else:
                ops.append(
                    Op(
                        lambda f, cp, i, g: f * cp + i * g,
                        [f"f{layer}{t}", c, f"i{layer}{t}", f"g{layer}{t}"],
                        f"c{layer}{t}",
                    )
                )
            ops.append(Op(lambda o, c: o * torch.tanh(c), [f"o{layer}{t}", f"c{layer}{t}"], f"h{layer}{t}"))
            h, c = f"h{layer}{t}", f"c{layer}{t}"
            seq.append(h)
        prev = seq
    ops.append(Op(_linear, [prev[-1], "head.weight", "head.bias"], "z"))
    return ops


@pytest.mark.parametrize("method", ["hesscale", "hesscale_gn"])
@pytest.mark.parametrize("layers,steps", [(1, 3), (2, 2)])
def test_lstm_against_dense_unrolled_cell(method, layers, steps):
    _seed(23)
    model = _LSTMNet(layers).double()
    x, y = torch.randn(3, steps, 3, dtype=F64), torch.randint(0, 2, (3,))
    ours = hesscale_diagonals(model, nn.CrossEntropyLoss(), x, y, method)
    dense = dense_diagonal(_lstm_ops(layers, steps, 4), {"x": x, **dict(model.named_parameters())}, "z",
                           lambda z: F.cross_entropy(z, y), gn=method == "hesscale_gn")  # fmt: skip
    assert max_abs_diff(ours, dense) <= 1e-12


def test_lstm_one_step_into_mse_is_exact():
    _seed(24)

    class OneStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 4)

        def forward(self, x):
            out, _ = self.lstm(x)
            return out[0]

    model = OneStep().double()
    x, y = torch.randn(1, 5, 3, dtype=F64), torch.randn(5, 4, dtype=F64)
    ours = hesscale_diagonals(model, nn.MSELoss(), x, y)
    assert max_abs_diff(ours, exact_diagonals(model, nn.MSELoss(), x, y)) <= EXACT


# ------------------------------------------------------------------------------------- functions
class _Glue(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, padding=1)
        self.lin = nn.Linear(6, 4)
        self.scale = nn.Parameter(torch.tensor([0.7, -1.2, 0.4], dtype=F64).reshape(3, 1))

    def forward(self, x):
        a = self.conv(x)  # (N, 3, 5)
        b = F.silu(a * self.scale)  # parameter product (get_attr) and functional activation
        c = torch.cat([b[:, :, :2], b[:, :, 3:] * 0.5], dim=2)  # indexing, scaling, cat: (N, 3, 4)
        d = c.permute(0, 2, 1).mean(dim=1)  # (N, 3)
        e = torch.cat([d, F.gelu(d, approximate="tanh")], 1)  # (N, 6)
        return self.lin(e.view(x.size(0), -1))


def test_functions_between_modules_against_dense():
    _seed(25)
    model = _Glue().double()
    x, y = torch.randn(3, 2, 5, dtype=F64), torch.randint(0, 4, (3,))
    ops = [
        Op(lambda x, w, b: F.conv1d(x, w, b, padding=1), ["x", "conv.weight", "conv.bias"], "a"),
        Op(lambda a, s: a * s, ["a", "scale"], "as"),
        Op(F.silu, ["as"], "b"),
        Op(lambda b: torch.cat([b[:, :, :2], b[:, :, 3:] * 0.5], dim=2), ["b"], "c"),
        Op(lambda c: c.permute(0, 2, 1).mean(dim=1), ["c"], "d"),
        Op(lambda d: torch.cat([d, d], 1), ["d"], "dd"),
    ]
    # cat([d, gelu(d)]) as two branches of d: the identity half and the gelu half
    ops = ops[:-1] + [
        Op(lambda d: F.gelu(d, approximate="tanh"), ["d"], "gd"),
        Op(lambda d, g: torch.cat([d, g], 1), ["d", "gd"], "e"),
        Op(_linear, ["e", "lin.weight", "lin.bias"], "z"),
    ]
    for method in ("hesscale", "hesscale_gn"):
        ours = hesscale_diagonals(model, nn.CrossEntropyLoss(), x, y, method)
        dense = dense_diagonal(ops, {"x": x, **dict(model.named_parameters())}, "z",
                               lambda z: F.cross_entropy(z, y), gn=method == "hesscale_gn")  # fmt: skip
        assert max_abs_diff(ours, dense) <= 1e-12


def test_inplace_relu_module_reuse_and_pads():
    _seed(26)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3, padding=1)
            self.act = nn.ReLU(inplace=True)  # called twice
            self.pad = nn.ZeroPad2d((1, 0, 0, 1))
            self.fc = nn.Linear(2 * 3 * 3, 3)

        def forward(self, x):
            h = self.act(self.c1(x))
            h = self.act(self.c2(self.pad(h)))
            return self.fc(F.avg_pool2d(h, 1).flatten(1))

    model = Net().double()
    x, y = torch.randn(2, 1, 4, 4, dtype=F64), torch.randint(0, 3, (2,))
    ours = hesscale_diagonals(model, nn.CrossEntropyLoss(), x, y)
    assert (
        max_abs_diff(
            exact_diagonals(model, nn.CrossEntropyLoss(), x, y),
            ggn_diagonals(model, nn.CrossEntropyLoss(), x, y),
        )
        <= 1e-12
    )
    ops = [
        Op(lambda x, w, b: F.conv2d(x, w, b), ["x", "c1.weight", "c1.bias"], "a1"),
        Op(torch.relu, ["a1"], "h1"),
        Op(lambda h: F.pad(h, (1, 0, 0, 1)), ["h1"], "p"),
        Op(lambda x, w, b: F.conv2d(x, w, b, padding=1), ["p", "c2.weight", "c2.bias"], "a2"),
        Op(torch.relu, ["a2"], "h2"), Op(lambda h: h.flatten(1), ["h2"], "f"),
        Op(_linear, ["f", "fc.weight", "fc.bias"], "z"),
    ]  # fmt: skip
    dense = dense_diagonal(
        ops, {"x": x, **dict(model.named_parameters())}, "z", lambda z: F.cross_entropy(z, y)
    )
    assert max_abs_diff(ours, dense) <= 1e-12


# ------------------------------------------------------------------------------------- 18. set-up errors
def test_unsupported_modules_raise_at_setup_naming_them():  # check 18
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.attn(x, x, x)[0])

    with pytest.raises(
        hesscale.UnsupportedModelError, match=r"'attn' \(MultiheadAttention\).*Supported modules:.*Linear"
    ):
        hesscale.extend(Attn(), nn.MSELoss())
    with pytest.raises(
        hesscale.UnsupportedModelError, match=r"BatchNorm2d.*training mode.*Supported modules"
    ):
        hesscale.extend(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), nn.MSELoss())
    with pytest.raises(hesscale.UnsupportedModelError, match=r"LayerNorm"):
        hesscale.extend(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), nn.MSELoss())

    class Matmul(nn.Module):
        def forward(self, x):
            return x @ x.t()

    with pytest.raises(hesscale.UnsupportedModelError, match=r"matmul"):
        hesscale.extend(Matmul(), nn.MSELoss())
    with pytest.raises(TypeError, match="loss_fn must be an instance"):
        hesscale.extend(nn.Linear(2, 2), F.mse_loss)
    with pytest.raises(ValueError, match="method must be one of"):
        hesscale.extend(nn.Linear(2, 2), nn.MSELoss(), "hessian")


# ------------------------------------------------------------------------------------- derivative tables
ACTIVATION_MODULES = [
    nn.Tanh(), nn.Sigmoid(), nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-0.5, 0.7), nn.LeakyReLU(0.1),
    nn.LeakyReLU(-0.2), nn.ELU(0.7), nn.ELU(-0.5), nn.SELU(), nn.GELU(), nn.GELU(approximate="tanh"),
    nn.SiLU(), nn.Softplus(beta=2.0, threshold=3.0), nn.LogSigmoid(),
]  # fmt: skip


@pytest.mark.parametrize("module", ACTIVATION_MODULES, ids=lambda m: repr(m))
def test_activation_derivatives_match_autograd(module):
    from hessopt.curvature.hesscale_modules import module_rule

    rule = module_rule(module)
    a = torch.linspace(-4, 4, 41, dtype=F64)
    a = a[a.abs() > 1e-9]  # kinks at 0 follow PyTorch's convention, checked by the networks above
    kind, params, saved, _ = rule.save(module, (a,), module(a))
    d1, d2 = kind.derivs(saved, params, False)
    f1 = torch.func.vmap(torch.func.grad(lambda t: module(t)))(a)
    f2 = torch.func.vmap(torch.func.grad(torch.func.grad(lambda t: module(t))))(a)
    torch.testing.assert_close(d1, f1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.zeros_like(a) if d2 is None else d2, f2, rtol=1e-10, atol=1e-12)


def test_linear_on_sequences_and_pooling_modules_against_dense():
    _seed(27)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.avg = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True)
            self.adapt = nn.AdaptiveAvgPool2d((2, 3))
            self.seq = nn.Linear(3, 4)  # applied to (N, T=4, 3): weights shared over T
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            h = torch.tanh(self.adapt(self.avg(self.conv(x))))  # (N, 2, 2, 3)
            s = torch.sigmoid(self.seq(h.reshape(x.size(0), 4, 3)))  # (N, 4, 4)
            return self.head(s.flatten(1))

    model = Net().double()
    x, y = torch.randn(2, 1, 6, 7, dtype=F64), torch.randint(0, 3, (2,))
    avg = model.avg
    ops = [
        Op(lambda x, w, b: F.conv2d(x, w, b, padding=1), ["x", "conv.weight", "conv.bias"], "a"),
        Op(lambda a: F.avg_pool2d(a, 3, 2, 1, avg.ceil_mode, avg.count_include_pad), ["a"], "p"),
        Op(lambda p: F.adaptive_avg_pool2d(p, (2, 3)), ["p"], "q"),
        Op(torch.tanh, ["q"], "h"),
        Op(lambda h, w, b: F.linear(h.reshape(2, 4, 3), w, b), ["h", "seq.weight", "seq.bias"], "s0"),
        Op(torch.sigmoid, ["s0"], "s"),
        Op(lambda s, w, b: F.linear(s.flatten(1), w, b), ["s", "head.weight", "head.bias"], "z"),
    ]
    for method in ("hesscale", "hesscale_gn"):
        ours = hesscale_diagonals(model, nn.CrossEntropyLoss(), x, y, method)
        dense = dense_diagonal(ops, {"x": x, **dict(model.named_parameters())}, "z",
                               lambda z: F.cross_entropy(z, y), gn=method == "hesscale_gn")  # fmt: skip
        assert max_abs_diff(ours, dense) <= 1e-12


def test_embedding_against_dense():
    _seed(28)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(6, 3, padding_idx=0)
            self.fc = nn.Linear(3, 2)

        def forward(self, idx):
            return self.fc(torch.tanh(self.emb(idx)).mean(1))

    model = Net().double()
    idx, y = torch.tensor([[1, 2, 2], [0, 3, 5]]), torch.randn(2, 2, dtype=F64)
    ours = hesscale_diagonals(model, nn.MSELoss(), idx, y)
    w = model.emb.weight
    ops = [
        Op(lambda w: F.embedding(idx, w, padding_idx=0), ["emb.weight"], "e"),
        Op(torch.tanh, ["e"], "t"),
        Op(lambda t: t.mean(1), ["t"], "m"),
        Op(_linear, ["m", "fc.weight", "fc.bias"], "z"),
    ]
    leaves = {"emb.weight": w, "fc.weight": model.fc.weight, "fc.bias": model.fc.bias}
    dense = dense_diagonal(ops, leaves, "z", lambda z: F.mse_loss(z, y))
    assert max_abs_diff(ours, dense) <= 1e-12
    assert torch.all(ours["emb.weight"][0] == 0)  # the padding row, as its gradient
