"""Optimization test functions in PyTorch: values, exact (optionally noisy) gradients, boxes and starts.

Every function maps points ``x`` of shape ``(..., dim)`` to values of shape ``(...)``, in any floating
dtype and on any device, and is differentiable (autograd and ``torch.func`` both work), so exact
Hessians come from ``torch.func.hessian(fn)``. Each one also carries what a benchmark needs: the box
``[lower, upper]^dim`` used for random starts and for clamping, a standard start ``x0``, the known global
minimum ``f_min`` and its minimizer(s), and whether the function is convex.

==================  =====  ==================  ==========================================  ======
name                dim    box                 global minimum                              convex
==================  =====  ==================  ==========================================  ======
sphere              n      [-5, 5]             0 at 0                                      yes
rosenbrock          n>=2   [-2, 2]             0 at (1, ..., 1)                            no
rastrigin           n      [-5.12, 5.12]       0 at 0                                      no
ackley              n      [-5, 5]             0 at 0                                      no
griewank            n      [-5, 5]             0 at 0                                      no
schwefel            n      [-500, 500]         ~1.27e-5 n at 420.9687... (see Schwefel)    no
zakharov            n      [-5, 5]             0 at 0                                      yes
himmelblau          2      [-5, 5]             0 at four points                            no
beale               2      [-4.5, 4.5]         0 at (3, 0.5)                               no
beale3d             3      [-4.5, 4.5]         0 at (3, 0.5, 3)                            no
matyas              2      [-10, 10]           0 at 0                                      yes
goldstein_price     2      [-2, 2]             3 at (0, -1)                                no
three_hump_camel    2      [-5, 5]             0 at 0                                      no
==================  =====  ==================  ==========================================  ======

The first nine, with their formulas and boxes, are the test-function protocol of the 2025 BFGS/OGR
comparison (Przybysz, Kołek, Sobota, Duda, arXiv:2512.06969, as coded in github.com/ReadHegel/pytorch-ogr;
docs/benchmarks/functions.md): n = 10, 200 starts uniform in the box with seed 42 + i, clamping to the
box after every step (:func:`protocol_functions`, :meth:`BenchmarkFunction.sample_starts`,
:meth:`BenchmarkFunction.clamp`). Beale, 3-D Beale, Rosenbrock, Matyas, Goldstein-Price and three-hump camel
are J. Duda's OGR test functions (arXiv:1901.11457, Figs. 1, 4, 7), run from lattices of starts
(:meth:`BenchmarkFunction.lattice_starts`) with Gaussian gradient noise (``value_and_grad(noise_std=...)``).
For the other boxes the source is M. Jamil, X.-S. Yang, "A literature survey of benchmark functions for
global optimization problems", Int. J. Math. Model. Numer. Optim. 4(2), 2013 (hereafter Jamil & Yang), and
S. Surjanovic, D. Bingham, Virtual Library of Simulation Experiments, sfu.ca/~ssurjano (hereafter VLSE).

Starts ``x0``: Rosenbrock's and Beale's are those of J. J. Moré, B. S. Garbow, K. E. Hillstrom, "Testing
unconstrained optimization software", ACM TOMS 7(1), 1981 (hereafter MGH). The literature gives no standard
start for the others; hessopt uses ``lower + 0.75 (upper - lower)`` in every coordinate (a point of the box
that is neither a minimizer nor a stationary point), and says so in each class.

Cost: one evaluation is O(dim) per point; :meth:`BenchmarkFunction.value_and_grad` adds one backward pass.
Random quadratics with a known Hessian are in :mod:`hessopt.problems.quadratic`.
"""

from __future__ import annotations

import itertools
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "BenchmarkFunction",
    "Sphere",
    "Rosenbrock",
    "Rastrigin",
    "Ackley",
    "Griewank",
    "Schwefel",
    "Zakharov",
    "Himmelblau",
    "Beale",
    "Beale3D",
    "Matyas",
    "GoldsteinPrice",
    "ThreeHumpCamel",
    "QuarticSaddle",
    "FUNCTION_NAMES",
    "DEFAULT_DIM",
    "get_function",
    "protocol_functions",
]

DEFAULT_DIM = 10
"""Dimension of the n-D functions when none is given: n = 10 of the 2025 protocol."""


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    return dtype


def _box_point(lower: float, upper: float, dim: int) -> tuple[float, ...]:
    """Hessopt's start where the literature has none: ``lower + 0.75 (upper - lower)`` per coordinate."""
    return (lower + 0.75 * (upper - lower),) * dim


def _safe_sqrt(u: Tensor) -> Tensor:
    """``sqrt(u)`` for ``u >= 0`` whose derivative at ``u = 0`` is taken as 0 instead of ``inf``.

    ``sqrt`` has an infinite slope at 0, so autograd's chain rule gives ``0 * inf = nan`` for
    ``sqrt(|x|)`` or ``sqrt(mean x^2)`` at ``x = 0``. The double ``where`` evaluates ``sqrt`` only at
    positive arguments; at 0 the composite functions used here (Ackley, Schwefel) then get the gradient 0,
    which is their derivative (Schwefel) or the minimum-norm subgradient (Ackley's cone at its minimizer).
    """
    positive = u > 0
    root = torch.sqrt(torch.where(positive, u, torch.ones_like(u)))
    return torch.where(positive, root, torch.zeros_like(u))


class BenchmarkFunction(ABC):
    """A test function ``f: R^dim -> R`` with its box, standard start and known minimum.

    Attributes:
        name: registry name (see :data:`FUNCTION_NAMES`).
        dim: dimension of the points.
        lower, upper: the box ``[lower, upper]^dim`` for random starts and clamping.
        x0: the standard start (source given by each subclass).
        f_min: the global minimum value (over the box for the named functions; ``-inf`` where ``f`` is
            unbounded below).
        minimizers: the global minimizer(s), each a tuple of ``dim`` floats (empty when there is none).
        convex: whether ``f`` is convex on ``R^dim``.

    Subclasses implement :meth:`_evaluate` on validated input of shape ``(..., dim)``.
    """

    def __init__(
        self,
        *,
        name: str,
        dim: int,
        lower: float,
        upper: float,
        x0: Sequence[float],
        f_min: float,
        minimizers: Sequence[Sequence[float]],
        convex: bool,
    ) -> None:
        self.name = name
        self.dim = _check_int(dim, "dim", 1)
        lower, upper = float(lower), float(upper)
        if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
            raise ValueError(f"the box needs finite lower < upper, got lower={lower}, upper={upper}")
        self.lower = lower
        self.upper = upper
        self.x0 = tuple(float(v) for v in x0)
        if len(self.x0) != self.dim:
            raise ValueError(f"x0 must have dim={self.dim} entries, got {len(self.x0)}")
        self.f_min = float(f_min)
        self.minimizers = tuple(tuple(float(v) for v in m) for m in minimizers)
        for m in self.minimizers:
            if len(m) != self.dim:
                raise ValueError(f"every minimizer must have dim={self.dim} entries, got {len(m)}")
        self.convex = bool(convex)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"

    @abstractmethod
    def _evaluate(self, x: Tensor) -> Tensor:
        """``f`` at points of shape ``(..., dim)`` (already validated), returning shape ``(...)``."""

    def _check_points(self, x: object, name: str = "x") -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape (..., {self.dim}), got {type(x).__name__}"
            )
        if not x.is_floating_point():
            raise ValueError(f"{name} must have a floating dtype (e.g. torch.float64), got {x.dtype}")
        if x.dim() == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{name} must have shape (..., {self.dim}) for {self.name} (dim={self.dim}), "
                f"got {tuple(x.shape)}"
            )
        return x

    def __call__(self, x: Tensor) -> Tensor:
        """``f(x)`` for ``x`` of shape ``(..., dim)``; returns shape ``(...)``, differentiable."""
        return self._evaluate(self._check_points(x))

    def value_and_grad(
        self, x: Tensor, *, noise_std: float = 0.0, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Detached ``(f(x), grad f(x) + noise)`` for ``x`` of shape ``(..., dim)``.

        The gradient is exact (autograd of ``f(x).sum()``, so each point of a batch gets its own
        gradient), also inside ``torch.no_grad()``; ``x`` is never modified. With ``noise_std > 0`` an
        independent ``N(0, noise_std^2)`` draw is added to every coordinate of every point, as in Duda's
        noisy-gradient experiments (arXiv:1901.11457, σ = 0.1), drawn with ``torch.randn`` from
        ``generator`` (the global generator if ``None``); the same generator state gives the same noise.
        ``noise_std = 0`` draws nothing and leaves ``generator`` untouched.

        Cost: one forward and one backward pass.
        """
        x = self._check_points(x)
        if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real):
            raise TypeError(f"noise_std must be a float, got {type(noise_std).__name__}")
        noise_std = float(noise_std)
        if not (math.isfinite(noise_std) and noise_std >= 0.0):
            raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            f = self._evaluate(xg)
            (g,) = torch.autograd.grad(f.sum(), xg)
        if noise_std > 0.0:
            noise = torch.randn(g.shape, generator=generator, dtype=g.dtype, device=g.device)
            g = g + noise_std * noise
        return f.detach(), g.detach()

    def clamp(self, x: Tensor) -> Tensor:
        """A new tensor: ``x`` clamped to the box ``[lower, upper]^dim`` (the protocol clamps every step)."""
        return torch.clamp(self._check_points(x), self.lower, self.upper)

    def sample_starts(self, n: int, *, seed0: int = 42, dtype: torch.dtype = torch.float64) -> Tensor:
        """``n`` starts, shape ``(n, dim)``, uniform in the box; start ``i`` uses seed ``seed0 + i``.

        Start ``i`` is ``lower + (upper - lower) * torch.rand(dim)`` drawn in float64 from a CPU
        ``torch.Generator`` seeded ``seed0 + i`` (the per-start seeds 42 + i of the 2025 protocol,
        the 2025 protocol), then cast to ``dtype``. So start ``i`` does not depend on ``n``, and the float32
        starts are the float64 starts rounded.
        """
        n = _check_int(n, "n", 0)
        seed0 = _check_int(seed0, "seed0", 0)
        dtype = _check_float_dtype(dtype)
        starts = torch.empty(n, self.dim, dtype=torch.float64)
        for i in range(n):
            gen = torch.Generator().manual_seed(seed0 + i)
            starts[i] = torch.rand(self.dim, generator=gen, dtype=torch.float64)
        return (self.lower + (self.upper - self.lower) * starts).to(dtype)

    def lattice_starts(
        self, values: Sequence[float] | Sequence[Sequence[float]], *, dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """Starts on a Cartesian lattice, shape ``(number of points, dim)`` (Duda's protocol).

        ``values`` is either one sequence of numbers used for every coordinate (``range(-2, 3)`` on 3-D
        Beale gives the 125 starts ``{-2..2}^3`` of arXiv:1901.11457), or ``dim`` sequences, one per
        coordinate (``[range(-2, 3), [-1, 0, 1]]`` gives the 15 starts of that paper's Fig. 1). Points come
        in lexicographic order, the last coordinate varying fastest. They are not clamped: Duda's lattices
        may leave the box (e.g. ``{-5..5}^2`` on Beale). Cost: ``len(values)^dim`` points.
        """
        dtype = _check_float_dtype(dtype)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError("values must be a non-empty sequence of numbers, or dim sequences of numbers")
        if all(isinstance(v, numbers.Real) for v in values):
            axes = [list(values)] * self.dim
        elif len(values) == self.dim and all(
            isinstance(a, Sequence) and len(a) > 0 and all(isinstance(v, numbers.Real) for v in a)
            for a in values
        ):
            axes = [list(a) for a in values]
        else:
            raise ValueError(
                f"values must be a non-empty sequence of numbers, or {self.dim} non-empty sequences of "
                f"numbers (one per coordinate), got {values!r}"
            )
        points = list(itertools.product(*axes))
        return torch.tensor(points, dtype=dtype).reshape(len(points), self.dim)

    def x0_tensor(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The standard start :attr:`x0` as a tensor of shape ``(dim,)``."""
        return torch.tensor(self.x0, dtype=_check_float_dtype(dtype))


class Sphere(BenchmarkFunction):
    """Sphere ``f(x) = sum_i x_i^2`` (De Jong's F1, 1975): convex, minimum 0 at 0.

    Box [-5, 5]^n (protocol); ``x0`` = 2.5 per coordinate (hessopt convention, module doc).
    """

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        d = _check_int(dim, "dim", 1)
        super().__init__(
            name="sphere", dim=d, lower=-5.0, upper=5.0, x0=_box_point(-5.0, 5.0, d),
            f_min=0.0, minimizers=[(0.0,) * d], convex=True,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        return (x * x).sum(-1)


class Rosenbrock(BenchmarkFunction):
    """Chained Rosenbrock ``f(x) = sum_{i<n} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``, n >= 2.

    H. H. Rosenbrock, Computer J. 3(3), 1960; the n-D chained form is ``scipy.optimize.rosen``'s. Minimum 0
    at (1, ..., 1); for n >= 4 there is also a local minimum near (-1, 1, ..., 1) (Kok, Sandrock, Evol.
    Comput. 17(3), 2009), of value ≈ 3.99 at n = 10 (where BFGS runs of the 2025 benchmark code stop). Box
    [-2, 2]^n (protocol). ``x0`` = (-1.2, 1, -1.2, 1, ...): Rosenbrock's start (MGH problem 1), repeated
    as for MGH's extended Rosenbrock (problem 21).
    """

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        d = _check_int(dim, "dim", 2)
        super().__init__(
            name="rosenbrock", dim=d, lower=-2.0, upper=2.0,
            x0=tuple(-1.2 if i % 2 == 0 else 1.0 for i in range(d)),
            f_min=0.0, minimizers=[(1.0,) * d], convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        head, tail = x[..., :-1], x[..., 1:]
        return (100.0 * (tail - head * head) ** 2 + (1.0 - head) ** 2).sum(-1)


class Rastrigin(BenchmarkFunction):
    """Rastrigin's function.

    Rastrigin ``f(x) = 10 n + sum_i (x_i^2 - 10 cos(2 pi x_i))`` (Rastrigin 1974; n-D form: Mühlenbein,
    Schomisch, Born 1991).

    Minimum 0 at 0, a local minimum near every integer point. Box [-5.12, 5.12]^n (protocol);
    ``x0`` = 2.56 per coordinate (hessopt convention, module doc).
    """

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        d = _check_int(dim, "dim", 1)
        super().__init__(
            name="rastrigin", dim=d, lower=-5.12, upper=5.12, x0=_box_point(-5.12, 5.12, d),
            f_min=0.0, minimizers=[(0.0,) * d], convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        return 10.0 * self.dim + (x * x - 10.0 * torch.cos(2.0 * math.pi * x)).sum(-1)


class Ackley(BenchmarkFunction):
    """Ackley ``f(x) = -20 exp(-0.2 sqrt(mean x^2)) - exp(mean cos(2 pi x)) + 20 + e`` (Ackley 1987).

    Minimum 0 at 0, where ``f`` has a cone-shaped kink (no gradient): :meth:`value_and_grad` returns the
    minimum-norm subgradient 0 there instead of NaN. Box [-5, 5]^n (protocol); ``x0`` = 2.5 per
    coordinate (hessopt convention, module doc).
    """

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        d = _check_int(dim, "dim", 1)
        super().__init__(
            name="ackley", dim=d, lower=-5.0, upper=5.0, x0=_box_point(-5.0, 5.0, d),
            f_min=0.0, minimizers=[(0.0,) * d], convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        radius = _safe_sqrt((x * x).mean(-1))
        wave = torch.cos(2.0 * math.pi * x).mean(-1)
        return -20.0 * torch.exp(-0.2 * radius) - torch.exp(wave) + 20.0 + math.e


class Griewank(BenchmarkFunction):
    """Griewank ``f(x) = sum_i x_i^2 / 4000 - prod_i cos(x_i / sqrt(i)) + 1``, i = 1..n.

    A. O. Griewank, "Generalized descent for global optimization", JOTA 34, 1981.

    Minimum 0 at 0. Box [-5, 5]^n (protocol; the literature often uses [-600, 600]^n);
    ``x0`` = 2.5 per coordinate (hessopt convention, module doc).
    """

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        d = _check_int(dim, "dim", 1)
        super().__init__(
            name="griewank", dim=d, lower=-5.0, upper=5.0, x0=_box_point(-5.0, 5.0, d),
            f_min=0.0, minimizers=[(0.0,) * d], convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        index = torch.arange(1, self.dim + 1, dtype=x.dtype, device=x.device)
        return (x * x).sum(-1) / 4000.0 - torch.cos(x / torch.sqrt(index)).prod(-1) + 1.0


# x* = argmax of t sin(sqrt(t)) on [0, 500] and the gap between the rounded constant 418.9829 and that
# maximum, 418.98288727243370627...; both computed with mpmath at 40 digits (the tests re-derive them).
_SCHWEFEL_ARGMIN = 420.96874635998203
_SCHWEFEL_GAP = 1.2727566266076575e-05


class Schwefel(BenchmarkFunction):
    """Schwefel ``f(x) = 418.9829 n - sum_i x_i sin(sqrt|x_i|)`` (Schwefel 1981; VLSE "Schwefel function").

    Box [-500, 500]^n (protocol); the minimum is over the box (outside it ``f`` is unbounded
    below, so clamp). The global minimizer is x_i = 420.96874635998203 (the root of
    ``sin(s) + s cos(s) / 2 = 0`` with ``s = sqrt(x)``), where ``t sin(sqrt t)`` reaches 418.98288727243371.
    The literature calls the minimum 0, but the constant 418.9829 is rounded, so ``f`` as written has
    minimum ``f_min = 1.2727566266e-5 n`` (both numbers from a 40-digit mpmath computation); ``f_min`` is
    that exact value so that ``f - f_min`` can reach 0. ``x0`` = 250 per coordinate (hessopt convention,
    module doc).
    """

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        d = _check_int(dim, "dim", 1)
        super().__init__(
            name="schwefel", dim=d, lower=-500.0, upper=500.0, x0=_box_point(-500.0, 500.0, d),
            f_min=d * _SCHWEFEL_GAP, minimizers=[(_SCHWEFEL_ARGMIN,) * d], convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        return 418.9829 * self.dim - (x * torch.sin(_safe_sqrt(x.abs()))).sum(-1)


class Zakharov(BenchmarkFunction):
    """Zakharov ``f(x) = sum_i x_i^2 + s^2 + s^4`` with ``s = sum_i 0.5 i x_i``, i = 1..n (Jamil & Yang).

    Convex, minimum 0 at 0. Box [-5, 5]^n (protocol); ``x0`` = 2.5 per coordinate (hessopt
    convention, module doc).
    """

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        d = _check_int(dim, "dim", 1)
        super().__init__(
            name="zakharov", dim=d, lower=-5.0, upper=5.0, x0=_box_point(-5.0, 5.0, d),
            f_min=0.0, minimizers=[(0.0,) * d], convex=True,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        weights = 0.5 * torch.arange(1, self.dim + 1, dtype=x.dtype, device=x.device)
        s = (weights * x).sum(-1)
        return (x * x).sum(-1) + s**2 + s**4


class Himmelblau(BenchmarkFunction):
    """Himmelblau ``f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2``.

    D. M. Himmelblau, Applied Nonlinear Programming, McGraw-Hill, 1972.

    Minimum 0 at four points, the common roots of both squares: (3, 2) and three irrational ones (here to
    17 digits, from mpmath). Box [-5, 5]^2 (protocol); ``x0`` = (2.5, 2.5) (hessopt convention,
    module doc).
    """

    FIXED_DIM = 2

    def __init__(self) -> None:
        super().__init__(
            name="himmelblau", dim=2, lower=-5.0, upper=5.0, x0=_box_point(-5.0, 5.0, 2), f_min=0.0,
            minimizers=[
                (3.0, 2.0),
                (-2.8051180869527449, 3.1313125182505730),
                (-3.7793102533777469, -3.2831859912861694),
                (3.5844283403304917, -1.8481265269644036),
            ],
            convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        return (u * u + v - 11.0) ** 2 + (u + v * v - 7.0) ** 2


def _beale(u: Tensor, v: Tensor) -> Tensor:
    return (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2 + (2.625 - u + u * v**3) ** 2


class Beale(BenchmarkFunction):
    """Beale ``f(x, y) = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2`` (Beale 1958; MGH 5).

    Minimum 0 at (3, 0.5). Box [-4.5, 4.5]^2 (protocol); ``x0`` = (1, 1) (MGH problem 5).
    Duda's 2-D OGR experiments use it from the lattice {-2..2} x {-1, 0, 1} (arXiv:1901.11457, Fig. 1).
    """

    FIXED_DIM = 2

    def __init__(self) -> None:
        super().__init__(
            name="beale", dim=2, lower=-4.5, upper=4.5, x0=(1.0, 1.0), f_min=0.0,
            minimizers=[(3.0, 0.5)], convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        return _beale(x[..., 0], x[..., 1])


class Beale3D(BenchmarkFunction):
    """Duda's 3-D Beale ``f(x, y, z) = b(x, y) + b(z, y)``, ``b`` = 2-D :class:`Beale`.

    J. Duda, arXiv:1901.11457, Fig. 4 (github.com/JarekDuda/SGD-OGR-Hessian-estimator, notebooks
    ``SGD-sORG 3D subspace.nb`` and ``dsOGR.nb``).

    Minimum 0 at (3, 0.5, 3). Box [-4.5, 4.5]^3: Beale's box in every coordinate (hessopt choice; Duda's
    start lattices {-2..2}^3 and {-3..3}^3 lie inside it). ``x0`` = (1, 1, 1), MGH's Beale start extended.
    """

    FIXED_DIM = 3

    def __init__(self) -> None:
        super().__init__(
            name="beale3d", dim=3, lower=-4.5, upper=4.5, x0=(1.0, 1.0, 1.0), f_min=0.0,
            minimizers=[(3.0, 0.5, 3.0)], convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        return _beale(x[..., 0], x[..., 1]) + _beale(x[..., 2], x[..., 1])


class Matyas(BenchmarkFunction):
    """Matyas ``f(x, y) = 0.26 (x^2 + y^2) - 0.48 xy`` (Jamil & Yang; VLSE).

    Convex quadratic (Hessian eigenvalues 0.04 and 1), minimum 0 at 0. Box [-10, 10]^2 (Jamil & Yang,
    VLSE); ``x0`` = (5, 5) (hessopt convention, module doc).
    """

    FIXED_DIM = 2

    def __init__(self) -> None:
        super().__init__(
            name="matyas", dim=2, lower=-10.0, upper=10.0, x0=_box_point(-10.0, 10.0, 2), f_min=0.0,
            minimizers=[(0.0, 0.0)], convex=True,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        return 0.26 * (u * u + v * v) - 0.48 * u * v


class GoldsteinPrice(BenchmarkFunction):
    """Goldstein-Price function.

    Goldstein-Price function (A. A. Goldstein, J. F. Price, Math. Comp. 25, 1971)::

        f(x, y) = [1 + (x + y + 1)^2 (19 - 14x + 3x^2 - 14y + 6xy + 3y^2)]
                * [30 + (2x - 3y)^2 (18 - 32x + 12x^2 + 48y - 36xy + 27y^2)]

    Minimum 3 at (0, -1), with several local minima. Box [-2, 2]^2 (Jamil & Yang, VLSE); ``x0`` = (1, 1)
    (hessopt convention, module doc).
    """

    FIXED_DIM = 2

    def __init__(self) -> None:
        super().__init__(
            name="goldstein_price", dim=2, lower=-2.0, upper=2.0, x0=_box_point(-2.0, 2.0, 2), f_min=3.0,
            minimizers=[(0.0, -1.0)], convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        first = 1.0 + (u + v + 1.0) ** 2 * (
            19.0 - 14.0 * u + 3.0 * u * u - 14.0 * v + 6.0 * u * v + 3.0 * v * v
        )
        second = 30.0 + (2.0 * u - 3.0 * v) ** 2 * (
            18.0 - 32.0 * u + 12.0 * u * u + 48.0 * v - 36.0 * u * v + 27.0 * v * v
        )
        return first * second


class ThreeHumpCamel(BenchmarkFunction):
    """Three-hump camel ``f(x, y) = 2x^2 - 1.05x^4 + x^6/6 + xy + y^2`` (Jamil & Yang; VLSE).

    Minimum 0 at 0, two more local minima. Box [-5, 5]^2 (Jamil & Yang, VLSE); ``x0`` = (2.5, 2.5) (hessopt
    convention, module doc).
    """

    FIXED_DIM = 2

    def __init__(self) -> None:
        super().__init__(
            name="three_hump_camel", dim=2, lower=-5.0, upper=5.0, x0=_box_point(-5.0, 5.0, 2), f_min=0.0,
            minimizers=[(0.0, 0.0)], convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        u2 = u * u
        return 2.0 * u2 - 1.05 * u2 * u2 + u2 * u2 * u2 / 6.0 + u * v + v * v


class QuarticSaddle(BenchmarkFunction):
    """``f(x, y) = x²/2 − y²/2 + y⁴/4``: a saddle at 0 (Hessian diag(1, −1)), minima −1/4 at (0, ±1).

    A saddle-escape test (docs/algorithms/ogr.md, "Saddle-free step"), with its start ``x0 = (1, 1e-3)``:
    exact Newton from there converges to the saddle, saddle-free OGR leaves it. Box [-2, 2]² (hessopt
    choice; it holds the start, the saddle and both minima). The Hessian is diag(1, 3y² − 1): negative
    for ``|y| < 1/√3``.
    """

    FIXED_DIM = 2

    def __init__(self) -> None:
        super().__init__(
            name="quartic_saddle", dim=2, lower=-2.0, upper=2.0, x0=(1.0, 1e-3), f_min=-0.25,
            minimizers=[(0.0, -1.0), (0.0, 1.0)], convex=False,
        )

    def _evaluate(self, x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        return 0.5 * u * u - 0.5 * v * v + 0.25 * v**4


_REGISTRY: dict[str, type[BenchmarkFunction]] = {
    "sphere": Sphere,
    "rosenbrock": Rosenbrock,
    "rastrigin": Rastrigin,
    "ackley": Ackley,
    "griewank": Griewank,
    "schwefel": Schwefel,
    "zakharov": Zakharov,
    "himmelblau": Himmelblau,
    "beale": Beale,
    "beale3d": Beale3D,
    "matyas": Matyas,
    "goldstein_price": GoldsteinPrice,
    "three_hump_camel": ThreeHumpCamel,
    "quartic_saddle": QuarticSaddle,
}

FUNCTION_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted by :func:`get_function`, protocol functions first."""

_PROTOCOL_NAMES = ("sphere", "rosenbrock", "rastrigin", "ackley", "griewank", "schwefel", "zakharov",
                   "himmelblau", "beale")


def get_function(name: str, dim: int | None = None) -> BenchmarkFunction:
    """The test function called ``name`` (case-insensitive; ``-`` and spaces count as ``_``).

    ``dim`` sets the dimension of the n-D functions (default :data:`DEFAULT_DIM` = 10, the protocol's n);
    the fixed-dimension ones (Himmelblau, Beale, ... ) accept only their own dimension or ``None``.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in _REGISTRY:
        raise ValueError(f"unknown test function {name!r}; choose one of {', '.join(FUNCTION_NAMES)}")
    cls = _REGISTRY[key]
    fixed = getattr(cls, "FIXED_DIM", None)
    if fixed is not None:
        if dim is not None and _check_int(dim, "dim", 1) != fixed:
            raise ValueError(
                f"{key} is defined only for dim={fixed}, got dim={dim}; pass dim=None or dim={fixed}"
            )
        return cls()
    return cls(DEFAULT_DIM if dim is None else dim)


def protocol_functions() -> list[BenchmarkFunction]:
    """The nine functions of the 2025 BFGS/OGR protocol.

    The nine functions of the 2025 BFGS/OGR protocol (arXiv:2512.06969): the n-D ones in 10-D, then 2-D
    Himmelblau and Beale, in the protocol's order.
    """
    return [get_function(name) for name in _PROTOCOL_NAMES]
