"""Tests of hessopt.bench.studies.hessian_tracking.

References are independent of the code under test: closed-form Hessians (a quadratic's A; the quartic
saddle's diag(1, 3y² − 1)), torch.func.hessian of test-local formulas, autograd gradients for BFGS's secant
equation, and numpy medians/counts for the summary. float64 throughout; tolerances are explicit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import hessian

from hessopt.bench.studies import hessian_tracking as ht
from hessopt.problems.functions import get_function
from hessopt.problems.quadratic import QuadraticFunction

A = torch.tensor([[0.8, 0.2], [0.2, 0.6]], dtype=torch.float64)
B = torch.tensor([-0.4, 0.3], dtype=torch.float64)


def rosen(x: torch.Tensor) -> torch.Tensor:
    return 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2


def rel_err(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(est - ref) / torch.linalg.matrix_norm(ref)


def test_ogr_error_vanishes_on_a_quadratic():
    # OGR's regression is exact on quadratics once the decaying prior is gone, provided every
    # direction keeps moving; with A's small eigenvalues (steps capped at lr/cut = 0.1) OGR's own trajectory
    # does. The ridge floor is switched off: it biases anisotropic Σ by ~sqrt(eps)·cond(Σ). Means
    # from the first observation: the estimate after it is the prior H = 0.
    fn = QuadraticFunction(A, B)
    tr = ht.track(fn, (2.0, -1.5), "ogr", 60, ridge_rel=0.0, ridge_abs=0.0, mean_init="first")
    assert tr.steps == 60 and tr.stop_reason == "steps"
    torch.testing.assert_close(tr.exact, A.expand(60, 2, 2), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(tr.error, rel_err(tr.estimates, A), rtol=1e-12, atol=0.0)
    # after one observation the estimate is the prior H = 0: error exactly 1
    assert abs(float(tr.error[0]) - 1.0) < 1e-12
    assert float(tr.error[-1]) < 1e-6
    assert float(tr.error[-10:].max()) < 1e-6


def test_ogr_error_matches_torch_func_at_the_point_it_stepped_from():
    fn = get_function("rosenbrock", 2)
    start = (-1.2, 1.0)
    tr = ht.track(fn, start, "ogr", 15)
    assert tr.points.shape == (15, 2)
    torch.testing.assert_close(tr.points[0], torch.tensor(start, dtype=torch.float64), rtol=0, atol=0)
    ref = torch.stack([hessian(rosen)(x) for x in tr.points])
    torch.testing.assert_close(tr.exact, ref, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(tr.error, rel_err(tr.estimates, ref), rtol=1e-10, atol=0.0)
    torch.testing.assert_close(tr.estimate_min_eig, torch.linalg.eigvalsh(tr.estimates)[:, 0], rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(tr.exact_min_eig, torch.linalg.eigvalsh(ref)[:, 0], rtol=1e-12, atol=1e-10)
    assert tr.mean_points is not None and tr.error_at_mean is not None
    ref_mean = torch.stack([hessian(rosen)(x) for x in tr.mean_points])
    torch.testing.assert_close(tr.error_at_mean, rel_err(tr.estimates, ref_mean), rtol=1e-10, atol=0.0)


def test_bfgs_estimate_is_the_inverse_of_its_matrix_and_satisfies_the_secant_equation():
    fn = get_function("rosenbrock", 2)
    start = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    tr = ht.track(fn, start, "bfgs", 12, clamp=False)
    assert tr.steps == 12
    iterates = torch.cat([start[None], tr.points])
    grads = torch.stack([torch.func.grad(rosen)(x) for x in iterates])
    s = iterates[1:] - iterates[:-1]
    y = grads[1:] - grads[:-1]
    # the direct-Hessian form of BFGS satisfies B_k s_k = y_k: true of inv(H_k), not of H_k itself
    bs = torch.einsum("kij,kj->ki", tr.estimates, s)
    torch.testing.assert_close(bs, y, rtol=1e-8, atol=1e-8 * float(y.abs().max()))
    assert bool((torch.linalg.eigvalsh(tr.estimates) > 0).all())
    ref = torch.stack([hessian(rosen)(x) for x in tr.points])
    torch.testing.assert_close(tr.error, rel_err(tr.estimates, ref), rtol=1e-10, atol=0.0)
    assert tr.error_at_mean is None


def test_saddle_ogr_sees_negative_curvature_and_bfgs_cannot():
    fn = get_function("quartic_saddle")
    ogr = ht.track(fn, fn.x0, "ogr", 50)
    bfgs = ht.track(fn, fn.x0, "bfgs", 50)
    # closed-form Hessian diag(1, 3y^2 - 1)
    y = ogr.points[:, 1]
    ref = torch.zeros(ogr.steps, 2, 2, dtype=torch.float64)
    ref[:, 0, 0] = 1.0
    ref[:, 1, 1] = 3.0 * y**2 - 1.0
    torch.testing.assert_close(ogr.exact, ref, rtol=1e-13, atol=1e-13)
    assert float(ogr.estimate_min_eig.min()) < -0.5
    summary = ht.summarize(ogr)
    assert summary["negative_when_exact_negative"] and summary["steps_both_negative"] > 10
    assert float(bfgs.exact_min_eig.min()) < 0  # BFGS did run where the truth is indefinite
    assert bool((bfgs.estimate_min_eig > 0).all())
    assert not ht.summarize(bfgs)["negative_when_exact_negative"]


def test_summary_numbers_against_numpy():
    fn = get_function("quartic_saddle")
    tr = ht.track(fn, fn.x0, "ogr", 41)
    s = ht.summarize(tr)
    err = tr.error.numpy()
    n = err.size
    assert s["steps_run"] == n == 41
    assert s["median_error_last_half"] == pytest.approx(float(np.median(err[n // 2:])), rel=1e-15)
    est, exact = tr.estimate_min_eig.numpy(), tr.exact_min_eig.numpy()
    assert s["steps_both_negative"] == int(np.sum((est < 0) & (exact < 0)))
    assert s["steps_exact_negative"] == int(np.sum(exact < 0))
    assert s["min_estimate_eig"] == pytest.approx(float(est.min()), rel=1e-15)
    assert s["max_exact_eig"] == pytest.approx(
        float(np.linalg.eigvalsh(tr.exact.numpy())[:, -1].max()), rel=1e-12)
    assert s["final_f"] == pytest.approx(float(fn(tr.final_point)), rel=1e-15)


def test_run_quick_writes_pngs_json_and_markdown(tmp_path):
    out = ht.run(tmp_path, quick=True)
    assert out["steps"] == 50 and out["quick"] is True
    names = {"hessian_tracking_error.png", "hessian_tracking_eigenvalues.png", "hessian_tracking.json",
             "hessian_tracking.md"}
    assert {p.split("/")[-1] for p in out["files"]} == names
    for name in names:
        assert (tmp_path / name).stat().st_size > 0
    for png in ("hessian_tracking_error.png", "hessian_tracking_eigenvalues.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "hessian_tracking.json").read_text())
    assert set(data["cases"]) == {"rosenbrock", "quartic_saddle", "himmelblau", "rastrigin"}
    md = (tmp_path / "hessian_tracking.md").read_text()
    assert "hessian_tracking_error.png" in md and "hessian_tracking_eigenvalues.png" in md
    for case, by_method in out["summary"].items():
        assert set(by_method) == {"ogr", "ogr_r2", "bfgs"}
        series = data["cases"][case]["series"]["ogr"]
        assert len(series["error"]) == by_method["ogr"]["steps_run"] <= 50
        assert by_method["bfgs"]["min_estimate_eig"] > 0
    assert out["summary"]["quartic_saddle"]["ogr"]["negative_when_exact_negative"]


def test_bad_input_is_rejected():
    fn = get_function("quartic_saddle")
    with pytest.raises(ValueError, match="unknown method"):
        ht.track(fn, fn.x0, "newton", 5)
    with pytest.raises(ValueError, match="steps"):
        ht.track(fn, fn.x0, "ogr", 0)
    with pytest.raises(ValueError, match="start"):
        ht.track(fn, (1.0, 2.0, 3.0), "ogr", 5)
