"""Tests of hessopt.problems.functions and hessopt.problems.quadratic.

References are independent of the code under test: scipy.optimize.rosen*, scipy's documented example
values, hand-computed values and closed forms, central finite differences, torch.func.hessian, and
mpmath/scipy re-derivations of the irrational minimizers. Everything runs in float64 unless a test is about
float32; every tolerance is explicit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize as so
import torch
from torch.func import hessian, vmap

from hessopt.problems.functions import (
    DEFAULT_DIM,
    FUNCTION_NAMES,
    Beale,
    BenchmarkFunction,
    Rosenbrock,
    Schwefel,
    Sphere,
    get_function,
    protocol_functions,
)
from hessopt.problems.quadratic import QuadraticFunction, random_quadratic

F64 = torch.float64


def _cases() -> list[BenchmarkFunction]:
    fns = [get_function(name) for name in FUNCTION_NAMES]
    fns += [get_function(name, 3) for name in ("rosenbrock", "rastrigin", "ackley", "griewank", "schwefel")]
    fns += [Rosenbrock(2), Sphere(1), random_quadratic(6, kind="spd", seed=1), random_quadratic(6, seed=2)]
    return fns


CASES = _cases()
IDS = [f"{fn.name}-{fn.dim}d" for fn in CASES]


def _box_points(fn: BenchmarkFunction, n: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """n points uniform in the box, from a generator separate from the code under test."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, fn.dim, generator=gen, dtype=F64)
    return (fn.lower + (fn.upper - fn.lower) * u).to(dtype)


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# ---------------------------------------------------------------------------------------------- Rosenbrock


@pytest.mark.parametrize("dim", [2, 5, 10])
def test_rosenbrock_matches_scipy_at_random_points(dim):
    fn = Rosenbrock(dim)
    rng = np.random.default_rng(dim)
    for _ in range(4):
        x = rng.uniform(-2.0, 2.0, size=dim)
        f, g = fn.value_and_grad(_t(x))
        h = hessian(fn)(_t(x))
        np.testing.assert_allclose(f.item(), so.rosen(x), rtol=1e-13)
        np.testing.assert_allclose(g.numpy(), so.rosen_der(x), rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(h.numpy(), so.rosen_hess(x), rtol=1e-12, atol=1e-10)


def test_rosenbrock_scipy_documented_values():
    # Examples in the scipy.optimize.rosen / rosen_der / rosen_hess docstrings, and the classic f(-1.2, 1).
    assert Rosenbrock(10)(0.1 * torch.arange(10, dtype=F64)).item() == pytest.approx(76.56, rel=1e-14)
    _, g = Rosenbrock(9).value_and_grad(0.1 * torch.arange(9, dtype=F64))
    expected_g = [-2.0, 10.6, 15.6, 13.4, 6.4, -3.0, -12.4, -19.4, 62.0]
    torch.testing.assert_close(g, _t(expected_g), rtol=0, atol=1e-12)
    h = hessian(Rosenbrock(4))(0.1 * torch.arange(4, dtype=F64))
    expected_h = [[-38, 0, 0, 0], [0, 134, -40, 0], [0, -40, 130, -80], [0, 0, -80, 200]]
    torch.testing.assert_close(h, _t(expected_h), rtol=0, atol=1e-12)
    assert Rosenbrock(2)(_t([-1.2, 1.0])).item() == pytest.approx(24.2, rel=1e-14)
    assert Rosenbrock(4).x0 == (-1.2, 1.0, -1.2, 1.0)
    assert Rosenbrock(3).x0 == (-1.2, 1.0, -1.2)


# ------------------------------------------------------------------------------ every function: the minimum


@pytest.mark.parametrize("fn", CASES, ids=IDS)
def test_value_at_minimizers_equals_f_min(fn):
    if isinstance(fn, QuadraticFunction) and not fn.convex:
        assert fn.minimizers == () and fn.f_min == -math.inf
        return
    assert len(fn.minimizers) >= 1
    for m in fn.minimizers:
        value = fn(_t(m)).item()
        if fn.name == "schwefel":
            # f_min is the exact minimum (to ~1e-17 relative) of 418.9829 n - sum(...), but evaluating f there
            # cancels two sums of size ~419 n, so float64 rounding leaves ~n * 1e-13 of absolute error.
            assert value == pytest.approx(fn.f_min, rel=0, abs=1e-11 * fn.dim)
        else:
            assert value == pytest.approx(fn.f_min, rel=0, abs=1e-13 * max(1.0, abs(fn.f_min)))


@pytest.mark.parametrize("fn", CASES, ids=IDS)
def test_gradient_vanishes_at_minimizers_and_stationary_points(fn):
    points = list(fn.minimizers)
    if isinstance(fn, QuadraticFunction):
        assert fn.stationary_point is not None
        points.append(fn.stationary_point)
    for m in points:
        _, g = fn.value_and_grad(_t(m))
        assert torch.isfinite(g).all()
        # The minimizers are exact (rational) or given to 17 digits, so only rounding remains.
        assert g.abs().max().item() <= 1e-10


@pytest.mark.parametrize("fn", CASES, ids=IDS)
def test_box_contains_minimizers_and_x0_and_x0_is_not_stationary(fn):
    x0 = fn.x0_tensor()
    assert x0.shape == (fn.dim,) and x0.dtype == F64
    assert fn.lower <= x0.min().item() and x0.max().item() <= fn.upper
    _, g = fn.value_and_grad(x0)
    assert g.norm().item() > 1e-3
    if not isinstance(fn, QuadraticFunction):
        for m in fn.minimizers:
            assert all(fn.lower <= v <= fn.upper for v in m)


# ----------------------------------------------------------------------------- every function: derivatives


@pytest.mark.parametrize("fn", CASES, ids=IDS)
def test_gradient_matches_central_differences(fn):
    h = 1e-6 * (fn.upper - fn.lower)
    eye = torch.eye(fn.dim, dtype=F64)
    for x in _box_points(fn, 3, seed=7):
        _, g = fn.value_and_grad(x)
        fd = torch.stack([(fn(x + h * e) - fn(x - h * e)) / (2 * h) for e in eye])
        # Truncation O(h^2 f''') plus rounding O(eps |f| / h): both far below 1e-6 relative here.
        torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-6 * max(1.0, g.abs().max().item()))


@pytest.mark.parametrize("fn", CASES, ids=IDS)
def test_hessian_is_symmetric_and_matches_convex_flag(fn):
    hm = vmap(hessian(fn))(_box_points(fn, 40, seed=11))
    scale = hm.abs().amax(dim=(1, 2)).clamp(min=1.0)
    assert ((hm - hm.transpose(1, 2)).abs().amax(dim=(1, 2)) <= 1e-9 * scale).all()
    relative_min_eig = torch.linalg.eigvalsh(hm)[:, 0] / scale
    if fn.convex:
        assert relative_min_eig.min().item() >= -1e-12
    else:
        assert relative_min_eig.min().item() < -1e-6  # a negative curvature direction exists in the box


@pytest.mark.parametrize("fn", CASES, ids=IDS)
def test_batched_evaluation_equals_row_by_row(fn):
    x = _box_points(fn, 6, seed=3).reshape(2, 3, fn.dim)
    f, g = fn.value_and_grad(x)
    assert f.shape == (2, 3) and g.shape == (2, 3, fn.dim)
    torch.testing.assert_close(fn(x), f, rtol=0, atol=0)
    for i in range(2):
        for j in range(3):
            fi, gi = fn.value_and_grad(x[i, j])
            assert fi.shape == ()
            scale = max(1.0, abs(fi.item()))
            assert f[i, j].item() == pytest.approx(fi.item(), rel=1e-14, abs=1e-14 * scale)
            torch.testing.assert_close(g[i, j], gi, rtol=1e-13, atol=1e-13 * max(1.0, gi.abs().max().item()))


@pytest.mark.parametrize("fn", CASES, ids=IDS)
def test_float32_agrees_with_float64(fn):
    x64 = _box_points(fn, 5, seed=5)
    x32 = x64.float()
    f32, g32 = fn.value_and_grad(x32)
    assert f32.dtype == torch.float32 and g32.dtype == torch.float32
    f64, g64 = fn.value_and_grad(x32.double())  # the same (float32-representable) points
    assert torch.isfinite(f32).all() and torch.isfinite(g32).all()
    # float32 carries ~7 digits; sums of up to 10 terms of size |f| lose at most a few more ulps.
    torch.testing.assert_close(f32.double(), f64, rtol=1e-4, atol=1e-4)
    for a, b in zip(g32.double(), g64, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * max(1.0, b.abs().max().item()))


# ---------------------------------------------------------------------------------- independent references


REFERENCE_VALUES = [
    # hand-computed: 1.5^2 + 2.25^2 + 2.625^2
    ("beale", None, [1.0, 1.0], 14.203125),
    ("beale", None, [0.0, 0.0], 14.203125),
    ("beale3d", None, [1.0, 1.0, 1.0], 2 * 14.203125),
    ("beale3d", None, [3.0, 0.5, 0.0], 14.203125),  # b(3, 0.5) = 0, b(0, 0.5) = b(0, 0)
    ("himmelblau", None, [0.0, 0.0], 121.0 + 49.0),
    ("himmelblau", None, [1.0, 1.0], 81.0 + 25.0),
    ("goldstein_price", None, [0.0, -1.0], 3.0),
    ("goldstein_price", None, [0.0, 0.0], 20.0 * 30.0),
    ("goldstein_price", None, [1.0, 1.0], 28.0 * 67.0),  # (1 + 9 * 3) * (30 + 1 * 37)
    ("goldstein_price", None, [1.0, -1.0], 20.0 * 355.0),  # (1 + 1 * 19) * (30 + 25 * 13)
    ("matyas", None, [1.0, 2.0], 0.26 * 5.0 - 0.48 * 2.0),
    ("three_hump_camel", None, [1.0, 1.0], 2.0 - 1.05 + 1.0 / 6.0 + 1.0 + 1.0),
    ("ackley", 10, [0.0] * 10, 0.0),
    ("ackley", 10, [1.0] * 10, 20.0 - 20.0 * math.exp(-0.2)),  # mean x^2 = 1, cos(2 pi) = 1
    ("ackley", 4, [0.5] * 4, -20.0 * math.exp(-0.1) - math.exp(-1.0) + 20.0 + math.e),
    ("rastrigin", 10, [0.0] * 10, 0.0),
    ("rastrigin", 4, [1.0, -2.0, 3.0, 0.0], 1.0 + 4.0 + 9.0),  # integer points: cos term cancels 10 n
    ("rastrigin", 3, [0.5] * 3, 3 * (10.0 + 0.25 + 10.0)),
    ("griewank", 10, [math.pi] + [0.0] * 9, 2.0 + math.pi**2 / 4000.0),  # product = cos(pi) = -1
    ("griewank", 3, [0.0, 0.0, math.pi * math.sqrt(3.0)], 2.0 + 3.0 * math.pi**2 / 4000.0),
    ("schwefel", 10, [0.0] * 10, 418.9829 * 10),
    ("schwefel", 2, [1.0, -4.0], 2 * 418.9829 - math.sin(1.0) + 4.0 * math.sin(2.0)),
    ("zakharov", 10, [1.0] * 10, 10.0 + 27.5**2 + 27.5**4),  # s = 0.5 * 55
    ("zakharov", 2, [2.0, -1.0], 5.0 + 0.0 + 0.0),  # s = 0.5 * 2 - 1 * 1 = 0
    ("sphere", 3, [1.0, 2.0, 3.0], 14.0),
]


@pytest.mark.parametrize(("name", "dim", "point", "expected"), REFERENCE_VALUES)
def test_reference_values(name, dim, point, expected):
    fn = get_function(name, dim)
    assert fn(_t(point)).item() == pytest.approx(expected, rel=1e-14, abs=1e-14)


def test_zakharov_closed_form_at_random_points():
    fn = get_function("zakharov", 7)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.uniform(-5, 5, size=7)
        s = float(np.dot(0.5 * np.arange(1, 8), x))
        assert fn(_t(x)).item() == pytest.approx(float(x @ x) + s**2 + s**4, rel=1e-13)


def test_griewank_and_ackley_closed_forms_at_random_points():
    rng = np.random.default_rng(1)
    griewank, ackley = get_function("griewank", 6), get_function("ackley", 6)
    for _ in range(5):
        x = rng.uniform(-5, 5, size=6)
        expected_g = x @ x / 4000.0 - np.prod(np.cos(x / np.sqrt(np.arange(1, 7)))) + 1.0
        expected_a = (-20 * np.exp(-0.2 * np.sqrt(np.mean(x**2))) - np.exp(np.mean(np.cos(2 * np.pi * x)))
                      + 20 + np.e)
        assert griewank(_t(x)).item() == pytest.approx(expected_g, rel=1e-13, abs=1e-15)
        assert ackley(_t(x)).item() == pytest.approx(expected_a, rel=1e-13, abs=1e-15)


TWO_D_NUMPY = {
    "beale": lambda x, y: (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2,
    "himmelblau": lambda x, y: (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2,
    "matyas": lambda x, y: 0.26 * (x**2 + y**2) - 0.48 * x * y,
    "goldstein_price": lambda x, y: (
        (1 + (x + y + 1) ** 2 * (19 - 14 * x + 3 * x**2 - 14 * y + 6 * x * y + 3 * y**2))
        * (30 + (2 * x - 3 * y) ** 2 * (18 - 32 * x + 12 * x**2 + 48 * y - 36 * x * y + 27 * y**2))
    ),
    "three_hump_camel": lambda x, y: 2 * x**2 - 1.05 * x**4 + x**6 / 6 + x * y + y**2,
}


@pytest.mark.parametrize("name", sorted(TWO_D_NUMPY))
def test_two_d_functions_match_numpy_formulas_at_random_points(name):
    fn = get_function(name)
    xy = np.random.default_rng(2).uniform(fn.lower, fn.upper, size=(20, 2))
    expected = TWO_D_NUMPY[name](xy[:, 0], xy[:, 1])
    np.testing.assert_allclose(fn(_t(xy)).numpy(), expected, rtol=1e-13, atol=1e-13)


def test_schwefel_minimizer_and_f_min_rederived_with_scipy():
    # x* solves d/dt [t sin(sqrt t)] = sin(s) + s cos(s) / 2 = 0 (s = sqrt t) in [400, 440].
    t_star = so.brentq(lambda t: math.sin(math.sqrt(t)) + 0.5 * math.sqrt(t) * math.cos(math.sqrt(t)),
                       400.0, 440.0, xtol=1e-14, rtol=1e-15)
    fn = Schwefel(4)
    assert fn.minimizers[0] == pytest.approx((t_star,) * 4, rel=1e-13)
    peak = t_star * math.sin(math.sqrt(t_star))
    assert fn.f_min == pytest.approx(4 * (418.9829 - peak), rel=1e-7)  # 418.98 - 418.98: ~1e-10 relative lost
    # The literature's "minimum 0" holds only to the rounding of the constant 418.9829.
    assert 0.0 < fn.f_min < 4 * 1.3e-5
    # A global minimum over the box: every coordinate of a fine grid of [-500, 500] does worse.
    grid = torch.linspace(-500.0, 500.0, 200001, dtype=F64).unsqueeze(-1)
    assert Schwefel(1)(grid).min().item() >= Schwefel(1).f_min - 1e-12


def test_himmelblau_minimizers_solve_both_equations():
    fn = get_function("himmelblau")
    assert len(set(fn.minimizers)) == 4
    for x, y in fn.minimizers:
        assert abs(x * x + y - 11.0) < 1e-14 and abs(x + y * y - 7.0) < 1e-14


def test_kinks_have_finite_zero_gradient():
    # Ackley's cone at 0: the minimum-norm subgradient 0, not NaN.
    f, g = get_function("ackley", 5).value_and_grad(torch.zeros(5, dtype=F64))
    assert f.item() == pytest.approx(0.0, abs=1e-15) and torch.equal(g, torch.zeros(5, dtype=F64))
    # Schwefel's t sin(sqrt|t|) is differentiable at 0 with derivative 0 (lattice starts hit 0 exactly).
    x = _t([0.0, 100.0, -3.0])
    _, g = Schwefel(3).value_and_grad(x)
    assert torch.isfinite(g).all() and g[0].item() == 0.0
    h = 1e-7
    fd = (Schwefel(1)(_t([h])) - Schwefel(1)(_t([-h]))).item() / (2 * h)
    assert abs(fd) < 1e-3  # the slope tends to 0 like sqrt(h)


# --------------------------------------------------------------------------------------------------- noise


def test_noise_is_seeded_reproducible_and_advances_the_generator():
    fn = get_function("rosenbrock", 4)
    x = fn.x0_tensor()
    _, g_a = fn.value_and_grad(x, noise_std=0.1, generator=torch.Generator().manual_seed(5))
    _, g_b = fn.value_and_grad(x, noise_std=0.1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(g_a, g_b)
    gen = torch.Generator().manual_seed(5)
    _, first = fn.value_and_grad(x, noise_std=0.1, generator=gen)
    _, second = fn.value_and_grad(x, noise_std=0.1, generator=gen)
    assert torch.equal(first, g_a) and not torch.equal(first, second)


def test_noise_mean_and_std():
    fn, sigma = get_function("sphere", 10), 0.3
    x = _box_points(fn, 2000, seed=0)
    f, g = fn.value_and_grad(x)
    f_noisy, g_noisy = fn.value_and_grad(x, noise_std=sigma, generator=torch.Generator().manual_seed(0))
    assert torch.equal(f, f_noisy)  # values are never noisy
    noise = (g_noisy - g).flatten()  # 20000 draws
    n = noise.numel()
    assert abs(noise.mean().item()) < 5 * sigma / math.sqrt(n)
    assert noise.std().item() == pytest.approx(sigma, rel=0.03)  # sd of the estimate ~ sigma / sqrt(2n)
    per_coordinate_std = (g_noisy - g).std(dim=0)
    torch.testing.assert_close(per_coordinate_std, torch.full((10,), sigma, dtype=F64), rtol=0.1, atol=0)


def test_zero_noise_is_exact_and_draws_nothing():
    fn = get_function("beale")
    x = _t([0.3, -0.7])
    gen = torch.Generator().manual_seed(9)
    state = gen.get_state()
    _, g0 = fn.value_and_grad(x, noise_std=0.0, generator=gen)
    _, g = fn.value_and_grad(x)
    assert torch.equal(g0, g) and torch.equal(gen.get_state(), state)


def test_value_and_grad_leaves_x_alone_and_detaches():
    fn = get_function("rosenbrock", 3)
    x = _t([0.5, -0.2, 1.5]).requires_grad_(True)
    before = x.detach().clone()
    with torch.no_grad():
        f, g = fn.value_and_grad(x, noise_std=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x.detach(), before) and x.grad is None
    assert not f.requires_grad and not g.requires_grad
    plain = _t([0.5, -0.2, 1.5])
    fn.value_and_grad(plain)
    assert not plain.requires_grad
    # __call__ stays differentiable for users who build their own graph.
    fn(x).backward()
    torch.testing.assert_close(x.grad, fn.value_and_grad(before)[1], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- starts and box


@pytest.mark.parametrize("fn", CASES, ids=IDS)
def test_sample_starts_protocol(fn):
    starts = fn.sample_starts(6)
    assert starts.shape == (6, fn.dim) and starts.dtype == F64
    assert (starts >= fn.lower).all() and (starts <= fn.upper).all()
    assert len({tuple(row.tolist()) for row in starts}) == 6
    # start i is the protocol's draw with seed 42 + i, whatever n is
    for i in (0, 5):
        u = torch.rand(fn.dim, generator=torch.Generator().manual_seed(42 + i), dtype=F64)
        torch.testing.assert_close(starts[i], fn.lower + (fn.upper - fn.lower) * u, rtol=0, atol=0)
    torch.testing.assert_close(fn.sample_starts(3), starts[:3], rtol=0, atol=0)
    torch.testing.assert_close(fn.sample_starts(6), starts, rtol=0, atol=0)
    torch.testing.assert_close(fn.sample_starts(2, seed0=45), starts[3:5], rtol=0, atol=0)
    s32 = fn.sample_starts(6, dtype=torch.float32)
    assert s32.dtype == torch.float32 and torch.equal(s32, starts.float())
    assert fn.sample_starts(0).shape == (0, fn.dim)


def test_sample_starts_cover_the_box():
    fn = get_function("schwefel", 2)
    starts = fn.sample_starts(400)
    # uniform on [-500, 500]: mean 0 (sd 1000/sqrt(12 * 400) = 14.4), quartiles near -250 and 250
    assert starts.mean(0).abs().max().item() < 5 * 14.5
    q = torch.quantile(starts[:, 0], torch.tensor([0.25, 0.75], dtype=F64))
    assert abs(q[0].item() + 250) < 60 and abs(q[1].item() - 250) < 60


def test_clamp():
    fn = get_function("beale")
    x = _t([[10.0, -10.0], [1.0, -4.5], [-4.6, 4.4]])
    y = fn.clamp(x)
    torch.testing.assert_close(y, _t([[4.5, -4.5], [1.0, -4.5], [-4.5, 4.4]]), rtol=0, atol=0)
    assert x[0, 0].item() == 10.0  # input unchanged


def test_lattice_starts():
    fn = get_function("beale3d")
    lattice = fn.lattice_starts(range(-2, 3))  # Duda's 125 starts {-2..2}^3
    assert lattice.shape == (125, 3) and lattice.dtype == F64
    assert len({tuple(r.tolist()) for r in lattice}) == 125
    torch.testing.assert_close(lattice[0], _t([-2, -2, -2]), rtol=0, atol=0)
    torch.testing.assert_close(lattice[1], _t([-2, -2, -1]), rtol=0, atol=0)  # last coordinate fastest
    torch.testing.assert_close(lattice[-1], _t([2, 2, 2]), rtol=0, atol=0)
    assert fn.lattice_starts(range(-3, 4)).shape == (343, 3)
    fig1 = get_function("beale").lattice_starts([range(-2, 3), [-1.0, 0.0, 1.0]])  # arXiv:1901.11457 Fig. 1
    assert fig1.shape == (15, 2)
    assert set(fig1[:, 0].tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert set(fig1[:, 1].tolist()) == {-1.0, 0.0, 1.0}
    assert get_function("sphere", 1).lattice_starts([0.5, 1.5], dtype=torch.float32).shape == (2, 1)
    with pytest.raises(ValueError, match="values"):
        fn.lattice_starts([])
    with pytest.raises(ValueError, match="values"):
        fn.lattice_starts([[1.0], [2.0]])  # 2 axes for a 3-D function


# -------------------------------------------------------------------------------------- registry and API


def test_registry_names_dims_and_protocol():
    assert len(FUNCTION_NAMES) == 14 and len(set(FUNCTION_NAMES)) == 14
    for name in FUNCTION_NAMES:
        assert get_function(name).name == name
    assert get_function("Goldstein-Price").name == "goldstein_price"
    assert get_function("  ROSENBROCK ", 5).dim == 5
    assert get_function("three hump camel").name == "three_hump_camel"
    assert get_function("rastrigin").dim == DEFAULT_DIM == 10
    assert get_function("beale", 2).dim == 2 and get_function("beale3d").dim == 3
    expected = {  # docs/benchmarks/functions.md, the protocol
        "sphere": (10, -5.0, 5.0), "rosenbrock": (10, -2.0, 2.0), "rastrigin": (10, -5.12, 5.12),
        "ackley": (10, -5.0, 5.0), "griewank": (10, -5.0, 5.0), "schwefel": (10, -500.0, 500.0),
        "zakharov": (10, -5.0, 5.0), "himmelblau": (2, -5.0, 5.0), "beale": (2, -4.5, 4.5),
    }
    got = {fn.name: (fn.dim, fn.lower, fn.upper) for fn in protocol_functions()}
    assert got == expected and [fn.name for fn in protocol_functions()] == list(expected)
    convex = {name for name in FUNCTION_NAMES if get_function(name).convex}
    assert convex == {"sphere", "zakharov", "matyas"}


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown test function 'nope'.*rosenbrock"):
        get_function("nope")
    with pytest.raises(TypeError, match="name"):
        get_function(3)
    with pytest.raises(ValueError, match="beale is defined only for dim=2"):
        get_function("beale", 3)
    with pytest.raises(ValueError, match="dim must be >= 2"):
        get_function("rosenbrock", 1)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        Sphere(0)
    with pytest.raises(TypeError, match="dim must be an int"):
        Sphere(2.0)
    fn = Beale()
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        fn(torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        fn(torch.tensor(1.0, dtype=F64))
    with pytest.raises(ValueError, match="floating dtype"):
        fn(torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([0.0, 0.0])
    with pytest.raises(ValueError, match="noise_std"):
        fn.value_and_grad(torch.zeros(2, dtype=F64), noise_std=-0.1)
    with pytest.raises(ValueError, match="noise_std"):
        fn.value_and_grad(torch.zeros(2, dtype=F64), noise_std=math.nan)
    with pytest.raises(TypeError, match="generator"):
        fn.value_and_grad(torch.zeros(2, dtype=F64), noise_std=0.1, generator=5)
    with pytest.raises(ValueError, match="n must be >= 0"):
        fn.sample_starts(-1)
    with pytest.raises(ValueError, match="dtype"):
        fn.sample_starts(2, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        fn.clamp(torch.zeros(2, 3, dtype=F64))


# ------------------------------------------------------------------------------------------- quadratics


@pytest.mark.parametrize("kind", ["spd", "indefinite"])
def test_random_quadratic_hessian_spectrum_and_stationary_point(kind):
    q = random_quadratic(8, kind=kind, seed=3, eig_range=(0.5, 50.0))
    a = q.hessian_matrix
    torch.testing.assert_close(a, a.T, rtol=0, atol=0)
    for x in _box_points(q, 3, seed=1):
        torch.testing.assert_close(hessian(q)(x), a, rtol=0, atol=1e-12)
    lam = torch.linalg.eigvalsh(a)
    magnitudes = torch.sort(lam.abs()).values
    expected = 0.5 * 100.0 ** (torch.arange(8, dtype=F64) / 7)  # geometric from 0.5 to 50
    torch.testing.assert_close(magnitudes, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(q.eigenvalues, lam, rtol=1e-12, atol=1e-12)
    x_s = _t(q.stationary_point)
    _, g = q.value_and_grad(x_s)
    assert g.abs().max().item() < 1e-12
    assert x_s.abs().max().item() <= 1.0  # x* is drawn in [-1, 1]^dim
    assert q(x_s).item() == pytest.approx(0.0, abs=1e-13)  # f = (x - x*)^T A (x - x*) / 2
    if kind == "spd":
        assert (lam > 0).all() and q.convex
        assert q.f_min == pytest.approx(0.0, abs=1e-13) and q.minimizers == (q.stationary_point,)
        assert (q(_box_points(q, 50, seed=2)) > q.f_min).all()
    else:
        assert (lam < 0).sum().item() == 4 and (lam > 0).sum().item() == 4 and not q.convex
        assert q.f_min == -math.inf and q.minimizers == ()
        _, vecs = torch.linalg.eigh(a)
        assert q(x_s + 100.0 * vecs[:, 0]).item() == pytest.approx(0.5 * lam[0].item() * 1e4, rel=1e-10)


def test_random_quadratic_seeding_dtype_and_validation():
    a = random_quadratic(5, seed=4)
    assert torch.equal(a.hessian_matrix, random_quadratic(5, seed=4).hessian_matrix)
    assert not torch.equal(a.hessian_matrix, random_quadratic(5, seed=5).hessian_matrix)
    q32 = random_quadratic(5, kind="spd", dtype=torch.float32)
    assert q32.hessian_matrix.dtype == torch.float32
    torch.testing.assert_close(q32.hessian_matrix, random_quadratic(5, kind="spd").hessian_matrix.float())
    assert random_quadratic(1, kind="spd").dim == 1
    with pytest.raises(ValueError, match="kind"):
        random_quadratic(4, kind="psd")
    with pytest.raises(ValueError, match="dim >= 2"):
        random_quadratic(1, kind="indefinite")
    with pytest.raises(ValueError, match="eig_range"):
        random_quadratic(4, eig_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="eig_range"):
        random_quadratic(4, eig_range=(2.0, 1.0))


def test_quadratic_function_general_cases():
    # singular PSD with b in the range of A: convex, finite minimum, minimum-norm minimizer
    a = torch.diag(_t([1.0, 2.0, 0.0]))
    q = QuadraticFunction(a, _t([1.0, 1.0, 0.0]), 2.0)
    assert q.convex and q.minimizers == ((-1.0, -0.5, 0.0),)
    assert q.f_min == pytest.approx(2.0 - 0.5 - 0.25, abs=1e-15)
    # b with a null-space component: unbounded below, no stationary point
    q = QuadraticFunction(a, _t([1.0, 1.0, 1.0]))
    assert q.convex and q.f_min == -math.inf and q.minimizers == () and q.stationary_point is None
    # explicit evaluation against the formula
    b = _t([0.5, -1.0, 2.0])
    q = QuadraticFunction(a, b, -1.0, x0=(1.0, 1.0, 1.0))
    x = _t([1.0, -2.0, 3.0])
    assert q(x).item() == pytest.approx(0.5 * (1.0 + 8.0) + (0.5 + 2.0 + 6.0) - 1.0, rel=1e-15)
    assert q.x0 == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="symmetric"):
        QuadraticFunction(_t([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        QuadraticFunction(torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"b must be .* shape \(2,\)"):
        QuadraticFunction(torch.eye(2, dtype=F64), torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="x0"):
        QuadraticFunction(torch.eye(2, dtype=F64), x0=(1.0,))
