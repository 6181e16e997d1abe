"""The optimizer contract battery (DESIGN.md, "Optimizer contract" and "Non-finite input").

Every check runs on every :data:`cases.CASES` entry, on small deterministic CPU problems (``harness``).
The DistributedDataParallel check lives in ``test_ddp.py``.
"""

from __future__ import annotations

import copy
import io
import math
import re
from typing import Any

import pytest
import torch

from .cases import CASES, OptimizerCase, case_ids
from .harness import (
    LINEAR_IN,
    assert_params_equal,
    assert_tree_equal,
    iter_tensors,
    loss_at,
    make_data,
    make_linear,
    make_mlp,
    run,
    snapshot,
)

each_case = pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
F64 = torch.float64


def _setup(case: OptimizerCase, dtype=F64, params=None, seed=1, **overrides):
    model = make_mlp(dtype, seed=seed)
    X, Y = make_data(dtype)
    opt, closure = case.setup(model, X, Y, None if params is None else params(model), **overrides)
    return model, opt, closure, (X, Y)


def _check_state_placement(case: OptimizerCase, opt: torch.optim.Optimizer, dtype, device) -> None:
    """Floating state tensors have the parameters' dtype; all state tensors live on their device."""
    tensors = list(iter_tensors(opt.state_dict()["state"]))
    assert tensors, "the optimizer kept no tensor state after stepping"
    for path, t in tensors:
        if path.rsplit("/", 1)[-1] in case.scalar_state_keys:
            assert t.dim() == 0, f"{path}: a scalar state key must hold a 0-dim tensor, got {tuple(t.shape)}"
            continue
        assert t.device == torch.device(device), f"{path}: on {t.device}, parameters on {device}"
        if t.is_floating_point():
            assert t.dtype == dtype, f"{path}: {t.dtype}, parameters are {dtype}"


def _require(case: OptimizerCase, check: str) -> None:
    if check in case.not_applicable:
        pytest.skip(f"not applicable to {case.name}: {case.not_applicable[check]}")


def _counter(case: OptimizerCase, state_dict: dict) -> int:
    node: Any = state_dict
    for key in case.nonfinite_counter:
        if key not in node:
            return 0
        node = node[key]
    return int(node)


def _without_counter(case: OptimizerCase, state_dict: dict) -> dict:
    out = copy.deepcopy(state_dict)
    if case.nonfinite_counter is None:
        return out
    node = out
    for key in case.nonfinite_counter[:-1]:
        if key not in node:
            return out
        node = node[key]
    node.pop(case.nonfinite_counter[-1], None)
    return out


# ---------------------------------------------------------------------------- 1. resume bit for bit
@each_case
@pytest.mark.parametrize("via", ["memory", "torch.save"])
def test_state_dict_resume_is_bit_for_bit(case: OptimizerCase, via: str) -> None:
    k, m = 3, 3
    model_a, opt_a, closure_a, _ = _setup(case)
    losses_a = run(opt_a, closure_a, k + m)

    model_b, opt_b, closure_b, data = _setup(case)
    losses_b = run(opt_b, closure_b, k)
    checkpoint = {"model": model_b.state_dict(), "optim": opt_b.state_dict()}
    if via == "torch.save":
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        buffer.seek(0)
        checkpoint = torch.load(buffer, weights_only=True)
    del model_b, opt_b, closure_b

    # A fresh model (different initial values, overwritten by the checkpoint) and a fresh optimizer.
    model_c = make_mlp(F64, seed=7)
    model_c.load_state_dict(checkpoint["model"])
    opt_c, closure_c = case.setup(model_c, *data)
    opt_c.load_state_dict(checkpoint["optim"])
    losses_c = run(opt_c, closure_c, m)

    for i, (a, c) in enumerate(zip(losses_a, losses_b + losses_c, strict=True)):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(c)), f"step {i}: loss {a} vs resumed {c}"
    assert_params_equal(list(model_c.parameters()), list(model_a.parameters()), "resumed parameter")
    assert_tree_equal(opt_c.state_dict(), opt_a.state_dict(), "state_dict")


# ---------------------------------------------------------------------------- 2. float32 and float64
@each_case
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_dtype_is_kept(case: OptimizerCase, dtype: torch.dtype) -> None:
    model, opt, closure, (X, Y) = _setup(case, dtype=dtype)
    before = snapshot(model.parameters())
    losses = run(opt, closure, 3)
    assert all(math.isfinite(float(torch.as_tensor(v).detach())) for v in losses)
    for p, p0 in zip(model.parameters(), before, strict=True):
        assert p.dtype == dtype
        assert torch.isfinite(p).all()
        assert not torch.equal(p, p0), "a parameter did not move"
    assert loss_at(model, X, Y) < losses[0]
    _check_state_placement(case, opt, dtype, "cpu")


# ---------------------------------------------------------------------------- 3. param groups
def _two_groups(model, extra0=None, extra1=None):
    first, last = model[0], model[2]
    return [
        {"params": list(first.parameters()), **(extra0 or {})},
        {"params": list(last.parameters()), **(extra1 or {})},
    ]


@each_case
def test_two_groups_equal_one_group(case: OptimizerCase) -> None:
    model_1, opt_1, closure_1, _ = _setup(case)
    model_2, opt_2, closure_2, _ = _setup(case, params=_two_groups)
    assert len(opt_2.param_groups) == 2
    before = snapshot(model_2.parameters())
    run(opt_1, closure_1, 3)
    run(opt_2, closure_2, 3)
    for i, (p, p0, q) in enumerate(zip(model_2.parameters(), before, model_1.parameters(), strict=True)):
        assert not torch.equal(p, p0), f"parameter {i} did not move"
        atol = case.group_split_atol
        torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=lambda m, i=i: f"parameter {i}: {m}")


@each_case
def test_per_group_hyperparameter(case: OptimizerCase) -> None:
    model = make_mlp(F64)
    X, Y = make_data(F64)
    if case.group_hparam is None:
        name, v0, v1 = case.shared_hparam
        with pytest.raises(ValueError, match=re.escape(name)):
            case.setup(model, X, Y, _two_groups(model, {name: v0}, {name: v1}))
        return
    groups = _two_groups(model, extra1={case.group_hparam: case.group_hparam_off})
    opt, closure = case.setup(model, X, Y, groups)
    assert opt.param_groups[1][case.group_hparam] == case.group_hparam_off
    before = snapshot(model.parameters())
    run(opt, closure, 3)
    moved, frozen = list(model[0].parameters()), list(model[2].parameters())
    assert all(not torch.equal(p, p0) for p, p0 in zip(moved, before[: len(moved)], strict=True))
    assert_params_equal(frozen, before[len(moved) :], f"parameter of the {case.group_hparam}-off group")
    saved = opt.state_dict()["param_groups"]
    assert saved[1][case.group_hparam] == case.group_hparam_off
    assert saved[0][case.group_hparam] != case.group_hparam_off


# ---------------------------------------------------------------------------- 4. None gradients
@each_case
def test_parameter_without_gradient_is_skipped(case: OptimizerCase) -> None:
    """A parameter outside the loss (grad None), placed between used ones: unchanged, and the used
    parameters follow the same trajectory as without it."""
    _require(case, "unused_parameter")
    model = make_mlp(F64)
    unused = torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=F64))
    first, last = model[0], model[2]
    params = [*first.parameters(), unused, *last.parameters()]
    X, Y = make_data(F64)
    opt, closure = case.setup(model, X, Y, params)
    run(opt, closure, 3)
    assert unused.grad is None
    assert torch.equal(unused, torch.linspace(-1, 1, 5, dtype=F64))
    for path, t in iter_tensors(opt.state.get(unused, {}), "state[unused]"):
        assert t.dtype == F64 or not t.is_floating_point(), path
        assert torch.isfinite(t).all() or not t.is_floating_point(), path

    reference, opt_r, closure_r, _ = _setup(case)
    run(opt_r, closure_r, 3)
    for i, (p, q) in enumerate(zip(model.parameters(), reference.parameters(), strict=True)):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=lambda m, i=i: f"parameter {i}: {m}")


# ---------------------------------------------------------------------------- 5. non-finite input
def _bad_step(closure, kind: str):
    """One step on a closure whose loss is nan (gradients finite), or whose first parameter's gradient holds
    an inf; optimizers that take the batch get a nan input instead (their loss is then nan)."""
    if closure.takes_batch:
        X = closure.X.clone()
        X[0, 0] = float("nan")
        return closure.with_inputs(X).step()

    def bad():
        loss = closure()
        if kind == "nan_loss":
            return loss.detach() * float("nan")
        with torch.no_grad():
            next(closure.model.parameters()).grad[0, 0] = float("inf")
        return loss

    return closure.optimizer.step(bad)


NONFINITE_KINDS = ["nan_loss", "inf_grad"]


@each_case
@pytest.mark.parametrize("kind", NONFINITE_KINDS)
@pytest.mark.parametrize("k", [0, 2], ids=["first-step", "after-2-steps"])
def test_nonfinite_step_is_skipped(case: OptimizerCase, kind: str, k: int, request) -> None:
    """A skipped step changes nothing but the counter. On the first step an optimizer may create its
    initial state lazily, so there only parameters, counter and the later trajectory are checked."""
    if not case.skips_nonfinite:
        reason = "control without a non-finite policy: the check must fail"
        request.applymarker(pytest.mark.xfail(raises=AssertionError, strict=True, reason=reason))
    if k > 0:
        _require(case, "nonfinite_after_steps")
    if kind == "inf_grad":
        _require(case, "nonfinite_gradient")
    m = 2
    reference, opt_r, closure_r, _ = _setup(case)
    run(opt_r, closure_r, k + m)

    model, opt, closure, (X, Y) = _setup(case)
    run(opt, closure, k)
    params_before = snapshot(model.parameters())
    state_before = copy.deepcopy(opt.state_dict())
    returned = _bad_step(closure, kind)

    assert_params_equal(list(model.parameters()), params_before, "parameter after a skipped step")
    state_after = copy.deepcopy(opt.state_dict())
    if k > 0:
        assert_tree_equal(
            _without_counter(case, state_after), _without_counter(case, state_before), "state_dict"
        )
    assert _counter(case, state_after) == _counter(case, state_before) + 1
    if kind == "nan_loss":
        assert returned is not None and math.isnan(float(returned)), "step must return the closure's nan loss"

    run(opt, closure, m)  # later finite steps proceed as if the bad one never happened
    assert_params_equal(list(model.parameters()), list(reference.parameters()), "parameter after recovery")


@each_case
@pytest.mark.parametrize("kind", NONFINITE_KINDS)
@pytest.mark.parametrize("k", [0, 2], ids=["first-step", "after-2-steps"])
def test_nonfinite_raise_policy(case: OptimizerCase, kind: str, k: int) -> None:
    """FloatingPointError; parameters and (after some steps) state unchanged; later steps unaffected."""
    _require(case, "nonfinite_raise")
    if k > 0:
        _require(case, "nonfinite_after_steps")
    if kind == "inf_grad":
        _require(case, "nonfinite_gradient")
    m = 2
    reference, opt_r, closure_r, _ = _setup(case, nonfinite="raise")
    run(opt_r, closure_r, k + m)

    model, opt, closure, (X, Y) = _setup(case, nonfinite="raise")
    run(opt, closure, k)
    params_before = snapshot(model.parameters())
    state_before = copy.deepcopy(opt.state_dict())
    with pytest.raises(FloatingPointError):
        _bad_step(closure, kind)
    assert_params_equal(list(model.parameters()), params_before, "parameter after a refused step")
    if k > 0:
        assert_tree_equal(copy.deepcopy(opt.state_dict()), state_before, "state_dict")
    run(opt, closure, m)
    assert_params_equal(list(model.parameters()), list(reference.parameters()), "parameter after recovery")


# ---------------------------------------------------------------------------- 6. invalid hyper-parameters
INVALID = [(case, kwargs, arg) for case in CASES for kwargs, arg in case.invalid]


@pytest.mark.parametrize(("case", "kwargs", "arg"), INVALID, ids=[f"{c.name}-{k}" for c, k, _ in INVALID])
def test_invalid_hyperparameter_raises(case: OptimizerCase, kwargs: dict, arg: str) -> None:
    with pytest.raises(ValueError, match=re.escape(arg)):
        case.setup(make_mlp(F64), *make_data(F64), **kwargs)


# ---------------------------------------------------------------------------- 7. step returns the loss
@each_case
def test_step_returns_first_closure_loss(case: OptimizerCase) -> None:
    """``step(closure)`` returns the loss of the closure's first evaluation, at the parameters before the
    step (as ``torch.optim.LBFGS``); multi-evaluation methods may call the closure again afterwards."""
    model, opt, closure, (X, Y) = _setup(case)
    if closure.takes_batch:  # step(inputs, targets) returns the loss at the starting point
        for _ in range(2):
            expected = loss_at(model, X, Y)
            returned = closure.step()
            assert isinstance(returned, torch.Tensor) and torch.equal(returned.detach(), expected)
        return
    for _ in range(2):
        expected = loss_at(model, X, Y)
        calls: list[torch.Tensor] = []

        def recording(calls=calls):
            calls.append(closure())
            return calls[-1]

        returned = opt.step(recording)
        assert calls, "the closure was never called"
        assert isinstance(returned, torch.Tensor)
        assert torch.equal(returned.detach(), expected), "step must return the loss at the starting point"
        if "closure_called_first" not in case.not_applicable:
            assert torch.equal(returned.detach(), calls[0].detach()), "step must return the first call's loss"


@each_case
def test_step_without_closure(case: OptimizerCase) -> None:
    model, opt, closure, _ = _setup(case)
    closure()
    if closure.takes_batch:
        with pytest.raises(TypeError, match="inputs"):
            opt.step()
    elif case.needs_closure:
        with pytest.raises((TypeError, ValueError), match="closure"):
            opt.step()
    else:
        before = snapshot(model.parameters())
        assert opt.step() is None
        assert all(not torch.equal(p, p0) for p, p0 in zip(model.parameters(), before, strict=True))


# ---------------------------------------------------------------------------- 8. device
@each_case
def test_state_lives_on_parameter_device_cpu(case: OptimizerCase) -> None:
    model, opt, closure, _ = _setup(case)
    run(opt, closure, 2)
    _check_state_placement(case, opt, F64, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch.cuda.is_available() is False)")
@each_case
def test_state_follows_parameters_to_cuda(case: OptimizerCase) -> None:
    cpu_model, cpu_opt, cpu_closure, _ = _setup(case)
    run(cpu_opt, cpu_closure, 3)

    model = make_mlp(F64).cuda()
    X, Y = (t.cuda() for t in make_data(F64))
    opt, closure = case.setup(model, X, Y)
    run(opt, closure, 3)
    assert all(p.is_cuda for p in model.parameters())
    _check_state_placement(case, opt, F64, model[0].weight.device)
    for p, q in zip(model.parameters(), cpu_model.parameters(), strict=True):
        torch.testing.assert_close(p.cpu(), q, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------- 9. zero_grad, descent
@each_case
def test_zero_grad_sets_none_by_default(case: OptimizerCase) -> None:
    model, opt, closure, _ = _setup(case)
    run(opt, closure, 1)
    closure()
    assert all(p.grad is not None for p in model.parameters())
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@each_case
def test_loss_decreases_on_convex_least_squares(case: OptimizerCase) -> None:
    model = make_linear(F64)
    X, Y = make_data(F64, in_features=LINEAR_IN, seed=3)
    opt, closure = case.setup(model, X, Y)
    initial = loss_at(model, X, Y)
    run(opt, closure, case.decrease_steps)
    final = loss_at(model, X, Y)
    assert final <= case.decrease_factor * initial, f"loss {float(initial):.4g} -> {float(final):.4g}"
