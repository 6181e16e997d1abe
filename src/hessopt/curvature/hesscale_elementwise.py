"""First and second derivatives of the elementwise maps HesScale propagates through exactly.

An elementwise map ``h = f(a)`` turns the diagonal ``D_out`` and the exact gradient ``g_out`` at its
output into ``D_in = f'(a)² D_out + f''(a) g_out`` (HesScaleGN drops the ``f''`` term), exact given an
exact ``D_out`` (docs/algorithms/hesscale.md, "Activations"). Each :class:`Elementwise` computes
``(f', f'')`` from one saved tensor: the output where the derivatives are expressible through it (so that
``inplace=True`` modules work), else the input. Kinks follow PyTorch's gradient convention
(``ReLU'(0) = 0``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Elementwise", "ELEMENTWISE_KINDS", "elementwise_backward"]

_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717
_SQRT_2PI = math.sqrt(2 * math.pi)
_GELU_TANH_C = math.sqrt(2 / math.pi)

Derivs = Callable[[Tensor, dict, bool], tuple[Tensor, Tensor | None]]


@dataclass(frozen=True)
class Elementwise:
    """An elementwise map with its derivative formulas.

    ``uses`` says which tensor the derivatives read (``"output"`` or ``"input"``);
    ``derivs(saved, params, gn)`` returns ``(f', f'')`` (``f''`` None when ``gn``).
    """

    name: str
    uses: str
    derivs: Derivs


def _tanh(t: Tensor, p: dict, gn: bool):
    d1 = torch.mul(t, t).neg_().add_(1)
    return d1, None if gn else torch.mul(t, d1).mul_(-2)


def _sigmoid(s: Tensor, p: dict, gn: bool):
    d1 = torch.mul(s, s).neg_().add_(s)
    return d1, None if gn else torch.mul(s, -2).add_(1).mul_(d1)


def _relu(y: Tensor, p: dict, gn: bool):
    return (y > 0).to(y.dtype), None


def _hardtanh(y: Tensor, p: dict, gn: bool):
    return ((y > p["min_val"]) & (y < p["max_val"])).to(y.dtype), None


def _leaky_relu_out(y: Tensor, p: dict, gn: bool):
    return torch.where(y > 0, torch.ones_like(y), torch.full_like(y, p["negative_slope"])), None


def _leaky_relu_in(a: Tensor, p: dict, gn: bool):
    return torch.where(a > 0, torch.ones_like(a), torch.full_like(a, p["negative_slope"])), None


def _elu_out(y: Tensor, p: dict, gn: bool):
    neg = y + p["alpha"]  # α e^a for a <= 0
    d1 = torch.where(y > 0, torch.ones_like(y), neg)
    return d1, None if gn else torch.where(y > 0, torch.zeros_like(y), neg)


def _elu_in(a: Tensor, p: dict, gn: bool):
    neg = p["alpha"] * torch.exp(torch.clamp_max(a, 0))
    d1 = torch.where(a > 0, torch.ones_like(a), neg)
    return d1, None if gn else torch.where(a > 0, torch.zeros_like(a), neg)


def _selu(y: Tensor, p: dict, gn: bool):
    neg = y + _SELU_SCALE * _SELU_ALPHA  # λ α e^a for a <= 0
    d1 = torch.where(y > 0, torch.full_like(y, _SELU_SCALE), neg)
    return d1, None if gn else torch.where(y > 0, torch.zeros_like(y), neg)


def _gelu(a: Tensor, p: dict, gn: bool):
    if p.get("approximate", "none") == "tanh":
        u = _GELU_TANH_C * (a + 0.044715 * a**3)
        du = _GELU_TANH_C * (1 + 3 * 0.044715 * a * a)
        t = torch.tanh(u)
        sech2 = 1 - t * t
        d1 = 0.5 * (1 + t) + 0.5 * a * sech2 * du
        if gn:
            return d1, None
        ddu = _GELU_TANH_C * 6 * 0.044715 * a
        return d1, sech2 * du + 0.5 * a * (sech2 * ddu - 2 * t * sech2 * du * du)
    pdf = torch.exp(-0.5 * a * a) / _SQRT_2PI
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))
    return cdf + a * pdf, None if gn else pdf * (2 - a * a)


def _silu(a: Tensor, p: dict, gn: bool):
    s = torch.sigmoid(a)
    d1 = s * (1 + a * (1 - s))
    return d1, None if gn else s * (1 - s) * (2 + a * (1 - 2 * s))


def _softplus(a: Tensor, p: dict, gn: bool):
    beta, threshold = p["beta"], p["threshold"]
    s = torch.sigmoid(beta * a)
    linear = beta * a > threshold
    d1 = torch.where(linear, torch.ones_like(a), s)
    return d1, None if gn else torch.where(linear, torch.zeros_like(a), beta * s * (1 - s))


def _logsigmoid(a: Tensor, p: dict, gn: bool):
    s = torch.sigmoid(a)
    return 1 - s, None if gn else -s * (1 - s)


#: Elementwise maps by name (``leaky_relu``/``elu`` come in output- and input-reading forms).
ELEMENTWISE_KINDS: dict[str, Elementwise] = {
    e.name: e
    for e in (
        Elementwise("tanh", "output", _tanh),
        Elementwise("sigmoid", "output", _sigmoid),
        Elementwise("relu", "output", _relu),
        Elementwise("hardtanh", "output", _hardtanh),
        Elementwise("leaky_relu_out", "output", _leaky_relu_out),
        Elementwise("leaky_relu_in", "input", _leaky_relu_in),
        Elementwise("elu_out", "output", _elu_out),
        Elementwise("elu_in", "input", _elu_in),
        Elementwise("selu", "output", _selu),
        Elementwise("gelu", "input", _gelu),
        Elementwise("silu", "input", _silu),
        Elementwise("softplus", "input", _softplus),
        Elementwise("logsigmoid", "input", _logsigmoid),
    )
}


def elementwise_backward(
    kind: Elementwise, saved: Tensor, params: dict, d_out: Tensor, g_out: Tensor | None, gn: bool
) -> tuple[Tensor, Tensor | None]:
    """``(D_in, f')`` with ``D_in = f'² D_out + f'' g_out`` (no ``f''`` term when ``gn``).

    ``f'`` is returned so that callers can also map the gradient (``g_in = f' g_out``).
    """
    d1, d2 = kind.derivs(saved, params, gn)
    d_in = torch.mul(d1, d1).mul_(d_out)
    if d2 is not None:
        if g_out is None:
            raise RuntimeError(f"HesScale internal error: the {kind.name} rule needs the output gradient")
        d_in.addcmul_(d2, g_out)
    return d_in, d1
