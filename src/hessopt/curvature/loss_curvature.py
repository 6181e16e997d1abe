"""Second derivatives of the supported losses with respect to the model output (the "seeds").

Every diagonal estimator that back-propagates curvature (HesScale, HesScaleGN, BL89, the GGN
Monte-Carlo factor) starts from the loss Hessian with respect to the network output ``z``. For the four
supported ``torch.nn`` losses that Hessian is block-diagonal over examples (and over spatial positions
for a cross-entropy on ``(N, C, d1, ...)`` outputs) and has a closed form:

========================  ==============================================  ==================================
loss (``reduction``)      Hessian block of one example                    diagonal ("seed")
========================  ==============================================  ==================================
``CrossEntropyLoss``      ``U_n (diag(q) - q q^T)``, ``q = softmax(z_n)``   ``U_n (q - q∘q)``
``MSELoss``               ``2 c I``                                       ``2 c``
``BCEWithLogitsLoss``     ``diag(c w (p y + 1 - y) s (1 - s))``            the same, ``s = sigmoid(z)``
``NLLLoss``               ``0`` (linear in its input)                     ``0``
========================  ==============================================  ==================================

``c = 1/numel`` for ``"mean"`` and 1 for ``"sum"``; ``w`` the BCE ``weight``, ``p`` its ``pos_weight``.
For cross-entropy, ``U_n = Σ_c u_{n,c}`` where ``loss = Σ_n Σ_c u_{n,c} (-log q_{n,c})`` is PyTorch's
loss written as a weighted sum of log-probabilities: for class-index targets ``y`` with class weights
``w``, ``ignore_index`` and label smoothing ``ε``,
``u_{n,c} = ((1 - ε) w_{y_n} 1[c = y_n] + (ε/C) w_c) / Z`` (``Z = Σ_n w_{y_n}`` over non-ignored
examples for ``"mean"``, 1 for ``"sum"``; ignored examples get ``u = 0``); for probability targets
``t``, ``u_{n,c} = w_c ((1 - ε) t_{n,c} + ε/C) / Z`` with ``Z`` the number of examples (times spatial
positions) for ``"mean"``. The Hessian of ``-Σ_c u_c log q_c`` is ``(Σ_c u_c)(diag(q) - q q^T)``,
whence the seed.

**BL89 seed.** Becker & LeCun (1989) propagate curvature through an explicit LogSoftmax treated as an
elementwise map, followed by the (linear) NLL loss; the result at the logits is ``u_{n,c} (q_c - q_c^2)``
per class: ``q_y(1 - q_y)/N`` at the target and 0 elsewhere for plain hard-label cross-entropy
(docs/algorithms/hesscale.md, "Seeds"). For MSE and BCE the losses are separable and BL89's seed equals
the exact one.

**Factors.** :func:`sample_output_factor` draws ``s`` with ``E[s s^T]`` equal to each example's Hessian
block (one sampled label per example and position: the GGN Monte-Carlo factor of BackPACK's
``DiagGGNMC``, Dangel et al., arXiv:1912.10985).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "SUPPORTED_LOSSES",
    "LossSpec",
    "cross_entropy_weights",
    "loss_spec",
    "output_hessian_diagonal",
    "sample_output_factor",
]

#: The loss modules with exact seed rules, by kind.
SUPPORTED_LOSSES: dict[type[nn.Module], str] = {
    nn.CrossEntropyLoss: "cross_entropy",
    nn.MSELoss: "mse",
    nn.BCEWithLogitsLoss: "bce_with_logits",
    nn.NLLLoss: "nll",
}


@dataclass(frozen=True)
class LossSpec:
    """A validated supported loss module and its kind.

    ``kind`` is one of ``cross_entropy``, ``mse``, ``bce_with_logits``, ``nll``.
    """

    kind: str
    module: nn.Module

    @property
    def reduction(self) -> str:
        """The module's ``reduction`` (``"mean"`` or ``"sum"``)."""
        return self.module.reduction


def loss_spec(loss_fn: object) -> LossSpec:
    """Validate ``loss_fn`` and return its :class:`LossSpec`.

    Args:
        loss_fn: an instance of one of :data:`SUPPORTED_LOSSES` with ``reduction`` ``"mean"`` or ``"sum"``.

    Returns:
        The spec.

    Raises:
        TypeError: ``loss_fn`` is not one of the supported loss modules (a plain function such as
            ``F.cross_entropy`` included: the seed needs the module, whose forward is hooked).
        ValueError: ``reduction="none"``.
    """
    kind = SUPPORTED_LOSSES.get(type(loss_fn))
    if kind is None:
        names = ", ".join(f"nn.{t.__name__}" for t in SUPPORTED_LOSSES)
        raise TypeError(
            f"loss_fn must be an instance of one of {names} (exact seed rules exist for these), got "
            f"{type(loss_fn).__name__}; pass e.g. nn.CrossEntropyLoss() and compute the loss with that object"
        )
    if loss_fn.reduction not in ("mean", "sum"):
        raise ValueError(
            "loss_fn must reduce to a scalar (reduction 'mean' or 'sum'), "
            f"got reduction={loss_fn.reduction!r}"
        )
    return LossSpec(kind, loss_fn)


def _class_first(z: Tensor) -> Tensor:
    """``(N, C, d1, ...)`` → ``(N, d1, ..., C)``; ``(C,)`` → ``(1, C)``; ``(N, C)`` unchanged."""
    if z.dim() == 1:
        return z.unsqueeze(0)
    if z.dim() == 2:
        return z
    return z.movedim(1, -1)


def _class_back(u: Tensor, like: Tensor) -> Tensor:
    """Inverse of :func:`_class_first` for a tensor shaped like ``_class_first(like)``."""
    if like.dim() == 1:
        return u.squeeze(0)
    if like.dim() == 2:
        return u
    return u.movedim(-1, 1)


def cross_entropy_weights(module: nn.Module, z: Tensor, target: Tensor) -> Tensor:
    """The coefficients ``u_{n,c}`` of PyTorch's cross-entropy written as ``Σ u_{n,c} (-log q_{n,c})``.

    Args:
        module: an ``nn.CrossEntropyLoss`` or an ``nn.NLLLoss`` (label smoothing 0).
        z: the logits (or log-probabilities for NLL), ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``.
        target: class indices or (cross-entropy only) class probabilities, as PyTorch accepts them.

    Returns:
        ``u`` with the shape of ``z``, so that the loss is ``Σ u (-log_softmax(z))`` exactly (same
        reduction, weights, ``ignore_index`` and label smoothing).
    """
    zc = _class_first(z)
    num_classes = zc.shape[-1]
    weight = module.weight
    eps = getattr(module, "label_smoothing", 0.0)
    mean = module.reduction == "mean"
    if target.is_floating_point():  # probabilities, shaped like z
        t = _class_first(target).to(zc.dtype)
        if eps > 0:
            t = t * (1 - eps) + eps / num_classes
        u = t if weight is None else t * weight.to(zc.dtype)
        if mean:
            u = u / (u.numel() // num_classes)
        return _class_back(u, z)
    y = target.reshape(zc.shape[:-1])
    ignore = y == module.ignore_index
    y_safe = torch.where(ignore, torch.zeros_like(y), y)
    w = torch.ones(num_classes, dtype=zc.dtype, device=zc.device) if weight is None else weight.to(zc.dtype)
    w_y = torch.where(ignore, torch.zeros((), dtype=zc.dtype, device=zc.device), w[y_safe])
    u = torch.zeros_like(zc)
    u.scatter_(-1, y_safe.unsqueeze(-1), (1 - eps) * w_y.unsqueeze(-1))
    if eps > 0:
        keep = (~ignore).to(zc.dtype).unsqueeze(-1)
        u = u + keep * (eps / num_classes) * w
    if mean:
        u = u / w_y.sum()
    return _class_back(u, z)


def _cross_entropy_seed(module: nn.Module, probs: Tensor, z: Tensor, target: Tensor, bl89: bool) -> Tensor:
    qq = probs - probs * probs
    plain = module.weight is None and getattr(module, "label_smoothing", 0.0) == 0
    plain = plain and not target.is_floating_point()
    if plain and z.dim() == 2 and not bl89:  # U_n = 1[y_n kept] / (number kept) or 1[y_n kept]
        kept = (target != module.ignore_index).to(z.dtype)
        if module.reduction == "mean":
            kept = kept / kept.sum()
        return qq * kept.unsqueeze(1)
    u = cross_entropy_weights(module, z, target)
    if bl89:
        return u * qq
    class_dim = 0 if z.dim() == 1 else 1
    return u.sum(class_dim, keepdim=True) * qq


def _bce_coefficient(module: nn.Module, z: Tensor, target: Tensor) -> Tensor:
    """``c w (p y + 1 - y)``: the factor of ``s(1 - s)`` in the BCE-with-logits Hessian diagonal."""
    y = target.to(z.dtype)
    coef = torch.ones_like(z)
    if module.pos_weight is not None:
        coef = coef + (module.pos_weight.to(z.dtype) - 1) * y
    if module.weight is not None:
        coef = coef * module.weight.to(z.dtype)
    if module.reduction == "mean":
        coef = coef / z.numel()
    return coef


def output_hessian_diagonal(
    spec: LossSpec, z: Tensor, target: Tensor, *, bl89: bool = False, log_probs: bool = False
) -> Tensor:
    """The exact diagonal of ``∇²_z loss`` (or BL89's seed), shaped like ``z``; no autograd graph.

    Args:
        spec: the loss (see :func:`loss_spec`).
        z: the loss input (logits; log-probabilities when ``log_probs``).
        target: the loss target.
        bl89: return Becker & LeCun's seed ``u (q - q∘q)`` instead of the exact ``(Σ_c u)(q - q∘q)``
            (differs for cross-entropy only).
        log_probs: ``z`` holds log-probabilities from a LogSoftmax that is fused with an ``NLLLoss`` into
            a cross-entropy; the seed is then the one at the LogSoftmax's input.

    Returns:
        The seed (``q - q∘q`` factors computed from ``softmax(z)``, or ``exp(z)`` with ``log_probs``).
    """
    z = z.detach()
    kind = spec.kind
    if kind in ("cross_entropy", "nll") and (kind == "cross_entropy" or log_probs):
        class_dim = 0 if z.dim() == 1 else 1
        probs = z.exp() if log_probs else torch.softmax(z, class_dim)
        return _cross_entropy_seed(spec.module, probs, z, target, bl89)
    if kind == "nll":
        return torch.zeros_like(z)
    if kind == "mse":
        scale = 2.0 / z.numel() if spec.reduction == "mean" else 2.0
        return torch.full_like(z, scale)
    s = torch.sigmoid(z)
    return _bce_coefficient(spec.module, z, target) * s * (1 - s)


def sample_output_factor(
    spec: LossSpec, z: Tensor, target: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """One Monte-Carlo factor ``s`` (shaped like ``z``) with ``E[s_n s_n^T]`` = example n's Hessian block.

    Cross-entropy: a label ``ŷ ~ Cat(q)`` per example (and position), ``s = sqrt(U_n) (q - e_ŷ)``;
    MSE: ``s = sqrt(2c) ξ`` with ``ξ ~ N(0, 1)``; BCE-with-logits: ``ŷ ~ Bernoulli(s)`` per output,
    ``s = sqrt(c w (p y + 1 - y)) (sigmoid(z) - ŷ)``; NLL: 0. Random numbers come from ``generator``
    (drawn on its device and moved to ``z``'s).
    """
    z = z.detach()
    dev = generator.device if generator is not None else z.device

    def rand(shape: torch.Size) -> Tensor:
        return torch.rand(shape, generator=generator, device=dev, dtype=z.dtype).to(z.device)

    if spec.kind == "cross_entropy":
        zc = _class_first(z)
        probs = torch.softmax(zc, -1)
        u = _class_first(cross_entropy_weights(spec.module, z, target)).sum(-1, keepdim=True)
        flat = probs.reshape(-1, probs.shape[-1])
        draw = rand(torch.Size([flat.shape[0], 1]))
        labels = (flat.cumsum(-1) < draw).sum(-1).clamp_max(flat.shape[-1] - 1)
        onehot = torch.nn.functional.one_hot(labels, flat.shape[-1]).to(z.dtype).reshape(probs.shape)
        return _class_back(u.sqrt() * (probs - onehot), z)
    if spec.kind == "mse":
        scale = 2.0 / z.numel() if spec.reduction == "mean" else 2.0
        xi = torch.randn(z.shape, generator=generator, device=dev, dtype=z.dtype).to(z.device)
        return scale**0.5 * xi
    if spec.kind == "bce_with_logits":
        s = torch.sigmoid(z)
        yhat = (rand(z.shape) < s).to(z.dtype)
        return _bce_coefficient(spec.module, z, target).sqrt() * (s - yhat)
    return torch.zeros_like(z)
