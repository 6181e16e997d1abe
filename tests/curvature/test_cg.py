"""Lock-step preconditioned CG, Martens' stopping rule, backtracking grid (hessian-free.md, checks 4-6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hessopt.curvature.cg import (
    backtrack,
    backtracking_grid,
    block_cg,
    martens_should_stop,
    progress_gap,
)

F64 = torch.float64


def _spd(n: int, cond: float, seed: int, spectrum: str = "log") -> torch.Tensor:
    """Random rotation of eigenvalues in [1, cond]: log-spaced, or uniform with both ends included."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    if spectrum == "log":
        eig = torch.logspace(0, math.log10(cond), n, dtype=F64)
    else:
        eig = 1 + (cond - 1) * torch.rand(n, generator=gen, dtype=F64)
        eig[0], eig[1] = 1.0, cond
    return q @ torch.diag(eig) @ q.T


def _block_matvec(mats):
    sizes = [m.shape[0] for m in mats]
    calls = []

    def matvec(v, active):
        calls.append(list(active))
        out = []
        for m, part, on in zip(mats, v.split(sizes), active, strict=True):
            out.append(m @ part if on else torch.full_like(part, float("nan")))
        return torch.cat(out)

    return matvec, sizes, calls


def test_residual_tolerance_reaches_1e_10_within_2n() -> None:
    n = 50
    A = _spd(n, 1e3, 0, spectrum="uniform")
    b = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=F64)
    matvec, sizes, _ = _block_matvec([A])
    res = block_cg(matvec, b, sizes, tolerance=1e-10, progress_eps=None, max_iterations=2 * n)
    assert res.reasons == ["tolerance"]
    assert res.iterations[0] <= 2 * n
    assert torch.linalg.vector_norm(A @ res.x - b) <= 1e-10 * torch.linalg.vector_norm(b)
    np.testing.assert_allclose(res.x.numpy(), np.linalg.solve(A.numpy(), b.numpy()), rtol=0, atol=1e-8)


def test_lock_step_equals_separate_runs_and_frozen_blocks_do_not_change() -> None:
    mats = [_spd(12, 10.0, 2), _spd(30, 1e4, 3), _spd(5, 2.0, 4)]
    gen = torch.Generator().manual_seed(5)
    b = torch.randn(47, generator=gen, dtype=F64)
    x0 = torch.randn(47, generator=gen, dtype=F64)
    minv = torch.rand(47, generator=gen, dtype=F64) + 0.5
    matvec, sizes, calls = _block_matvec(mats)
    kw = dict(progress_eps=5e-4, tolerance=1e-9, store_at=backtracking_grid(60), max_iterations=60)
    joint = block_cg(matvec, b, sizes, x0=x0, inverse_preconditioner=minv, **kw)
    offsets = np.cumsum([0, *sizes])
    for k, m in enumerate(mats):
        sl = slice(offsets[k], offsets[k + 1])
        single, ssizes, _ = _block_matvec([m])
        alone = block_cg(single, b[sl], ssizes, x0=x0[sl], inverse_preconditioner=minv[sl], **kw)
        torch.testing.assert_close(joint.x[sl], alone.x, rtol=0, atol=1e-12)
        assert joint.iterations[k] == alone.iterations[0]
        assert joint.reasons[k] == alone.reasons[0]
        # every stored lock-step vector holds this block's iterate at that iteration, or its final one
        for at, vec in zip(joint.stored_at, joint.stored, strict=True):
            if at in alone.stored_at:
                expected = alone.stored[alone.stored_at.index(at)]
            else:
                assert at > alone.stored_at[-1]
                expected = alone.x
            torch.testing.assert_close(vec[sl], expected, rtol=0, atol=1e-12)
    # the blocks stop at different iterations; an inactive block is never computed (its entries are nan)
    assert len(set(joint.iterations)) > 1
    assert any(not all(c) for c in calls)
    assert torch.isfinite(joint.x).all()


def test_indefinite_matrix_stops_at_first_nonpositive_curvature() -> None:
    A = torch.diag(torch.tensor([3.0, 2.0, -1.0, 1.0], dtype=F64))
    b = torch.ones(4, dtype=F64)
    seen = []

    def matvec(v, active):
        seen.append(float(v @ (A @ v)))
        return A @ v

    res = block_cg(matvec, b, [4], progress_eps=None, max_iterations=20)
    assert res.reasons == ["curvature"]
    first = next(i for i, c in enumerate(seen) if c <= 0)
    assert res.iterations == [first + 1]
    # the iterate is the one before the failing direction: CG's iterate after `first` steps
    ref = block_cg(matvec, b, [4], progress_eps=None, max_iterations=first)
    torch.testing.assert_close(res.x, ref.x, rtol=0, atol=0)


def test_martens_rule_never_fires_before_iteration_11() -> None:
    phi = [0.0] + [-1.0] * 40  # no progress at all: fires as soon as allowed
    assert [i for i in range(41) if martens_should_stop(phi, i)][0] == 11
    assert progress_gap(10) == 10 and progress_gap(100) == 10 and progress_gap(101) == 11
    assert progress_gap(110) == 11  # exact ceil(i/10), no float rounding


def test_martens_rule_on_a_constructed_sequence_fires_where_the_formula_says() -> None:
    eps = 5e-4
    phi = [0.0]
    i = 0
    while True:  # phi_i = -(1 - 0.9^i): relative progress over k steps shrinks geometrically
        i += 1
        phi.append(-(1 - 0.9**i))
        k = max(10, math.ceil(i / 10))
        expected = i > k and (phi[i] - phi[i - k]) / phi[i] < k * eps
        assert martens_should_stop(phi, i, eps) == expected
        if expected:
            break
    # by hand: for k = 10 the ratio is 0.9^(i-10) (1 - 0.9^10) / (1 - 0.9^i) < 10 eps first at i - 10 = 47
    assert i == 57

    # inside CG: a quadratic whose phi sequence stagnates; the solver stops exactly at that index
    A = _spd(60, 1e4, 7, spectrum="uniform")
    b = torch.randn(60, generator=torch.Generator().manual_seed(8), dtype=F64)
    history = []

    def matvec(v, active):
        return A @ v

    res = block_cg(matvec, b, [60], progress_eps=eps, max_iterations=500)
    assert res.reasons == ["progress"]
    # recompute phi = (r^T x - b^T x) / 2 along the run with an independent CG loop; the formula's first
    # firing index is where the solver stopped
    x = torch.zeros(60, dtype=F64)
    r = -b.clone()
    d = b.clone()
    history = [0.0]
    for j in range(1, 501):
        ad = A @ d
        alpha = (r @ r) / (d @ ad)
        x = x + alpha * d
        r_new = r + alpha * ad
        d = -r_new + (r_new @ r_new) / (r @ r) * d
        r = r_new
        history.append(0.5 * (float(torch.dot(r, x)) - float(torch.dot(b, x))))
        if martens_should_stop(history, j, eps):
            break
    assert res.iterations == [j]


def test_preconditioned_and_plain_cg_reach_the_same_solution() -> None:
    A = _spd(40, 1e3, 9)
    b = torch.randn(40, generator=torch.Generator().manual_seed(10), dtype=F64)
    matvec, sizes, _ = _block_matvec([A])
    plain = block_cg(matvec, b, sizes, tolerance=1e-12, progress_eps=None, max_iterations=400)
    pre = block_cg(
        matvec,
        b,
        sizes,
        tolerance=1e-12,
        progress_eps=None,
        max_iterations=400,
        inverse_preconditioner=1 / torch.diagonal(A),
    )
    torch.testing.assert_close(plain.x, pre.x, rtol=0, atol=1e-9)


def test_backtracking_grid_and_stored_indices() -> None:
    assert backtracking_grid(250) == [5, 7, 9, 11, 15, 19, 25, 32, 41, 54, 69, 90, 117, 152, 197]
    A = _spd(30, 1e5, 11)
    b = torch.randn(30, generator=torch.Generator().manual_seed(12), dtype=F64)
    matvec, sizes, _ = _block_matvec([A])
    res = block_cg(matvec, b, sizes, progress_eps=None, max_iterations=23, store_at=backtracking_grid(250))
    assert res.stored_at == [5, 7, 9, 11, 15, 19, 23]
    assert res.stored[-1] is res.x
    assert len(res.stored_phi) == 7 and all(len(p) == 1 for p in res.stored_phi)
    # phi stored with each iterate is 1/2 x^T A x - b^T x
    for x, phi in zip(res.stored, res.stored_phi, strict=True):
        assert math.isclose(phi[0], float(0.5 * x @ A @ x - b @ x), rel_tol=1e-9)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5.0, 4.0, 3.0, 2.0], (3, 2.0, 2)),  # the last is best: one look back
        ([1.0, 2.0, 3.0, 4.0], (0, 1.0, 4)),  # walk back to the first
        ([1.0, 3.0, 2.0, 4.0], (2, 2.0, 3)),  # stops at the first increase, not the global argmin
        ([1.0, 1.0, float("nan")], (2, float("nan"), 1)),  # a non-finite last value ends the walk
    ],
)
def test_backtrack_walks_back_while_decreasing(values, expected) -> None:
    seen = []

    def evaluate(j):
        seen.append(j)
        return values[j]

    index, value, count = backtrack(evaluate, len(values))
    assert index == expected[0] and count == expected[2]
    assert value == expected[1] or (math.isnan(value) and math.isnan(expected[1]))
    assert seen == list(range(len(values) - 1, len(values) - 1 - count, -1))
