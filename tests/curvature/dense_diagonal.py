"""An independent dense evaluation of diagonal curvature back-propagation, for tests.

A network is written as a list of :class:`Op` (a function of named tensors). For every op and every
distinct input name, the op's full Jacobian ``J`` (``torch.func.jacrev``) and the diagonal of the
Hessian of ``g_out · op`` (``torch.func.hessian``, with ``g_out`` the exact gradient at the op's output
from autograd) give that input's contribution ``(J∘J)^T D_out + diag ∇²(g_out · op)``; contributions from
several ops add up (branches). Starting from the exact diagonal of the loss Hessian at the output
(``torch.func.hessian`` of the loss), this is HesScale's principle applied with dense linear algebra and no
layer-specific formula: HesScale's rules must reproduce it to rounding error wherever the ops are
chosen at the granularity of HesScale's rules (a Linear layer, an activation, a product, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import hessian, jacrev


@dataclass
class Op:
    """``output = fn(*inputs)`` over named tensors."""

    fn: Callable[..., Tensor]
    inputs: Sequence[str]
    output: str


def forward(ops: Sequence[Op], leaves: dict[str, Tensor]) -> dict[str, Tensor]:
    """All named values (autograd-tracked from the leaves)."""
    values = dict(leaves)
    for op in ops:
        values[op.output] = op.fn(*[values[name] for name in op.inputs])
    return values


def dense_diagonal(
    ops: Sequence[Op],
    leaves: dict[str, Tensor],
    output: str,
    loss: Callable[[Tensor], Tensor],
    *,
    gn: bool = False,
    seed: Tensor | None = None,
) -> dict[str, Tensor]:
    """The diagonal at every named leaf that requires grad (``gn``: without second-derivative terms).

    ``seed`` replaces the exact loss-Hessian diagonal at ``output`` (e.g. BL89's).
    """
    leaves = {k: v.detach().requires_grad_(v.requires_grad) for k, v in leaves.items()}
    values = forward(ops, leaves)
    names = [k for k, v in values.items() if v.requires_grad]
    loss_value = loss(values[output])
    grads = dict(
        zip(
            names, torch.autograd.grad(loss_value, [values[k] for k in names], allow_unused=True), strict=True
        )
    )
    out = values[output].detach()
    if seed is None:
        seed = hessian(loss)(out).reshape(out.numel(), out.numel()).diagonal().reshape(out.shape)
    diag: dict[str, Tensor] = {output: seed}
    detached = {k: v.detach() for k, v in values.items()}
    for op in reversed(ops):
        d_out = diag.get(op.output)
        if d_out is None:
            continue
        g_out = grads.get(op.output)
        g_out = torch.zeros_like(d_out) if g_out is None else g_out.detach()
        for name in dict.fromkeys(op.inputs):
            if name not in names:
                continue
            x = detached[name]

            def f(v: Tensor, name=name, op=op) -> Tensor:
                return op.fn(*[v if n == name else detached[n] for n in op.inputs])

            jac = jacrev(f)(x).reshape(d_out.numel(), x.numel())
            contribution = (jac * jac).t().mv(d_out.reshape(-1))
            if not gn:
                second = hessian(lambda v, f=f, g_out=g_out: (g_out * f(v)).sum())(x).reshape(
                    x.numel(), x.numel()
                )
                contribution = contribution + second.diagonal()
            contribution = contribution.reshape(x.shape)
            diag[name] = contribution if name not in diag else diag[name] + contribution
    return {k: diag[k] for k in leaves if k in diag and leaves[k].requires_grad}
