"""Tests of hessopt.bench.studies.trajectories.

References: a hand-written numpy Adam (Kingma & Ba 2015, Algorithm 1) for Adam's path, a quadratic's closed
form for values and minimum, the boxes for clamping. float64; tolerances are explicit.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hessopt.bench.studies import trajectories as tj
from hessopt.problems.functions import get_function
from hessopt.problems.quadratic import QuadraticFunction

A = np.array([[3.0, 1.0], [1.0, 2.0]])
B = np.array([-1.0, 0.5])


def quadratic() -> QuadraticFunction:
    return QuadraticFunction(torch.tensor(A), torch.tensor(B))


def test_adam_path_matches_a_numpy_adam():
    fn = quadratic()
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    pth = tj.optimize_path(fn, (2.0, -1.5), "adam", 20, adam_lr=lr)
    x = np.array([2.0, -1.5])
    m = np.zeros(2)
    v = np.zeros(2)
    ref = [x.copy()]
    for t in range(1, 21):
        g = A @ x + B
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        x = np.clip(x, -5.0, 5.0)
        ref.append(x.copy())
    np.testing.assert_allclose(pth.points.numpy(), np.array(ref), rtol=1e-12, atol=1e-12)
    vals = np.array([0.5 * p @ A @ p + B @ p for p in ref])
    np.testing.assert_allclose(pth.values.numpy(), vals, rtol=1e-12, atol=1e-12)
    assert pth.evaluations == 20 and pth.iterations == 20 and pth.stop_reason == "steps"


def test_bfgs_path_reaches_the_minimum_of_a_quadratic():
    fn = quadratic()
    pth = tj.optimize_path(fn, (2.0, -1.5), "bfgs", 50)
    x_star = np.linalg.solve(A, -B)
    f_star = 0.5 * x_star @ A @ x_star + B @ x_star
    assert pth.stop_reason == "gtol" and pth.iterations < 20
    np.testing.assert_allclose(pth.points[-1].numpy(), x_star, rtol=0, atol=1e-8)
    assert pth.final_f == pytest.approx(f_star, abs=1e-14)


def test_paths_stay_in_the_box():
    fn = get_function("rosenbrock", 2)
    for method in ("ogr", "bfgs", "adam"):
        pth = tj.optimize_path(fn, (-1.2, 1.0), method, 30, adam_lr=1.0)
        assert bool((pth.points.abs() <= 2.0).all()), method
        torch.testing.assert_close(pth.points[0], torch.tensor([-1.2, 1.0], dtype=torch.float64))
    # OGR's first steps from (-1.2, 1) leave the box: the clamp is active, not vacuous
    ogr = tj.optimize_path(fn, (-1.2, 1.0), "ogr", 30)
    assert bool((ogr.points.abs() == 2.0).any())


def test_adam_lr_is_the_best_of_the_grid_on_the_tuning_starts():
    fn = get_function("beale")
    lr, scores = tj.choose_adam_lr(fn, 10)
    assert list(scores) == list(tj.ADAM_LR_GRID)
    assert scores[lr] == min(scores.values())
    starts = fn.sample_starts(tj.TUNING_STARTS, seed0=tj.TUNING_SEED0)
    # each score: geometric mean over the starts of the final f - f_min of independent single-start runs
    finals = [tj.optimize_path(fn, s, "adam", 10, adam_lr=lr).final_f - fn.f_min for s in starts]
    assert scores[lr] == pytest.approx(math.exp(np.mean(np.log(finals))), rel=1e-10)
    assert not any(torch.equal(s, torch.tensor([1.0, 1.0], dtype=torch.float64)) for s in starts)


def test_run_quick_writes_pngs_json_and_markdown(tmp_path):
    out = tj.run(tmp_path, quick=True)
    assert out["steps"] == 30
    names = {"trajectories_beale.png", "trajectories_rosenbrock.png", "trajectories.json", "trajectories.md"}
    assert {p.split("/")[-1] for p in out["files"]} == names
    for name in ("trajectories_beale.png", "trajectories_rosenbrock.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "trajectories.json").read_text())
    md = (tmp_path / "trajectories.md").read_text()
    for name, summary in out["summary"].items():
        assert summary["adam_lr"] in tj.ADAM_LR_GRID
        fn = get_function(name, 2)
        for method in ("ogr", "bfgs", "adam"):
            rec = data["functions"][name]["methods"][method]
            pts = torch.tensor(rec["points"], dtype=torch.float64)
            assert len(pts) == rec["iterations"] + 1 <= 31
            assert bool(((pts >= fn.lower) & (pts <= fn.upper)).all())
            assert summary[method]["final_f"] == pytest.approx(float(fn(pts[-1])), rel=1e-12, abs=1e-300)
        assert f"trajectories_{name}.png" in md


def test_bad_input_is_rejected():
    fn = quadratic()
    with pytest.raises(ValueError, match="method"):
        tj.optimize_path(fn, (1.0, 1.0), "sgd", 5)
    with pytest.raises(ValueError, match="adam_lr"):
        tj.optimize_path(fn, (1.0, 1.0), "adam", 5)
    with pytest.raises(ValueError, match="steps"):
        tj.optimize_path(fn, (1.0, 1.0), "ogr", 0)
    with pytest.raises(ValueError, match="start"):
        tj.optimize_path(fn, torch.zeros(3, 2, dtype=torch.float64), "ogr", 5)
