"""Exact curvature ground truth with ``torch.func``: Hessians, Hessian-vector products, Hessian diagonals.

Every estimator in hessopt (OGR, BFGS's inverse Hessian, HesScale, GGN products) is tested against these.
They are exact up to floating-point rounding and cost what exact curvature costs:

==========================  ==========================================  ===================
function                    what                                        cost
==========================  ==========================================  ===================
:func:`hessian`             ``d^2 f / dx^2`` of a scalar ``f(x)``        D HVPs, O(D^2) memory
:func:`hvp`                 ``H v`` (forward-over-reverse)              ~ 2-3 gradients
:func:`hessian_diagonal`    ``diag(H)``                                 D HVPs, chunked
``model_*``                 the same for a model's loss on a batch,     as above
                            w.r.t. its flattened parameters
==========================  ==========================================  ===================

Model losses follow the loss function's own reduction (``mean`` for ``torch.nn`` losses by default;
hessopt's estimators are defined for the mini-batch *mean* loss, docs/architecture.md). Parameters are
flattened in the order given (default: ``model.named_parameters()`` order of parameters that require grad), by
:mod:`hessopt.curvature.flat`. Buffers (BatchNorm running statistics) are passed as copies, so the
extra forward passes never modify the model; a train-mode BatchNorm normalises with batch statistics,
and that is the loss whose curvature is returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.func import functional_call, jvp, vjp, vmap
from torch.func import grad as _func_grad
from torch.func import hessian as _func_hessian

from hessopt.curvature.flat import flatten, unflatten

__all__ = [
    "hessian",
    "hvp",
    "hessian_diagonal",
    "model_loss_function",
    "model_hessian",
    "model_hvp",
    "model_hessian_diagonal",
]

ScalarFn = Callable[[Tensor], Tensor]


def _check_vector(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor (flatten it first), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")


def hessian(f: ScalarFn, x: Tensor, *, vectorize: bool = True) -> Tensor:
    """Exact Hessian ``(D, D)`` of a scalar function ``f`` at the 1-D point ``x``.

    ``vectorize=True`` uses ``torch.func.hessian`` (vmapped); ``False`` stacks D unbatched
    Hessian-vector products, slower but free of ``vmap`` batching rules (see :func:`model_hessian`).
    """
    _check_vector(x, "x")
    x = x.detach()
    if vectorize:
        return _func_hessian(f)(x)
    eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
    return torch.stack([hvp(f, x, e) for e in eye])


def hvp(f: ScalarFn, x: Tensor, v: Tensor) -> Tensor:
    """Exact Hessian-vector product ``H(x) v``, reverse-over-reverse (``vjp`` of ``grad``; ``H`` symmetric).

    Reverse-over-reverse rather than forward-over-reverse: in torch 2.13 the latter raises for some losses
    (``F.mse_loss`` with mean reduction: "ZeroTensors are immutable").
    """
    _check_vector(x, "x")
    _check_vector(v, "v")
    if v.shape != x.shape:
        raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
    return vjp(_func_grad(f), x.detach())[1](v.detach())[0]


def hessian_diagonal(
    f: ScalarFn, x: Tensor, *, chunk_size: int | None = 256, vectorize: bool = True
) -> Tensor:
    """Exact diagonal of the Hessian: ``e_i^T H e_i`` from D Hessian-vector products.

    With ``vectorize`` the products are vmapped in chunks of ``chunk_size`` (memory ``chunk_size * D``
    numbers; ``None`` does all D at once); without it they run one by one. The products are
    forward-over-reverse (``jvp`` of ``grad``, several times faster) unless torch cannot take them (in torch
    2.13, vmapped forward-mode ``F.mse_loss`` raises "ZeroTensors are immutable"); then reverse-over-reverse.
    """
    _check_vector(x, "x")
    x = x.detach()
    gf = _func_grad(f)
    eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)

    def diagonal(product: Callable[[Tensor], Tensor]) -> Tensor:
        if vectorize:
            return vmap(lambda e: (product(e) * e).sum(), chunk_size=chunk_size)(eye)
        return torch.stack([(product(e) * e).sum() for e in eye])

    try:
        return diagonal(lambda e: jvp(gf, (x,), (e,))[1])
    except RuntimeError as exc:
        if "ZeroTensor" not in str(exc):
            raise
    _, backward = vjp(gf, x)
    return diagonal(lambda e: backward(e)[0])


_NORM_TYPES = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)


def _vmap_safe(model: torch.nn.Module) -> bool:
    """False when ``model`` has a normalisation layer in training mode.

    In torch 2.13, ``vmap`` over the second derivative of a train-mode ``batch_norm`` returns a wrong,
    non-symmetric Hessian (checked against autograd double-backward in tests/curvature/test_exact.py),
    while unbatched Hessian-vector products are right; such models take the unbatched path.
    """
    return not any(isinstance(m, _NORM_TYPES) and m.training for m in model.modules())


def _select_params(model: torch.nn.Module, params: Sequence[Tensor] | None) -> list[tuple[str, Tensor]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        if not named:
            raise ValueError("the model has no parameters that require grad")
        return named
    by_id = {id(p): n for n, p in model.named_parameters()}
    out = []
    for p in params:
        if id(p) not in by_id:
            raise ValueError("params must be parameters of model (one of them is not)")
        out.append((by_id[id(p)], p))
    if not out:
        raise ValueError("params is empty")
    return out


def model_loss_function(
    model: torch.nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    params: Sequence[Tensor] | None = None,
) -> tuple[ScalarFn, Tensor]:
    """The loss on a batch as a function of the flat parameter vector, and that vector now.

    Returns ``(fn, theta)`` with ``fn(theta) = loss_fn(model(inputs; theta), targets)``; parameters not in
    ``params`` and all buffers are held fixed (buffers are copied, so the model's are never modified).
    """
    selected = _select_params(model, params)
    names = [n for n, _ in selected]
    tensors = [p.detach() for _, p in selected]
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def fn(theta: Tensor) -> Tensor:
        values = dict(zip(names, unflatten(theta, tensors), strict=True))
        # Buffers are cloned inside the transformed function: a train-mode BatchNorm then updates the
        # clones, never the model's running statistics. Parameters missing from the mapping keep the
        # module's own (fixed) values.
        fresh = {n: b.clone() for n, b in buffers.items()}
        out = functional_call(model, {**fresh, **values}, (inputs,))
        return loss_fn(out, targets)

    return fn, flatten(tensors)


def model_hessian(model, loss_fn, inputs, targets, params=None) -> Tensor:
    """Exact ``(D, D)`` Hessian of ``loss_fn(model(inputs), targets)`` w.r.t. the flattened ``params``."""
    fn, theta = model_loss_function(model, loss_fn, inputs, targets, params)
    return hessian(fn, theta, vectorize=_vmap_safe(model))


def model_hvp(model, loss_fn, inputs, targets, v: Tensor, params=None) -> Tensor:
    """Exact Hessian-vector product of the model's loss; ``v`` is flat, in the order of ``params``."""
    fn, theta = model_loss_function(model, loss_fn, inputs, targets, params)
    return hvp(fn, theta, v)


def model_hessian_diagonal(model, loss_fn, inputs, targets, params=None, *, chunk_size=256) -> Tensor:
    """Exact Hessian diagonal (flat) of the model's loss, from D Hessian-vector products."""
    fn, theta = model_loss_function(model, loss_fn, inputs, targets, params)
    return hessian_diagonal(fn, theta, chunk_size=chunk_size, vectorize=_vmap_safe(model))
