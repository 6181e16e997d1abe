"""DiagOGR's forms and guards: the multi-tensor form, the single-tensor form (gated or not) and the compiled
form compute the same step; non-finite input and overflowing results never reach the state."""

import math
import warnings

import pytest
import torch

from hessopt.curvature import diagonal as dogr
from hessopt.optim import diag_ogr
from hessopt.optim.diag_ogr import DiagOGR

F64 = torch.float64
KEYS = ("m", "theta_mean", "g_mean", "s", "stat", "prior_weight", "s_mean")


def _problem(dtype, seed=0, corr1=False):
    """Parameters, gradients and a random (valid) state of three tensors, one with a frozen coordinate."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (3,), (2, 2)]
    params = [torch.randn(sh, generator=gen, dtype=dtype) for sh in shapes]
    grads = [torch.randn(sh, generator=gen, dtype=dtype) for sh in shapes]
    state = {
        "m": [torch.randn(sh, generator=gen, dtype=dtype) for sh in shapes],
        "theta_mean": [torch.randn(sh, generator=gen, dtype=dtype) for sh in shapes],
        "g_mean": [torch.randn(sh, generator=gen, dtype=dtype) for sh in shapes],
        "s": [torch.rand(sh, generator=gen, dtype=dtype) for sh in shapes],
        "stat": [(torch.rand if corr1 else torch.randn)(sh, generator=gen, dtype=dtype) for sh in shapes],
        "prior_weight": [torch.tensor(0.3, dtype=dtype) for _ in shapes],
        "s_mean": [torch.tensor(0.4, dtype=dtype) for _ in shapes],
    }
    state["s"][1][0] = 0.0  # a coordinate that never moved: excluded from the floor's mean
    return params, grads, state


def _hp(**over):
    hp = {
        "rate_m": 0.8,
        "rate": 0.3,
        "beta": 0.7,
        "lr_div": 0.3 / 1.3,
        "bound": 0.7 / 1.3,
        "h_prior": 0.25,
        "ridge_rel": 1e-3,
        "ridge_abs": 1e-12,
        "max_coord_step": 0.05,
    }
    hp.update(over)
    return hp


def _clone(params, state):
    return [p.clone() for p in params], {k: [t.clone() for t in v] for k, v in state.items()}


def _args(params, grads, state):
    return (params, grads, *(state[k] for k in KEYS))


def _assert_same(a, b, exact=True, tol=0.0):
    for x, y in zip(a, b, strict=True):
        if exact:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("bound", [0.05, float("inf")])
@pytest.mark.parametrize("corr1", [False, True])
@pytest.mark.parametrize("h_prior", [0.0, 0.25])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_multi_tensor_and_single_tensor_forms_are_bit_identical(dtype, h_prior, corr1, bound):
    """The foreach form, the single-tensor form and its gated variant: the same bits over 10 steps."""
    params, grads, state = _problem(dtype, corr1=corr1)
    hp = _hp(h_prior=h_prior, max_coord_step=bound)
    runs = [_clone(params, state) for _ in range(3)]
    gen = torch.Generator().manual_seed(5)
    for _ in range(10):
        grads = [torch.randn(g.shape, generator=gen, dtype=dtype) for g in grads]
        refused = dogr.dogr_step_foreach_(*_args(runs[0][0], grads, runs[0][1]), hp, corr1=corr1)
        assert refused is not None and int(refused.sum()) == 0
        dogr.dogr_step_(*_args(runs[1][0], grads, runs[1][1]), hp, None, corr1=corr1, clip=False)
        dogr.dogr_step_(
            *_args(runs[2][0], grads, runs[2][1]), hp, torch.tensor(True), corr1=corr1, clip=False
        )
        for other in runs[1:]:
            _assert_same(runs[0][0], other[0])
            for k in KEYS:
                _assert_same(runs[0][1][k], other[1][k])


def test_gated_form_with_a_false_gate_changes_nothing():
    params, grads, state = _problem(F64)
    before_p, before_s = _clone(params, state)
    grads[0][0, 0] = float("nan")
    refused = dogr.dogr_step_(
        *_args(params, grads, state), _hp(), torch.tensor(False), corr1=False, clip=False
    )
    assert int(refused.sum()) == sum(p.numel() for p in params)
    _assert_same(params, before_p)
    for k in KEYS:
        _assert_same(state[k], before_s[k])


def test_overflowing_coordinates_keep_their_values_and_are_counted():
    """A huge rate makes one coordinate's step overflow: that coordinate keeps parameter and statistics, the
    others move exactly as without it; the multi-tensor form declines such input."""
    params, grads, state = _problem(F64)
    hp = _hp(lr_div=1e300, bound=1e-10, max_coord_step=math.inf)
    state["m"][0][1, 2] = 1e300  # m ~ 1e300 times the rate 1e310 overflows; the rest stays below 1e308
    clone_p, clone_s = _clone(params, state)
    assert dogr.dogr_step_foreach_(*_args(clone_p, grads, clone_s), hp, corr1=False) is None
    _assert_same(clone_p, params)  # declined: nothing changed
    refused = dogr.dogr_step_(*_args(params, grads, state), hp, None, corr1=False, clip=False)
    assert refused.tolist()[0] >= 1
    assert params[0][1, 2] == clone_p[0][1, 2] and state["s"][0][1, 2] == clone_s["s"][0][1, 2]
    for t in (*params, *(x for k in KEYS for x in state[k])):
        assert torch.isfinite(t).all()


def test_optimizer_refuses_overflow_and_raise_names_the_parameter():
    for nonfinite in ("skip", "raise"):
        w1 = torch.nn.Parameter(torch.ones(3, dtype=F64))
        w2 = torch.nn.Parameter(torch.ones(2, dtype=F64))
        opt = DiagOGR([w1, w2], lr=1e300, cut=1.0, max_coord_step=None, nonfinite=nonfinite)
        w1.grad, w2.grad = torch.full((3,), 1e-10, dtype=F64), torch.full((2,), 1e10, dtype=F64)
        if nonfinite == "skip":
            for _ in range(3):
                opt.step()
            assert torch.isfinite(w1).all() and torch.isfinite(w2).all()
            assert int(opt.flat_state()["nonfinite_results"]) >= 1
        else:
            with pytest.raises(FloatingPointError, match="parameter 1 of param group 0"):
                for _ in range(3):
                    opt.step()


def test_nonfinite_raise_names_the_offending_parameter():
    """The error names the parameter whose gradient is not finite, not parameter 0 (issue 12)."""
    ps = [torch.nn.Parameter(torch.ones(2, dtype=F64)) for _ in range(3)]
    opt = DiagOGR([{"params": ps[:2]}, {"params": ps[2:]}], nonfinite="raise")
    for p in ps:
        p.grad = torch.ones_like(p)
    ps[2].grad[1] = float("inf")
    with pytest.raises(FloatingPointError, match="parameter 0 of param group 1"):
        opt.step()
    ps[2].grad = None
    ps[1].grad[0] = float("nan")
    with pytest.raises(FloatingPointError, match="parameter 1 of param group 0"):
        opt.step()


@pytest.mark.parametrize("host", [True, False])
def test_finiteness_summary_is_finite_exactly_when_every_entry_is(host):
    """Both branches (CPU: min and max per tensor; else: inf-norms) see nan, +inf and -inf anywhere, and
    accept empty tensors."""
    base = [torch.randn(4, 3, dtype=F64), torch.zeros(0), torch.randn(70_000)]

    def summary(grads):
        return diag_ogr._finiteness_summary(grads, host=host)

    assert bool(torch.isfinite(summary(base)).all())
    for bad in (float("nan"), float("inf"), -float("inf")):
        for i, where in ((0, (3, 2)), (2, (69_999,)), (2, (0,))):
            grads = [g.clone() for g in base]
            grads[i][where] = bad
            assert not bool(torch.isfinite(summary(grads)).all()), (bad, i, where)
    assert bool(torch.isfinite(summary([torch.zeros(0)])).all())


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("corr1", [False, True])
def test_gated_form_never_reads_a_tensor_back_to_the_host(corr1, clip):
    """The gated form exists for accelerators, where a read of the flag is a device sync: no ``item()``
    (``aten::_local_scalar_dense``) may run inside it, for a finite or a non-finite step."""
    for gate in (torch.tensor(True), torch.tensor(False)):
        params, grads, state = _problem(torch.float32, corr1=corr1)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            dogr.dogr_step_(
                *_args(params, grads, state), _hp(max_step_norm=0.1), gate, corr1=corr1, clip=clip
            )
        names = {e.name for e in prof.events()}
        assert "aten::lerp" in names  # the profile saw the update
        assert not names & {"aten::item", "aten::_local_scalar_dense"}, sorted(names)


def test_max_step_norm_clips_each_group():
    w = torch.nn.Parameter(torch.zeros(10, dtype=F64))
    opt = DiagOGR([w], lr=1.0, cut=1e-3, max_step_norm=0.05, max_coord_step=None, mean_init="first")
    for _ in range(5):
        before = w.detach().clone()
        w.grad = torch.ones(10, dtype=F64)
        opt.step()
        assert float(torch.linalg.vector_norm(w.detach() - before)) <= 0.05 * (1 + 1e-12)
    assert float(torch.linalg.vector_norm(w.detach())) > 0.2  # it moves, clipped


def _mlp_pair(seed=0):
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).double()
    b = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).double()
    b.load_state_dict(a.state_dict())
    return a, b


def test_compiled_form_equals_eager_and_skips_nonfinite():
    """fused=True compiles the same update: equal to the eager form up to rounding, same skip policy."""
    pytest.importorskip("torch._inductor")
    model_a, model_b = _mlp_pair()
    x, y = torch.randn(16, 5, dtype=F64), torch.randn(16, 2, dtype=F64)
    eager = DiagOGR(model_a.parameters(), lr=0.1, cut=2.0, h_prior=0.1, fused=False)
    fused = DiagOGR(model_b.parameters(), lr=0.1, cut=2.0, h_prior=0.1, fused=True)
    for k in range(8):
        for model, opt in ((model_a, eager), (model_b, fused)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            if k == 4:  # a non-finite gradient: both skip, nothing changes
                next(model.parameters()).grad[0, 0] = float("nan")
            opt.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)
    assert eager.flat_state()["nonfinite_skips"] == fused.flat_state()["nonfinite_skips"] == 1


def test_compile_failure_falls_back_to_the_eager_form(monkeypatch):
    """fused=None: a compiler failure warns once and the same step runs eagerly; fused=True re-raises."""

    def broken():
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler")

        return fail

    monkeypatch.setattr(dogr, "compiled_dogr_step", broken)
    monkeypatch.setattr(diag_ogr, "FUSED_MIN_NUMEL", 1)
    monkeypatch.setattr(diag_ogr, "_COMPILE_FAILED", [])
    model_a, model_b = _mlp_pair(1)
    auto = DiagOGR(model_a.parameters(), lr=0.1, cut=2.0)
    eager = DiagOGR(model_b.parameters(), lr=0.1, cut=2.0, fused=False)
    x, y = torch.randn(16, 5, dtype=F64), torch.randn(16, 2, dtype=F64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            for model, opt in ((model_a, auto), (model_b, eager)):
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(x), y).backward()
                opt.step()
    assert sum("torch.compile failed" in str(w.message) for w in caught) == 1
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    forced = DiagOGR(model_b.parameters(), fused=True)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        forced.step()


# ------------------------------------------------------------ against the paper's formulas, per coordinate
def _reference_dogr(
    thetas, grad_fn, steps, *, lr, beta, gamma, div, cut, sigma0, h, rel, abs_, mean_init, bound=math.inf
):
    """dOGR written from arXiv:1901.11457 Fig. 4 in plain Python floats, one coordinate at a time.

    hessopt's EMA convention (ema = β·ema + (1−β)·x); means first, then s and c with the NEW means; prior
    weight w = sigma0·β^t; ridge floor δ = max(rel·(mean of the tensor's nonzero s before the update + w),
    abs); λ = (c + (w + δ)h) / (s + w + δ); θ ← θ − clamp(lr·m / max(div·|λ|, cut), ±bound).
    """
    th = [list(t) for t in thetas]
    st = [
        {"m": [0.0] * len(t), "tm": [0.0] * len(t), "gm": [0.0] * len(t), "s": [0.0] * len(t),
         "c": [0.0] * len(t), "w": sigma0, "smean": 0.0}
        for t in th
    ]  # fmt: skip
    for k in range(steps):
        grads = grad_fn(th, k)
        for t, g, z in zip(th, grads, st, strict=True):
            if k == 0 and mean_init == "first":
                z["tm"], z["gm"] = list(t), list(g)
            z["w"] *= beta
            delta = max(rel * (z["smean"] + z["w"]), abs_)
            for i in range(len(t)):
                z["m"][i] = gamma * z["m"][i] + (1 - gamma) * g[i]
                z["tm"][i] = beta * z["tm"][i] + (1 - beta) * t[i]
                z["gm"][i] = beta * z["gm"][i] + (1 - beta) * g[i]
                e, r = t[i] - z["tm"][i], g[i] - z["gm"][i]
                z["s"][i] = beta * z["s"][i] + (1 - beta) * e * e
                z["c"][i] = beta * z["c"][i] + (1 - beta) * r * e
                lam = (z["c"][i] + (z["w"] + delta) * h) / (z["s"][i] + z["w"] + delta)
                t[i] -= min(max(lr * z["m"][i] / max(div * abs(lam), cut), -bound), bound)
            moved = [v for v in z["s"] if v != 0.0]
            z["smean"] = sum(moved) / max(len(moved), 1)
    return th


def _single_tensor_step(opt, tensors):
    """One step of ``opt`` (one group, regression form) through ``dogr_step_`` with a True gate."""
    hp = opt.group_hyperparameters(opt.param_groups[0])
    states = [opt._init_state(hp, t, "c") for t in tensors]
    scalars = {
        "rate_m": 1 - hp["gamma"],
        "rate": 1 - hp["beta"],
        "beta": hp["beta"],
        "lr_div": hp["lr"] / hp["div"],
        "bound": hp["cut"] / hp["div"],
        "h_prior": hp["h_prior"],
        "ridge_rel": hp["ridge_rel"],
        "ridge_abs": hp["ridge_abs"],
        "max_coord_step": float("inf") if hp["max_coord_step"] is None else hp["max_coord_step"],
    }
    lists = [
        [s[key] for s in states] for key in ("m", "theta_mean", "g_mean", "s", "c", "prior_weight", "s_mean")
    ]
    with torch.no_grad():
        dogr.dogr_step_(
            tensors, [t.grad for t in tensors], *lists, scalars, torch.tensor(True), corr1=False, clip=False
        )


@pytest.mark.parametrize("mean_init", ["zero", "first"])
def test_diag_ogr_matches_the_papers_formulas_coordinate_by_coordinate(mean_init):
    """80 steps of DiagOGR (both eager forms) against a float64 per-coordinate loop written from the paper's
    formulas. The configuration makes every ingredient visible: a strong ridge floor (rel = 0.05), a prior
    curvature h, a coordinate that never moves, noisy gradients of a non-separable, non-convex function. A
    dropped floor, covariances taken with the old means, a wrong EMA convention or momentum each change
    the trajectory by far more than the tolerance (checked below by perturbing the reference)."""
    hp = {"lr": 0.3, "beta": 0.6, "gamma": 0.2, "div": 1.3, "cut": 0.4, "sigma0": 0.7, "h": 0.3}
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(80, 10, generator=gen, dtype=F64) * 0.05
    starts = [[0.5, -1.0, 0.25, 1.5, 0.0, 0.7], [1.2, -0.4, 0.0, 2.0]]

    def grad_fn(th, k):
        x = torch.tensor(th[0] + th[1], dtype=F64, requires_grad=True)
        f = (x[:5] ** 2 * torch.arange(1.0, 6.0, dtype=F64)).sum() / 2 + torch.sin(x[6] * x[7]) + x[8] * x[1]
        f = f + 0.1 * (x**4).sum() - x[9] ** 2 / 4
        (g,) = torch.autograd.grad(f, x)
        g = (g + noise[k]).tolist()
        g[5] = 0.0  # a coordinate that never moves (with "first" means)
        return [g[:6], g[6:]]

    ref = _reference_dogr(
        starts, grad_fn, 80, lr=hp["lr"], beta=hp["beta"], gamma=hp["gamma"], div=hp["div"], cut=hp["cut"],
        sigma0=hp["sigma0"], h=hp["h"], rel=0.05, abs_=1e-12, mean_init=mean_init, bound=0.08,
    )  # fmt: skip
    for force_single in (False, True):
        tensors = [torch.tensor(s, dtype=F64, requires_grad=True) for s in starts]
        opt = DiagOGR(
            tensors, lr=hp["lr"], beta=hp["beta"], gamma=hp["gamma"], div=hp["div"], cut=hp["cut"],
            sigma0=hp["sigma0"], h_prior=hp["h"], ridge_rel=0.05, ridge_abs=1e-12, mean_init=mean_init,
            max_coord_step=0.08, fused=False,
        )  # fmt: skip
        for k in range(80):
            grads = grad_fn([t.tolist() for t in tensors], k)
            for t, g in zip(tensors, grads, strict=True):
                t.grad = torch.tensor(g, dtype=F64)
            if force_single:  # the single-tensor form through the gated path
                _single_tensor_step(opt, tensors)
            else:
                opt.step()
        for t, r in zip(tensors, ref, strict=True):
            torch.testing.assert_close(t.detach(), torch.tensor(r, dtype=F64), rtol=1e-10, atol=1e-12)
    # the check has teeth: the reference without its floor, or with old-mean covariances, is far away
    no_floor = _reference_dogr(
        starts, grad_fn, 80, lr=hp["lr"], beta=hp["beta"], gamma=hp["gamma"], div=hp["div"], cut=hp["cut"],
        sigma0=hp["sigma0"], h=hp["h"], rel=0.0, abs_=1e-12, mean_init=mean_init, bound=0.08,
    )  # fmt: skip
    gap = max(abs(a - b) for t, u in zip(ref, no_floor, strict=True) for a, b in zip(t, u, strict=True))
    assert gap > 1e-6
