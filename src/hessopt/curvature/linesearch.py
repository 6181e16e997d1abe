"""Line searches along a direction: strong Wolfe (bracketing + zoom) and backtracking Armijo.

Both searches work on the one-dimensional restriction ``phi(alpha) = f(x + alpha d)`` and share one
interface, so any optimizer can use either:

* ``phi(alpha) -> (f, dphi, payload)``: the value ``phi(alpha)`` and the directional derivative
  ``phi'(alpha) = grad f(x + alpha d)^T d`` as Python floats, plus an opaque ``payload`` (typically the
  gradient at the trial point) handed back with the accepted point so that the caller does not have to
  evaluate it again. :func:`along_direction` builds such a ``phi`` from a function ``x -> (f, grad)``.
* ``f0``, ``dphi0``: ``phi(0)`` and ``phi'(0)``, already known to the caller.
* The result is a :class:`LineSearchResult`.

A trial point whose value or derivative is not finite (nan/inf, e.g. a step into a region where the loss
overflows) is treated as "step too long": both searches shrink the step and never return such a point.

Line searches branch on function values, so they read values back to the host: each evaluation costs one
synchronisation on an accelerator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LineSearchResult", "Phi", "along_direction", "armijo", "strong_wolfe"]

#: ``phi(alpha) -> (phi(alpha), phi'(alpha), payload)``; see the module docstring.
Phi = Callable[[float], tuple[float, float, Any]]

# Safeguard of the zoom interpolation: a trial point is kept at least this fraction of the bracket's
# width away from both ends, so every evaluation shrinks the bracket by at least this fraction
# (the role of the safeguards in NW section 3.5; 0.1 as in Moré & Thuente's and scipy's zoom checks).
_ZOOM_MARGIN = 0.1


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of a line search.

    Attributes:
        alpha: the accepted step length; 0.0 when no point with a lower value than ``phi(0)`` was found.
        f: ``phi(alpha)`` (``f0`` when ``alpha == 0``).
        dphi: ``phi'(alpha)`` (``dphi0`` when ``alpha == 0``).
        payload: what ``phi`` returned with the accepted point; None when ``alpha == 0``.
        evaluations: number of calls of ``phi``.
        success: True when the returned point satisfies the search's conditions (strong Wolfe conditions
            for :func:`strong_wolfe`, sufficient decrease for :func:`armijo`). On failure ``alpha`` is the
            best point found that decreases ``phi`` (it satisfies sufficient decrease for
            :func:`strong_wolfe`), or 0.
        message: short human-readable reason.
    """

    alpha: float
    f: float
    dphi: float
    payload: Any
    evaluations: int
    success: bool
    message: str


def along_direction(
    evaluate: Callable[[torch.Tensor], tuple[torch.Tensor | float, torch.Tensor]],
    x: torch.Tensor,
    d: torch.Tensor,
) -> Phi:
    """Build ``phi(alpha)`` for the searches from ``evaluate(z) -> (f(z), grad f(z))`` (flat tensors).

    The payload of each trial is the gradient at ``x + alpha d``. Each call costs one ``evaluate`` and a
    dot product, and reads ``f`` and ``phi'`` back to the host.
    """
    if x.dim() != 1 or x.shape != d.shape:
        raise ValueError(
            f"x and d must be 1-D tensors of equal length, got {tuple(x.shape)}, {tuple(d.shape)}"
        )

    def phi(alpha: float) -> tuple[float, float, torch.Tensor]:
        f, g = evaluate(torch.add(x, d, alpha=alpha))
        return float(f), float(torch.dot(g.reshape(-1), d)), g

    return phi


@dataclass(frozen=True)
class _Point:
    alpha: float
    f: float
    dphi: float
    payload: Any

    @property
    def finite(self) -> bool:
        return math.isfinite(self.f) and math.isfinite(self.dphi)


def _check_common(f0: float, dphi0: float, alpha0: float, max_evals: int, name_evals: str) -> None:
    if not (math.isfinite(f0) and math.isfinite(dphi0)):
        raise ValueError(f"f0 and dphi0 must be finite, got f0={f0}, dphi0={dphi0}")
    if not (alpha0 > 0 and math.isfinite(alpha0)):
        raise ValueError(f"alpha0 must be a positive finite step length, got {alpha0}")
    if not (isinstance(max_evals, int) and max_evals >= 1):
        raise ValueError(f"{name_evals} must be an integer >= 1, got {max_evals!r}")


def _cubic_minimizer(a: _Point, b: _Point) -> float:
    """Minimiser of the cubic matching value and slope at ``a`` and ``b`` (NW eq. 3.59); nan if none."""
    d1 = a.dphi + b.dphi - 3.0 * (a.f - b.f) / (a.alpha - b.alpha)
    disc = d1 * d1 - a.dphi * b.dphi
    if not (disc >= 0 and math.isfinite(disc)):
        return math.nan
    d2 = math.copysign(math.sqrt(disc), b.alpha - a.alpha)
    denom = b.dphi - a.dphi + 2.0 * d2
    if denom == 0:
        return math.nan
    return b.alpha - (b.alpha - a.alpha) * (b.dphi + d2 - d1) / denom


def _quadratic_minimizer(a: _Point, b: _Point) -> float:
    """Minimiser of the quadratic matching ``f(a)``, ``phi'(a)`` and ``f(b)`` (NW eq. 3.57); nan if none."""
    h = b.alpha - a.alpha
    curv = b.f - a.f - a.dphi * h
    if not (curv > 0 and math.isfinite(curv)):
        return math.nan
    return a.alpha - a.dphi * h * h / (2.0 * curv)


def _zoom_trial(lo: _Point, hi: _Point) -> float:
    """Next trial inside the bracket: cubic, else quadratic, else bisection, kept off the ends."""
    left, right = min(lo.alpha, hi.alpha), max(lo.alpha, hi.alpha)
    width = right - left
    if hi.finite:
        trial = _cubic_minimizer(lo, hi)
    elif math.isfinite(hi.f):
        trial = _quadratic_minimizer(lo, hi)
    else:
        trial = math.nan
    if not math.isfinite(trial):
        return 0.5 * (left + right)
    return min(max(trial, left + _ZOOM_MARGIN * width), right - _ZOOM_MARGIN * width)


def strong_wolfe(
    phi: Phi,
    f0: float,
    dphi0: float,
    *,
    alpha0: float = 1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evals: int = 25,
    alpha_max: float = math.inf,
    expansion: float = 2.0,
) -> LineSearchResult:
    """Find a step satisfying the strong Wolfe conditions (NW Algorithms 3.5 and 3.6).

    Conditions (NW eq. 3.7): sufficient decrease ``phi(alpha) <= f0 + c1 alpha dphi0`` and curvature
    ``|phi'(alpha)| <= c2 |dphi0|``, with ``0 < c1 < c2 < 1``.

    Bracketing phase (Alg. 3.5): try ``alpha0``; while the trial decreases ``phi`` sufficiently, is lower
    than the previous trial and still has a negative slope not yet small enough, multiply the step by
    ``expansion`` (NW allows "a constant multiple"), up to ``alpha_max``. Zoom phase (Alg. 3.6): shrink the
    bracket ``[lo, hi]`` with the minimiser of the cubic through both ends' values and slopes (NW eq. 3.59),
    falling back to the quadratic (eq. 3.57) or bisection when the cubic has no minimiser or an end is not
    finite; a trial is kept at least 10% of the bracket width away from both ends.

    Defaults: ``c1 = 1e-4``, ``c2 = 0.9`` (NW p. 142 for quasi-Newton methods), ``alpha0 = 1`` (the
    quasi-Newton unit step, NW section 3.5), at most ``max_evals = 25`` evaluations of ``phi``.

    Raises:
        ValueError: if ``dphi0 >= 0`` (not a descent direction), or an argument is out of range.
    """
    _check_common(f0, dphi0, alpha0, max_evals, "max_evals")
    if not (0 < c1 < c2 < 1):
        raise ValueError(f"need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")
    if not dphi0 < 0:
        raise ValueError(f"dphi0 must be negative (a descent direction) for a Wolfe search, got {dphi0}")
    if not alpha_max > 0:
        raise ValueError(f"alpha_max must be > 0, got {alpha_max}")
    if not (expansion > 1 and math.isfinite(expansion)):
        raise ValueError(f"expansion must be a finite factor > 1, got {expansion}")

    evals = 0
    curvature_bound = -c2 * dphi0

    def evaluate(alpha: float) -> _Point:
        nonlocal evals
        evals += 1
        f, dphi, payload = phi(alpha)
        return _Point(alpha, float(f), float(dphi), payload)

    def sufficient(p: _Point) -> bool:
        return p.finite and p.f <= f0 + c1 * p.alpha * dphi0

    def done(p: _Point, success: bool, message: str) -> LineSearchResult:
        return LineSearchResult(p.alpha, p.f, p.dphi, p.payload, evals, success, message)

    start = _Point(0.0, float(f0), float(dphi0), None)

    def zoom(lo: _Point, hi: _Point) -> LineSearchResult:
        while evals < max_evals:
            if abs(hi.alpha - lo.alpha) <= 4 * math.ulp(max(abs(lo.alpha), abs(hi.alpha))):
                return done(lo, False, "bracket shrank below floating-point resolution")
            trial = evaluate(_zoom_trial(lo, hi))
            # NW Alg. 3.6 moves hi on phi(trial) >= phi(lo); a tie is left to the slope tests instead, so
            # that near a flat minimum, where values agree to rounding, the derivative still decides.
            if not sufficient(trial) or trial.f > lo.f:
                hi = trial
            else:
                if abs(trial.dphi) <= curvature_bound:
                    return done(trial, True, "strong Wolfe conditions satisfied")
                if trial.dphi * (hi.alpha - lo.alpha) >= 0:
                    hi = lo
                lo = trial
        return done(lo, False, f"no strong Wolfe point within max_evals={max_evals} evaluations")

    prev = start
    alpha = min(alpha0, alpha_max)
    while evals < max_evals:
        cur = evaluate(alpha)
        if not sufficient(cur) or (prev is not start and cur.f >= prev.f):
            return zoom(prev, cur)
        if abs(cur.dphi) <= curvature_bound:
            return done(cur, True, "strong Wolfe conditions satisfied")
        if cur.dphi >= 0:
            return zoom(cur, prev)
        if alpha >= alpha_max:
            return done(cur, False, f"reached alpha_max={alpha_max} with the slope still negative")
        prev = cur
        alpha = min(expansion * alpha, alpha_max)
    return done(prev, False, f"no strong Wolfe point within max_evals={max_evals} evaluations")


ARMIJO_ASCENT_MODES = ("raise", "decrease")
ARMIJO_FAILURE_MODES = ("best", "zero")


def armijo(
    phi: Phi,
    f0: float,
    dphi0: float,
    *,
    alpha0: float = 1.0,
    c: float = 1e-4,
    tau: float = 0.5,
    max_backtracks: int = 50,
    ascent: str = "raise",
    on_failure: str = "best",
    fallback_alpha: float = 0.0,
) -> LineSearchResult:
    """Backtracking line search for sufficient decrease (NW Algorithm 3.1).

    Tries ``alpha0, tau alpha0, tau^2 alpha0, ...`` and returns the first step with
    ``phi(alpha) <= f0 + c alpha dphi0`` (the Armijo condition, NW eq. 3.4). Only ``phi``'s value is used,
    so ``phi`` may return ``nan`` as its derivative. Defaults ``c = 1e-4``, ``tau = 0.5``, ``alpha0 = 1``
    (NW section 3.1) and at most ``max_backtracks = 50`` reductions (``max_backtracks + 1`` evaluations),
    as in the Armijo search of the OGR/BFGS comparison code (docs/algorithms/bfgs.md).

    Args:
        phi: ``phi(alpha) -> (f, dphi, payload)`` (module docstring).
        f0: ``phi(0)``.
        dphi0: ``phi'(0)``.
        alpha0: the first trial step (> 0).
        c: the sufficient-decrease constant, in (0, 1).
        tau: the backtracking factor, in (0, 1).
        max_backtracks: reductions after the first trial (>= 0).
        ascent: what to do when ``dphi0 >= 0``. ``"raise"`` (default): ValueError, the Armijo test needs a
            descent direction. ``"decrease"``: accept any step with ``phi(alpha) < f0`` (the behaviour of
            the comparison code, docs/algorithms/bfgs.md).
        on_failure: when no trial passes. ``"best"`` (default): return the trial with the lowest value if
            it is below ``f0`` (``success=False``), else ``fallback_alpha``. ``"zero"``: return
            ``fallback_alpha`` directly.
        fallback_alpha: step returned when nothing is accepted (default 0, "do not move"; the comparison
            code used ``1e-12``). A nonzero fallback is *not* evaluated: its ``f``/``dphi`` are nan and its
            payload None.

    Returns:
        A :class:`LineSearchResult`.

    Raises:
        ValueError: an argument out of range, or ``dphi0 >= 0`` with ``ascent="raise"``.
    """
    if not (isinstance(max_backtracks, int) and max_backtracks >= 0):
        raise ValueError(f"max_backtracks must be an integer >= 0, got {max_backtracks!r}")
    _check_common(f0, dphi0, alpha0, max_backtracks + 1, "max_backtracks + 1")
    if not 0 < c < 1:
        raise ValueError(f"c must be in (0, 1), got {c}")
    if not 0 < tau < 1:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    if ascent not in ARMIJO_ASCENT_MODES:
        raise ValueError(f"ascent must be one of {ARMIJO_ASCENT_MODES}, got {ascent!r}")
    if on_failure not in ARMIJO_FAILURE_MODES:
        raise ValueError(f"on_failure must be one of {ARMIJO_FAILURE_MODES}, got {on_failure!r}")
    if not (fallback_alpha >= 0 and math.isfinite(fallback_alpha)):
        raise ValueError(f"fallback_alpha must be a finite number >= 0, got {fallback_alpha}")
    if dphi0 >= 0 and ascent == "raise":
        raise ValueError(
            f"dphi0 must be negative (a descent direction), got {dphi0}; pass ascent='decrease' to accept "
            "any decrease along a non-descent direction"
        )
    descent = dphi0 < 0

    best: _Point | None = None
    alpha = alpha0
    for k in range(max_backtracks + 1):
        f, dphi, payload = phi(alpha)
        p = _Point(alpha, float(f), float(dphi), payload)
        if math.isfinite(p.f):
            ok = p.f <= f0 + c * alpha * dphi0 if descent else p.f < f0
            if ok:
                return LineSearchResult(p.alpha, p.f, p.dphi, p.payload, k + 1, True, "sufficient decrease")
            if p.f < f0 and (best is None or p.f < best.f):
                best = p
        alpha *= tau
    evals = max_backtracks + 1
    message = f"no sufficient decrease within max_backtracks={max_backtracks}"
    if on_failure == "best" and best is not None:
        return LineSearchResult(best.alpha, best.f, best.dphi, best.payload, evals, False, message)
    if fallback_alpha > 0:
        return LineSearchResult(fallback_alpha, math.nan, math.nan, None, evals, False, message)
    return LineSearchResult(0.0, float(f0), float(dphi0), None, evals, False, message)
