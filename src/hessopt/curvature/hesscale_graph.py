"""The plan of a HesScale back-propagation: the model's forward graph (``torch.fx``), validated rule by rule.

:func:`build_plan` traces the model once with ``torch.fx`` (supported modules are leaves; other
``torch.nn`` modules are leaves too and are rejected; user modules are traced through), attaches a rule
to every node and decides, at set-up, everything the hooks need at run time: which module outputs to
keep, which exact gradients to capture (HesScale's second-order terms need the gradient at the output
of every nonlinear elementwise map; where that value is not a module input or output, the gradient is
carried through the linear functions in between), and which LogSoftmax is fused with an ``NLLLoss``
into a cross-entropy seed. Anything without a rule raises one :class:`UnsupportedModelError` that names
every offending module or function and lists what is supported.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch.fx as fx
from torch import nn

from .hesscale_functions import (
    META_FUNCTIONS,
    META_METHODS,
    LogSoftmaxMarker,
    Ref,
    function_rule,
)
from .hesscale_modules import MODULE_RULES, module_rule

__all__ = ["Plan", "Step", "UnsupportedModelError", "build_plan", "supported_summary"]

TENSOR, META = "tensor", "meta"


class UnsupportedModelError(TypeError):
    """The model contains a module or function that HesScale has no rule for (raised at set-up)."""


@dataclass
class Step:
    """One node of the plan (an FX node that produces a value)."""

    index: int
    op: str  # placeholder, get_attr, call_module, call_function, call_method, meta
    name: str
    target: Any
    args: tuple
    kwargs: dict
    rule: Any = None
    structure: Any = TENSOR
    users: list[int] = field(default_factory=list)
    input_refs: list[tuple[tuple, int]] = field(default_factory=list)
    needs_g: bool = False
    push_g: bool = False
    capture_value: bool = False
    capture_g_inputs: list[tuple[tuple, int]] = field(default_factory=list)


@dataclass
class Plan:
    """Steps in execution order, the module calls in order, and the seed's placement."""

    steps: list[Step]
    module_steps: list[Step]
    input_index: int
    output_index: int
    seed_index: int
    fused_log_softmax: int | None
    output_needs_g: bool
    gn: bool


def supported_summary() -> str:
    """A one-paragraph list of the supported modules and functions (for error messages and docs)."""
    modules = sorted({t.__name__ for t in MODULE_RULES})
    return (
        "Supported modules: " + ", ".join(modules) + " (BatchNorm in eval mode; LSTM unidirectional; "
        "LogSoftmax only as the last operation before an NLLLoss). Supported functions between modules: "
        "+, -, * and / by numbers, elementwise products, reshapes (flatten/view/reshape/squeeze/unsqueeze), "
        "permute/transpose, constant indexing, cat, mean/sum, expand, F.pad (constant), functional "
        "activations (relu, tanh, sigmoid, gelu, silu, elu, selu, leaky_relu, softplus, logsigmoid, "
        "hardtanh, relu6), functional max/avg/adaptive-avg pooling, size/shape queries."
    )


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if module_rule(m) is not None or isinstance(m, nn.LogSoftmax):
            return True
        return super().is_leaf_module(m, qualname)


def _map_refs(value: Any, index_of: dict[fx.Node, int]) -> Any:
    if isinstance(value, fx.Node):
        return Ref(index_of[value])
    if isinstance(value, tuple):
        return tuple(_map_refs(v, index_of) for v in value)
    if isinstance(value, list):
        return [_map_refs(v, index_of) for v in value]
    if isinstance(value, dict):
        return {k: _map_refs(v, index_of) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(*(_map_refs(v, index_of) for v in (value.start, value.stop, value.step)))
    return value


def _refs_with_paths(value: Any, path: tuple = ()) -> list[tuple[tuple, int]]:
    if isinstance(value, Ref):
        return [(path, value.index)]
    if isinstance(value, (tuple, list)):
        return [r for i, v in enumerate(value) for r in _refs_with_paths(v, (*path, i))]
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in _refs_with_paths(v, (*path, k))]
    return []


def _trace(model: nn.Module) -> fx.Graph:
    if module_rule(model) is not None:  # the model is a single supported module
        graph = fx.Graph()
        x = graph.placeholder("input")
        y = graph.call_module("", (x,))
        graph.output(y)
        return graph
    try:
        return _Tracer().trace(model)
    except Exception as exc:  # FX raises many types for untraceable code
        raise UnsupportedModelError(
            f"HesScale traces the model's forward with torch.fx to find its graph, and tracing failed: "
            f"{type(exc).__name__}: {exc}. Data-dependent control flow is not traceable; move it out of "
            "forward or build the model from supported modules."
        ) from exc


def _module_structure(module: nn.Module) -> Any:
    if isinstance(module, nn.LSTM):
        return (TENSOR, (TENSOR, TENSOR))
    if getattr(module, "return_indices", False):
        return (TENSOR, META)
    return TENSOR


def _describe(target: Any) -> str:
    if isinstance(target, str):
        return f"tensor method .{target}()"
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
    return f"function {mod + '.' if mod and mod != 'builtins' else ''}{name}"


def build_plan(model: nn.Module, loss_kind: str, method: str) -> Plan:
    """Trace ``model``, attach rules, validate, and decide captures (see the module docstring).

    Raises:
        UnsupportedModelError: naming every unsupported module/function (and why), with the supported list.
    """
    graph = _trace(model)
    gn = method == "hesscale_gn"
    nodes = [n for n in graph.nodes if n.op != "output"]
    output_node = next(n for n in graph.nodes if n.op == "output")
    index_of = {n: i for i, n in enumerate(nodes)}
    problems: list[str] = []
    steps: list[Step] = []
    placeholders = [n for n in nodes if n.op == "placeholder"]
    used_placeholders = [n for n in placeholders if n.users]
    if len(used_placeholders) != 1:
        problems.append(
            f"forward takes {len(used_placeholders)} tensor inputs; HesScale supports models with one input"
        )
    for node in nodes:
        step = Step(
            index=index_of[node],
            op=node.op,
            name=node.name,
            target=node.target,
            args=_map_refs(node.args, index_of),
            kwargs=_map_refs(dict(node.kwargs), index_of),
        )
        step.input_refs = _refs_with_paths(step.args) + _refs_with_paths(step.kwargs)
        steps.append(step)
    for node in nodes:
        for user in node.users:
            if user.op != "output":
                steps[index_of[node]].users.append(index_of[user])

    def is_tensor(ref: Any) -> bool:
        return isinstance(ref, Ref) and steps[ref.index].structure != META

    for node, step in zip(nodes, steps, strict=True):
        if node.op == "placeholder":
            step.structure = TENSOR if node in used_placeholders else META
        elif node.op == "get_attr":
            value = _fetch_attr(model, node.target)
            if isinstance(value, nn.Parameter):
                step.target = value
            else:
                step.structure = META
                step.target = value
        elif node.op == "call_module":
            module = model if node.target == "" else model.get_submodule(node.target)
            step.target = module
            step.name = node.target or type(module).__name__
            if isinstance(module, nn.LogSoftmax):
                step.rule = LogSoftmaxMarker()
                continue
            rule = module_rule(module)
            if rule is None:
                problems.append(f"module '{node.target}' ({type(module).__name__})")
                continue
            reason = rule.check(module)
            if reason is not None:
                problems.append(f"module '{node.target}' ({type(module).__name__}): {reason}")
                continue
            step.rule = rule
            step.structure = _module_structure(module)
        else:
            refs = [steps[j] for _, j in step.input_refs]
            meta_call = (node.op == "call_method" and node.target in META_METHODS) or (
                node.op == "call_function" and node.target in META_FUNCTIONS
            )
            if meta_call or all(r.structure == META for r in refs):
                step.op, step.structure = "meta", META
                step.rule = (node.op, node.target)
                continue
            if node.target is operator.getitem and isinstance(refs[0].structure, tuple):
                key = step.args[1]
                if not isinstance(key, int):
                    problems.append(f"indexing the tuple output of '{refs[0].name}' with {key!r}")
                    continue
                step.structure = refs[0].structure[key]
                step.rule = function_rule(node.op, node.target)
                continue
            rule = function_rule(node.op, node.target)
            if rule is None:
                problems.append(_describe(node.target))
                continue
            reason = rule.check(step, is_tensor)
            if reason is not None:
                problems.append(f"{_describe(node.target)}: {reason}")
                continue
            step.rule = rule
    out_arg = output_node.args[0]
    if not isinstance(out_arg, fx.Node):
        problems.append("forward must return a single tensor (the loss input)")
    output_index = index_of.get(out_arg, -1) if isinstance(out_arg, fx.Node) else -1
    fused = None
    for step in steps:
        if isinstance(step.rule, LogSoftmaxMarker):
            if step.index != output_index or loss_kind != "nll":
                problems.append(
                    f"log_softmax '{step.name}': supported only as the model's last operation followed by an "
                    "NLLLoss (it is then fused into the exact cross-entropy seed)"
                )
            else:
                fused = step.index
    if problems:
        raise UnsupportedModelError(
            "HesScale has no rule for: " + "; ".join(problems) + ". " + supported_summary()
        )
    seed_index = output_index
    if fused is not None:
        seed_index = steps[fused].input_refs[0][1]
    module_steps = [s for s in steps if s.op == "call_module"]
    input_index = index_of[used_placeholders[0]]
    _decide_captures(steps, module_steps, output_index, gn)
    return Plan(
        steps=steps,
        module_steps=module_steps,
        input_index=input_index,
        output_index=output_index,
        seed_index=seed_index,
        fused_log_softmax=fused,
        output_needs_g=steps[output_index].needs_g,
        gn=gn,
    )


def _fetch_attr(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _decide_captures(steps: list[Step], module_steps: list[Step], output_index: int, gn: bool) -> None:
    """Which module outputs to keep, which gradients to capture, which functions carry gradients."""
    module_arg_owner: dict[int, tuple[Step, tuple]] = {}
    for ms in module_steps:
        for path, j in ms.input_refs:
            module_arg_owner.setdefault(j, (ms, path))
    for step in steps:
        if step.op == "call_module":
            step.capture_value = any(steps[u].op != "call_module" for u in step.users)
            step.needs_g = (
                not gn
                and step.rule is not None
                and not isinstance(step.rule, LogSoftmaxMarker)
                and (step.rule.needs_g(step.target, gn))
            )
        elif step.op in ("call_function", "call_method") and step.rule is not None:
            step.needs_g = not gn and step.rule.needs_g(step, gn)

    def captured(i: int) -> bool:
        return steps[i].op == "call_module" or i in module_arg_owner or i == output_index

    work = [s.index for s in steps if s.needs_g and not captured(s.index)]
    while work:
        i = work.pop()
        for u in steps[i].users:
            consumer = steps[u]
            if consumer.op == "meta":
                continue
            consumer.push_g = True
            if not consumer.needs_g:
                consumer.needs_g = True
                if not captured(u):
                    work.append(u)
    for j, (ms, path) in module_arg_owner.items():
        if steps[j].needs_g and steps[j].op != "call_module":
            ms.capture_g_inputs.append((path, j))
