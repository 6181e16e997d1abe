"""Shared helpers of the HesScale tests: run the extension once, exact references with torch.func."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev

from hessopt.curvature import hesscale

F64 = torch.float64


def hesscale_diagonals(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor, method: str = "hesscale"):
    """``{name: diagonal}`` from one forward/backward through a fresh extension (removed afterwards)."""
    ext = hesscale.extend(model, loss_fn, method)
    try:
        loss_fn(model(x), y).backward()
        out = {n: hesscale.take_diagonal(p, method) for n, p in model.named_parameters() if p.requires_grad}
    finally:
        ext.remove()
        model.zero_grad(set_to_none=True)
    return out


def _flat_loss(model: nn.Module, loss, x: Tensor, y: Tensor):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    buffers = dict(model.named_buffers())
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])

    def unflat(t: Tensor) -> dict[str, Tensor]:
        return {n: v.reshape(s) for n, v, s in zip(names, t.split(sizes), shapes, strict=True)}

    def output(t: Tensor) -> Tensor:
        return functional_call(model, {**buffers, **unflat(t)}, (x,))

    def fn(t: Tensor) -> Tensor:
        return loss(output(t), y)

    return fn, output, theta, unflat


def exact_diagonals(model: nn.Module, loss, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """The exact Hessian diagonal (full ``torch.func.hessian`` of the flat parameters; small models)."""
    fn, _, theta, unflat = _flat_loss(model, loss, x, y)
    return unflat(hessian(fn)(theta).diagonal())


def ggn_diagonals(model: nn.Module, loss, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """``diag(J^T ∇²_z L J)`` from the full output Jacobian (``jacrev``) and output Hessian."""
    _, output, theta, unflat = _flat_loss(model, loss, x, y)
    z = output(theta)
    jac = jacrev(output)(theta).reshape(z.numel(), theta.numel())
    h_out = hessian(lambda v: loss(v, y))(z.detach()).reshape(z.numel(), z.numel())
    return unflat(((h_out @ jac) * jac).sum(0))


def max_abs_diff(a: dict[str, Tensor], b: dict[str, Tensor], keys=None) -> float:
    """Largest absolute difference over the given (default: all of ``b``'s) entries."""
    keys = list(b) if keys is None else keys
    return max(float((a[k] - b[k]).abs().max()) for k in keys)


class Shift(nn.Module):
    """``x + s`` with a parameter ``s`` of one example's shape: with batch size 1, the HesScale diagonal of
    ``s`` is the diagonal at the activation ``x`` (so activation diagonals can be compared)."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.zeros(shape, dtype=F64))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.s
