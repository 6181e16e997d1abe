"""DiagOGR's two update paths: the CPU's ungated one (flag read on the host) and the sync-free gated one.

On finite input both must give bit-identical parameters and state; a non-finite step must leave
everything bit for bit unchanged on the ungated path too (it returns before the update).
"""

import pytest
import torch

from hessopt.optim import diag_ogr
from hessopt.optim.diag_ogr import DiagOGR


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).to(dtype)


def _optimizer(model, corr1):
    # rates 1-beta = 0.3 and 1-gamma = 0.8 take both branches of lerp's formula; the second group has no
    # absolute floor (the masked-denominator branch) and its own hyper-parameters
    first, second = list(model[0].parameters()), list(model[2].parameters())
    return DiagOGR(
        [{"params": first}, {"params": second, "lr": 0.2, "beta": 0.35, "ridge_abs": 0.0}],
        lr=0.3,
        beta=0.7,
        gamma=0.2,
        div=1.3,
        cut=0.7,
        corr1=corr1,
    )


def _spy(monkeypatch):
    """Record, for each call of the eager update, whether it ran ungated (``finite`` is None)."""
    calls, update = [], diag_ogr.dogr_update

    def spy(*args, **kwargs):
        calls.append(args[8] is None)
        return update(*args, **kwargs)

    monkeypatch.setattr(diag_ogr, "dogr_update", spy)
    return calls


def _grads(model, x, y, gen, dtype, k):
    model.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    model[0].weight.grad.add_(0.05 * torch.randn(7, 5, generator=gen, dtype=dtype))  # gradient noise
    model[0].bias.grad[0] = 0.0  # a coordinate that never moves: the ridge floor's count
    if k == 9:
        model[2].bias.grad[1] = float("nan")


def _state_bits_equal(opt_a, opt_b, model_a, model_b):
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("corr1", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ungated_cpu_path_is_bit_identical_to_gated_path(monkeypatch, dtype, corr1):
    """20 steps (one with a nan gradient) of the CPU path and of the gated path: the same bits."""
    calls = _spy(monkeypatch)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 5, generator=gen, dtype=dtype), torch.randn(16, 2, generator=gen, dtype=dtype)
    model_a, model_b = _model(dtype), _model(dtype)
    opt_a, opt_b = _optimizer(model_a, corr1), _optimizer(model_b, corr1)
    for k in range(20):
        state = gen.get_state()
        _grads(model_a, x, y, gen, dtype, k)
        opt_a.step()
        gen.set_state(state)
        _grads(model_b, x, y, gen, dtype, k)
        with monkeypatch.context() as mp:
            mp.setattr(diag_ogr, "_flag_read_is_free", lambda grads: False)
            opt_b.step()
        _state_bits_equal(opt_a, opt_b, model_a, model_b)
    # 2 groups per optimizer: the CPU path runs ungated and not at all on the nan step (k = 9), the patched
    # one gated on every step (the mask makes the nan step a no-op)
    assert calls == [True, True, False, False] * 9 + [False, False] + [True, True, False, False] * 10
    assert int(opt_a.flat_state()["nonfinite_skips"]) == int(opt_b.flat_state()["nonfinite_skips"]) == 1
    assert all(bool(torch.isfinite(p).all()) for p in model_a.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ungated_cpu_path_skips_nonfinite_input_bit_for_bit(monkeypatch, dtype):
    """A nan gradient or an inf loss: no update runs, parameters and state keep their bits, the counter
    counts; the run then continues exactly as one that never saw the bad steps."""
    calls = _spy(monkeypatch)
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(16, 5, generator=gen, dtype=dtype), torch.randn(16, 2, generator=gen, dtype=dtype)
    model, clean = _model(dtype), _model(dtype)
    opt, ref = _optimizer(model, False), _optimizer(clean, False)
    for m, o in ((model, opt), (clean, ref)):
        for k in range(5):
            _grads(m, x, y, torch.Generator().manual_seed(k), dtype, k)
            o.step()
    params = [p.detach().clone() for p in model.parameters()]
    state = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    n_calls, skips = len(calls), int(opt.flat_state()["nonfinite_skips"])

    _grads(model, x, y, gen, dtype, 9)  # nan in the second group's bias gradient
    opt.step()
    _grads(model, x, y, gen, dtype, 0)
    model[0].weight.grad[2, 3] = -float("inf")  # -inf: caught by the minimum, not by the maximum
    opt.step()
    _grads(model, x, y, gen, dtype, 0)
    opt.step(lambda: torch.tensor(float("inf"), dtype=dtype))  # finite gradients, inf loss

    assert len(calls) == n_calls  # the update never ran
    for p, p0 in zip(model.parameters(), params, strict=True):
        assert torch.equal(p, p0)
        for key, value in state[p].items():
            if key != "nonfinite_skips":
                assert torch.equal(opt.state[p][key], value), key
    assert int(opt.flat_state()["nonfinite_skips"]) == skips + 3

    for m, o in ((model, opt), (clean, ref)):
        for k in range(5, 8):
            _grads(m, x, y, torch.Generator().manual_seed(k), dtype, k)
            o.step()
    for p, q in zip(model.parameters(), clean.parameters(), strict=True):
        assert torch.equal(p, q)
        for key in ("m", "theta_mean", "g_mean", "s", "c"):
            assert torch.equal(opt.state[p][key], ref.state[q][key]), key


def test_ungated_cpu_path_skips_a_nonfinite_first_step():
    """The first step creates the state only from a finite observation, on the CPU path too."""
    model = _model(torch.float64)
    opt = _optimizer(model, False)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model[2].bias.grad[1] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert set(opt.flat_state()) == {"nonfinite_skips"} and int(opt.flat_state()["nonfinite_skips"]) == 1
    assert all(not opt.state[p] for p in list(model.parameters())[1:])


@pytest.mark.parametrize("cpu", [True, False])
def test_finiteness_summary_is_finite_exactly_when_every_entry_is(cpu):
    """Both branches (CPU: min and max per tensor; else: inf-norms) see nan, +inf and -inf anywhere, and
    accept empty tensors."""
    base = [torch.randn(4, 3, dtype=torch.float64), torch.zeros(0), torch.randn(70_000)]  # mixed dtypes
    assert bool(torch.isfinite(diag_ogr._finiteness_summary(base, cpu)).all())
    for bad in (float("nan"), float("inf"), -float("inf")):
        for i, where in ((0, (3, 2)), (2, (69_999,)), (2, (0,))):
            grads = [g.clone() for g in base]
            grads[i][where] = bad
            assert not bool(torch.isfinite(diag_ogr._finiteness_summary(grads, cpu)).all()), (bad, i, where)
    assert bool(torch.isfinite(diag_ogr._finiteness_summary([torch.zeros(0)], cpu)).all())


@pytest.mark.parametrize("corr1", [False, True])
def test_gated_update_never_reads_a_tensor_back_to_the_host(corr1):
    """The gated path exists for accelerators, where a read of the flag or of a 0-dim rate is a device
    sync: no ``item()`` (``aten::_local_scalar_dense``) may run inside it, for a finite or a non-finite
    step."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (3,)]
    params = [torch.randn(sh, generator=gen) for sh in shapes]
    state = [[torch.rand(sh, generator=gen) for sh in shapes] for _ in range(5)]
    for finite in (torch.tensor(True), torch.tensor(False)):
        grads = [torch.randn(sh, generator=gen) for sh in shapes]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            diag_ogr.dogr_update(
                params, grads, *state, torch.tensor(0.5), finite,
                lr=0.1, beta=0.4, gamma=0.3, div=1.4, cut=5.0, corr1=corr1, ridge=(None, None),
            )  # fmt: skip
        names = {e.name for e in prof.events()}
        assert "aten::_foreach_lerp_" in names  # the profile saw the update
        assert not names & {"aten::item", "aten::_local_scalar_dense"}, sorted(names)
