"""Line searches: strong Wolfe conditions on standard 1-D test functions, Armijo sufficient decrease."""

from __future__ import annotations

import math

import pytest
import torch

from hessopt.curvature.linesearch import LineSearchResult, along_direction, armijo, strong_wolfe

# 1-D test functions (value, derivative). The first three are functions (5.1)-(5.3) of Moré & Thuente,
# "Line search algorithms with guaranteed sufficient decrease", ACM TOMS 20(3), 1994; beta as there.


def _mt1(a: float) -> tuple[float, float]:
    beta = 2.0
    return -a / (a * a + beta), (a * a - beta) / (a * a + beta) ** 2


def _mt2(a: float) -> tuple[float, float]:
    beta = 0.004
    return (a + beta) ** 5 - 2 * (a + beta) ** 4, 5 * (a + beta) ** 4 - 8 * (a + beta) ** 3


def _mt3(a: float) -> tuple[float, float]:
    beta, ell = 0.01, 39
    phi0 = 2 * (1 - beta) / (ell * math.pi) * math.sin(ell * math.pi / 2 * a)
    dphi0 = (1 - beta) * math.cos(ell * math.pi / 2 * a)
    if a <= 1 - beta:
        return 1 - a + phi0, -1 + dphi0
    if a >= 1 + beta:
        return a - 1 + phi0, 1 + dphi0
    return (a - 1) ** 2 / (2 * beta) + beta / 2 + phi0, (a - 1) / beta + dphi0


def _quadratic(a: float) -> tuple[float, float]:
    return (a - 3.0) ** 2, 2 * (a - 3.0)


def _rosenbrock_slice(a: float) -> tuple[float, float]:
    """Rosenbrock from (-1.2, 1) along the steepest-descent direction (a real first BFGS step)."""
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    f0 = 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2
    (g0,) = torch.autograd.grad(f0, x)
    z = (x.detach() - a * g0).requires_grad_(True)
    f = 100 * (z[1] - z[0] ** 2) ** 2 + (1 - z[0]) ** 2
    (g,) = torch.autograd.grad(f, z)
    return float(f.detach()), float(g @ -g0)


FUNCTIONS = {"mt1": _mt1, "mt2": _mt2, "mt3": _mt3, "quadratic": _quadratic, "rosenbrock": _rosenbrock_slice}


def _phi(fun):
    calls = []

    def phi(a: float):
        calls.append(a)
        f, d = fun(a)
        return f, d, ("payload", a)

    return phi, calls


def _assert_strong_wolfe(fun, res: LineSearchResult, c1: float, c2: float) -> None:
    f0, d0 = fun(0.0)
    f, d = fun(res.alpha)  # re-evaluated independently of what the search reported
    assert res.alpha > 0
    assert f <= f0 + c1 * res.alpha * d0
    assert abs(d) <= c2 * abs(d0)
    assert (res.f, res.dphi) == (f, d)
    assert res.payload == ("payload", res.alpha)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("alpha0", [1e-3, 1e-1, 1.0, 10.0, 1e3])
@pytest.mark.parametrize("c2", [0.9, 0.1])
def test_strong_wolfe_conditions(name: str, alpha0: float, c2: float) -> None:
    fun = FUNCTIONS[name]
    if name == "rosenbrock":
        alpha0 = alpha0 * 1e-2  # the gradient there has norm 233; keep the trial steps comparable
    phi, calls = _phi(fun)
    f0, d0 = fun(0.0)
    res = strong_wolfe(phi, f0, d0, alpha0=alpha0, c1=1e-4, c2=c2, max_evals=30)
    assert res.success, res.message
    assert res.evaluations == len(calls) <= 30
    _assert_strong_wolfe(fun, res, 1e-4, c2)


def test_unit_step_accepted_when_it_satisfies_wolfe() -> None:
    phi, calls = _phi(lambda a: ((a - 1.0) ** 2, 2 * (a - 1.0)))
    res = strong_wolfe(phi, 1.0, -2.0)
    assert res.success and res.alpha == 1.0 and calls == [1.0]


def test_zoom_uses_cubic_interpolation() -> None:
    """On a quadratic the cubic through both bracket ends is the quadratic itself: one zoom step is exact."""
    phi, calls = _phi(_quadratic)
    f0, d0 = _quadratic(0.0)
    res = strong_wolfe(phi, f0, d0, alpha0=5.9, c2=0.01)
    # 5.9: f = 8.41 <= 9 - 1e-4 * 5.9 * 6 and f'(5.9) > 0 -> zoom(5.9, 0); cubic minimiser = 3 exactly.
    assert calls[0] == 5.9 and res.evaluations == 2
    assert res.alpha == pytest.approx(3.0, rel=1e-14)


def test_expansion_when_the_first_trial_is_short() -> None:
    phi, calls = _phi(_quadratic)
    f0, d0 = _quadratic(0.0)
    res = strong_wolfe(phi, f0, d0, alpha0=0.1, c2=0.1)
    assert calls[:3] == [0.1, 0.2, 0.4]
    assert res.success


def test_nonfinite_trial_is_treated_as_too_long() -> None:
    def fun(a: float) -> tuple[float, float]:
        if a > 0.7:
            return math.inf, math.nan
        return (a - 0.5) ** 2, 2 * (a - 0.5)

    phi, calls = _phi(fun)
    res = strong_wolfe(phi, 0.25, -1.0, alpha0=1.0, c2=0.5)
    assert res.success and math.isfinite(res.f)
    assert calls[1] == 0.5  # bisection of [0, 1]: the non-finite end gives no interpolation data
    _assert_strong_wolfe(fun, res, 1e-4, 0.5)


def test_strong_wolfe_failure_returns_best_decrease() -> None:
    # phi decreases linearly forever: no curvature condition can hold.
    phi, _ = _phi(lambda a: (-a, -1.0))
    res = strong_wolfe(phi, 0.0, -1.0, alpha0=1.0, max_evals=5)
    assert not res.success and res.evaluations == 5
    assert res.alpha == 16.0 and res.f == -16.0  # trials 1, 2, 4, 8, 16: the lowest is returned

    # every trial increases phi: nothing found, alpha = 0 and no payload
    phi, _ = _phi(lambda a: (a * a + a + 1.0 if a > 0 else 1.0, 2 * a + 1.0))
    res = strong_wolfe(phi, 1.0, -1e-3, alpha0=1.0, max_evals=3)
    assert not res.success and res.alpha == 0.0 and res.payload is None and res.f == 1.0


def test_strong_wolfe_alpha_max() -> None:
    phi, _ = _phi(lambda a: (-a, -1.0))
    res = strong_wolfe(phi, 0.0, -1.0, alpha0=1.0, alpha_max=3.0, max_evals=10)
    assert not res.success and res.alpha == 3.0 and "alpha_max" in res.message


def test_strong_wolfe_rejects_bad_input() -> None:
    phi, _ = _phi(_quadratic)
    with pytest.raises(ValueError, match="dphi0"):
        strong_wolfe(phi, 9.0, 0.0)
    with pytest.raises(ValueError, match="c1 < c2"):
        strong_wolfe(phi, 9.0, -6.0, c1=0.5, c2=0.4)
    with pytest.raises(ValueError, match="alpha0"):
        strong_wolfe(phi, 9.0, -6.0, alpha0=0.0)
    with pytest.raises(ValueError, match="max_evals"):
        strong_wolfe(phi, 9.0, -6.0, max_evals=0)
    with pytest.raises(ValueError, match="finite"):
        strong_wolfe(phi, math.nan, -6.0)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("alpha0", [1e-2, 1.0, 1e2])
def test_armijo_first_sufficient_decrease(name: str, alpha0: float) -> None:
    fun = FUNCTIONS[name]
    phi, calls = _phi(fun)
    f0, d0 = fun(0.0)
    c, tau = 1e-4, 0.5
    res = armijo(phi, f0, d0, alpha0=alpha0, c=c, tau=tau)
    assert res.success
    f, _ = fun(res.alpha)
    assert f <= f0 + c * res.alpha * d0
    k = round(math.log(res.alpha / alpha0) / math.log(tau))
    assert res.alpha == alpha0 * tau**k and res.evaluations == k + 1 == len(calls)
    if k > 0:  # the previous (longer) trial failed the test: the first acceptable step is returned
        f_prev, _ = fun(res.alpha / tau)
        assert f_prev > f0 + c * (res.alpha / tau) * d0


def test_armijo_ascent_and_failure_modes() -> None:
    phi, _ = _phi(lambda a: (1.0 + a * a - 0.5 * a, 2 * a - 0.5))
    with pytest.raises(ValueError, match="descent"):
        armijo(phi, 1.0, 0.5)
    # "decrease": any f < f0 is accepted along a non-descent direction: 1, 0.5, 0.25 -> f(0.25) < 1
    res = armijo(phi, 1.0, 0.5, ascent="decrease")
    assert res.success and res.alpha == 0.25

    # no trial decreases enough: "best" returns the lowest trial that is below f0
    values = {1.0: 0.95, 0.5: 2.0, 0.25: 0.99}
    phi, _ = _phi(lambda a: (values[a], math.nan))
    # (sufficient decrease needs f(1) <= 0.9, f(0.5) <= 0.95, f(0.25) <= 0.975)
    res = armijo(phi, 1.0, -1000.0, max_backtracks=2)
    assert not res.success and res.alpha == 1.0 and res.f == 0.95 and res.evaluations == 3
    res = armijo(phi, 1.0, -1000.0, max_backtracks=2, on_failure="zero")
    assert not res.success and res.alpha == 0.0 and res.payload is None
    res = armijo(phi, 1.0, -1000.0, max_backtracks=2, on_failure="zero", fallback_alpha=1e-12)
    assert res.alpha == 1e-12 and math.isnan(res.f)

    # non-finite values are never accepted
    phi, _ = _phi(lambda a: (math.nan if a > 0.3 else 1.0 - a, -1.0))
    res = armijo(phi, 1.0, -1.0)
    assert res.success and res.alpha == 0.25


def test_along_direction_matches_autograd() -> None:
    A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)

    def evaluate(z: torch.Tensor):
        z = z.detach().requires_grad_(True)
        f = 0.5 * z @ A @ z + torch.sin(z).sum()
        (g,) = torch.autograd.grad(f, z)
        return f.detach(), g

    x = torch.tensor([0.3, -0.7], dtype=torch.float64)
    d = -evaluate(x)[1]
    phi = along_direction(evaluate, x, d)
    f, dphi, g = phi(0.4)
    z = x + 0.4 * d
    assert f == pytest.approx(float(0.5 * z @ A @ z + torch.sin(z).sum()), rel=1e-15)
    assert dphi == pytest.approx(float((A @ z + torch.cos(z)) @ d), rel=1e-14)
    assert torch.allclose(g, A @ z + torch.cos(z), rtol=1e-15, atol=0)
    res = strong_wolfe(phi, *phi(0.0)[:2])
    assert res.success and torch.equal(res.payload, evaluate(torch.add(x, d, alpha=res.alpha))[1])
