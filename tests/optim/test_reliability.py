"""Hostile inputs for BFGS, OGR and DiagOGR (issue 8, items 1-4): copies mid-training, learning rates that
reach 0 through schedulers, configurations that would overflow, and mistakes that must be named when they
are made. Plus a hypothesis fuzz over the constructors' arguments."""

from __future__ import annotations

import copy
import io
import math
import pickle
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hessopt.optim import (
    BFGS,
    OGR,
    AdaHesScale,
    AdaHesScaleGN,
    BlockDiagonalHessianFree,
    DiagOGR,
    SubspaceOGR,
)

F64 = torch.float64

FACTORIES = {
    "BFGS": lambda ps, **kw: BFGS(ps, **kw),
    "BFGS(line_search=None)": lambda ps, **kw: BFGS(ps, **{"line_search": None, "lr": 0.3, **kw}),
    "OGR": lambda ps, **kw: OGR(ps, **{"cut": 1.0, **kw}),
    "OGR(strong_wolfe)": lambda ps, **kw: OGR(ps, **{"cut": 1.0, "line_search": "strong_wolfe", **kw}),
    "DiagOGR": lambda ps, **kw: DiagOGR(ps, **{"lr": 0.3, "cut": 1.0, **kw}),
    "SubspaceOGR": lambda ps, **kw: SubspaceOGR(ps, **{"lr": 0.3, "cut": 1.0, "rank": 3, **kw}),
    "SubspaceOGR(sgd)": lambda ps, **kw: SubspaceOGR(
        ps, **{"lr": 0.3, "cut": 1.0, "rank": 3, "outside": "sgd", "outside_scale": 0.3, **kw}
    ),
}


def _model(dtype=F64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).to(dtype)


def _data(dtype=F64):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(16, 3, generator=gen).to(dtype), torch.randn(16, 2, generator=gen).to(dtype)


def _closure(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


# ---------------------------------------------------------------------------------------- 1. copies
@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copy_mid_training_continues_exactly(name, how):
    """A copy of (model, optimizer) taken after 3 steps continues bit for bit as the original."""
    x, y = _data()
    model = _model()
    opt = FACTORIES[name](list(model.parameters()))
    for _ in range(3):
        opt.step(_closure(model, opt, x, y))
    if how == "deepcopy":
        model2, opt2 = copy.deepcopy((model, opt))
    elif how == "pickle":
        model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    else:
        buffer = io.BytesIO()
        torch.save((model, opt), buffer)
        buffer.seek(0)
        model2, opt2 = torch.load(buffer, weights_only=False)
    assert all(p2 is q for p2, q in zip(opt2.param_groups[0]["params"], model2.parameters(), strict=False))
    for _ in range(3):
        opt.step(_closure(model, opt, x, y))
        opt2.step(_closure(model2, opt2, x, y))
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)
    if isinstance(opt, OGR):
        assert torch.equal(opt.hessian(), opt2.hessian())


# ---------------------------------------------------------------------------------------- 2. lr -> 0
@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_scheduler_reaching_zero_is_a_no_op_on_the_parameters(name, schedule):
    x, y = _data()
    model = _model()
    opt = FACTORIES[name](list(model.parameters()))
    if schedule == "cosine":  # eta_min = 0: lr is exactly 0 at step T_max
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.0)
    else:
        sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=4)
    zeros = 0
    for _ in range(8):
        before = _params(model)
        lr = opt.param_groups[0]["lr"]
        loss = opt.step(_closure(model, opt, x, y))
        assert loss is not None and math.isfinite(float(loss.detach()))
        if lr == 0:
            zeros += 1
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
        sched.step()
    assert zeros >= 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------------------------------- 3. overflow
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("cls", [OGR, DiagOGR, SubspaceOGR])
def test_non_finite_h_prior_is_refused(cls, value):
    with pytest.raises(ValueError, match="h_prior"):
        cls(_model().parameters(), h_prior=value)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_lr_beyond_float32_is_refused_at_construction(name):
    with pytest.raises(ValueError, match=r"lr=1e\+300 exceeds the largest torch.float32"):
        FACTORIES[name](list(_model(torch.float32).parameters()), lr=1e300)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_huge_lr_in_float64_keeps_parameters_finite(name):
    """lr = 1e300 fits float64: steps run without an overflow error and every parameter stays finite (steps
    that would overflow are refused and counted)."""
    x, y = _data()
    model = _model()
    opt = FACTORIES[name](list(model.parameters()), lr=1e300)
    for _ in range(6):
        opt.step(_closure(model, opt, x, y))
        assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------------------------------- 4. clear errors
@pytest.mark.parametrize(
    ("dtype", "error", "match"),
    [(torch.complex64, TypeError, "real floating-point"), (torch.int64, TypeError, "real floating-point")],
)
@pytest.mark.parametrize("cls", [DiagOGR, OGR, BFGS, SubspaceOGR])
def test_non_float_parameters_are_refused_at_construction(cls, dtype, error, match):
    p = torch.zeros(3, dtype=dtype)
    with pytest.raises(error, match=match):
        cls([p])


@pytest.mark.parametrize("cls", [DiagOGR, OGR, BFGS, SubspaceOGR])
def test_meta_parameters_are_refused_at_construction(cls):
    with pytest.raises(ValueError, match="meta"):
        cls([torch.nn.Parameter(torch.empty(3, device="meta"))])


@pytest.mark.parametrize(
    ("key", "value"), [("lr", -1.0), ("beta", 2.0), ("gamma", float("nan")), ("cut", 0.0)]
)
def test_diag_ogr_invalid_group_is_refused_in_constructor_and_add_param_group(key, value):
    model = _model()
    first, last = list(model[0].parameters()), list(model[2].parameters())
    with pytest.raises(ValueError, match=key):
        DiagOGR([{"params": first}, {"params": last, key: value}])
    opt = DiagOGR(first)
    with pytest.raises(ValueError, match=key):
        opt.add_param_group({"params": last, key: value})
    assert len(opt.param_groups) == 1  # the invalid group was not added
    opt.add_param_group({"params": last})


@pytest.mark.parametrize("name", list(FACTORIES))
def test_value_set_out_of_range_after_construction_is_named_at_step(name):
    x, y = _data()
    model = _model()
    opt = FACTORIES[name](list(model.parameters()))
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step(_closure(model, opt, x, y))


@pytest.mark.parametrize("cls", [OGR, BFGS, SubspaceOGR])
def test_add_param_group_with_another_dtype_is_refused(cls):
    opt = cls([torch.nn.Parameter(torch.zeros(2, dtype=F64))])
    with pytest.raises(ValueError, match="one dtype and device"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float32))]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name", list(FACTORIES))
def test_load_state_dict_with_wrong_shapes_names_the_parameter(name):
    x, y = _data()
    model = _model()
    opt = FACTORIES[name](list(model.parameters()))
    for _ in range(2):
        opt.step(_closure(model, opt, x, y))
    saved = opt.state_dict()
    other = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    opt2 = FACTORIES[name](list(other.parameters()))  # 4 tensors as before, other shapes
    with pytest.raises(ValueError, match=r"state '\w+' of parameter \d of param group 0 has shape"):
        opt2.load_state_dict(saved)
    assert not opt2.state_dict()["state"]  # nothing was loaded


@pytest.mark.parametrize("name", ["BFGS", "OGR(strong_wolfe)"])
def test_line_search_closure_without_return_names_the_fix(name):
    model = _model()
    x, y = _data()
    opt = FACTORIES[name](list(model.parameters()))

    def closure():
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()  # forgot `return loss`

    with pytest.raises(TypeError, match="return loss"):
        opt.step(closure)


# ---------------------------------------------------------------------------------------- fuzz
_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e-300, 1e-12, 0.5, 1.0, 2.0, 1e300, -1.0]),
    st.integers(min_value=-3, max_value=10**9),
    st.booleans(),
    st.none(),
    st.sampled_from(
        [
            "zero",
            "first",
            "armijo",
            "strong_wolfe",
            "skip",
            "raise",
            "scipy",
            "identity",
            "oja",
            "duda",
            "sgd",
            "x",
        ]
    ),
)
_ARGUMENTS = {
    BFGS: [
        "lr",
        "line_search",
        "initial_scaling",
        "curvature_failure",
        "curvature_eps",
        "c1",
        "c2",
        "max_line_search_evals",
        "tolerance_grad",
        "reuse_evaluation",
        "max_memory_fraction",
        "memory_limit_bytes",
        "nonfinite",
    ],
    OGR: [
        "lr",
        "beta",
        "gamma",
        "div",
        "cut",
        "sigma0",
        "h_prior",
        "mean_init",
        "corr1",
        "ridge_rel",
        "ridge_abs",
        "max_step_norm",
        "line_search",
        "c1",
        "c2",
        "max_line_search_evals",
        "max_memory_fraction",
        "memory_limit_bytes",
        "nonfinite",
    ],
    SubspaceOGR: [
        "lr",
        "beta",
        "gamma",
        "div",
        "cut",
        "sigma0",
        "h_prior",
        "mean_init",
        "ridge_rel",
        "ridge_abs",
        "rank",
        "rotation",
        "rotation_rate",
        "qr",
        "outside",
        "mix",
        "outside_scale",
        "max_step_norm",
        "seed",
        "nonfinite",
    ],
    DiagOGR: [
        "lr",
        "beta",
        "gamma",
        "div",
        "cut",
        "sigma0",
        "h_prior",
        "mean_init",
        "corr1",
        "ridge_rel",
        "ridge_abs",
        "max_step_norm",
        "nonfinite",
    ],
}


def fuzz_constructor(make, kwargs, dtype, steps):
    """Either a clear error naming an argument at construction, or steps that keep parameters finite.

    ``make(model, x, y, kwargs)`` builds the optimizer and returns a function that takes one step.
    """
    model = _model(dtype)
    x, y = _data(dtype)
    try:
        take_step = make(model, x, y, kwargs)
    except (TypeError, ValueError) as err:
        message = str(err)
        assert any(re.search(rf"\b{re.escape(k)}\b", message) for k in kwargs), message
        return
    for _ in range(steps):
        try:
            take_step()
        except FloatingPointError:
            assert kwargs.get("nonfinite") == "raise"  # documented: results that would not be finite
            break
        assert all(torch.isfinite(p).all() for p in model.parameters()), kwargs


def _with_closure(cls):
    """Optimizers built on the parameters and stepped with a closure."""

    def make(model, x, y, kwargs):
        opt = cls(list(model.parameters()), **({"fused": False, **kwargs} if cls is DiagOGR else kwargs))
        return lambda: opt.step(_closure(model, opt, x, y))

    return make


def _with_model(cls):
    """Optimizers built with (or attached to) the model and its loss module."""

    def make(model, x, y, kwargs):
        loss_fn = torch.nn.MSELoss()
        if cls is BlockDiagonalHessianFree:
            opt = cls(model, loss_fn=loss_fn, **kwargs)
            return lambda: opt.step(x, y)
        opt = cls(list(model.parameters()), **kwargs)
        opt.attach(model, loss_fn)

        def take_step():
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

        return take_step

    return make


def _fuzz_test(make, arguments, values, *, max_size, examples, steps):
    @settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(
        kwargs=st.dictionaries(st.sampled_from(arguments), values, max_size=max_size),
        dtype=st.sampled_from([torch.float32, F64]),
    )
    def run(kwargs, dtype):
        fuzz_constructor(make, kwargs, dtype, steps)

    run()


@pytest.mark.parametrize("cls", list(_ARGUMENTS), ids=lambda c: c.__name__)
def test_fuzz_constructor_arguments(cls):
    _fuzz_test(_with_closure(cls), _ARGUMENTS[cls], _VALUES, max_size=4, examples=60, steps=4)


@pytest.mark.parametrize(
    "make",
    [lambda ps: BFGS(ps, line_search=None), lambda ps: OGR(ps), lambda ps: SubspaceOGR(ps, rank=1)],
    ids=["BFGS", "OGR", "SubspaceOGR"],
)
def test_fixed_size_state_refuses_new_groups_after_the_first_step(make):
    a, b = torch.randn(3, dtype=torch.float64, requires_grad=True), torch.randn(2, dtype=torch.float64)
    opt = make([a])
    opt.add_param_group({"params": [b.clone().requires_grad_()]})  # before the first step: fine
    a.grad = torch.ones_like(a)
    opt.step()
    with pytest.raises(RuntimeError, match="cannot add parameters after its first step"):
        opt.add_param_group({"params": [b.clone().requires_grad_()]})
    assert len(opt.param_groups) == 2


# ------------------------------------------------- fuzz: the optimizers that need the model and the loss
_MODEL_ARGUMENTS = {
    AdaHesScale: ["lr", "betas", "eps", "weight_decay", "variant", "delta", "max_scale", "nonfinite"],
    AdaHesScaleGN: ["lr", "eps", "weight_decay", "variant", "delta", "max_scale", "nonfinite"],
    BlockDiagonalHessianFree: [
        "lr",
        "damping",
        "adapt_damping",
        "curvature_fraction",
        "cg_max_iterations",
        "cg_min_iterations",
        "cg_progress_eps",
        "cg_tolerance",
        "preconditioner",
        "warm_start",
        "armijo_c",
        "armijo_shrink",
        "weight_decay",
        "nonfinite",
    ],
}
_PLAUSIBLE = st.sampled_from([1e-8, 1e-3, 0.1, 0.5, 0.9, 1.0, 2.0, 10, 50, None, True, "skip", "raise"])
_MODEL_VALUES = st.one_of(
    _PLAUSIBLE, _PLAUSIBLE, _VALUES, st.sampled_from([(0.9, 0.999), (1.0, 0.5), (math.nan, 0.9), "adabelief"])
)


@pytest.mark.parametrize("cls", list(_MODEL_ARGUMENTS), ids=lambda c: c.__name__)
def test_fuzz_constructor_arguments_of_model_optimizers(cls):
    _fuzz_test(_with_model(cls), _MODEL_ARGUMENTS[cls], _MODEL_VALUES, max_size=3, examples=80, steps=3)
