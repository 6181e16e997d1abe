"""SubspaceOGR against full OGR, the QR method, Oja's rule and explicit basis algebra (float64 unless noted;
docs/algorithms/ogr.md, "Subspace OGR")."""

import math

import pytest
import torch

from hessopt.curvature import subspace as sub
from hessopt.curvature.regression import saddle_free_rates, symmetric_eigh
from hessopt.optim import OGR, SubspaceOGR

F64 = torch.float64


def _f(x):  # a non-quadratic, non-separable function of 4 variables with a saddle region
    return (
        0.5 * (x**2 * torch.tensor([1.0, 2.0, -0.5, 0.3], dtype=F64)).sum()
        + 0.2 * x[0] * x[3]
        + 0.05 * (x**4).sum()
    )


def _steps(opt, tensors, steps):
    out = []
    for _ in range(steps):
        x = torch.cat([t.reshape(-1) for t in tensors]).detach().requires_grad_()
        (g,) = torch.autograd.grad(_f(x), x)
        offset = 0
        for t in tensors:
            t.grad = g[offset : offset + t.numel()].reshape(t.shape).clone()
            offset += t.numel()
        opt.step()
        out.append(torch.cat([t.detach().reshape(-1) for t in tensors]))
    return out


@pytest.mark.parametrize("mean_init", ["zero", "first"])
def test_full_rank_identity_basis_equals_full_ogr(mean_init):
    """Check (a): d = D, V = I fixed (Γ = 0), no QR step, outside "sgd": the steps of full OGR to 1e-12."""
    common = {
        "lr": 0.7,
        "beta": 0.6,
        "gamma": 0.3,
        "div": 1.2,
        "cut": 0.5,
        "h_prior": 0.2,
        "mean_init": mean_init,
    }
    a = [torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([0.3, 0.8], dtype=F64)]
    b = [t.clone() for t in a]
    ogr = OGR(a, **common)
    so = SubspaceOGR(b, rank=4, rotation_rate=0.0, qr=False, outside="sgd", outside_scale=0.9, **common)
    x = torch.cat(b).requires_grad_()
    (g,) = torch.autograd.grad(_f(x), x)
    b[0].grad, b[1].grad = g[:2].clone(), g[2:].clone()  # the first observation ("first" means start there)
    st = so._init_state(so.hyperparameters(), b)  # then replace the random basis by V = I
    eye = torch.eye(4, dtype=F64)
    so.state[b[0]]["basis"].copy_(eye[:, :2])
    so.state[b[1]]["basis"].copy_(eye[:, 2:])
    assert torch.equal(st["basis_mix"], eye)
    for xa, xb in zip(_steps(ogr, a, 25), _steps(so, b, 25), strict=True):
        torch.testing.assert_close(xb, xa, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(so.subspace_hessian(), ogr.hessian(), rtol=1e-10, atol=1e-12)


def test_qr_step_keeps_the_full_space_step_and_diagonalises():
    """Check (b): one QR step leaves V^T f(H_V) V m unchanged; repeated steps make H_V diagonal."""
    gen = torch.Generator().manual_seed(0)
    d, shapes = 4, [(3, 5), (7,)]
    basis = sub.random_basis(shapes, d, generator=gen, dtype=F64, device=torch.device("cpu"))
    v = torch.cat([u.reshape(d, -1) for u in basis], 1)
    q0, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    h = q0 @ torch.diag(torch.tensor([8.0, -4.0, 2.0, 0.9], dtype=F64)) @ q0.T
    m = torch.randn(v.shape[1], generator=gen, dtype=F64)

    def full_step(v, h):
        lam, qh = symmetric_eigh(h)
        return v.T @ (qh @ (saddle_free_rates(lam, eta=0.7, div=1.3, cut=0.5) * (qh.T @ (v @ m))))

    q, h1 = sub.qr_step(h)
    torch.testing.assert_close(full_step(q.T @ v, h1), full_step(v, h), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h1, q.T @ h @ q, rtol=1e-12, atol=1e-12)
    hk = h
    for _ in range(40):
        _, hk = sub.qr_step(hk)
    off = hk - torch.diag(torch.diagonal(hk))
    assert float(torch.linalg.matrix_norm(off) / torch.linalg.matrix_norm(hk)) < 1e-8


def test_statistics_rotation_is_exact_for_a_pure_rotation_of_the_basis():
    """Statistics accumulated in V_old and rotated with T = V_new V_old^T equal those accumulated in V_new."""
    gen = torch.Generator().manual_seed(1)
    d, dim = 3, 12
    v_old = torch.linalg.qr(torch.randn(dim, d, generator=gen, dtype=F64))[0].T
    rot = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))[0]
    v_new = rot.T @ v_old
    s_old = k_old = s_new = k_new = torch.zeros(d, d, dtype=F64)
    for _ in range(30):
        e, r = torch.randn(dim, generator=gen, dtype=F64), torch.randn(dim, generator=gen, dtype=F64)
        s_old = torch.lerp(s_old, torch.outer(v_old @ e, v_old @ e), 0.4)
        k_old = torch.lerp(k_old, torch.outer(v_old @ r, v_old @ e), 0.4)
        s_new = torch.lerp(s_new, torch.outer(v_new @ e, v_new @ e), 0.4)
        k_new = torch.lerp(k_new, torch.outer(v_new @ r, v_new @ e), 0.4)
    s_rot, k_rot = sub.rotate_statistics(s_old, k_old, v_new @ v_old.T)
    torch.testing.assert_close(s_rot, s_new, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(k_rot, k_new, rtol=1e-12, atol=1e-13)


def test_qr_steps_rotate_statistics_with_the_basis_end_to_end():
    """Γ = 0: the basis changes only by QR steps (pure rotations). With and without them, the optimizer
    takes the same steps and holds the same full-space statistics V^T S V, V^T K V."""
    runs = []
    for qr in (True, False):
        tensors = [torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([0.3, 0.8], dtype=F64)]
        opt = SubspaceOGR(tensors, rank=3, rotation_rate=0.0, qr=qr, lr=0.5, cut=0.5, seed=3)
        runs.append((opt, _steps(opt, tensors, 30)))
    for xa, xb in zip(runs[0][1], runs[1][1], strict=True):  # rounding grows along the saddle direction
        torch.testing.assert_close(xa, xb, rtol=1e-8, atol=1e-10)
    full = []
    for opt, _ in runs:
        v = torch.cat([u.reshape(3, -1) for u in opt.basis()], 1)
        st = opt.flat_state()
        full.append((v.T @ st["sigma"] @ v, v.T @ st["cross"] @ v))
    torch.testing.assert_close(full[0][0], full[1][0], rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(full[0][1], full[1][1], rtol=1e-8, atol=1e-12)
    assert not torch.allclose(runs[0][0].flat_state()["basis_mix"], runs[1][0].flat_state()["basis_mix"])


@pytest.mark.parametrize("rotation", ["oja", "duda"])
def test_one_rotation_step_matches_the_explicit_basis_algebra(rotation):
    """The implicit update (C changes, U gets a rank-one term) equals orth(V + Γ a v^T) computed on the
    explicit basis with Gram-Schmidt (Cholesky QR), and the rows stay orthonormal."""
    tensors = [
        torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(2)),
        torch.zeros(5, dtype=F64),
    ]
    opt = SubspaceOGR(
        tensors, rank=3, rotation=rotation, rotation_rate=0.3, lr=0.0, outside="sgd", outside_scale=0.0
    )
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        for t in tensors:
            t.grad = torch.randn(t.shape, generator=gen, dtype=F64)
        if "basis_mix" in opt.flat_state():
            v_old = torch.cat([u.reshape(3, -1) for u in opt.basis()], 1)
        opt.step()
    g = torch.cat([t.grad.reshape(-1) for t in tensors])
    v_new = torch.cat([u.reshape(3, -1) for u in opt.basis()], 1)
    if rotation == "oja":
        vhat = g / g.norm()
        v_prime = v_old + 0.3 * torch.outer(v_old @ vhat, vhat)
    else:
        v_prime = v_old + 0.3 * g
    factor = torch.linalg.cholesky(v_prime @ v_prime.T)
    expected = torch.linalg.solve_triangular(factor, v_prime, upper=False)
    # the QR step then rotates inside the span: compare spans and orthonormality
    torch.testing.assert_close(v_new @ v_new.T, torch.eye(3, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(v_new.T @ v_new, expected.T @ expected, rtol=0, atol=1e-12)


def _largest_sine(v: torch.Tensor, k: int) -> float:
    """Largest principal-angle sine between span of v's rows and span(e_1..e_k)."""
    q = torch.linalg.qr(v.T)[0]
    cos = torch.linalg.svdvals(q[:k, :])
    return math.sqrt(max(0.0, 1.0 - float(cos.min()) ** 2))


def test_oja_finds_the_top_gradient_covariance_subspace_where_the_heuristic_does_not():
    """Check (c): zero-mean gradients with covariance diag(9.25, 4.25, 0.25, ...) in D = 20, d = 2, Γ = 0.1,
    3000 steps (the parameters do not move: lr = 0). Oja's rule brings the largest principal
    angle to span(e1, e2) below 0.3; Duda's rotation-towards-gradients heuristic stays far away."""
    std = torch.full((20,), 0.5, dtype=F64)
    std[0], std[1] = math.sqrt(9.25), math.sqrt(4.25)
    sines = {}
    for rotation in ("oja", "duda"):
        x = torch.zeros(20, dtype=F64)
        opt = SubspaceOGR(
            [x], rank=2, rotation=rotation, rotation_rate=0.1, lr=0.0, outside="sgd", outside_scale=0.0
        )
        gen = torch.Generator().manual_seed(7)
        noise = torch.randn(3000, 20, generator=gen, dtype=F64) * std
        for k in range(3000):
            x.grad = noise[k]
            opt.step()
        assert torch.equal(x, torch.zeros(20, dtype=F64))
        sines[rotation] = _largest_sine(opt.basis()[0], 2)
    assert sines["oja"] < 0.3, sines
    assert sines["duda"] > 0.9, sines


def test_state_resumes_bit_for_bit_across_a_refresh(monkeypatch):
    """Save after 7 steps, resume in a fresh optimizer; the basis refresh (every 5 steps here) happens at
    the same steps, and all state, including the d×d statistics and the basis, matches bit for bit."""
    monkeypatch.setattr(sub, "REFRESH_EVERY", 5)
    a = [torch.tensor([1.0, -0.5, 0.2], dtype=F64), torch.tensor([0.3], dtype=F64)]
    b = [t.clone() for t in a]
    opt_a = SubspaceOGR(a, rank=2, lr=0.3, cut=0.5, seed=11)
    _steps(opt_a, a, 7)
    saved = opt_a.state_dict()
    opt_b = SubspaceOGR(b, rank=2, lr=0.3, cut=0.5, seed=11)
    for t, u in zip(b, a, strict=True):
        t.copy_(u)
    opt_b.load_state_dict(saved)
    for xa, xb in zip(_steps(opt_a, a, 8), _steps(opt_b, b, 8), strict=True):
        assert torch.equal(xa, xb)
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), (i, k)
    v = torch.cat([u.reshape(2, -1) for u in opt_a.basis()], 1)
    torch.testing.assert_close(v @ v.T, torch.eye(2, dtype=F64), rtol=0, atol=1e-13)


def test_frozen_and_late_parameters():
    """A parameter without gradient gets no state and never moves; the basis does not depend on it."""
    used = [torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.5, -0.2], dtype=F64)]
    unused = torch.tensor([3.0, 4.0], dtype=F64)
    opt = SubspaceOGR([used[0], unused, used[1]], rank=2, lr=0.3, cut=0.5)
    ref_params = [t.clone() for t in used]
    ref = SubspaceOGR(ref_params, rank=2, lr=0.3, cut=0.5)
    for xa, xb in zip(_steps(opt, used, 10), _steps(ref, ref_params, 10), strict=True):
        torch.testing.assert_close(xa, xb, rtol=0, atol=1e-12)
    assert not opt.state[unused] and torch.equal(unused, torch.tensor([3.0, 4.0], dtype=F64))


def test_rank_larger_than_the_parameters_is_refused():
    with pytest.raises(ValueError, match="rank"):
        SubspaceOGR([torch.zeros(3)], rank=4)


def test_duda_rule_with_large_gradients_keeps_an_orthonormal_basis():
    """Duda's rule with Γ‖g‖ ≫ 1 makes the rows nearly parallel before Gram-Schmidt; the factor C then
    becomes ill-conditioned within a few steps and the basis is refreshed: it stays orthonormal."""
    x = torch.zeros(6, dtype=F64)
    opt = SubspaceOGR([x], rank=3, rotation="duda", rotation_rate=0.5, lr=0.0)
    gen = torch.Generator().manual_seed(5)
    for _ in range(40):
        x.grad = 1e3 * torch.randn(6, generator=gen, dtype=F64)
        opt.step()
        v = opt.basis()[0]
        torch.testing.assert_close(v @ v.T, torch.eye(3, dtype=F64), rtol=0, atol=1e-10)
    assert float(torch.linalg.cond(opt.flat_state()["basis_mix"])) <= 10.0
