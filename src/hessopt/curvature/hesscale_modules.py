"""HesScale's rules for ``torch.nn`` modules: one rule per module type (docs/algorithms/hesscale.md).

A rule maps the curvature diagonal ``D_out`` at a module's output (and, for modules with a second
derivative, the exact gradient ``g_out`` there) to the diagonal ``D_in`` at its input, and adds the
diagonals of the module's parameters. Linear maps ``y = A x`` use ``D_in = (A∘A)^T D_out`` (cross terms
between outputs dropped, the HesScale approximation: Elsayed & Mahmood, arXiv:2210.11639;
arXiv:2404.00781, App. B Eqs. 9-12); elementwise maps are exact (:mod:`.hesscale_elementwise`).

Each rule has ``check(module)`` (a reason it cannot handle this instance, or None), ``save(module,
inputs, output)`` (run in the forward hook; keeps detached tensors only), ``g_outputs(output)`` (the
output tensors whose exact gradient it needs, for HesScale's second-derivative terms) and
``backward(module, saved, d_out, g_out, ctx)`` returning ``[(argument position, D_in)]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hesscale_elementwise import ELEMENTWISE_KINDS, Elementwise, elementwise_backward

__all__ = ["MODULE_RULES", "ModuleRule", "module_rule", "pool_backward"]


class ModuleRule:
    """Base rule: no saved tensors, no parameters, no gradient needed; subclasses override."""

    name = "module"

    def check(self, module: nn.Module) -> str | None:
        """A reason this module instance is not supported, or None."""
        return None

    def needs_g(self, module: nn.Module, gn: bool) -> bool:
        """Whether ``backward`` needs the exact gradient at the output (HesScale's ``f''`` terms)."""
        return False

    def g_outputs(self, output: Any) -> list[tuple[tuple, Tensor]]:
        """The output tensors whose gradients ``backward`` needs, with their position in the output."""
        return [((), output)]

    def save(self, module: nn.Module, inputs: tuple, output: Any) -> Any:
        """What ``backward`` needs from the forward pass (detached tensors)."""
        x = inputs[0]
        return (x.shape, x.requires_grad)

    def backward(self, module: nn.Module, saved: Any, d_out: Any, g_out: Any, ctx: Any) -> list:
        """``[(argument index, D_in)]`` for the inputs that need curvature; adds parameter diagonals."""
        raise NotImplementedError


def _need(x: Tensor) -> bool:
    return x.requires_grad


class _Reshape(ModuleRule):
    """Flatten, Unflatten, Identity: the diagonal is reshaped (a permutation matrix, exact)."""

    name = "reshape"

    def backward(self, module, saved, d_out, g_out, ctx):
        shape, need = saved
        return [(0, d_out.reshape(shape))] if need else []


class _Linear(ModuleRule):
    """``y = x W^T + b`` on ``(..., in)``.

    ``D_in = D_out (W∘W)``, ``Ĥ(W) = Σ D_out^T (x∘x)``, ``Ĥ(b) = Σ D_out``; leading dimensions beyond
    the batch share ``W`` (weight-sharing approximation).
    """

    name = "Linear"

    def save(self, module, inputs, output):
        x = inputs[0]
        return (x.detach(), x.requires_grad)

    def backward(self, module, saved, d_out, g_out, ctx):
        x, need = saved
        w, b = module.weight, module.bias
        d2 = d_out.reshape(-1, d_out.shape[-1])
        if w.requires_grad:
            x2 = x.reshape(-1, x.shape[-1])
            ctx.acc(w, d2.t().mm(x2 * x2))
        if b is not None and b.requires_grad:
            ctx.acc(b, d2.sum(0))
        if not need:
            return []
        wd = w.detach()
        return [(0, d_out.matmul(wd * wd))]


def _conv_padding(module: nn.Module, dims: int) -> list[int] | None:
    pad = module.padding
    if isinstance(pad, str):
        if pad == "valid":
            return [0] * dims
        totals = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        if any(t % 2 for t in totals):
            return None
        return [t // 2 for t in totals]
    return list(pad)


class _Conv(ModuleRule):
    """Convolution and transposed convolution, any stride/padding/dilation/groups (1-D to 3-D).

    ``D_in`` is the input-gradient map applied to ``D_out`` with ``W∘W`` in place of ``W``;
    ``Ĥ(W)`` is the weight-gradient map with ``x∘x`` in place of ``x`` (one ``convolution_backward``
    each). Cross terms between outputs and between positions sharing a weight are dropped.
    """

    name = "Conv"

    def check(self, module):
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (only 'zeros')"
        if _conv_padding(module, len(module.kernel_size)) is None:
            return "padding='same' with an even effective kernel (asymmetric padding)"
        return None

    def save(self, module, inputs, output):
        x = inputs[0]
        return (x.detach(), x.requires_grad, output.shape)

    def backward(self, module, saved, d_out, g_out, ctx):
        x, need, out_shape = saved
        w, b = module.weight, module.bias
        dims = len(module.kernel_size)
        transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
        padding = _conv_padding(module, dims)
        if transposed:
            out_pad = [
                o - ((i - 1) * s - 2 * p + d * (k - 1) + 1)
                for o, i, s, p, d, k in zip(
                    out_shape[-dims:], x.shape[-dims:], module.stride, padding, module.dilation,
                    module.kernel_size, strict=True,
                )
            ]  # fmt: skip
        else:
            out_pad = [0] * dims
        args = (list(module.stride), padding, list(module.dilation), transposed, out_pad, module.groups)
        wreq = w.requires_grad
        breq = b is not None and b.requires_grad
        wd = w.detach()
        if wreq or breq:
            bias_sizes = [wd.shape[1] * module.groups] if transposed else [wd.shape[0]]
            _, hw, hb = torch.ops.aten.convolution_backward(
                d_out, x * x, wd, bias_sizes, *args, [False, wreq, breq]
            )
            if wreq:
                ctx.acc(w, hw)
            if breq:
                ctx.acc(b, hb)
        if not need:
            return []
        d_in = torch.ops.aten.convolution_backward(d_out, x, wd * wd, None, *args, [True, False, False])[0]
        return [(0, d_in)]


def _tuple(v: Any, n: int) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v] * n


def pool_backward(
    kind: str, dims: int, x: Tensor, d_out: Tensor, cfg: dict[str, Any], indices: Tensor | None = None
) -> Tensor:
    """``(A∘A)^T D_out`` for a pooling map ``A`` (``kind`` ``"max"``, ``"avg"`` or ``"adaptive_avg"``).

    Max pooling (``A`` has one 1 per row): scatter-add of ``D_out`` to the argmax positions, exact when
    each input is the argmax of at most one output. Average pooling (row p holds ``1/K_p`` on its
    window): ``Aᵀ (D_out / K_p)`` with ``K_p`` the divisor PyTorch used (kernel size, non-padding count
    with ``count_include_pad=False``, or ``divisor_override``), read off ``A 1`` and the window counts.
    ``cfg`` holds the pooling arguments (``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``ceil_mode``, ``count_include_pad``, ``divisor_override``, ``output_size``).
    """
    if kind == "max":
        if indices is None:
            fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]
            stride = cfg["stride"] if cfg["stride"] is not None else cfg["kernel_size"]
            _, indices = fn(
                x, cfg["kernel_size"], stride, cfg["padding"], cfg["dilation"], cfg["ceil_mode"], True
            )
        flat_d = d_out.flatten(-dims)
        flat_shape = x.shape[:-dims] + (math.prod(x.shape[-dims:]),)
        out = torch.zeros(flat_shape, dtype=d_out.dtype, device=d_out.device)
        out.scatter_add_(-1, indices.flatten(-dims), flat_d)
        return out.reshape(x.shape)
    if dims == 1:  # through the 2-D kernels
        cfg1 = dict(cfg)
        if kind == "avg":
            for key, fill in (("kernel_size", 1), ("stride", 1), ("padding", 0)):
                if cfg[key] is not None:
                    cfg1[key] = [fill, _tuple(cfg[key], 1)[0]]
        else:
            cfg1["output_size"] = [1, _tuple(cfg["output_size"], 1)[0]]
        return pool_backward(kind, 2, x.unsqueeze(-2), d_out.unsqueeze(-2), cfg1).squeeze(-2)
    spatial = x.shape[-dims:]
    if kind == "adaptive_avg":
        requested = _tuple(cfg["output_size"], dims)
        sizes = [s if o is None else o for s, o in zip(spatial, requested, strict=True)]
        inv_k = torch.ones((), dtype=d_out.dtype, device=d_out.device)
        for axis, (n_in, n_out) in enumerate(zip(spatial, sizes, strict=True)):
            p = torch.arange(n_out, device=d_out.device)
            end = torch.div((p + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
            width = end - (p * n_in) // n_out
            shape = [1] * dims
            shape[axis] = n_out
            inv_k = inv_k * (1.0 / width.to(d_out.dtype)).reshape(shape)
        back = (torch.ops.aten._adaptive_avg_pool2d_backward, torch.ops.aten._adaptive_avg_pool3d_backward)
        return back[dims - 2](d_out * inv_k, x)
    kernel = _tuple(cfg["kernel_size"], dims)
    stride = _tuple(cfg["stride"], dims) if cfg["stride"] is not None and cfg["stride"] != [] else kernel
    padding = _tuple(cfg["padding"], dims)
    fn = (F.avg_pool2d, F.avg_pool3d)[dims - 2]
    ones = torch.ones((1, 1, *spatial), dtype=d_out.dtype, device=d_out.device)
    ceil, include, override = cfg["ceil_mode"], cfg["count_include_pad"], cfg["divisor_override"]
    a_one = fn(ones, kernel, stride, padding, ceil, include, override)
    count = fn(ones, kernel, stride, padding, cfg["ceil_mode"], True, 1)
    inv_k = (a_one / count.clamp_min(1)).reshape(a_one.shape[2:])
    back = (torch.ops.aten.avg_pool2d_backward, torch.ops.aten.avg_pool3d_backward)[dims - 2]
    return back(
        d_out * inv_k, x, kernel, stride, padding, cfg["ceil_mode"], cfg["count_include_pad"],
        cfg["divisor_override"],
    )  # fmt: skip


class _Pool(ModuleRule):
    """MaxPool, AvgPool and AdaptiveAvgPool (1-D to 3-D): see :func:`pool_backward`."""

    def __init__(self, kind: str, dims: int) -> None:
        self.kind, self.dims = kind, dims
        self.name = f"{kind}_pool{dims}d"

    def g_outputs(self, output):
        return [((0,), output[0])] if isinstance(output, tuple) else [((), output)]

    def save(self, module, inputs, output):
        x = inputs[0]
        indices = output[1] if isinstance(output, tuple) else None
        return (x.detach(), x.requires_grad, indices)

    def backward(self, module, saved, d_out, g_out, ctx):
        x, need, indices = saved
        if not need:
            return []
        if isinstance(d_out, dict):
            d_out = d_out.get(0)
            if d_out is None:
                return []
        cfg = {k: getattr(module, k, None) for k in _POOL_KEYS}
        return [(0, pool_backward(self.kind, self.dims, x, d_out, cfg, indices))]


_POOL_KEYS = (
    "kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad", "divisor_override",
    "output_size",
)  # fmt: skip


class _Pad(ModuleRule):
    """Constant padding (any value): ``D_in`` is ``D_out`` with the padding cropped.

    Negative padding (cropping) is undone by zero-filling.
    """

    name = "pad"

    def backward(self, module, saved, d_out, g_out, ctx):
        shape, need = saved
        return [(0, F.pad(d_out, [-p for p in module.padding]))] if need else []


class _Dropout(ModuleRule):
    """Dropout: ``D_in = (m/(1-p))² D_out`` in train mode, the identity in eval mode or with ``p = 0``.

    The forward pass's mask ``m`` is read as ``y ≠ 0``; an input entry that is exactly 0 counts as
    dropped, which changes nothing upstream of a ReLU-type unit and is a measure-zero event otherwise.
    """

    name = "Dropout"

    def save(self, module, inputs, output):
        x = inputs[0]
        if module.training and module.p > 0:
            return (output.detach(), x.requires_grad, module.p)
        return (None, x.requires_grad, 0.0)

    def backward(self, module, saved, d_out, g_out, ctx):
        y, need, p = saved
        if not need:
            return []
        if y is None:
            return [(0, d_out)]
        factor = (y != 0).to(d_out.dtype) * (1.0 / (1.0 - p) ** 2) if p < 1 else torch.zeros_like(y)
        return [(0, factor * d_out)]


class _BatchNorm(ModuleRule):
    """BatchNorm in eval mode with running statistics: an elementwise affine map (exact).

    ``x̂ = (x - μ)/sqrt(σ² + ε)``, ``y = γ x̂ + β``: ``D_in = (γ²/(σ² + ε)) D_out``, ``Ĥ(γ) = Σ D_out x̂²``,
    ``Ĥ(β) = Σ D_out`` (sums over the batch and spatial positions).
    """

    name = "BatchNorm"

    def check(self, module):
        if module.training:
            return (
                "in training mode (batch statistics couple the examples); HesScale supports BatchNorm in "
                "eval mode with running statistics: call .eval() on it"
            )
        if module.running_mean is None:
            return "track_running_stats=False (normalises with batch statistics)"
        return None

    def save(self, module, inputs, output):
        reason = self.check(module)
        if reason is not None:
            raise RuntimeError(f"HesScale: {type(module).__name__} {reason}")
        x = inputs[0]
        return (x.detach(), x.requires_grad)

    def backward(self, module, saved, d_out, g_out, ctx):
        x, need = saved
        shape = [1, -1] + [1] * (x.dim() - 2)
        invstd = torch.rsqrt(module.running_var.to(x.dtype) + module.eps).reshape(shape)
        reduce = [0] + list(range(2, x.dim()))
        w, b = module.weight, module.bias
        if w is not None and w.requires_grad:
            xhat = (x - module.running_mean.to(x.dtype).reshape(shape)) * invstd
            ctx.acc(w, (d_out * xhat * xhat).sum(reduce))
        if b is not None and b.requires_grad:
            ctx.acc(b, d_out.sum(reduce))
        if not need:
            return []
        scale = invstd if w is None else w.detach().reshape(shape) * invstd
        return [(0, scale * scale * d_out)]


class _Embedding(ModuleRule):
    """Embedding lookup ``y = W[idx]``: ``Ĥ(W_j) = Σ_{positions with idx = j} D_out``.

    Positions sharing a row are summed (weight-sharing approximation); the padding row gets 0, as its
    gradient does.
    """

    name = "Embedding"

    def check(self, module):
        if module.max_norm is not None:
            return "max_norm (renormalises the weights in the forward pass)"
        return None

    def save(self, module, inputs, output):
        return (inputs[0].detach(), False)

    def backward(self, module, saved, d_out, g_out, ctx):
        idx, _ = saved
        w = module.weight
        if w.requires_grad:
            h = torch.zeros_like(w.detach())
            h.index_add_(0, idx.reshape(-1), d_out.reshape(-1, w.shape[1]))
            if module.padding_idx is not None:
                h[module.padding_idx] = 0
            ctx.acc(w, h)
        return []


class _Activation(ModuleRule):
    """An elementwise activation module (see :mod:`.hesscale_elementwise`)."""

    def __init__(self, select: Callable[[nn.Module], tuple[Elementwise, dict] | str]) -> None:
        self.select = select
        self.name = "activation"

    def check(self, module):
        choice = self.select(module)
        return choice if isinstance(choice, str) else None

    def needs_g(self, module, gn):
        if gn:
            return False
        kind, _ = self.select(module)
        return kind.name not in ("relu", "hardtanh", "leaky_relu_out", "leaky_relu_in")

    def save(self, module, inputs, output):
        kind, params = self.select(module)
        x = inputs[0]
        return (kind, params, output.detach() if kind.uses == "output" else x.detach(), x.requires_grad)

    def backward(self, module, saved, d_out, g_out, ctx):
        kind, params, t, need = saved
        if not need:
            return []
        d_in, _ = elementwise_backward(kind, t, params, d_out, g_out, ctx.gn)
        return [(0, d_in)]


def _inplace_input_reader(module: nn.Module, kind: str) -> tuple[Elementwise, dict] | str:
    if getattr(module, "inplace", False):
        return "inplace=True (its derivatives need the input, which the in-place forward overwrites)"
    return ELEMENTWISE_KINDS[kind], {}


def _leaky(m: nn.Module):
    if m.negative_slope >= 0:
        return ELEMENTWISE_KINDS["leaky_relu_out"], {"negative_slope": m.negative_slope}
    if m.inplace:
        return "inplace=True with a negative slope; use inplace=False"
    return ELEMENTWISE_KINDS["leaky_relu_in"], {"negative_slope": m.negative_slope}


def _elu(m: nn.Module):
    if m.alpha > 0:
        return ELEMENTWISE_KINDS["elu_out"], {"alpha": m.alpha}
    if m.inplace:
        return "inplace=True with alpha <= 0; use inplace=False"
    return ELEMENTWISE_KINDS["elu_in"], {"alpha": m.alpha}


def _with_params(kind: str, params: Callable[[nn.Module], dict]):
    def select(m: nn.Module):
        choice = (
            _inplace_input_reader(m, kind)
            if ELEMENTWISE_KINDS[kind].uses == "input"
            else (ELEMENTWISE_KINDS[kind], {})
        )
        if isinstance(choice, str):
            return choice
        return choice[0], params(m)

    return select


def _no_params(m: nn.Module) -> dict:
    return {}


def _build_rules() -> dict[type[nn.Module], ModuleRule]:
    from .hesscale_lstm import LSTMRule

    rules: dict[type[nn.Module], ModuleRule] = {nn.Linear: _Linear()}
    for t in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
        rules[t] = _Conv()
    for dims, (mx, av, ad) in enumerate(
        (
            (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d),
            (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d),
            (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d),
        ),
        start=1,
    ):
        rules[mx], rules[av], rules[ad] = _Pool("max", dims), _Pool("avg", dims), _Pool("adaptive_avg", dims)
    for t in (nn.Flatten, nn.Unflatten, nn.Identity):
        rules[t] = _Reshape()
    for t in (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d):
        rules[t] = _Pad()
    for t in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d):
        rules[t] = _Dropout()
    for t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        rules[t] = _BatchNorm()
    rules[nn.Embedding] = _Embedding()
    rules[nn.LSTM] = LSTMRule()
    activations = {
        nn.Tanh: _with_params("tanh", _no_params),
        nn.Sigmoid: _with_params("sigmoid", _no_params),
        nn.ReLU: _with_params("relu", _no_params),
        nn.ReLU6: _with_params("hardtanh", lambda m: {"min_val": 0.0, "max_val": 6.0}),
        nn.Hardtanh: _with_params("hardtanh", lambda m: {"min_val": m.min_val, "max_val": m.max_val}),
        nn.LeakyReLU: _leaky,
        nn.ELU: _elu,
        nn.SELU: _with_params("selu", _no_params),
        nn.GELU: _with_params("gelu", lambda m: {"approximate": m.approximate}),
        nn.SiLU: _with_params("silu", _no_params),
        nn.Softplus: _with_params("softplus", lambda m: {"beta": m.beta, "threshold": m.threshold}),
        nn.LogSigmoid: _with_params("logsigmoid", _no_params),
    }
    for t, select in activations.items():
        rules[t] = _Activation(select)
    return rules


#: The rule of every supported module type (exact types; subclasses that keep the base ``forward`` too).
MODULE_RULES: dict[type[nn.Module], ModuleRule] = _build_rules()


def module_rule(module: nn.Module) -> ModuleRule | None:
    """The rule for ``module``: by exact type, or by a supported base class whose ``forward`` it keeps."""
    rule = MODULE_RULES.get(type(module))
    if rule is not None:
        return rule
    for base, rule in MODULE_RULES.items():
        if isinstance(module, base) and type(module).forward is base.forward:
            return rule
    return None
