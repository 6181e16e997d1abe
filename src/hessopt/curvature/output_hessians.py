"""Hessians of a loss with respect to the network output ``z`` (the logits), as matrix-free products.

The generalised Gauss-Newton matrix ``G = J^T H J`` (Schraudolph 2002, Neural Computation 14(7); Martens 2010,
ICML, Sec. 4.2) needs ``H u = (d^2 loss / dz^2) u``. For the three losses of ``torch.nn`` whose Hessian in
``z`` has a closed form, :func:`output_hessian` applies it without autograd; every other loss gets the
generic reverse-over-reverse product (``vjp`` of ``grad``), built once and reused. Closed forms (``p`` the
softmax over the class dimension 1, ``s = sigmoid(z)``, ``n`` the mean divisor):

==============================================  =======================================  =====================
loss on logits ``z``                            ``H u``                                  ``n`` (``"mean"``)
==============================================  =======================================  =====================
``cross_entropy`` (class indices ``y``)         ``w_i (p*u - p (p.u)) / n`` per row i      ``sum_i w_i``
``cross_entropy`` (class probabilities ``t``)   ``(sum_c w_c t'_ic) (p*u - p (p.u)) / n``  rows
``mse_loss``                                    ``2 u / n``                              ``z.numel()``
``binary_cross_entropy_with_logits``            ``w s (1-s) (pw y + 1 - y) u / n``        ``z.numel()``
==============================================  =======================================  =====================

Row weights of cross-entropy with class indices: ``w_i = weight[y_i]`` (1 without class weights), 0 where
``y_i == ignore_index``; with label smoothing ``eps`` and class weights, ``w_i = (1-eps) weight[y_i] +
(eps/C) sum_c weight_c`` (smoothing alone leaves ``H`` unchanged: every ``-log p_c`` has the same Hessian
``diag(p) - p p^T``). With probability targets ``t' = (1-eps) t + eps/C``. PyTorch divides a weighted mean
by ``sum_i weight[y_i]`` (not by the smoothed weights), and so does ``n`` here. ``reduction="sum"`` sets
``n = 1``. ``H`` does not depend on the targets except through these weights and ``pos_weight``.

Recognised loss objects: ``nn.CrossEntropyLoss``, ``nn.MSELoss``, ``nn.BCEWithLogitsLoss`` (their
``weight``, ``ignore_index``, ``label_smoothing``, ``pos_weight`` and ``reduction`` attributes), the functions
``F.cross_entropy``, ``F.mse_loss``, ``F.binary_cross_entropy_with_logits`` and ``functools.partial`` of
them with keyword arguments only. Anything else is a generic loss ``loss_fn(outputs, targets)``, assumed
mean-reduced over the rows unless it has ``reduction == "sum"``.

Derivations and the cost of each product: docs/algorithms/hessian-free.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vjp

__all__ = ["LOSS_KINDS", "LossSpec", "OutputHessian", "describe_loss", "output_hessian"]

#: Losses with a closed-form output Hessian, and "generic" (reverse-over-reverse).
LOSS_KINDS = ("cross_entropy", "mse", "bce_with_logits", "generic")

_FUNCTIONS: dict[Callable[..., Tensor], str] = {
    F.cross_entropy: "cross_entropy",
    F.mse_loss: "mse",
    F.binary_cross_entropy_with_logits: "bce_with_logits",
}
_MODULES: dict[type[nn.Module], str] = {
    nn.CrossEntropyLoss: "cross_entropy",
    nn.MSELoss: "mse",
    nn.BCEWithLogitsLoss: "bce_with_logits",
}
# Keyword arguments of the recognised functions that the closed forms handle (defaults as in torch).
_KEYWORDS: dict[str, dict[str, Any]] = {
    "cross_entropy": {"weight": None, "ignore_index": -100, "reduction": "mean", "label_smoothing": 0.0},
    "mse": {"reduction": "mean"},
    "bce_with_logits": {"weight": None, "pos_weight": None, "reduction": "mean"},
}
_REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class LossSpec:
    """What :func:`describe_loss` recognised in a loss function.

    Attributes:
        kind: one of :data:`LOSS_KINDS`.
        reduction: ``"mean"`` or ``"sum"``.
        options: the keyword options of a recognised loss (``weight``, ``ignore_index``, ...); empty for a
            generic loss.
    """

    kind: str
    reduction: str
    options: dict[str, Any] = field(default_factory=dict)


def describe_loss(loss_fn: Callable[[Tensor, Tensor], Tensor]) -> LossSpec:
    """Recognise ``loss_fn`` (see the module docstring).

    Raises:
        TypeError: if ``loss_fn`` is not callable.
        ValueError: if its reduction is neither ``"mean"`` nor ``"sum"`` (HF needs a scalar loss).
    """
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}"
        )
    kind, options = None, {}
    if type(loss_fn) in _MODULES:
        kind = _MODULES[type(loss_fn)]
        options = {name: getattr(loss_fn, name) for name in _KEYWORDS[kind]}
    elif loss_fn in _FUNCTIONS:
        kind = _FUNCTIONS[loss_fn]
        options = dict(_KEYWORDS[kind])
    elif isinstance(loss_fn, functools.partial) and loss_fn.func in _FUNCTIONS and not loss_fn.args:
        candidate = _FUNCTIONS[loss_fn.func]
        if set(loss_fn.keywords) <= set(_KEYWORDS[candidate]):
            kind = candidate
            options = {**_KEYWORDS[candidate], **loss_fn.keywords}
    if kind is None:
        reduction = getattr(loss_fn, "reduction", "mean")
        if isinstance(loss_fn, functools.partial):
            reduction = loss_fn.keywords.get("reduction", reduction)
    else:
        reduction = options.pop("reduction")
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"loss_fn must reduce to a scalar with reduction 'mean' or 'sum', got reduction={reduction!r}"
        )
    return LossSpec(kind or "generic", reduction, options)


class OutputHessian:
    """``u -> H u`` for one loss at fixed outputs ``z`` (and targets); build with :func:`output_hessian`.

    Attributes:
        spec: the recognised loss.
        divisor: the mean divisor ``n`` (see the module docstring) as a 0-dim tensor, whatever the reduction;
            for a generic loss the number of rows.
        sum_scale: ``divisor`` for ``reduction="sum"``, else 1: the factor by which the loss exceeds its
            mean-reduced form. The optimizer rescales curvature measured on a sub-batch by the ratio of
            these factors.
    """

    def __init__(self, spec: LossSpec, apply: Callable[[Tensor], Tensor], divisor: Tensor) -> None:
        """Wrap a product ``apply`` of the loss ``spec`` with its mean divisor."""
        self.spec = spec
        self._apply = apply
        self.divisor = divisor
        self.sum_scale = divisor if spec.reduction == "sum" else torch.ones_like(divisor)

    def __call__(self, u: Tensor) -> Tensor:
        """``H u`` for ``u`` shaped like the outputs (``torch.func.vmap`` may add a leading batch dim)."""
        return self._apply(u)


def _cross_entropy(spec: LossSpec, z: Tensor, y: Tensor) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    if z.dim() < 2:
        raise ValueError(f"cross_entropy outputs need a class dimension 1, got shape {tuple(z.shape)}")
    weight, eps = spec.options["weight"], float(spec.options["label_smoothing"])
    num_classes = z.shape[1]
    p = torch.softmax(z, dim=1)
    if y.dtype.is_floating_point:  # class probabilities, shaped like z
        t = y if eps == 0 else (1 - eps) * y + eps / num_classes
        w_class = torch.ones(num_classes, dtype=z.dtype, device=z.device) if weight is None else weight
        shape = [1, num_classes] + [1] * (z.dim() - 2)
        row = (t * w_class.to(z.dtype).reshape(shape)).sum(dim=1, keepdim=True)
        divisor = torch.tensor(z.numel() // num_classes, dtype=z.dtype, device=z.device)
    else:
        keep = y != spec.options["ignore_index"]
        safe = torch.where(keep, y, torch.zeros_like(y))
        if weight is None:
            base = keep.to(z.dtype)
            row = base
        else:
            weight = weight.to(z.dtype)
            base = weight[safe] * keep
            row = base if eps == 0 else ((1 - eps) * weight[safe] + eps / num_classes * weight.sum()) * keep
        divisor = base.sum()
        row = row.unsqueeze(1)
    scale = row / divisor if spec.reduction == "mean" else row

    def apply(u: Tensor) -> Tensor:
        pu = p * u
        return scale * (pu - p * pu.sum(dim=-z.dim() + 1, keepdim=True))

    return apply, divisor


def _mse(spec: LossSpec, z: Tensor, y: Tensor) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    divisor = torch.tensor(z.numel(), dtype=z.dtype, device=z.device)
    factor = 2.0 / z.numel() if spec.reduction == "mean" else 2.0

    def apply(u: Tensor) -> Tensor:
        return factor * u

    return apply, divisor


def _bce_with_logits(spec: LossSpec, z: Tensor, y: Tensor) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    s = torch.sigmoid(z)
    curvature = s * (1 - s)
    weight, pos_weight = spec.options["weight"], spec.options["pos_weight"]
    if pos_weight is not None:
        curvature = curvature * (pos_weight.to(z.dtype) * y + 1 - y)
    if weight is not None:
        curvature = curvature * weight.to(z.dtype)
    curvature = torch.broadcast_to(curvature, z.shape)
    divisor = torch.tensor(z.numel(), dtype=z.dtype, device=z.device)
    if spec.reduction == "mean":
        curvature = curvature / z.numel()

    def apply(u: Tensor) -> Tensor:
        return curvature * u

    return apply, divisor


def _generic(loss_fn, z: Tensor, y: Tensor | None) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    def loss_of(outputs: Tensor) -> Tensor:
        return loss_fn(outputs, y)

    # Reverse-over-reverse: forward-over-reverse is not a safe default (in torch 2.13 it raises for
    # F.mse_loss(reduction="mean") and for F.huber_loss); the vjp of the gradient is symmetric, so it is H u.
    _, hvp = vjp(grad(loss_of), z)
    divisor = torch.tensor(z.shape[0], dtype=z.dtype, device=z.device)

    def apply(u: Tensor) -> Tensor:
        return hvp(u)[0]

    return apply, divisor


_CLOSED_FORMS = {"cross_entropy": _cross_entropy, "mse": _mse, "bce_with_logits": _bce_with_logits}


def output_hessian(
    loss_fn: Callable[[Tensor, Tensor], Tensor], outputs: Tensor, targets: Tensor | None
) -> OutputHessian:
    """The output-Hessian product ``u -> d^2 loss_fn(z, targets)/dz^2 u`` at ``z = outputs``.

    Args:
        loss_fn: the loss on the network output (logits), see the module docstring.
        outputs: the network output ``z`` (detached inside).
        targets: the targets passed to ``loss_fn``.

    Returns:
        An :class:`OutputHessian`. Closed forms cost a few elementwise operations per product; the generic
        form one double-backward pass through the loss.

    Raises:
        ValueError: for an unsupported reduction or malformed cross-entropy outputs.

    References:
        Schraudolph (2002), Neural Computation 14(7) (Gauss-Newton products with matching losses);
        docs/algorithms/hessian-free.md.
    """
    spec = describe_loss(loss_fn)
    z = outputs.detach()
    if spec.kind == "generic":
        apply, divisor = _generic(loss_fn, z, targets)
    else:
        apply, divisor = _CLOSED_FORMS[spec.kind](spec, z, targets)
    return OutputHessian(spec, apply, divisor)
