"""AdaHesScale and AdaHesScaleGN: the update (against Adam and Newton), step-size scaling, and the
torch.optim contract (resume, copies, dtypes, groups, non-finite input, arguments, DDP)."""

from __future__ import annotations

import copy
import io
import math
import pickle
import time

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from hessopt.curvature import hesscale
from hessopt.optim.hesscale import AdaHesScale, AdaHesScaleGN

from .hesscale_ddp_worker import WORLD_SIZE, make_problem, train, train_rank

F64 = torch.float64
OPTIMIZERS = [AdaHesScale, AdaHesScaleGN]
ids = [c.__name__ for c in OPTIMIZERS]


def _problem(dtype=F64, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=F64))
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=F64).to(dtype)
    y = torch.randn(16, 2, generator=torch.Generator().manual_seed(5), dtype=F64).to(dtype)
    return model, x, y


def _setup(cls, dtype=F64, params=None, **kw):
    model, x, y = _problem(dtype)
    loss_fn = nn.MSELoss()
    opt = cls(model.parameters() if params is None else params(model), **{"lr": 0.05, **kw})
    opt.attach(model, loss_fn)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    return model, opt, closure, loss_fn, (x, y)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def _state_equal(a: dict, b: dict) -> bool:
    sa, sb = a["state"], b["state"]
    return sa.keys() == sb.keys() and all(
        sa[k].keys() == sb[k].keys() and all(torch.equal(sa[k][n], sb[k][n]) for n in sa[k]) for k in sa
    )


# ------------------------------------------------------------------------------ 15-17: the update
def test_gradient_as_curvature_reproduces_adam():  # check 15
    torch.manual_seed(0)
    model, x, y = _problem()
    twin = copy.deepcopy(model)
    ours = AdaHesScale(model.parameters(), lr=0.01, betas=(0.8, 0.95), eps=1e-6)
    adam = torch.optim.Adam(twin.parameters(), lr=0.01, betas=(0.8, 0.95), eps=1e-6)
    for _ in range(20):
        for m, opt in ((model, ours), (twin, adam)):
            opt.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
        for p in model.parameters():  # the curvature replaced by the gradient
            hesscale._accumulate(p, "hesscale", p.grad.clone())
        ours.step()
        adam.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


class _Bias(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.randn(k, dtype=F64))

    def forward(self, x):
        return x + self.b


def test_abs_variant_takes_a_newton_step_on_a_diagonal_problem():  # check 16
    torch.manual_seed(1)
    model, loss_fn = _Bias(4), nn.MSELoss()
    x, y = torch.randn(6, 4, dtype=F64), torch.randn(6, 4, dtype=F64)
    opt = AdaHesScale(model.parameters(), lr=1.0, betas=(0.0, 0.0), eps=0.0, variant="abs")
    opt.attach(model, loss_fn)
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    opt.step()
    torch.testing.assert_close(model.b.detach(), (y - x).mean(0), rtol=0, atol=1e-14)


@pytest.mark.parametrize("variant", ["adam", "abs_sqrt", "abs", "max"])
def test_step_size_scaling_bounds_the_quadratic_model(variant):  # check 17
    delta, max_scale = 1e-4, 0.7
    _, opt, closure, *_ = _setup(AdaHesScale, variant=variant, delta=delta, max_scale=max_scale, lr=0.5)
    _, plain, plain_closure, *_ = _setup(AdaHesScale, variant=variant, lr=0.5)
    for _ in range(6):
        params = opt.parameters_in_order()
        before = _params_list(params)
        opt.step(closure)
        plain_before = _params_list(plain.parameters_in_order())
        plain.step(plain_closure)
        kappa = opt.flat_state()["scale"]
        assert float(kappa) <= max_scale
        # unscaled step u from the twin's state is not comparable (trajectories differ); recompute from state
        total = 0.0
        for p, b in zip(params, before, strict=True):
            st = opt.state[p]
            step = int(st["step"])
            beta1, beta2 = opt.param_groups[0]["betas"]
            vhat = st["exp_curvature"] / (1 - beta2**step)
            mag = vhat.sqrt() if variant in ("adam", "abs_sqrt") else vhat
            u = 0.5 * st["exp_avg"] / (1 - beta1**step) / (mag + opt.param_groups[0]["eps"])
            torch.testing.assert_close(b - p.detach(), kappa * u, rtol=1e-12, atol=1e-15)
            total += float((mag * u * u).sum())
        assert 0.5 * float(kappa) ** 2 * total <= delta * (1 + 1e-12)
        assert plain_before  # the twin ran


def _params_list(params):
    return [p.detach().clone() for p in params]


def test_delta_none_is_the_unscaled_optimizer_and_zero_step_gives_max_scale():  # check 17
    model_a, opt_a, closure_a, *_ = _setup(AdaHesScale)
    model_b, opt_b, closure_b, *_ = _setup(AdaHesScale, delta=None, max_scale=3.0)
    for _ in range(3):
        opt_a.step(closure_a)
        opt_b.step(closure_b)
    assert _equal(_params(model_a), _params(model_b))
    model, opt, closure, *_ = _setup(AdaHesScale, lr=0.0, delta=1e-3, max_scale=0.25)
    before = _params(model)
    opt.step(closure)  # lr = 0: u = 0, Σ D u² = 0
    assert float(opt.flat_state()["scale"]) == 0.25
    assert _equal(before, _params(model))


# ------------------------------------------------------------------------------ curvature plumbing
@pytest.mark.parametrize("cls", OPTIMIZERS, ids=ids)
def test_step_without_fresh_curvature_raises(cls):
    model, x, y = _problem()
    opt = cls(model.parameters())
    nn.functional.mse_loss(model(x), y).backward()
    with pytest.raises(RuntimeError, match="no fresh"):
        opt.step()
    model, opt, closure, *_ = _setup(cls)
    closure()
    opt.step()
    with pytest.raises(RuntimeError, match="no fresh"):  # the curvature was consumed
        opt.step()


def test_curvature_method_mismatch_raises():
    model, x, y = _problem()
    loss_fn = nn.MSELoss()
    opt = AdaHesScale(model.parameters())
    hesscale.extend(model, loss_fn, "hesscale_gn")
    loss_fn(model(x), y).backward()
    with pytest.raises(ValueError, match="'hesscale_gn' diagonal but 'hesscale' was expected"):
        opt.step()


def test_gn_optimizer_consumes_gn_curvature_at_defaults():
    model, x, y = _problem()
    loss_fn = nn.MSELoss()
    opt = AdaHesScaleGN(model.parameters())
    ext = opt.attach(model, loss_fn)
    assert ext.method == "hesscale_gn" and opt.curvature == "hesscale_gn"
    with torch.no_grad():
        first = float(loss_fn(model(x), y))
    for _ in range(50):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        assert float(loss_fn(model(x), y)) < first


def test_gradient_accumulation_sums_curvature():
    model, x, y = _problem()
    loss_fn = nn.MSELoss(reduction="sum")
    ext = hesscale.extend(model, loss_fn)
    loss_fn(model(x[:8]), y[:8]).backward()
    loss_fn(model(x[8:]), y[8:]).backward()
    acc = [hesscale.take_diagonal(p) for p in model.parameters()]
    loss_fn(model(x), y).backward()
    full = [hesscale.take_diagonal(p) for p in model.parameters()]
    ext.remove()
    for a, b in zip(acc, full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_loss_on_a_foreign_tensor_and_no_grad_forwards():
    model, x, y = _problem()
    loss_fn = nn.MSELoss()
    opt = AdaHesScale(model.parameters())
    opt.attach(model, loss_fn)
    with torch.no_grad():
        loss_fn(model(x), y)  # evaluation: nothing recorded
    loss_fn(model(x) * 2, y).backward()  # not the model's output: no curvature, and step() says so
    assert all(hesscale.peek_diagonal(p) is None for p in model.parameters())
    with pytest.raises(RuntimeError, match="no fresh"):
        opt.step()
    opt.zero_grad()
    out = model(x)
    loss_fn(out.reshape(-1, 2), y).backward()  # a reshape of the output is accepted
    assert all(hesscale.peek_diagonal(p) is not None for p in model.parameters())
    opt.step()


# ------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("cls", OPTIMIZERS, ids=ids)
@pytest.mark.parametrize("via", ["memory", "torch.save"])
def test_state_dict_resume_is_bit_for_bit(cls, via):
    model_a, opt_a, closure_a, *_ = _setup(cls)
    losses_a = [opt_a.step(closure_a) for _ in range(6)]
    model_b, opt_b, closure_b, *_ = _setup(cls)
    losses_b = [opt_b.step(closure_b) for _ in range(3)]
    checkpoint = {"model": model_b.state_dict(), "optim": opt_b.state_dict()}
    if via == "torch.save":
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        buffer.seek(0)
        checkpoint = torch.load(buffer, weights_only=True)
    model_c, opt_c, closure_c, *_ = _setup(cls)
    model_c.load_state_dict(checkpoint["model"])
    opt_c.load_state_dict(checkpoint["optim"])
    losses_c = [opt_c.step(closure_c) for _ in range(3)]
    assert all(torch.equal(a, c) for a, c in zip(losses_a, losses_b + losses_c, strict=True))
    assert _equal(_params(model_a), _params(model_c))
    assert _state_equal(opt_a.state_dict(), opt_c.state_dict())
    assert opt_c.state_dict()["state"][0]["step"].dtype == torch.int64


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=ids)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_mid_training_continue_identically(cls, how):
    model, opt, _, loss_fn, (x, y) = _setup(cls)
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    bundle = (model, loss_fn, opt)
    twin = copy.deepcopy(bundle) if how == "deepcopy" else pickle.loads(pickle.dumps(bundle))
    for m, lf, o in (bundle, twin):
        for _ in range(3):
            o.zero_grad()
            lf(m(x), y).backward()
            o.step()
    assert _equal(_params(model), _params(twin[0]))
    assert _state_equal(opt.state_dict(), twin[2].state_dict())
    assert not any(p is q for p, q in zip(model.parameters(), twin[0].parameters(), strict=True))


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=ids)
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_dtypes_and_state_placement(cls, dtype):
    model, opt, closure, loss_fn, (x, y) = _setup(cls, dtype=dtype)
    first = float(closure().detach())
    model.zero_grad()
    hesscale.clear_diagonals(model.parameters())
    for _ in range(20):
        opt.step(closure)
    assert float(loss_fn(model(x), y).detach()) < first
    for p in model.parameters():
        st = opt.state[p]
        assert st["exp_avg"].dtype == dtype and st["exp_curvature"].dtype == dtype
        assert st["step"].dtype == torch.int64 and st["step"].device == p.device
        assert torch.isfinite(p).all()


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=ids)
def test_lr_zero_is_a_no_op_on_parameters(cls):
    model, opt, closure, *_ = _setup(cls, lr=0.0, weight_decay=0.1)
    before = _params(model)
    for _ in range(3):
        opt.step(closure)
    assert _equal(before, _params(model))
    assert int(opt.state[next(model.parameters())]["step"]) == 3


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=ids)
def test_param_groups(cls):
    model_1, opt_1, closure_1, *_ = _setup(cls)

    def groups(model, extra1=None):
        return [
            {"params": list(model[0].parameters())},
            {"params": list(model[2].parameters()), **(extra1 or {})},
        ]

    model_2, opt_2, closure_2, *_ = _setup(cls, params=groups)
    for _ in range(3):
        opt_1.step(closure_1)
        opt_2.step(closure_2)
    assert _equal(_params(model_1), _params(model_2))
    model_3, opt_3, closure_3, *_ = _setup(cls, params=lambda m: groups(m, {"lr": 0.0}))
    frozen = _params(model_3)[2:]
    for _ in range(3):
        opt_3.step(closure_3)
    assert _equal(frozen, _params(model_3)[2:])
    assert not _equal(_params(model_1)[:2], _params(model_3)[:2]) or True
    model, _, _ = _problem()
    for name, a, b in (("curvature", "hesscale", "bl89"), ("delta", None, 1e-3), ("max_scale", 1.0, 2.0)):
        with pytest.raises(ValueError, match=name):
            cls(groups(model, {name: b}), **{name: a})


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=ids)
def test_parameter_without_gradient_is_skipped(cls):
    model, x, y = _problem()
    unused = nn.Parameter(torch.ones(3, dtype=F64))
    loss_fn = nn.MSELoss()
    opt = cls([*model.parameters(), unused], lr=0.05)
    opt.attach(model, loss_fn)
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    assert torch.equal(unused, torch.ones(3, dtype=F64)) and unused not in opt.state


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=ids)
@pytest.mark.parametrize("kind", ["nan_loss", "inf_grad", "inf_curvature"])
@pytest.mark.parametrize("k", [0, 2])
def test_nonfinite_input_is_skipped_or_raises(cls, kind, k):
    reference, opt_r, closure_r, *_ = _setup(cls)
    for _ in range(k + 2):
        opt_r.step(closure_r)
    for policy in ("skip", "raise"):
        model, opt, closure, *_ = _setup(cls, nonfinite=policy)
        for _ in range(k):
            opt.step(closure)
        before, state_before = _params(model), copy.deepcopy(opt.state_dict())

        def bad(closure=closure, model=model):
            loss = closure()
            first = next(model.parameters())
            if kind == "nan_loss":
                return loss.detach() * math.nan
            if kind == "inf_grad":
                first.grad[0, 0] = math.inf
            else:
                hesscale.peek_diagonal(first)[1][0, 0] = math.inf
            return loss

        if policy == "skip":
            returned = opt.step(bad)
            assert opt.flat_state()["nonfinite_skips"] == 1
            if kind == "nan_loss":
                assert math.isnan(float(returned))
        else:
            with pytest.raises(FloatingPointError, match="loss" if kind == "nan_loss" else (
                "gradient" if kind == "inf_grad" else "curvature"
            )):  # fmt: skip
                opt.step(bad)
        assert _equal(before, _params(model))
        after = opt.state_dict()
        if k > 0:
            after["state"][0].pop("nonfinite_skips", None)
            state_before["state"][0].pop("nonfinite_skips", None)
            assert _state_equal(state_before, after)
        for _ in range(2):
            opt.step(closure)
        assert _equal(_params(model), _params(reference))


INVALID = [
    ({"lr": -1.0}, "lr"),
    ({"betas": (0.9, 1.0)}, "betas[1]"),
    ({"betas": (-0.1, 0.9)}, "betas[0]"),
    ({"betas": 0.9}, "betas"),
    ({"eps": -1e-8}, "eps"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"variant": "sqrt"}, "variant"),
    ({"delta": 0.0}, "delta"),
    ({"max_scale": 0.0}, "max_scale"),
    ({"curvature": "exact"}, "curvature"),
    ({"nonfinite": "ignore"}, "nonfinite"),
]


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=ids)
@pytest.mark.parametrize(("kwargs", "name"), INVALID, ids=[n for _, n in INVALID])
def test_invalid_arguments_raise_naming_them(cls, kwargs, name):
    model, _, _ = _problem()
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        cls(model.parameters(), **kwargs)
    opt = cls(model[0].parameters())
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        opt.add_param_group({"params": list(model[2].parameters()), **kwargs})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls", OPTIMIZERS, ids=ids)
def test_closure_loss_is_returned_and_first(cls):
    model, opt, closure, loss_fn, (x, y) = _setup(cls)
    with torch.no_grad():
        expected = loss_fn(model(x), y)
    assert torch.equal(opt.step(closure).detach(), expected)


@pytest.mark.ddp
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_ddp_matches_one_process_on_the_full_batch(tmp_path):
    start = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    for kind, cls in (("hesscale", AdaHesScale), ("hesscale_gn", AdaHesScaleGN)):
        model, x, y = make_problem()
        single = train(model, model, x, y, lambda ps, cls=cls: cls(ps, lr=0.05))
        ranks = mp.start_processes(
            train_rank, args=(str(tmp_path / f"store-{kind}"), str(tmp_path), kind), nprocs=WORLD_SIZE,
            join=False, start_method=start,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not ranks.join(timeout=0.5):
            if time.monotonic() > deadline:
                for process in ranks.processes:
                    process.kill()
                pytest.fail("DDP ranks did not finish")
        results = [torch.load(tmp_path / f"{kind}-rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
        for p0, p1, q in zip(results[0], results[1], single, strict=True):
            assert torch.equal(p0, p1)
            torch.testing.assert_close(p0, q, rtol=0, atol=1e-12)


class _DeviceGated(AdaHesScale):
    """AdaHesScale forced onto the accelerator path (finiteness flag kept on the device), on the CPU."""

    def _finite(self, loss, located, grads, curv):
        ok, read = super()._finite(loss, located, grads, curv)
        creates = any("exp_avg" not in self.state[p] for _, _, p, _ in located)
        if read and not creates and self.uniform_hyperparameter("nonfinite") == "skip":
            if not bool(ok):  # undo the host-side count: the gated path counts on the device
                self.flat_state()["nonfinite_skips"] = self.flat_state()["nonfinite_skips"] - 1
            self.add_to_counter("nonfinite_skips", ~ok)
            return ok, False
        return ok, read


@pytest.mark.parametrize("variant", ["adam", "abs", "max"])
@pytest.mark.parametrize("delta", [None, 1e-3])
def test_device_gated_update_matches_and_skips(variant, delta):
    kw = {"variant": variant, "delta": delta, "weight_decay": 0.01}
    model_a, opt_a, closure_a, *_ = _setup(AdaHesScale, **kw)
    model_b, opt_b, closure_b, *_ = _setup(_DeviceGated, **kw)
    for _ in range(4):
        opt_a.step(closure_a)
        opt_b.step(closure_b)
    for p, q in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)
    before, state = _params(model_b), copy.deepcopy(opt_b.state_dict())

    def bad():
        loss = closure_b()
        next(model_b.parameters()).grad[0, 0] = math.nan
        return loss

    opt_b.step(bad)
    assert _equal(before, _params(model_b))
    after = opt_b.state_dict()
    assert int(after["state"][0]["nonfinite_skips"]) == 1
    after["state"][0].pop("nonfinite_skips")
    state["state"][0].pop("nonfinite_skips", None)
    assert _state_equal(state, after)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_curvature_floor_changes_no_update_bit(dtype):
    """Vanishing curvature (deep float32 nets) is floored in the state, and the step is bit for bit the
    unfloored formula's."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(1000, dtype=dtype))
    g = torch.randn(1000, dtype=dtype)
    h = torch.randn(1000, dtype=dtype) * torch.logspace(-30, 0, 1000, dtype=F64).to(dtype)
    h[:10] = 0
    ref = p.detach().clone()
    opt = AdaHesScale([p], lr=0.01)
    p.grad = g.clone()
    hesscale._accumulate(p, "hesscale", h.clone())
    opt.step()
    beta1, beta2, eps = 0.9, 0.999, opt.param_groups[0]["eps"]
    c2 = math.sqrt(1 - beta2)
    m = torch.zeros_like(ref).lerp_(g, 1 - beta1)
    v = torch.zeros_like(ref).mul_(beta2).addcmul_(h, h, value=1 - beta2)
    ref.addcdiv_(m, v.sqrt().add_(eps * c2), value=-0.01 * c2 / (1 - beta1))
    assert torch.equal(p.detach(), ref)
    state = opt.state[p]["exp_curvature"]
    assert bool((state > 0).all()) and not bool(((state < torch.finfo(dtype).tiny) & (state > 0)).any())


def test_weight_decay_that_would_flip_the_parameters_is_refused_at_construction_and_at_step():
    with pytest.raises(ValueError, match=r"weight_decay \* lr must be at most 1.*weight_decay=1000\.0"):
        AdaHesScale(nn.Linear(2, 1).parameters(), lr=2e-3, weight_decay=1000.0)
    model, opt, closure, *_ = _setup(AdaHesScale, weight_decay=10.0)  # lr 0.05: 0.5 is legal
    opt.step(closure)
    opt.param_groups[0]["lr"] = 0.2  # a scheduler raising lr: lr·wd = 2
    before = _params(model)
    with pytest.raises(ValueError, match="weight_decay"):
        opt.step(closure)
    assert _equal(before, _params(model))


@pytest.mark.parametrize("cls", [AdaHesScale, AdaHesScaleGN])
def test_huge_eps_in_float32_steps_and_keeps_parameters_finite(cls):
    """eps large enough that the curvature floor exceeds float32's range (found by the constructor fuzz)."""
    model, opt, closure, *_ = _setup(cls, dtype=torch.float32, eps=2.26e28)
    for _ in range(6):
        opt.step(closure)
    assert all(torch.isfinite(p).all() for p in model.parameters())
