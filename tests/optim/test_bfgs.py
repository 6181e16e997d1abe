"""BFGS optimizer: scipy-level iteration counts on Rosenbrock, secant along a run, fixed-lr step, contract."""

from __future__ import annotations

import copy
import datetime

import pytest
import torch

from helpers import gloo_group
from hessopt.curvature.quasi_newton import secant_residual
from hessopt.optim.bfgs import BFGS

F64 = torch.float64
ROSEN_START = (-1.2, 1.0)


def _rosen(x: torch.Tensor) -> torch.Tensor:
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def _rosen_problem(dtype: torch.dtype = F64, device: str = "cpu", **kwargs):
    x = torch.tensor(ROSEN_START, dtype=dtype, device=device, requires_grad=True)
    opt = BFGS([x], **kwargs)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        f = _rosen(x)
        f.backward()
        return f

    return x, opt, closure


def _scipy_iterations_to(target: float) -> int:
    import scipy.optimize as so  # here, not at the top: the DDP test's worker processes import this module

    values: list[float] = []
    so.minimize(
        so.rosen,
        list(ROSEN_START),
        jac=so.rosen_der,
        method="BFGS",
        options={"gtol": 1e-12, "maxiter": 1000},
        callback=lambda xk: values.append(float(so.rosen(xk))),
    )
    return next(i + 1 for i, v in enumerate(values) if v < target)


def _iterations_to(target: float, max_iter: int = 200, **kwargs) -> tuple[int, BFGS]:
    x, opt, closure = _rosen_problem(**kwargs)
    for k in range(max_iter):
        opt.step(closure)
        if float(_rosen(x.detach())) < target:
            return k + 1, opt
    raise AssertionError(f"BFGS({kwargs}) did not reach f < {target} in {max_iter} iterations")


@pytest.mark.parametrize("initial_scaling", ["nocedal_wright", "identity"])
def test_rosenbrock_iterations_within_20_percent_of_scipy(initial_scaling: str) -> None:
    """Acceptance: f < 1e-10 from (-1.2, 1) within 1.2x scipy BFGS's iterations.

    Measured (torch 2.13, scipy 1.17.1): scipy 31; hessopt 35 (nocedal_wright), 31 (identity).
    """
    reference = _scipy_iterations_to(1e-10)
    ours, opt = _iterations_to(1e-10, initial_scaling=initial_scaling)
    assert ours <= 1.2 * reference, (ours, reference)
    st = opt.flat_state()
    assert int(st["n_iter"]) == ours
    assert int(st["line_search_failures"]) == 0 and int(st["restarts"]) == 0


def test_reuse_evaluation_same_iterates_fewer_evaluations() -> None:
    x1, opt1, c1 = _rosen_problem()
    x2, opt2, c2 = _rosen_problem(reuse_evaluation=True)
    for _ in range(20):
        l1, l2 = opt1.step(c1), opt2.step(c2)
        assert torch.equal(x1, x2) and torch.equal(l1, l2)
    assert torch.equal(opt1.inverse_hessian(), opt2.inverse_hessian())
    e1, e2 = int(opt1.flat_state()["evaluations"]), int(opt2.flat_state()["evaluations"])
    assert e1 - e2 == 19  # every start-of-step evaluation after the first is reused


def test_secant_equation_along_rosenbrock_run() -> None:
    x, opt, closure = _rosen_problem()
    checked = 0
    for _ in range(30):
        x_old = x.detach().clone()
        closure()
        g_old = x.grad.clone()
        skips = int(opt.flat_state()["curvature_skips"]) if opt.state else 0
        opt.step(closure)
        closure()
        s, y = x.detach() - x_old, x.grad - g_old
        if int(opt.flat_state()["curvature_skips"]) == skips and float(s.norm()) > 0:
            assert float(secant_residual(opt.inverse_hessian(), s, y)) <= 1e-12
            checked += 1
    assert checked >= 25
    H = opt.inverse_hessian()
    assert torch.equal(H, H.T) and float(torch.linalg.eigvalsh(H).min()) > 0


def test_nocedal_wright_scaling_of_first_update() -> None:
    x, opt, closure = _rosen_problem()
    x0 = x.detach().clone()
    g0 = (closure(), x.grad.clone())[1]
    opt.step(closure)
    closure()
    s, y = x.detach() - x0, x.grad - g0
    gamma = float(s @ y) / float(y @ y)
    rho = 1.0 / float(s @ y)
    eye = torch.eye(2, dtype=F64)
    expected = (eye - rho * torch.outer(s, y)) @ (gamma * eye) @ (eye - rho * torch.outer(y, s))
    expected += rho * torch.outer(s, s)
    assert torch.allclose(opt.inverse_hessian(), expected, rtol=1e-12, atol=0)


def test_armijo_mode_converges_on_rosenbrock() -> None:
    ours, opt = _iterations_to(1e-10, max_iter=300, line_search="armijo")
    assert int(opt.flat_state()["restarts"]) == 0


@pytest.mark.parametrize("lr", [1.0, 0.5, 0.01])
def test_fixed_lr_step_is_minus_lr_h_g(lr: float) -> None:
    torch.manual_seed(0)
    A = torch.randn(5, 5, dtype=F64)
    A = A @ A.T / 5 + torch.eye(5, dtype=F64)
    x = torch.randn(5, dtype=F64, requires_grad=True)
    opt = BFGS([x], lr=lr, line_search=None)
    for k in range(6):
        opt.zero_grad()
        (0.5 * x @ A @ x + x.sin().sum()).backward()
        x_old, g = x.detach().clone(), x.grad.clone()
        assert opt.step() is None
        H = opt.inverse_hessian()
        if k == 0:
            assert torch.equal(H, torch.eye(5, dtype=F64))
            assert torch.equal(x.detach(), x_old - lr * g)  # lr applied once (ogr.md pitfall 5)
        else:
            assert not torch.allclose(H, torch.eye(5, dtype=F64))
        assert torch.allclose(x.detach() - x_old, -lr * (H @ g), rtol=1e-13, atol=1e-15)


def test_fixed_lr_pairs_are_formed_at_the_next_call() -> None:
    """Without a closure, step k+1 updates H with (x_{k+1} - x_k, g_{k+1} - g_k) before stepping."""
    x = torch.tensor([1.0, -2.0, 0.5], dtype=F64, requires_grad=True)
    opt = BFGS([x], lr=0.1, line_search=None)
    xs, gs = [], []
    for _ in range(3):
        opt.zero_grad()
        (x.pow(4).sum() + (x[0] * x[1])).backward()
        xs.append(x.detach().clone())
        gs.append(x.grad.clone())
        opt.step()
    H = opt.inverse_hessian()
    assert float(secant_residual(H, xs[2] - xs[1], gs[2] - gs[1])) <= 1e-12


def test_fixed_lr_with_closure_returns_loss() -> None:
    x, opt, closure = _rosen_problem(lr=1e-3, line_search=None)
    f0 = float(_rosen(x.detach()))
    loss = opt.step(closure)
    assert float(loss.detach()) == f0 and float(_rosen(x.detach())) < f0


def test_line_search_requires_closure() -> None:
    x = torch.zeros(2, requires_grad=True)
    opt = BFGS([x])
    x.grad = torch.ones(2)
    with pytest.raises(ValueError, match="closure"):
        opt.step()


def test_memory_refusal_without_allocating() -> None:
    big = torch.zeros(1_000_000, dtype=F64, requires_grad=True)  # H would be 8 TB
    with pytest.raises(ValueError, match="DiagOGR") as info:
        BFGS([big])
    assert "1000000" in str(info.value)
    small = torch.zeros(100, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="memory_limit_bytes"):
        BFGS([small], memory_limit_bytes=3 * 100 * 100 * 8 - 1)
    opt = BFGS([small], memory_limit_bytes=3 * 100 * 100 * 8)
    assert "H" not in opt.flat_state()  # allocated lazily, at the first step
    with pytest.raises(ValueError, match="max_memory_fraction"):
        BFGS([small], max_memory_fraction=1.5)


def test_several_groups_equal_one_group() -> None:
    def run(groups: bool):
        torch.manual_seed(1)
        a = torch.randn(3, dtype=F64, requires_grad=True)
        b = torch.randn(2, 2, dtype=F64, requires_grad=True)
        opt = BFGS([{"params": [a]}, {"params": [b]}] if groups else [a, b])

        def closure():
            opt.zero_grad()
            f = _rosen(torch.cat([a, b.reshape(-1)]))
            f.backward()
            return f

        for _ in range(8):
            opt.step(closure)
        return torch.cat([a.detach(), b.detach().reshape(-1)]), opt.inverse_hessian()

    (x1, H1), (x2, H2) = run(False), run(True)
    assert torch.equal(x1, x2) and torch.equal(H1, H2) and H1.shape == (7, 7)


def test_group_hyperparameters_must_agree() -> None:
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="lr"):
        BFGS([{"params": [a]}, {"params": [b], "lr": 0.5}])
    opt = BFGS([{"params": [a]}, {"params": [b]}])
    opt.param_groups[1]["c2"] = 0.5
    with pytest.raises(ValueError, match="c2"):
        opt.step(lambda: torch.zeros(()))
    with pytest.raises(ValueError, match="same dtype|one dtype"):
        BFGS([a, torch.zeros(2, dtype=F64, requires_grad=True)])


@pytest.mark.parametrize("line_search", ["strong_wolfe", None])
def test_parameters_without_grad_are_not_changed(line_search) -> None:
    """A parameter whose .grad is None is frozen, even when H couples it to the others."""
    x = torch.tensor(ROSEN_START, dtype=F64, requires_grad=True)
    z = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
    opt = BFGS([x, z], lr=1.0 if line_search else 1e-3, line_search=line_search)
    use_z = True

    def closure():
        opt.zero_grad()  # set_to_none: z.grad stays None once z leaves the loss
        f = _rosen(x) + (((z - x) ** 2).sum() if use_z else 0.0)
        f.backward()
        return f

    for _ in range(4):
        opt.step(closure)
    H = opt.inverse_hessian()
    assert float(H[:2, 2:].abs().max()) > 1e-8, "the test needs H to couple z with x"
    use_z = False
    closure()
    z_frozen = z.detach().clone()
    f0 = float(_rosen(x.detach()))
    for _ in range(5):
        opt.step(closure)
        assert z.grad is None
        assert torch.equal(z.detach(), z_frozen)
    assert float(_rosen(x.detach())) < f0


def test_nonfinite_skip_keeps_state_and_counts() -> None:
    x, opt, closure = _rosen_problem()
    for _ in range(3):
        opt.step(closure)
    x_before, H_before = x.detach().clone(), opt.inverse_hessian()
    before = copy.deepcopy(opt.flat_state())
    n_iter = int(before["n_iter"])

    def bad_closure():
        opt.zero_grad()
        f = _rosen(x) * torch.tensor(float("nan"), dtype=F64)
        f.backward()
        return f

    loss = opt.step(bad_closure)
    assert torch.isnan(loss)
    st = opt.flat_state()
    assert torch.equal(x.detach(), x_before) and torch.equal(st["H"], H_before)
    assert int(st["nonfinite_skips"]) == 1 and int(st["n_iter"]) == n_iter
    for key, value in before.items():  # everything else, the evaluation counter included, is untouched
        if key != "nonfinite_skips":
            assert torch.equal(st[key], value), key
    opt.step(closure)  # resumes normally
    assert int(opt.flat_state()["n_iter"]) == n_iter + 1


def test_nonfinite_skip_fixed_lr_gradient() -> None:
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    opt = BFGS([x], lr=0.1, line_search=None)
    for _ in range(2):
        x.grad = 2 * x.detach()
        opt.step()
    st = copy.deepcopy(opt.flat_state())
    x_before = x.detach().clone()
    x.grad = torch.tensor([float("inf"), 1.0], dtype=F64)
    opt.step()
    new = opt.flat_state()
    assert torch.equal(x.detach(), x_before)
    for key in ("H", "x_prev", "g_prev", "n_iter", "scaled", "has_prev"):
        assert torch.equal(new[key], st[key]), key
    assert int(new["nonfinite_skips"]) == 1


def test_nonfinite_raise_names_the_culprit() -> None:
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    y = torch.tensor([1.0], dtype=F64, requires_grad=True)
    opt = BFGS([{"params": [x]}, {"params": [y]}], line_search=None, nonfinite="raise")
    x.grad = torch.ones(2, dtype=F64)
    y.grad = torch.tensor([float("nan")], dtype=F64)
    with pytest.raises(FloatingPointError, match="parameter 0 of param group 1"):
        opt.step()
    x2, opt2, _ = _rosen_problem(nonfinite="raise")
    with pytest.raises(FloatingPointError, match="loss"):
        opt2.step(lambda: torch.tensor(float("inf"), dtype=F64))


@pytest.mark.parametrize(
    "kwargs", [{"reuse_evaluation": True}, {"line_search": None, "lr": 1e-3}, {"line_search": "armijo"}]
)
def test_state_dict_resumes_bit_for_bit(kwargs) -> None:
    x, opt, closure = _rosen_problem(**kwargs)
    for _ in range(5):
        opt.step(closure)
    checkpoint = copy.deepcopy(opt.state_dict())
    x_saved = x.detach().clone()
    for _ in range(5):
        opt.step(closure)

    x2, opt2, closure2 = _rosen_problem(**kwargs)
    with torch.no_grad():
        x2.copy_(x_saved)
    opt2.load_state_dict(checkpoint)
    st2 = opt2.flat_state()
    assert st2["n_iter"].dtype == torch.int64 and st2["scaled"].dtype == torch.bool
    for _ in range(5):
        opt2.step(closure2)
    assert torch.equal(x2, x)
    for key, value in opt.flat_state().items():
        assert torch.equal(st2[key], value), key
        assert st2[key].dtype == value.dtype, key


def test_float32() -> None:
    x, opt, closure = _rosen_problem(dtype=torch.float32)
    for _ in range(60):
        opt.step(closure)
    assert opt.inverse_hessian().dtype == torch.float32
    assert float(_rosen(x.detach())) < 1e-6


def test_add_param_group_after_first_step_refused() -> None:
    x, opt, closure = _rosen_problem()
    opt.step(closure)
    with pytest.raises(RuntimeError, match="first step"):
        opt.add_param_group({"params": [torch.zeros(2, dtype=F64, requires_grad=True)]})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"line_search": "wolfe"}, "line_search"),
        ({"initial_scaling": "eye"}, "initial_scaling"),
        ({"curvature_failure": "damped"}, "curvature_failure"),
        ({"c1": 0.0}, "c1"),
        ({"c1": 0.5, "c2": 0.4}, "c1"),
        ({"max_line_search_evals": 0}, "max_line_search_evals"),
        ({"tolerance_grad": -1.0}, "tolerance_grad"),
        ({"nonfinite": "ignore"}, "nonfinite"),
        ({"curvature_eps": -1.0}, "curvature_eps"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        BFGS([torch.zeros(2, requires_grad=True)], **kwargs)


def test_invalid_argument_types() -> None:
    with pytest.raises(TypeError, match="max_line_search_evals"):
        BFGS([torch.zeros(2, requires_grad=True)], max_line_search_evals=2.5)
    with pytest.raises(TypeError, match="reuse_evaluation"):
        BFGS([torch.zeros(2, requires_grad=True)], reuse_evaluation="yes")


@pytest.mark.parametrize("mode", ["skip", "scipy"])
def test_negative_curvature_pair_skip_or_scipy(mode: str) -> None:
    """On f = -||x||^2 / 2 every pair has s^T y = -||s||^2 < 0: skipped, or applied as scipy does."""
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    opt = BFGS([x], lr=0.1, line_search=None, curvature_failure=mode, initial_scaling="identity")
    for _ in range(2):
        x.grad = -x.detach().clone()
        opt.step()
    st = opt.flat_state()
    H = opt.inverse_hessian()
    if mode == "skip":
        assert int(st["curvature_skips"]) == 1 and torch.equal(H, torch.eye(2, dtype=F64))
    else:
        # s = 0.1 x0, y = -s, rho = -1/|s|^2: with P = s s^T / |s|^2, H+ = (I - P)(I - P) - P = I - 2P,
        # indefinite (eigenvalue -1 along s), and H+ y = s.
        s = 0.1 * torch.tensor([1.0, 2.0], dtype=F64)
        P = torch.outer(s, s) / (s @ s)
        expected = torch.eye(2, dtype=F64) - 2 * P
        assert int(st["curvature_skips"]) == 0
        assert torch.allclose(H, expected, rtol=1e-12, atol=0)


def test_tolerance_grad_stops() -> None:
    x, opt, closure = _rosen_problem(tolerance_grad=1e3)  # |g| at the start is ~216
    loss = opt.step(closure)
    assert float(loss.detach()) == pytest.approx(24.2) and torch.equal(
        x.detach(), torch.tensor(ROSEN_START, dtype=F64)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("line_search", ["strong_wolfe", None])
def test_cuda_matches_cpu(line_search) -> None:
    results = []
    for device in ("cpu", "cuda"):
        x, opt, closure = _rosen_problem(
            device=device, line_search=line_search, lr=1.0 if line_search else 1e-3
        )
        for _ in range(40):
            opt.step(closure)
        assert opt.inverse_hessian().device.type == device
        assert all(v.device.type == device for v in opt.flat_state().values())
        results.append(x.detach().cpu())
    if line_search:
        assert float(_rosen(results[1])) < 1e-10
    assert torch.allclose(results[0], results[1], rtol=1e-6, atol=1e-8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_memory_refusal_and_float32() -> None:
    with pytest.raises(ValueError, match="cuda memory"):
        BFGS([torch.zeros(10_000_000, device="cuda", requires_grad=True)])
    x, opt, closure = _rosen_problem(dtype=torch.float32, device="cuda")
    for _ in range(60):
        opt.step(closure)
    assert float(_rosen(x.detach())) < 1e-6


def _ddp_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    with gloo_group(rank, world, init_file, datetime.timedelta(seconds=60)):
        X, t = _ddp_data()
        rows = slice(rank * 4, (rank + 1) * 4)
        x_final = _ddp_run(X[rows], t[rows], ddp=True)
        if rank == 0:
            torch.save(x_final, out_file)


def _ddp_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(8, 3, generator=g, dtype=F64), torch.randn(8, 1, generator=g, dtype=F64)


def _ddp_run(X: torch.Tensor, t: torch.Tensor, ddp: bool) -> torch.Tensor:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    opt = BFGS(net.parameters())

    def closure():
        opt.zero_grad()
        loss = ((net(X) - t) ** 2).mean() + 0.1 * (model.weight**4).sum()
        loss.backward()
        return loss

    for _ in range(6):
        opt.step(closure)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_on_the_whole_batch(tmp_path) -> None:
    """With DDP the line search sees the loss averaged over processes (base.global_loss), as one process."""
    import torch.multiprocessing as mp

    out = tmp_path / "x.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    X, t = _ddp_data()
    expected = _ddp_run(X, t, ddp=False)
    assert torch.allclose(torch.load(out), expected, rtol=1e-10, atol=1e-12)
