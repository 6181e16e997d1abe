"""Closed-form output Hessians equal reverse-over-reverse autograd (hessian-free.md, check 2)."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import hessian

from hessopt.curvature.output_hessians import describe_loss, output_hessian

F64 = torch.float64
N, C = 6, 4


def _data(kind: str, seed: int = 0, spatial: tuple[int, ...] = (), ignore: int = -100):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(N, C, *spatial, generator=gen, dtype=F64)
    if kind == "index":
        y = torch.randint(0, C, (N, *spatial), generator=gen)
        y[1] = ignore  # an ignored row
        y[3] = 2
    elif kind == "prob":
        y = torch.softmax(torch.randn(N, C, *spatial, generator=gen, dtype=F64), dim=1)
    else:
        y = torch.rand(N, C, *spatial, generator=gen, dtype=F64)
    return z, y


def _dense(loss_fn, z, y) -> torch.Tensor:
    """The reference: torch.func.hessian of the loss in z, reshaped to (z.numel(), z.numel())."""
    return hessian(lambda o: loss_fn(o, y))(z).reshape(z.numel(), z.numel())


def _closed(loss_fn, z, y) -> torch.Tensor:
    h = output_hessian(loss_fn, z, y)
    eye = torch.eye(z.numel(), dtype=F64)
    return torch.stack([h(e.view_as(z)).reshape(-1) for e in eye])


W = torch.tensor([0.5, 2.0, 1.5, 0.25], dtype=F64)
CASES = [
    ("ce", nn.CrossEntropyLoss(), "index"),
    ("ce-sum", nn.CrossEntropyLoss(reduction="sum"), "index"),
    ("ce-weight", nn.CrossEntropyLoss(weight=W), "index"),
    ("ce-weight-sum", nn.CrossEntropyLoss(weight=W, reduction="sum"), "index"),
    ("ce-ignore", nn.CrossEntropyLoss(ignore_index=2), "index"),
    ("ce-weight-ignore", nn.CrossEntropyLoss(weight=W, ignore_index=2), "index"),
    ("ce-smooth", nn.CrossEntropyLoss(label_smoothing=0.1), "index"),
    ("ce-smooth-weight", nn.CrossEntropyLoss(weight=W, label_smoothing=0.2), "index"),
    ("ce-smooth-weight-sum", nn.CrossEntropyLoss(weight=W, label_smoothing=0.2, reduction="sum"), "index"),
    ("ce-prob", nn.CrossEntropyLoss(), "prob"),
    ("ce-prob-weight-smooth", nn.CrossEntropyLoss(weight=W, label_smoothing=0.1), "prob"),
    ("ce-functional", F.cross_entropy, "index"),
    ("ce-partial-sum", functools.partial(F.cross_entropy, reduction="sum"), "index"),
    ("mse", nn.MSELoss(), "real"),
    ("mse-sum", nn.MSELoss(reduction="sum"), "real"),
    ("mse-functional", F.mse_loss, "real"),
    ("bce", nn.BCEWithLogitsLoss(), "real"),
    ("bce-sum", nn.BCEWithLogitsLoss(reduction="sum"), "real"),
    ("bce-weight-pos", nn.BCEWithLogitsLoss(weight=torch.rand(C, dtype=F64) + 0.5, pos_weight=W), "real"),
    ("bce-functional", F.binary_cross_entropy_with_logits, "real"),
]


@pytest.mark.parametrize(("name", "loss_fn", "kind"), CASES, ids=[c[0] for c in CASES])
def test_closed_form_equals_reverse_over_reverse(name, loss_fn, kind) -> None:
    z, y = _data(kind, ignore=getattr(loss_fn, "ignore_index", -100))
    assert describe_loss(loss_fn).kind != "generic"
    torch.testing.assert_close(_closed(loss_fn, z, y), _dense(loss_fn, z, y), rtol=0, atol=1e-12)


def test_cross_entropy_with_spatial_dimensions() -> None:
    loss_fn = nn.CrossEntropyLoss(weight=W, ignore_index=-100)
    z, y = _data("index", spatial=(3,))
    torch.testing.assert_close(_closed(loss_fn, z, y), _dense(loss_fn, z, y), rtol=0, atol=1e-12)


def test_generic_loss_uses_reverse_over_reverse() -> None:
    def huber(z, y):
        return F.huber_loss(z, y, delta=0.3)

    z, y = _data("real")
    h = output_hessian(huber, z, y)
    assert h.spec.kind == "generic"
    torch.testing.assert_close(_closed(huber, z, y), _dense(huber, z, y), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("loss_fn", "kind", "expected"),
    [
        (nn.CrossEntropyLoss(reduction="sum"), "index", 5.0),  # one ignored row of six
        (nn.MSELoss(reduction="sum"), "real", float(N * C)),
        (nn.MSELoss(), "real", 1.0),
        (nn.BCEWithLogitsLoss(reduction="sum"), "real", float(N * C)),
    ],
)
def test_sum_scale_is_the_mean_divisor_for_sum_reduction(loss_fn, kind, expected) -> None:
    z, y = _data(kind)
    assert float(output_hessian(loss_fn, z, y).sum_scale) == expected


def test_unsupported_reduction_and_non_callable() -> None:
    with pytest.raises(ValueError, match="reduction"):
        describe_loss(nn.MSELoss(reduction="none"))
    with pytest.raises(TypeError, match="loss_fn"):
        describe_loss(3)
    assert describe_loss(functools.partial(F.mse_loss, size_average=None)).kind == "generic"
