"""Diagonal curvature estimators behind one function, :func:`diagonal` (docs/algorithms/hesscale.md).

- ``"exact"``: ``diag(H)`` exactly (``torch.func``; P Hessian-vector products, small models only).
- ``"ggn"``: ``diag(G)``, ``G = Σ_n J_n^T ∇²_z ℓ_n J_n``, exactly (per-example Jacobians, C x P each).
- ``"ggn_mc"``: ``diag(G)`` unbiased, ``Σ_n (J_n^T s_n)²`` with sampled ``s_n`` (``E[s s^T] = ∇²_z ℓ_n``;
  one label drawn from the model's predictive distribution per example), as BackPACK's ``DiagGGNMC``.
- ``"hutchinson"``: ``diag(H)`` unbiased and signed, the mean of ``v ∘ H v`` over Rademacher ``v``
  (one Hessian-vector product per probe).
- ``"grad_squared"``: the square of the mini-batch mean gradient (one backward pass).
- ``"hesscale"``, ``"hesscale_gn"``, ``"bl89"``: the diagonal back-propagations of
  :mod:`hessopt.curvature.hesscale` (about one extra backward pass).

All estimate the curvature of ``loss_fn(model(inputs), targets)`` with the loss module's own reduction
(mean by default). The reference methods (``exact``, ``ggn``, ``ggn_mc``, ``hutchinson``,
``grad_squared``) evaluate the model functionally (``torch.func.functional_call``): the model's
parameters, gradients and buffers are left untouched; ``ggn`` and ``ggn_mc`` evaluate it one example at
a time (it must not couple examples, as a train-mode BatchNorm does). The HesScale methods run one
forward and backward pass through temporary hooks (:mod:`hessopt.curvature.hesscale`) and leave
``.grad`` untouched. Random numbers (``ggn_mc`` labels, ``hutchinson`` probes) come from ``generator``;
when None, a CPU generator seeded with 0 is created, so results are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vjp, vmap

from . import exact, hesscale
from .loss_curvature import loss_spec, sample_output_factor

__all__ = ["ESTIMATORS", "diagonal"]

#: The estimator names accepted by :func:`diagonal`.
ESTIMATORS = ("exact", "ggn", "ggn_mc", "hutchinson", "grad_squared", "hesscale", "hesscale_gn", "bl89")

_CHUNK = 256


def diagonal(
    model: nn.Module,
    loss_fn: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    method: str,
    *,
    samples: int = 1,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """A diagonal curvature estimate of ``loss_fn(model(inputs), targets)`` for every trainable parameter.

    Args:
        model: the network (one tensor in, one tensor out).
        loss_fn: a supported loss module (``nn.CrossEntropyLoss``, ``nn.MSELoss``, ``nn.BCEWithLogitsLoss``,
            ``nn.NLLLoss``), ``reduction`` ``"mean"`` or ``"sum"``.
        inputs: a mini-batch of inputs.
        targets: its targets.
        method: one of :data:`ESTIMATORS` (see the module docstring).
        samples: sampled labels (``"ggn_mc"``) or probes (``"hutchinson"``) averaged; must be 1 for the
            deterministic methods.
        generator: source of the random numbers (``"ggn_mc"``, ``"hutchinson"``).

    Returns:
        ``{name: diagonal}`` keyed and ordered like ``model.named_parameters()`` (trainable ones), each
        shaped like its parameter.

    Raises:
        ValueError: an unknown method, ``samples < 1``, or ``samples > 1`` for a deterministic method.
        hessopt.curvature.hesscale.UnsupportedModelError: HesScale methods on a model without rules.

    References:
        HesScale: arXiv:2210.11639, arXiv:2406.03276; GGN-MC: Dangel et al., arXiv:1912.10985 (BackPACK
        ``DiagGGNMC``); Hutchinson (1989); Becker & LeCun (1989). docs/algorithms/hesscale.md.
    """
    if method not in ESTIMATORS:
        raise ValueError(f"method must be one of {', '.join(map(repr, ESTIMATORS))}; got {method!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    if samples > 1 and method not in ("ggn_mc", "hutchinson"):
        raise ValueError(f"samples > 1 applies to 'ggn_mc' and 'hutchinson' only, got method={method!r}")
    spec = loss_spec(loss_fn)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    if method in hesscale.METHODS:
        return _hesscale(model, loss_fn, inputs, targets, method, named)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    names = [n for n, _ in named]
    params = {n: p.detach() for n, p in named}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def batch_loss(ps: dict[str, Tensor]) -> Tensor:
        fresh = {n: b.clone() for n, b in buffers.items()}
        return loss_fn(functional_call(model, {**fresh, **ps}, (inputs,)), targets)

    if method == "grad_squared":
        g = grad(batch_loss)(params)
        return {n: g[n] * g[n] for n in names}
    if method == "exact":
        return _exact(batch_loss, params)
    if method == "hutchinson":
        return _hutchinson(batch_loss, params, samples, generator)

    def single_output(ps: dict[str, Tensor], x: Tensor) -> Tensor:
        fresh = {n: b.clone() for n, b in buffers.items()}
        return functional_call(model, {**fresh, **ps}, (x.unsqueeze(0),)).squeeze(0)

    with torch.no_grad():
        out = functional_call(model, {**buffers, **params}, (inputs,))
    if method == "ggn":
        return _ggn(loss_fn, single_output, params, inputs, out, targets)
    draws = [sample_output_factor(spec, out, targets, generator) for _ in range(samples)]
    return _ggn_mc(single_output, params, inputs, draws)


def _hesscale(model, loss_fn, inputs, targets, method, named) -> dict[str, Tensor]:
    pending = {n: hesscale.peek_diagonal(p) for n, p in named}  # the user's, put back afterwards
    hesscale.clear_diagonals(p for _, p in named)
    ext = hesscale.extend(model, loss_fn, method)
    try:
        loss = loss_fn(model(inputs), targets)
        torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        out = {}
        for n, p in named:
            h = hesscale.take_diagonal(p, method)
            out[n] = torch.zeros_like(p.detach()) if h is None else h
        return out
    finally:
        ext.remove()
        for n, p in named:
            if pending[n] is not None:
                hesscale.clear_diagonals([p])
                hesscale._accumulate(p, *pending[n])


def _flat(params: dict[str, Tensor]) -> tuple[Tensor, Callable[[Tensor], dict[str, Tensor]]]:
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    theta = torch.cat([params[n].reshape(-1) for n in names])

    def unflat(v: Tensor) -> dict[str, Tensor]:
        return {n: t.reshape(s) for n, t, s in zip(names, v.split(sizes), shapes, strict=True)}

    return theta, unflat


def _exact(batch_loss, params: dict[str, Tensor]) -> dict[str, Tensor]:
    """``diag(H)`` from P Hessian-vector products with the unit vectors (:func:`exact.hessian_diagonal`)."""
    theta, unflat = _flat(params)
    return unflat(exact.hessian_diagonal(lambda t: batch_loss(unflat(t)), theta, chunk_size=_CHUNK))


def _hutchinson(batch_loss, params, samples: int, generator: torch.Generator) -> dict[str, Tensor]:
    theta, unflat = _flat(params)
    _, hvp = vjp(grad(lambda t: batch_loss(unflat(t))), theta)
    total = torch.zeros_like(theta)
    for start in range(0, samples, _CHUNK):
        m = min(_CHUNK, samples - start)
        bits = torch.randint(0, 2, (m, theta.numel()), generator=generator, device=generator.device)
        v = (2 * bits - 1).to(device=theta.device, dtype=theta.dtype)
        total += (v * vmap(lambda e: hvp(e)[0])(v)).sum(0)
    return unflat(total / samples)


def _jacobians(single_output, params, x: Tensor) -> dict[str, Tensor]:
    """Per-example Jacobians ``{name: (n, *out_shape, *param_shape)}`` of the output."""
    return vmap(jacrev(single_output), in_dims=(None, 0))(params, x)


def _output_hessian_blocks(loss_fn, out: Tensor, targets: Tensor) -> Tensor:
    """``(N, K, K)``: each example's Hessian block of the loss w.r.t. its output (K = entries per example).

    The losses are sums over examples, so the Hessian is block-diagonal; one Hessian-vector product with
    the k-th unit vector repeated in every example gives column k of every block.
    """
    n = out.shape[0]
    k = out[0].numel()
    _, hvp = vjp(grad(lambda z: loss_fn(z, targets)), out.detach())
    eye = torch.eye(k, dtype=out.dtype, device=out.device)
    cols = vmap(lambda e: hvp(e.reshape(out.shape[1:]).expand(out.shape).contiguous())[0])(eye)  # (K, N, ...)
    return cols.reshape(k, n, k).permute(1, 2, 0)


def _ggn(loss_fn, single_output, params, inputs, out, targets) -> dict[str, Tensor]:
    blocks = _output_hessian_blocks(loss_fn, out, targets)
    result = {n: torch.zeros_like(p) for n, p in params.items()}
    k = blocks.shape[-1]
    for start in range(0, inputs.shape[0], 16):
        jac = _jacobians(single_output, params, inputs[start : start + 16])
        h = blocks[start : start + 16]
        for name, j in jac.items():
            jf = j.reshape(j.shape[0], k, -1)
            result[name] += (torch.bmm(h, jf) * jf).sum((0, 1)).reshape(params[name].shape)
    return result


def _ggn_mc(single_output, params, inputs, draws: list[Tensor]) -> dict[str, Tensor]:
    result = {n: torch.zeros_like(p) for n, p in params.items()}
    for start in range(0, inputs.shape[0], 16):
        jac = _jacobians(single_output, params, inputs[start : start + 16])
        for name, j in jac.items():
            jf = j.reshape(j.shape[0], -1, params[name].numel())
            for s in draws:
                v = torch.bmm(s[start : start + 16].reshape(jf.shape[0], 1, -1), jf).squeeze(1)
                result[name] += (v * v).sum(0).reshape(params[name].shape) / len(draws)
    return result
