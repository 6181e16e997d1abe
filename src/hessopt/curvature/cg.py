"""Preconditioned conjugate gradient for Hessian-free methods, over many blocks in lock-step.

:func:`block_cg` solves ``B`` independent symmetric positive-definite systems ``A_b x_b = c_b`` (the blocks of
a block-diagonal matrix) together: one iteration counter, one matrix-vector product call per iteration for
all *active* blocks, per-block scalars. A block stops on its own criterion and is then frozen (step length 0,
its iterate no longer changes) while the others continue; the loop ends when no block is active. With one
block it is ordinary preconditioned CG (the form of Martens & Sutskever 2012, "Training deep and recurrent
networks with Hessian-free optimization", Algorithm 2 / Sec. 20.4, and of Martens' HFDemo ``conjgrad_1.m``).

Per block the solver tracks the quadratic ``phi(x) = 1/2 x^T A x - c^T x = 1/2 (r - c)^T x`` with
``r = A x - c``, so ``phi`` costs no extra product. Stopping rules, per block:

* ``"progress"``: Martens' relative-progress rule (Martens 2010, ICML, Sec. 4.4): stop at iteration ``i``
  when ``i > k``, ``phi(x_i) < 0`` and ``(phi(x_i) - phi(x_{i-k})) / phi(x_i) < k * eps`` with
  ``k = max(10, ceil(i / 10))`` and ``eps = 5e-4`` (:func:`martens_should_stop`). This is the paper's rule;
  peers differ (denominators ``phi(x_i) - phi(x_0)``, no ``k`` factor, other ``eps``).
* ``"tolerance"``: relative residual ``||r_i|| <= tol ||c||`` (optional).
* ``"curvature"``: non-positive or non-finite curvature ``d^T A d`` along the search direction (impossible
  for GGN + damping in exact arithmetic; possible with the Hessian or in float32): the block keeps its
  current iterate.
* ``"converged"``: the residual is at rounding level, ``||r_i|| <= eps_mach ||c||`` (or exactly zero), where
  no further progress is possible; in float32 the residual of a strongly damped block underflows within a
  few iterations.
* ``"max_iterations"``: the cap (250 in Martens 2010).

Iterates are stored at the global iterations of a geometric grid (:func:`backtracking_grid`, ratio 1.3 from
5 as in ``conjgrad_1.m``) and at the last iteration, for CG backtracking (Martens 2010, Sec. 4.6;
:func:`backtrack`). A stored vector holds every block's iterate at that iteration; a block that already
stopped contributes its final iterate.

Step lengths and stopping tests are computed on the host from per-block dot products read back twice per
iteration (the curvature ``d^T A d``, then ``r^T M^-1 r``, ``||r||^2`` and ``phi``); these synchronisations
are inherent to truncated CG with per-block stopping. Updates are in place on per-block views, so a
stopped block's entries are never written again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "STOP_REASONS",
    "CGResult",
    "backtrack",
    "backtracking_grid",
    "block_cg",
    "martens_should_stop",
    "progress_gap",
]

STOP_REASONS = ("converged", "progress", "tolerance", "curvature", "max_iterations")

#: ``matvec(v, active) -> A v`` over all blocks (flat); inactive blocks' entries are ignored.
MatVec = Callable[[Tensor, Sequence[bool]], Tensor]


def progress_gap(i: int) -> int:
    """Martens' look-back ``k = max(10, ceil(0.1 i))``, computed exactly in integers as ``ceil(i / 10)``."""
    return max(10, -(-i // 10))


def martens_should_stop(phi: Sequence[float], i: int, eps: float = 5e-4) -> bool:
    """Martens' relative-progress test at iteration ``i``, given ``phi[j] = phi(x_j)`` for ``j = 0..i``.

    True when ``i > k``, ``phi(x_i) < 0`` and ``(phi(x_i) - phi(x_{i-k})) / phi(x_i) < k eps`` with
    ``k = progress_gap(i)`` (Martens 2010, ICML, Sec. 4.4). Never true before iteration 11.
    """
    k = progress_gap(i)
    if i <= k:
        return False
    current, earlier = phi[i], phi[i - k]
    return current < 0 and (current - earlier) / current < k * eps


def backtracking_grid(max_iterations: int, start: int = 5, ratio: float = 1.3) -> list[int]:
    """The iterations at which CG stores its iterate: ``ceil(start * ratio^j)`` up to ``max_iterations``.

    Computed by repeated multiplication as in Martens' ``conjgrad_1.m`` (5, 7, 9, 11, 15, 19, 25, 32, 41, 54,
    69, 90, 117, 152, 197 for the defaults); a value equal to the previous one is skipped.
    """
    if not ratio > 1:
        raise ValueError(f"ratio must be > 1, got {ratio}")
    if start < 1:
        raise ValueError(f"start must be >= 1, got {start}")
    out: list[int] = []
    nxt = float(start)
    while math.ceil(nxt) <= max_iterations:
        if not out or math.ceil(nxt) > out[-1]:
            out.append(math.ceil(nxt))
        nxt *= ratio
    return out


@dataclass(frozen=True)
class CGResult:
    """Outcome of :func:`block_cg`.

    Attributes:
        x: the final iterate (flat, all blocks).
        stored: the stored iterates, in iteration order; the last one is ``x``.
        stored_at: the global iteration of each stored iterate.
        stored_phi: for each stored iterate, ``phi_b`` of every block (the damped model the solver minimises).
        iterations: per block, the number of products computed for it.
        reasons: per block, why it stopped (one of :data:`STOP_REASONS`).
        sweeps: number of ``matvec`` calls (including the one for a non-zero start).
    """

    x: Tensor
    stored: list[Tensor]
    stored_at: list[int]
    stored_phi: list[list[float]]
    iterations: list[int]
    reasons: list[str]
    sweeps: int


def _segment_dots(a: Tensor, c: Tensor, sizes: Sequence[int]) -> Tensor:
    return torch.stack([torch.dot(x, y) for x, y in zip(a.split(sizes), c.split(sizes), strict=True)])


def block_cg(
    matvec: MatVec,
    rhs: Tensor,
    sizes: Sequence[int],
    *,
    x0: Tensor | None = None,
    inverse_preconditioner: Tensor | None = None,
    max_iterations: int = 250,
    min_iterations: int = 1,
    progress_eps: float | None = 5e-4,
    tolerance: float | None = None,
    store_at: Sequence[int] = (),
) -> CGResult:
    """Solve the block systems ``A_b x_b = rhs_b`` by preconditioned CG in lock-step (module docstring).

    Args:
        matvec: ``matvec(v, active) -> A v`` for a flat ``v`` laid out as ``sizes``; only the blocks flagged
            in ``active`` need to be computed.
        rhs: the right-hand side ``c`` (flat).
        sizes: number of entries of each block.
        x0: starting point (warm start); default zero (then no product is spent on ``A x0``).
        inverse_preconditioner: ``M^{-1}`` as a positive flat vector (diagonal preconditioner), or None.
        max_iterations: cap on iterations (per block).
        min_iterations: "progress" and "tolerance" stops are allowed from this iteration on.
        progress_eps: ``eps`` of Martens' rule; None disables it.
        tolerance: relative-residual tolerance; None disables it.
        store_at: global iterations at which to store the iterate (e.g. :func:`backtracking_grid`); the
            final iterate is always stored.

    Returns:
        A :class:`CGResult`.

    References:
        Martens (2010), "Deep learning via Hessian-free optimization", ICML, Sec. 4.4 (stopping) and 4.6
        (stored iterates); Martens & Sutskever (2012), Sec. 20.4; Zhang et al. (2017), arXiv:1712.07296
        (independent CG per block); docs/algorithms/hessian-free.md.
    """
    if rhs.dim() != 1 or sum(sizes) != rhs.numel():
        raise ValueError(
            f"rhs must be a flat vector of sum(sizes) = {sum(sizes)} entries, got {tuple(rhs.shape)}"
        )
    if max_iterations < 0 or min_iterations < 0:
        raise ValueError("max_iterations and min_iterations must be >= 0")
    num_blocks = len(sizes)

    def precondition(r: Tensor) -> Tensor:
        return r if inverse_preconditioner is None else r * inverse_preconditioner

    def dots(*pairs: tuple[Tensor, Tensor]) -> list[list[float]]:
        """Per-block dot products of each pair, read back to the host in one synchronisation."""
        values = torch.stack([_segment_dots(a, c, sizes) for a, c in pairs]).tolist()
        return values

    active = [True] * num_blocks
    sweeps = 0
    iterations = [0] * num_blocks
    if x0 is None:
        x = torch.zeros_like(rhs)
        r = -rhs
    else:
        x = x0.clone()
        r = matvec(x, active) - rhs
        sweeps += 1
        iterations = [1] * num_blocks
    y = precondition(r)
    d = -y
    rty_h, rr_h, cc_h, rx_h, cx_h = dots((r, y), (r, r), (rhs, rhs), (r, x), (rhs, x))
    phi_h = [0.5 * (a - c) for a, c in zip(rx_h, cx_h, strict=True)]
    history = [[v] for v in phi_h]
    reasons = ["max_iterations"] * num_blocks
    floor = torch.finfo(rhs.dtype).eps ** 2

    def converged(b: int) -> bool:
        return rty_h[b] == 0 or rr_h[b] <= floor * cc_h[b]

    for b in range(num_blocks):
        if converged(b):
            active[b], reasons[b] = False, "converged"
        elif tolerance is not None and min_iterations == 0 and rr_h[b] <= tolerance**2 * cc_h[b]:
            active[b], reasons[b] = False, "tolerance"
    # per-block views: updates of a block write into these, so a frozen block is never touched
    xs, rs, ds = x.split(sizes), r.split(sizes), d.split(sizes)
    stored: list[Tensor] = []
    stored_at: list[int] = []
    stored_phi: list[list[float]] = []
    grid = set(store_at)
    i = 0
    while any(active) and i < max_iterations:
        i += 1
        ad = matvec(d, active)
        sweeps += 1
        (dad_h,) = dots((d, ad))
        ads = ad.split(sizes)
        moved = []
        for b in range(num_blocks):
            if not active[b]:
                continue
            iterations[b] += 1
            if not (math.isfinite(dad_h[b]) and dad_h[b] > 0):
                active[b], reasons[b] = False, "curvature"
                continue
            alpha = rty_h[b] / dad_h[b]
            xs[b].add_(ds[b], alpha=alpha)
            rs[b].add_(ads[b], alpha=alpha)
            moved.append(b)
        y = precondition(r)
        rty_new, rr_h, rx_h, cx_h = dots((r, y), (r, r), (r, x), (rhs, x))
        phi_h = [0.5 * (a - c) for a, c in zip(rx_h, cx_h, strict=True)]
        ys = y.split(sizes)
        for b in moved:
            if rty_h[b] != 0:
                ds[b].mul_(rty_new[b] / rty_h[b]).sub_(ys[b])
            rty_h[b] = rty_new[b]
            history[b].append(phi_h[b])
            if converged(b):
                active[b], reasons[b] = False, "converged"
            elif i >= min_iterations and tolerance is not None and rr_h[b] <= tolerance**2 * cc_h[b]:
                active[b], reasons[b] = False, "tolerance"
            elif (
                i >= min_iterations
                and progress_eps is not None
                and martens_should_stop(history[b], i, progress_eps)
            ):
                active[b], reasons[b] = False, "progress"
        if i in grid:
            stored.append(x.clone())
            stored_at.append(i)
            stored_phi.append(list(phi_h))
    if not stored_at or stored_at[-1] != i:
        stored.append(x)
        stored_at.append(i)
        stored_phi.append(list(phi_h))
    return CGResult(x, stored, stored_at, stored_phi, iterations, reasons, sweeps)


def backtrack(evaluate: Callable[[int], float], count: int) -> tuple[int, float, int]:
    """CG-iterate backtracking (Martens 2010, ICML, Sec. 4.6; Martens & Sutskever 2012, Sec. 20.8.7).

    Evaluates the objective at the last of ``count`` stored iterates, then walks backwards while the value
    keeps (strictly) decreasing.

    Args:
        evaluate: ``evaluate(j) -> f(theta + stored[j])`` (a float; nan/inf end the walk).
        count: number of stored iterates (>= 1).

    Returns:
        ``(index, value, evaluations)``: the chosen iterate, its value and the number of evaluations.
    """
    if count < 1:
        raise ValueError("backtrack needs at least one stored iterate")
    j = count - 1
    best = evaluate(j)
    evaluations = 1
    while j > 0 and math.isfinite(best):
        value = evaluate(j - 1)
        evaluations += 1
        if not value < best:
            break
        best, j = value, j - 1
    return j, best, evaluations
