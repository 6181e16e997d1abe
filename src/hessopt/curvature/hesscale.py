"""HesScale, HesScaleGN and BL89: Hessian-diagonal approximations computed during ``loss.backward()``.

HesScale (Elsayed & Mahmood, arXiv:2210.11639; restated in arXiv:2404.00781, App. B Eqs. 9-12 and
App. F Alg. 6) back-propagates, next to the gradient, an approximation ``Ĥ`` of the diagonal of the
Hessian with respect to every activation::

    Ĥ(a_L)     = diag ∇²_{a_L} L                                  exact seed at the output
    Ĥ(a_l,i)   = σ'(a_l,i)² Σ_k W_{l+1,k,i}² Ĥ(a_{l+1,k}) + σ''(a_l,i) g(h_l,i)
    Ĥ(W_l,i,j) = Σ_n Ĥ(a_l,i) h_{l-1,j}²,      Ĥ(b_l,i) = Σ_n Ĥ(a_l,i)

keeping only the diagonal of every layer's Hessian (the cross terms ``k ≠ k'`` are dropped). The last
layer's parameter diagonals are exact for any loss; elementwise maps add no error. HesScaleGN drops the
``σ''`` term (a diagonal Gauss-Newton approximation, non-negative); BL89 (Becker & LeCun 1989) is
HesScale with a seed that keeps only the target class of a cross-entropy. The recursion, its rules for
every supported layer (Linear, convolutions, pooling, BatchNorm in eval mode, LSTM, residual branches,
...) and what each approximates are in docs/algorithms/hesscale.md.

Usage (one set-up line; the training loop is unchanged)::

    ext = hesscale.extend(model, loss_fn)          # loss_fn: e.g. nn.CrossEntropyLoss()
    loss = loss_fn(model(x), y); loss.backward()   # diagonals now pending on the parameters
    h = hesscale.take_diagonal(param, "hesscale")  # or let AdaHesScale.step() consume them

:func:`extend` traces the model with ``torch.fx`` once, checks that every module and function has a rule
(raising :class:`UnsupportedModelError` otherwise), and registers forward hooks that keep detached views
of the tensors the rules need. When the loss module is called on the model's output, the exact seed is
computed and one ``torch.autograd.graph.register_multi_grad_hook`` is attached (a loss computed on any
other tensor, e.g. ``2 * model(x)`` or another model's output, records nothing, and an optimizer that
needs the curvature then refuses to step); during backward it
receives the exact activation gradients (HesScale's second-order terms) and runs the recursion. The
parameter diagonals of the (mean or sum) loss then *accumulate* on the parameters like ``.grad`` does,
until taken with :func:`take_diagonal`. Cost: about one extra backward pass without the recursion's
Python overhead per module (two matrix products per Linear layer: ``D (W∘W)`` and ``D^T (x∘x)``).
"""

from __future__ import annotations

import functools
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .hesscale_functions import Ref, evaluation_target
from .hesscale_graph import Plan, Step, UnsupportedModelError, build_plan, supported_summary
from .loss_curvature import LossSpec, loss_spec, output_hessian_diagonal

__all__ = [
    "METHODS",
    "HesScale",
    "UnsupportedModelError",
    "clear_diagonals",
    "extend",
    "peek_diagonal",
    "supported_summary",
    "take_diagonal",
]

#: The diagonal back-propagation methods.
METHODS = ("hesscale", "hesscale_gn", "bl89")

_DIAG_ATTR = "_hessopt_hesscale"  # on parameters: [method, accumulated diagonal]
_RECORD_ATTR = "_hessopt_hesscale_record"  # on model outputs: the forward pass's record
_EXTENDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its live extension


# ------------------------------------------------------------------------------ pending diagonals
def _accumulate(p: Tensor, method: str, h: Tensor) -> None:
    cur = p.__dict__.get(_DIAG_ATTR)
    if cur is None:
        p.__dict__[_DIAG_ATTR] = [method, h]
    elif cur[0] != method:
        raise RuntimeError(
            f"HesScale: a parameter has a pending {cur[0]!r} diagonal and now receives a {method!r} one "
            "(two extensions with different methods on the same parameters); take or clear the pending "
            "diagonals first"
        )
    else:
        cur[1] = cur[1] + h


def take_diagonal(p: Tensor, method: str | None = None) -> Tensor | None:
    """Remove and return the diagonal accumulated on ``p`` since it was last taken (None if there is none).

    Args:
        p: a parameter of an extended model.
        method: when given, the method the caller expects (``"hesscale"``, ``"hesscale_gn"``, ``"bl89"``).

    Returns:
        The diagonal (shaped like ``p``) or None.

    Raises:
        ValueError: the pending diagonal was computed by another method.
    """
    cur = p.__dict__.pop(_DIAG_ATTR, None)
    if cur is None:
        return None
    if method is not None and cur[0] != method:
        raise ValueError(
            f"the pending curvature is a {cur[0]!r} diagonal but {method!r} was expected; extend the model "
            f"with method={method!r}"
        )
    return cur[1]


def peek_diagonal(p: Tensor) -> tuple[str, Tensor] | None:
    """``(method, diagonal)`` pending on ``p`` without removing it, or None."""
    cur = p.__dict__.get(_DIAG_ATTR)
    return None if cur is None else (cur[0], cur[1])


def clear_diagonals(params: Iterable[Tensor]) -> None:
    """Drop every pending diagonal on ``params``."""
    for p in params:
        p.__dict__.pop(_DIAG_ATTR, None)


# ------------------------------------------------------------------------------ per-forward record
class _Record:
    """What one forward pass left for the backward recursion (detached tensors only: no graph cycles)."""

    __slots__ = (
        "calls",
        "values",
        "requires",
        "saved",
        "versions",
        "g_tensors",
        "g_keys",
        "seed",
        "consumed",
    )

    def __init__(self, n: int) -> None:
        self.calls = 0
        self.values: list[Any] = [None] * n
        self.requires: list[bool | None] = [None] * n
        self.saved: list[Any] = [None] * n
        self.versions: list[Any] = [None] * n
        self.g_tensors: list[Tensor] | None = []
        self.g_keys: list[tuple[int, tuple]] = []
        self.seed: Tensor | None = None
        self.consumed = False


def _resolve(obj: Any, path: tuple) -> tuple[Any, tuple]:
    """Walk ``path`` into nested args; stop at a Ref and return it with the rest of the path."""
    for k, key in enumerate(path):
        if isinstance(obj, Ref):
            return obj, path[k:]
        obj = obj[key]
    return obj, ()


def _add_at(tree: Any, sub: tuple, value: Tensor) -> Any:
    """``tree`` (a tensor, None, or a dict for tuple-valued nodes) plus ``value`` placed at ``sub``."""
    if not sub:
        return value if tree is None else tree + value
    tree = {} if tree is None else tree
    tree[sub[0]] = _add_at(tree.get(sub[0]), sub[1:], value)
    return tree


def _tensors_of(saved: Any) -> list[Tensor]:
    if isinstance(saved, Tensor):
        return [saved]
    if isinstance(saved, (tuple, list)):
        return [t for t in saved if isinstance(t, Tensor)]
    return []


class _Context:
    """What rules see during the recursion: the mode, parameter accumulation, lazy node values."""

    def __init__(self, ext_method: str, plan: Plan, rec: _Record) -> None:
        self.gn = plan.gn
        self.method = ext_method
        self.plan = plan
        self.rec = rec
        self._evaluated: dict[int, Any] = {}
        self._requires: dict[int, bool] = {}

    def acc(self, p: Tensor, h: Tensor) -> None:
        if p.requires_grad:
            _accumulate(p, self.method, h)

    def is_tensor(self, ref: Any) -> bool:
        return isinstance(ref, Ref) and self.plan.steps[ref.index].structure == "tensor"

    def node_value(self, i: int) -> Any:
        captured = self.rec.values[i]
        if captured is not None:
            tensor, version = captured
            if isinstance(tensor, Tensor) and tensor._version != version:
                raise RuntimeError(
                    f"HesScale: the value of '{self.plan.steps[i].name}' was modified in place after it was "
                    "computed; HesScale needs it for its curvature rules (avoid the in-place operation)"
                )
            return tensor
        if i in self._evaluated:
            return self._evaluated[i]
        step = self.plan.steps[i]
        if step.op == "get_attr":
            value = step.target.detach() if isinstance(step.target, Tensor) else step.target
        elif step.op in ("call_function", "call_method", "meta"):
            op, target = (step.op, step.target) if step.op != "meta" else step.rule
            args = self._eval_args(step.args)
            kwargs = self._eval_args(step.kwargs)
            target, kwargs = evaluation_target(op, target, kwargs)
            value = (
                getattr(args[0], target)(*args[1:], **kwargs)
                if op == "call_method"
                else target(*args, **kwargs)
            )
        else:
            raise RuntimeError(f"HesScale internal error: no value recorded for '{step.name}'")
        self._evaluated[i] = value
        return value

    def _eval_args(self, value: Any) -> Any:
        if isinstance(value, Ref):
            return self.node_value(value.index)
        if isinstance(value, tuple):
            return tuple(self._eval_args(v) for v in value)
        if isinstance(value, list):
            return [self._eval_args(v) for v in value]
        if isinstance(value, dict):
            return {k: self._eval_args(v) for k, v in value.items()}
        if isinstance(value, slice):
            return slice(
                self._eval_args(value.start), self._eval_args(value.stop), self._eval_args(value.step)
            )
        return value

    def value(self, ref: Any) -> Any:
        return self.node_value(ref.index) if isinstance(ref, Ref) else ref

    def shape(self, ref: Any) -> torch.Size:
        return self.value(ref).shape

    def requires(self, i: int) -> bool:
        flag = self.rec.requires[i]
        if flag is not None:
            return flag
        if i in self._requires:
            return self._requires[i]
        step = self.plan.steps[i]
        if step.structure == "meta":
            out = False
        elif step.op == "get_attr":
            out = bool(getattr(step.target, "requires_grad", False))
        else:
            out = any(self.requires(j) for _, j in step.input_refs)
        self._requires[i] = out
        return out


def _run(
    method: str, plan: Plan, rec: _Record, out_shape: torch.Size, grads: tuple[Tensor | None, ...]
) -> None:
    """The HesScale recursion, run once the exact activation gradients of this backward are known."""
    try:
        with torch.no_grad():
            _recursion(method, plan, rec, out_shape, grads)
    finally:  # free the forward pass's tensors
        rec.values = rec.saved = []


def _recursion(method: str, plan: Plan, rec: _Record, out_shape: torch.Size, grads: tuple) -> None:
    steps = plan.steps
    n = len(steps)
    d: list[Any] = [None] * n
    g: list[Any] = [None] * n
    captured_g = set()
    for (i, sub), grad in zip(rec.g_keys, grads[1:], strict=True):
        captured_g.add(i)
        if grad is not None:
            g[i] = _add_at(g[i], sub, grad)
    if plan.output_needs_g and grads[0] is not None:
        g[plan.output_index] = grads[0].reshape(out_shape)
        captured_g.add(plan.output_index)
    ctx = _Context(method, plan, rec)
    d[plan.seed_index] = rec.seed
    for step in reversed(steps):
        d_out = d[step.index]
        if d_out is None or step.index == plan.fused_log_softmax:
            continue
        if step.op == "call_module":
            saved = rec.saved[step.index]
            for t, version in zip(_tensors_of(saved), rec.versions[step.index] or (), strict=False):
                if t._version != version:
                    raise RuntimeError(
                        f"HesScale: a tensor saved by module '{step.name}' was modified in place after its "
                        "forward pass (an in-place operation on its input or output); avoid it"
                    )
            g_out = g[step.index]
            if step.needs_g and g_out is None:
                g_out = torch.zeros_like(d_out) if isinstance(d_out, Tensor) else {}
            for path, d_in in step.rule.backward(step.target, saved, d_out, g_out, ctx):
                _route(step, path, d_in, None, d, g, captured_g, ctx)
        elif step.op in ("call_function", "call_method"):
            g_out = g[step.index]
            if step.needs_g and g_out is None:
                g_out = torch.zeros_like(d_out)
            for path, d_in, g_in in step.rule.backward(step, ctx, d_out, g_out, step.push_g):
                _route(step, path, d_in, g_in, d, g, captured_g, ctx)
        elif step.op == "get_attr" and isinstance(step.target, nn.Parameter):
            ctx.acc(step.target, d_out)


def _route(
    step: Step, path: tuple, d_in: Tensor, g_in: Tensor | None, d: list, g: list, captured: set, ctx
) -> None:
    if not isinstance(path, tuple):
        path = (path,)
    ref, sub = _resolve(step.args if isinstance(path[0], int) else step.kwargs, path)
    if not isinstance(ref, Ref) or not ctx.requires(ref.index):
        return
    j = ref.index
    d[j] = _add_at(d[j], sub, d_in)
    if g_in is not None and j not in captured and ctx.plan.steps[j].needs_g:
        g[j] = _add_at(g[j], sub, g_in)


# ------------------------------------------------------------------------------ the extension
class HesScale:
    """Forward hooks on a model and its loss module that compute HesScale diagonals during backward.

    Create with :func:`extend`. The diagonals of the loss computed with ``loss_fn`` accumulate on the
    model's parameters during every ``backward()`` through that loss, like gradients, until taken with
    :func:`take_diagonal` (``AdaHesScale.step()`` takes them). :meth:`remove` detaches the hooks.
    The object holds no tensors between steps; copying or pickling the model copies the extension with it.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, method: str = "hesscale") -> None:
        """Validate, trace and hook; see :func:`extend` for the arguments and errors."""
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
        self._spec: LossSpec = loss_spec(loss_fn)
        previous = _EXTENDED.get(model)
        if previous is not None and previous._handles:
            raise ValueError(
                "model is already extended for HesScale; call .remove() on the previous extension first"
            )
        self.method = method
        self._model = model
        self._plan: Plan | None = build_plan(model, self._spec.kind, method)
        self._rec: _Record | None = None
        self._recent: deque = deque(maxlen=8)
        self._handles: list = []
        hooked: set[int] = set()
        for step in self._plan.module_steps:
            if id(step.target) not in hooked:
                hooked.add(id(step.target))
                self._handles.append(step.target.register_forward_hook(self._module_hook))
        self._handles.append(model.register_forward_pre_hook(self._pre_hook))
        self._handles.append(model.register_forward_hook(self._post_hook))
        self._handles.append(loss_fn.register_forward_hook(self._loss_hook))
        _EXTENDED[model] = self

    @property
    def plan(self) -> Plan:
        """The validated plan (rebuilt lazily after the model was copied or unpickled)."""
        if self._plan is None:
            self._plan = build_plan(self._model, self._spec.kind, self.method)
        return self._plan

    def remove(self) -> None:
        """Remove every hook; pending diagonals stay on the parameters."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if _EXTENDED.get(self._model) is self:
            del _EXTENDED[self._model]

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles keep the hooks' configuration, not the transient per-forward state."""
        state = dict(self.__dict__)
        state.update(_plan=None, _rec=None, _recent=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore; the plan is rebuilt lazily at the next forward pass."""
        self.__dict__.update(state)
        self._recent = deque(maxlen=8)
        if self._handles:
            _EXTENDED[self._model] = self

    # -------------------------------------------------------------- hooks
    def _pre_hook(self, module: nn.Module, args: tuple) -> None:
        if not torch.is_grad_enabled():
            self._rec = None
            return
        plan = self.plan
        rec = _Record(len(plan.steps))
        x = args[0]
        if isinstance(x, Tensor):
            rec.values[plan.input_index] = (x.detach(), x._version)
            rec.requires[plan.input_index] = x.requires_grad
        self._rec = rec

    def _module_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        rec = self._rec
        if rec is None:
            return
        plan = self._plan
        k = rec.calls
        rec.calls = k + 1
        if k >= len(plan.module_steps) or plan.module_steps[k].target is not module:
            self._rec = None
            raise RuntimeError(
                f"HesScale: the forward pass called module {type(module).__name__} where the traced graph "
                "expects another module; the forward must follow the graph traced at set-up (no "
                "data-dependent control flow, no submodule calls outside the model's forward)"
            )
        step = plan.module_steps[k]
        saved = step.rule.save(module, args, output)
        rec.saved[step.index] = saved
        rec.versions[step.index] = [t._version for t in _tensors_of(saved)]
        for path, j in step.input_refs:
            t, _ = _resolve(args, path)
            if isinstance(t, Tensor):
                rec.requires[j] = t.requires_grad
                if rec.values[j] is None and plan.steps[j].op != "call_module" and plan.steps[j].users:
                    rec.values[j] = (t.detach(), t._version)
        if isinstance(output, Tensor):
            rec.requires[step.index] = output.requires_grad
            if step.capture_value:
                rec.values[step.index] = (output.detach(), output._version)
        else:
            rec.requires[step.index] = any(t.requires_grad for _, t in step.rule.g_outputs(output))
            if step.capture_value:
                rec.values[step.index] = (_detach_tree(output), None)
        if step.needs_g:
            for sub, t in step.rule.g_outputs(output):
                if t.requires_grad:
                    rec.g_tensors.append(t)
                    rec.g_keys.append((step.index, sub))
        for path, j in step.capture_g_inputs:
            t, _ = _resolve(args, path)
            if isinstance(t, Tensor) and t.requires_grad and all(key[0] != j for key in rec.g_keys):
                rec.g_tensors.append(t)
                rec.g_keys.append((j, ()))

    def _post_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        rec = self._rec
        self._rec = None
        if rec is None:
            return
        if rec.calls != len(self._plan.module_steps):
            raise RuntimeError(
                f"HesScale: the forward pass called {rec.calls} supported modules, the traced graph has "
                f"{len(self._plan.module_steps)}; the forward must follow the graph traced at set-up"
            )
        if not isinstance(output, Tensor):
            raise RuntimeError("HesScale: the model must return a single tensor")
        output.__dict__[_RECORD_ATTR] = rec
        self._recent.append(weakref.ref(output))

    def _find(self, z: Tensor) -> tuple[_Record | None, Tensor | None]:
        for ref in reversed(self._recent):
            out = ref()
            if out is None:
                continue
            if z is out or (
                z._base is not None
                and (z._base is out or (out._base is not None and z._base is out._base))
                and z.numel() == out.numel()
                and z.data_ptr() == out.data_ptr()
                and z.is_contiguous()
                and out.is_contiguous()
            ):
                return out.__dict__.get(_RECORD_ATTR), out
        return None, None

    def _loss_hook(self, loss_module: nn.Module, args: tuple, output: Tensor) -> None:
        if not torch.is_grad_enabled():
            return
        z, target = args[0], args[1]
        rec, out = self._find(z)
        if rec is None:  # another model's output (a shared loss module): no curvature for it
            return
        if rec.consumed:
            raise RuntimeError(
                "HesScale: the loss module was called twice on the same model output; call the model again"
            )
        rec.consumed = True
        plan = self._plan
        bl89 = self.method == "bl89"
        with torch.no_grad():
            if plan.fused_log_softmax is not None:
                log_softmax = plan.steps[plan.fused_log_softmax]
                dim = (
                    log_softmax.target.dim
                    if log_softmax.op == "call_module"
                    else _log_softmax_dim(log_softmax)
                )
                class_dim = 1 if z.dim() > 1 else 0
                if dim is None or dim % z.dim() != class_dim % z.dim():
                    raise RuntimeError(
                        f"HesScale: the final LogSoftmax normalises over dim {dim}, the NLLLoss's class "
                        f"dimension is {class_dim}"
                    )
                seed = output_hessian_diagonal(self._spec, z, target, bl89=bl89, log_probs=True)
            else:
                seed = output_hessian_diagonal(self._spec, z, target, bl89=bl89)
        rec.seed = seed.reshape(out.shape)
        tensors = rec.g_tensors
        rec.g_tensors = None
        if not z.requires_grad:
            return
        hook = functools.partial(_run, self.method, plan, rec, out.shape)
        torch.autograd.graph.register_multi_grad_hook([z, *tensors], hook)


def _log_softmax_dim(step: Step) -> int | None:
    dim = step.args[1] if len(step.args) > 1 else step.kwargs.get("dim")
    return dim if isinstance(dim, int) else None


def _detach_tree(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detach_tree(v) for v in value)
    return value


def extend(model: nn.Module, loss_fn: nn.Module, method: str = "hesscale") -> HesScale:
    """Register hooks so that every ``backward()`` through ``loss_fn(model(x), y)`` computes diagonals.

    Args:
        model: the network (a DistributedDataParallel wrapper is unwrapped). Traced once with
            ``torch.fx``; must take one tensor and return one tensor.
        loss_fn: the loss *module* the training loop calls on ``model(x)`` (``nn.CrossEntropyLoss``,
            ``nn.MSELoss``, ``nn.BCEWithLogitsLoss`` or ``nn.NLLLoss`` after a final LogSoftmax), reduction
            ``"mean"`` or ``"sum"``. Only this loss's curvature is computed: a regulariser added to it
            afterwards is not included.
        method: ``"hesscale"`` (default), ``"hesscale_gn"`` (no second-derivative terms) or ``"bl89"``.

    Returns:
        The :class:`HesScale` extension (keep it to :meth:`~HesScale.remove` the hooks).

    Raises:
        UnsupportedModelError: a module or function without a rule (named, with the supported list), a
            BatchNorm in training mode, or a forward pass ``torch.fx`` cannot trace.
        TypeError, ValueError: an unsupported loss, a bad method, or an already extended model.

    References:
        Elsayed & Mahmood, arXiv:2210.11639; Elsayed et al., arXiv:2406.03276; Elsayed & Mahmood,
        arXiv:2404.00781 (App. B Eqs. 9-12); docs/algorithms/hesscale.md.
    """
    return HesScale(model, loss_fn, method)
