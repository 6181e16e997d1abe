"""HesScale's rules for the functions and tensor methods between modules (``forward`` code traced by FX).

Every supported function is linear with one non-zero per Jacobian row (reshapes, permutations,
indexing, concatenation, broadcasting), linear with a constant (scaling, means, sums), elementwise
(activations, products) or a merge of branches (addition, subtraction). Rules return
``[(argument path, D_in, g_in)]``; the exact gradient ``g_in`` is computed only when an upstream
second-order term needs it and no autograd gradient is captured there. A tensor reaching an operation
through several arguments (``x + f(x)``, a residual branch) receives the sum of the per-argument
diagonals: the branches' cross terms are dropped, as HesScale drops cross terms between units
(docs/algorithms/hesscale.md, "Branches"). The same node in two arguments of one operation (``x * x``,
``x + x``) is handled as one input.
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .hesscale_elementwise import ELEMENTWISE_KINDS, elementwise_backward
from .hesscale_modules import pool_backward

__all__ = ["FUNCTION_RULES", "META_FUNCTIONS", "META_METHODS", "Ref", "evaluation_target", "function_rule"]


@dataclass(frozen=True)
class Ref:
    """A reference to the value of plan node ``index`` inside a step's arguments."""

    index: int


def _arg(step, position: int, name: str, default: Any = None) -> tuple[Any, tuple]:
    """The argument at ``position`` or keyword ``name``, and its path."""
    if position < len(step.args):
        return step.args[position], (position,)
    if name in step.kwargs:
        return step.kwargs[name], (name,)
    return default, ()


def _const(ctx, value: Any) -> Any:
    return ctx.value(value) if isinstance(value, Ref) else value


class FunctionRule:
    """Base of the function rules."""

    name = "function"

    def check(self, step, is_tensor: Callable[[Any], bool]) -> str | None:
        """A reason the call is not supported (argument types known at set-up), or None."""
        return None

    def needs_g(self, step, gn: bool) -> bool:
        """Whether the rule's own ``D_in`` needs the exact gradient at its output."""
        return False

    def backward(self, step, ctx, d_out, g_out, want_g: bool) -> list:
        """``[(path, D_in, g_in or None)]``."""
        raise NotImplementedError


def _sum_to(t: Tensor | None, shape: torch.Size) -> Tensor | None:
    if t is None:
        return None
    return t if t.shape == shape else t.sum_to_size(shape)


class _AddSub(FunctionRule):
    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.name = "add" if sign > 0 else "sub"

    def backward(self, step, ctx, d_out, g_out, want_g):
        a, pa = _arg(step, 0, "input")
        b, pb = _arg(step, 1, "other")
        alpha = _const(ctx, step.kwargs.get("alpha", 1))
        cb = self.sign * alpha
        out = []
        if isinstance(a, Ref) and a == b:
            coef = 1 + cb
            shape = ctx.shape(a)
            return [
                (pa, _sum_to(d_out * coef * coef, shape), _sum_to(g_out * coef, shape) if want_g else None)
            ]
        for ref, path, coef in ((a, pa, 1.0), (b, pb, cb)):
            if isinstance(ref, Ref) and ctx.is_tensor(ref):
                shape = ctx.shape(ref)
                d = d_out if coef == 1 else d_out * (coef * coef)
                g = (g_out if coef == 1 else g_out * coef) if want_g else None
                out.append((path, _sum_to(d, shape), _sum_to(g, shape)))
        return out


class _MulDiv(FunctionRule):
    def __init__(self, divide: bool) -> None:
        self.divide = divide
        self.name = "div" if divide else "mul"

    def check(self, step, is_tensor):
        if self.divide:
            b, _ = _arg(step, 1, "other")
            if isinstance(b, Ref) and is_tensor(b):
                return "division by a tensor (only division by a number)"
            if step.kwargs.get("rounding_mode") is not None:
                return "division with a rounding mode"
        return None

    def needs_g(self, step, gn):
        a, _ = _arg(step, 0, "input")
        b, _ = _arg(step, 1, "other")
        return not gn and isinstance(a, Ref) and a == b

    def backward(self, step, ctx, d_out, g_out, want_g):
        a, pa = _arg(step, 0, "input")
        b, pb = _arg(step, 1, "other")
        ta = isinstance(a, Ref) and ctx.is_tensor(a)
        tb = isinstance(b, Ref) and ctx.is_tensor(b)
        if ta and tb:
            if a == b:  # u ∘ u
                u = ctx.value(a)
                d = 4 * u * u * d_out
                if not ctx.gn:
                    d = d + 2 * g_out
                return [(pa, d, 2 * u * g_out if want_g else None)]
            out = []
            for ref, path, other in ((a, pa, b), (b, pb, a)):
                v = ctx.value(other)
                shape = ctx.shape(ref)
                out.append(
                    (path, _sum_to(v * v * d_out, shape), _sum_to(v * g_out, shape) if want_g else None)
                )
            return out
        ref, path, c = (a, pa, _const(ctx, b)) if ta else (b, pb, _const(ctx, a))
        if self.divide:
            c = 1.0 / c
        shape = ctx.shape(ref)
        return [(path, _sum_to(d_out * (c * c), shape), _sum_to(g_out * c, shape) if want_g else None)]


class _Neg(FunctionRule):
    name = "neg"

    def backward(self, step, ctx, d_out, g_out, want_g):
        return [((0,), d_out, -g_out if want_g else None)]


class _Reshape(FunctionRule):
    """flatten/view/reshape/squeeze/unsqueeze/contiguous/clone: the diagonal follows the reshape."""

    name = "reshape"

    def backward(self, step, ctx, d_out, g_out, want_g):
        shape = ctx.shape(step.args[0])
        return [((0,), d_out.reshape(shape), g_out.reshape(shape) if want_g else None)]


class _Expand(FunctionRule):
    """expand/expand_as/broadcast_to: each output copies one input entry; sums over the copies."""

    name = "expand"

    def backward(self, step, ctx, d_out, g_out, want_g):
        shape = ctx.shape(step.args[0])
        return [((0,), _sum_to(d_out, shape), _sum_to(g_out, shape) if want_g else None)]


class _Permute(FunctionRule):
    """permute/transpose/t: the inverse permutation."""

    name = "permute"

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def backward(self, step, ctx, d_out, g_out, want_g):
        ndim = len(ctx.shape(step.args[0]))
        if self.kind == "t":
            inv = lambda t: t.t() if t.dim() == 2 else t  # noqa: E731
        elif self.kind == "transpose":
            d0 = _const(ctx, _arg(step, 1, "dim0")[0])
            d1 = _const(ctx, _arg(step, 2, "dim1")[0])
            inv = lambda t: t.transpose(d0, d1)  # noqa: E731
        else:
            dims = (
                step.args[1:]
                if len(step.args) > 2 or not isinstance(step.args[1], (tuple, list))
                else step.args[1]
            )
            if "dims" in step.kwargs:
                dims = step.kwargs["dims"]
            dims = [_const(ctx, d) % ndim for d in dims]
            order = [0] * ndim
            for i, d in enumerate(dims):
                order[d] = i
            inv = lambda t: t.permute(order)  # noqa: E731
        return [((0,), inv(d_out), inv(g_out) if want_g else None)]


def _basic_index(idx: Any) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items)


class _GetItem(FunctionRule):
    """Indexing a tensor with ints/slices (a selection: zero-filled scatter) or a tuple output."""

    name = "getitem"

    def check(self, step, is_tensor):
        idx = step.args[1]
        if isinstance(idx, Ref) or (isinstance(idx, tuple) and any(isinstance(i, Ref) for i in idx)):
            return "indexing with a computed index (only constant ints, slices, None and ...)"
        if not _basic_index(idx):
            return f"indexing with {idx!r} (only ints, slices, None and ...)"
        return None

    def backward(self, step, ctx, d_out, g_out, want_g):
        src, idx = step.args[0], step.args[1]
        if not ctx.is_tensor(src):  # an element of a tuple-valued node
            return [((0, idx), d_out, g_out if want_g else None)]
        shape = ctx.shape(src)
        d = d_out.new_zeros(shape)
        d[idx] = d_out
        g = None
        if want_g:
            g = g_out.new_zeros(shape)
            g[idx] = g_out
        return [((0,), d, g)]


class _Cat(FunctionRule):
    name = "cat"

    def backward(self, step, ctx, d_out, g_out, want_g):
        parts, _ = _arg(step, 0, "tensors")
        dim = _const(ctx, _arg(step, 1, "dim", 0)[0])
        sizes = [ctx.shape(p)[dim] if isinstance(p, Ref) else p.shape[dim] for p in parts]
        ds = d_out.split(sizes, dim)
        gs = g_out.split(sizes, dim) if want_g else [None] * len(parts)
        return [
            ((0, j), d, g)
            for j, (p, d, g) in enumerate(zip(parts, ds, gs, strict=True))
            if isinstance(p, Ref)
        ]


class _Reduce(FunctionRule):
    """mean/sum over dimensions: ``D_in`` is ``D_out`` broadcast back, divided by ``K²`` for a mean."""

    def __init__(self, mean: bool) -> None:
        self.mean = mean
        self.name = "mean" if mean else "sum"

    def check(self, step, is_tensor):
        if step.kwargs.get("dtype") is not None:
            return "a dtype argument"
        return None

    def backward(self, step, ctx, d_out, g_out, want_g):
        shape = ctx.shape(step.args[0])
        dim, _ = _arg(step, 1, "dim")
        keepdim = _const(ctx, _arg(step, 2, "keepdim", False)[0])
        dim = _const(ctx, dim)
        if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
            dims = list(range(len(shape)))
        else:
            dims = [d % len(shape) for d in (dim if isinstance(dim, (tuple, list)) else [dim])]
        k = math.prod(shape[d] for d in dims)
        if not keepdim:
            for d in sorted(dims):
                d_out = d_out.unsqueeze(d)
                if want_g:
                    g_out = g_out.unsqueeze(d)
        c = 1.0 / k if self.mean else 1.0
        d = d_out.expand(shape) * (c * c)
        g = g_out.expand(shape) * c if want_g else None
        return [((0,), d, g)]


_ACT_DEFAULTS: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {
    "tanh": ("tanh", ()),
    "sigmoid": ("sigmoid", ()),
    "relu": ("relu", ()),
    "relu6": ("hardtanh", ()),
    "hardtanh": ("hardtanh", (("min_val", -1.0), ("max_val", 1.0))),
    "leaky_relu": ("leaky_relu_in", (("negative_slope", 0.01),)),
    "elu": ("elu_in", (("alpha", 1.0),)),
    "selu": ("selu", ()),
    "gelu": ("gelu", (("approximate", "none"),)),
    "silu": ("silu", ()),
    "softplus": ("softplus", (("beta", 1.0), ("threshold", 20.0))),
    "logsigmoid": ("logsigmoid", ()),
}


class _Activation(FunctionRule):
    """A functional elementwise activation (input-reading derivative formulas)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.name = key

    def _params(self, step, ctx) -> dict:
        if self.key == "relu6":
            return {"min_val": 0.0, "max_val": 6.0}
        _, spec = _ACT_DEFAULTS[self.key]
        return {
            name: _const(ctx, _arg(step, i + 1, name, default)[0]) for i, (name, default) in enumerate(spec)
        }

    def needs_g(self, step, gn):
        return not gn and self.key not in ("relu", "relu6", "hardtanh", "leaky_relu")

    def backward(self, step, ctx, d_out, g_out, want_g):
        kind_name, _ = _ACT_DEFAULTS[self.key]
        if kind_name in ("relu", "tanh", "sigmoid", "selu", "hardtanh"):
            kind = ELEMENTWISE_KINDS[kind_name]
            saved = ctx.node_value(step.index) if kind.uses == "output" else ctx.value(step.args[0])
        else:
            kind = ELEMENTWISE_KINDS[kind_name]
            saved = ctx.value(step.args[0])
        d_in, d1 = elementwise_backward(kind, saved, self._params(step, ctx), d_out, g_out, ctx.gn)
        return [((0,), d_in, d1 * g_out if want_g else None)]


_POOL_SPECS = {
    "max": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "adaptive_avg": ("output_size",),
}
_POOL_DEFAULTS = {
    "stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False,
    "count_include_pad": True, "divisor_override": None,
}  # fmt: skip


class _FunctionalPool(FunctionRule):
    def __init__(self, kind: str, dims: int) -> None:
        self.kind, self.dims = kind, dims
        self.name = f"{kind}_pool{dims}d"

    def check(self, step, is_tensor):
        if self.kind == "max":
            ri, _ = _arg(step, 6, "return_indices", False)
            if ri:
                return "return_indices=True in a functional max pool"
        return None

    def backward(self, step, ctx, d_out, g_out, want_g):
        names = _POOL_SPECS[self.kind]
        cfg = {n: _const(ctx, _arg(step, i + 1, n, _POOL_DEFAULTS.get(n))[0]) for i, n in enumerate(names)}
        x = ctx.value(step.args[0])
        d = pool_backward(self.kind, self.dims, x, d_out, cfg)
        g = None
        if want_g:
            raise RuntimeError("HesScale internal error: gradients are not propagated through pooling")
        return [((0,), d, g)]


class _Pad(FunctionRule):
    name = "pad"

    def check(self, step, is_tensor):
        mode, _ = _arg(step, 2, "mode", "constant")
        return None if mode == "constant" else f"F.pad with mode={mode!r} (only 'constant')"

    def backward(self, step, ctx, d_out, g_out, want_g):
        pad = [-_const(ctx, p) for p in _const(ctx, _arg(step, 1, "pad")[0])]
        return [((0,), F.pad(d_out, pad), F.pad(g_out, pad) if want_g else None)]


class _Dropout(FunctionRule):
    """``F.dropout`` with ``training=False`` (or ``p = 0``): the identity."""

    name = "dropout"

    def check(self, step, is_tensor):
        p, _ = _arg(step, 1, "p", 0.5)
        training, _ = _arg(step, 2, "training", True)
        if training and p != 0:
            return "functional dropout in training mode (use the nn.Dropout module, whose mask is observed)"
        return None

    def backward(self, step, ctx, d_out, g_out, want_g):
        return [((0,), d_out, g_out if want_g else None)]


class _Stop(FunctionRule):
    """``detach``: no curvature flows back."""

    name = "detach"

    def backward(self, step, ctx, d_out, g_out, want_g):
        return []


class LogSoftmaxMarker(FunctionRule):
    """``log_softmax`` as the model's last operation before an ``NLLLoss``: fused into the seed."""

    name = "log_softmax"

    def save(self, module, inputs, output):
        """Nothing: the fused LogSoftmax is replaced by the seed at its input."""
        return None

    def backward(self, step, ctx, d_out, g_out, want_g):
        raise RuntimeError("HesScale internal error: a fused LogSoftmax is never propagated through")


def _table() -> tuple[dict[Any, FunctionRule], dict[str, FunctionRule]]:
    add, sub = _AddSub(1.0), _AddSub(-1.0)
    mul, div = _MulDiv(False), _MulDiv(True)
    reshape, expand = _Reshape(), _Expand()
    functions: dict[Any, FunctionRule] = {
        operator.add: add, operator.iadd: add, torch.add: add,
        operator.sub: sub, operator.isub: sub, torch.sub: sub, torch.subtract: sub,
        operator.mul: mul, operator.imul: mul, torch.mul: mul, torch.multiply: mul,
        operator.truediv: div, operator.itruediv: div, torch.div: div, torch.true_divide: div,
        operator.neg: _Neg(), torch.neg: _Neg(),
        torch.flatten: reshape, torch.reshape: reshape, torch.squeeze: reshape, torch.unsqueeze: reshape,
        torch.clone: reshape, torch.broadcast_to: expand,
        torch.permute: _Permute("permute"), torch.transpose: _Permute("transpose"), torch.t: _Permute("t"),
        operator.getitem: _GetItem(), torch.cat: _Cat(), torch.concat: _Cat(),
        torch.mean: _Reduce(True), torch.sum: _Reduce(False),
        torch.tanh: _Activation("tanh"), F.tanh: _Activation("tanh"),
        torch.sigmoid: _Activation("sigmoid"), F.sigmoid: _Activation("sigmoid"),
        torch.relu: _Activation("relu"), torch.relu_: _Activation("relu"), F.relu: _Activation("relu"),
        F.relu6: _Activation("relu6"), F.hardtanh: _Activation("hardtanh"),
        F.leaky_relu: _Activation("leaky_relu"), F.elu: _Activation("elu"),
        F.selu: _Activation("selu"), torch.selu: _Activation("selu"), F.gelu: _Activation("gelu"),
        F.silu: _Activation("silu"), F.softplus: _Activation("softplus"),
        F.logsigmoid: _Activation("logsigmoid"),
        F.pad: _Pad(), F.dropout: _Dropout(), torch.detach: _Stop(),
        F.log_softmax: LogSoftmaxMarker(), torch.log_softmax: LogSoftmaxMarker(),
    }  # fmt: skip
    for dims in (1, 2, 3):
        for kind, names in (
            ("max", (f"max_pool{dims}d",)),
            ("avg", (f"avg_pool{dims}d",)),
            ("adaptive_avg", (f"adaptive_avg_pool{dims}d",)),
        ):
            for name in names:
                for owner in (F, torch):
                    fn = getattr(owner, name, None)
                    if fn is not None:
                        functions[fn] = _FunctionalPool(kind, dims)
    methods: dict[str, FunctionRule] = {
        "add": add, "add_": add, "sub": sub, "sub_": sub, "mul": mul, "mul_": mul, "div": div, "div_": div,
        "neg": _Neg(), "flatten": reshape, "view": reshape, "reshape": reshape, "view_as": reshape,
        "reshape_as": reshape, "squeeze": reshape, "unsqueeze": reshape, "contiguous": reshape,
        "clone": reshape, "expand": expand, "expand_as": expand, "permute": _Permute("permute"),
        "transpose": _Permute("transpose"), "t": _Permute("t"), "mean": _Reduce(True), "sum": _Reduce(False),
        "tanh": _Activation("tanh"), "sigmoid": _Activation("sigmoid"), "relu": _Activation("relu"),
        "relu_": _Activation("relu"), "detach": _Stop(), "log_softmax": LogSoftmaxMarker(),
    }  # fmt: skip
    return functions, methods


FUNCTION_RULES, METHOD_RULES = _table()

#: Functions and methods that produce non-differentiable values (shapes, sizes, metadata).
META_FUNCTIONS = {builtins.getattr, builtins.len, torch.numel}
META_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "type", "get_device", "stride"}

_INPLACE_FUNCTIONS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, torch.relu_: torch.relu,
}  # fmt: skip


def function_rule(op: str, target: Any) -> FunctionRule | None:
    """The rule for an FX ``call_function`` (``op="call_function"``) or ``call_method`` node target."""
    if op == "call_method":
        return METHOD_RULES.get(target)
    try:
        return FUNCTION_RULES.get(target)
    except TypeError:  # unhashable target
        return None


def evaluation_target(op: str, target: Any, kwargs: dict) -> tuple[Any, dict]:
    """The out-of-place equivalent of an FX target (re-evaluating never mutates captured tensors)."""
    if op == "call_method":
        if target.endswith("_") and not target.startswith("_"):
            target = target[:-1]
        return target, kwargs
    target = _INPLACE_FUNCTIONS.get(target, target)
    if kwargs.get("inplace"):
        kwargs = {**kwargs, "inplace": False}
    return target, kwargs
