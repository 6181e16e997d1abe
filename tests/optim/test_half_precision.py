"""bfloat16 where it is meaningful: the diagonal and Hessian-free methods train in it; the methods that
eigendecompose their estimate refuse half precision at construction with an error that names the fix."""

import pytest
import torch
from torch import nn

from hessopt.optim import (
    BFGS,
    OGR,
    AdaHesScale,
    AdaHesScaleGN,
    BlockDiagonalHessianFree,
    DiagOGR,
    SubspaceOGR,
)

LOSS = nn.CrossEntropyLoss()


def _problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=gen)
    y = (x[:, :3].sum(1) > 0).long()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 2)).to(torch.bfloat16)
    return model, x.to(torch.bfloat16), y


@pytest.mark.parametrize("cls", [DiagOGR, AdaHesScale, AdaHesScaleGN, BFGS, BlockDiagonalHessianFree])
def test_trains_in_bfloat16(cls):
    model, x, y = _problem()
    start = LOSS(model(x), y).item()
    if cls is BlockDiagonalHessianFree:
        opt = cls(model, loss_fn=LOSS)
        for _ in range(20):
            opt.step(x, y)
    else:
        opt = cls(model.parameters())
        if hasattr(opt, "attach"):
            opt.attach(model, LOSS)

        def closure():
            opt.zero_grad()
            loss = LOSS(model(x), y)
            loss.backward()
            return loss

        for _ in range(60):
            opt.step(closure)
    end = LOSS(model(x), y).item()
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in model.parameters())
    assert end < 0.5 * start, (start, end)


@pytest.mark.parametrize("cls", [OGR, SubspaceOGR])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_eigendecomposing_methods_refuse_half_precision(cls, dtype):
    model = nn.Linear(3, 2).to(dtype)
    expected = r"needs float32 or float64 parameters.*parameter 0.*model\.float\(\)"
    with pytest.raises(TypeError, match=expected):
        cls(model.parameters())
    opt = cls(nn.Linear(3, 2).parameters())
    with pytest.raises(TypeError, match="float32 or float64"):
        opt.add_param_group({"params": [torch.zeros(2, dtype=dtype, requires_grad=True)]})
