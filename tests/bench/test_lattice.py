"""Tests of hessopt.bench.studies.lattice (Duda's lattice reproduction study, arXiv:1901.11457).

References are independent of the code under test: the lattices are rebuilt with itertools, Duda's momentum
is an explicit float64 loop of m ← γm + (1−γ)g, θ ← θ − αm, batched runs are compared with plain per-start
loops that call ``value_and_grad(noise_std=..., generator=...)`` themselves, and the metrics with numpy.
Small lattices and few steps keep the file fast.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hessopt.bench import methods
from hessopt.bench.methods import Method, Setting, get_method
from hessopt.bench.studies import lattice as L
from hessopt.bench.studies.lattice import (
    DEFAULT_METHODS,
    EXPERIMENTS,
    METHODS,
    PUBLISHED,
    LatticeExperiment,
    LatticeMethod,
    build_optimizer,
    duda_momentum_kwargs,
    markdown_table,
    noise_generator,
    run_lattice,
    run_one,
    run_study,
    summarize,
)

# small versions of the protocols: same functions and method families, fewer starts and steps
SMALL_2D = LatticeExperiment("small2d", "beale", ((-1.0, 1.0), (-2.0, 0.0, 1.0)), 8, "mean", "2d", "test")
SMALL_3D = LatticeExperiment("small3d", "beale3d", ((-2.0, 1.0),) * 3, 8, "geomean", "3d", "test")


# ------------------------------------------------------------------------------------------- protocols
@pytest.mark.parametrize(
    ("name", "n_starts", "steps", "metric", "axes"),
    [
        ("beale2d", 15, 30, "mean", [[-1, 0, 1], [-2, -1, 0, 1, 2]]),
        ("beale2d-caption", 15, 30, "mean", [[-2, -1, 0, 1, 2], [-1, 0, 1]]),
        ("beale3d", 125, 50, "geomean", [list(range(-2, 3))] * 3),
        ("beale3d-343", 343, 50, "geomean", [list(range(-3, 4))] * 3),
    ],
)
def test_protocols(name, n_starts, steps, metric, axes):
    exp = EXPERIMENTS[name]
    assert (exp.n_starts, exp.steps, exp.metric) == (n_starts, steps, metric)
    starts = exp.starts()
    assert starts.dtype == torch.float64 and starts.shape == (n_starts, len(axes))
    expected = torch.tensor(list(itertools.product(*axes)), dtype=torch.float64)
    assert torch.equal(starts, expected)
    assert exp.family == ("2d" if len(axes) == 2 else "3d")
    assert exp.make_function().dim == len(axes)


def test_published_numbers():
    for exp in ("beale2d", "beale2d-caption"):
        assert PUBLISHED[(exp, "ogr-duda")].value == 0.0179328
        assert PUBLISHED[(exp, "momentum")].value == 1.04891
        assert PUBLISHED[(exp, "adam")].value == 0.473392
    assert PUBLISHED[("beale3d", "ogr-duda")].value == 0.00383803
    assert PUBLISHED[("beale3d", "momentum")].value == 4.65359
    assert PUBLISHED[("beale3d", "adam")].value == 0.0416618
    assert not any(exp == "beale3d-343" for exp, _ in PUBLISHED)
    assert all(method in METHODS and exp in EXPERIMENTS for exp, method in PUBLISHED)


def test_method_settings():
    duda = METHODS["ogr-duda"].settings
    for fam, gamma in (("2d", 0.1), ("3d", 0.4)):
        assert duda[fam] == {
            "lr": 1.0,
            "beta": 0.5,
            "gamma": gamma,
            "div": 1.5,
            "cut": 10.0,
            "sigma0": 1.0,
            "h_prior": 0.0,
            "mean_init": "zero",
            "ridge_rel": 0.0,
            "ridge_abs": 0.0,
        }
    x = torch.zeros(3, dtype=torch.float64)
    g = build_optimizer("ogr", "beale3d", [x]).param_groups[0]
    assert (g["beta"], g["gamma"], g["div"], g["cut"], g["mean_init"]) == (0.5, 0.4, 1.5, 10.0, "zero")
    g = build_optimizer("diag-ogr", "beale3d", [x]).param_groups[0]
    assert (g["beta"], g["gamma"], g["div"], g["cut"], g["max_coord_step"]) == (0.4, 0.3, 1.4, 5.0, None)
    for d in (1, 2):
        g = build_optimizer(f"subspace-d{d}", "beale3d", [x]).param_groups[0]
        assert (g["rank"], g["rotation"], g["qr"], g["outside_scale"]) == (d, "duda", False, 0.0)
    for exp, lr, sgd_lr in (("beale2d", 0.4, 0.017 * 0.5), ("beale3d", 0.6, 0.004 * 0.5)):
        g = build_optimizer("adam", exp, [x]).param_groups[0]
        assert (g["lr"], tuple(g["betas"]), g["eps"]) == (lr, (0.8, 0.9), 1e-8)
        g = build_optimizer("momentum", exp, [x]).param_groups[0]
        assert g["lr"] == pytest.approx(sgd_lr, rel=1e-15)
        assert (g["momentum"], g["dampening"], g["nesterov"]) == (0.5, 0.0, False)
    assert set(DEFAULT_METHODS) <= set(METHODS)


# ------------------------------------------------------------------------------ momentum as Duda coded it
@pytest.mark.parametrize("exp", ["beale2d", "beale3d"])
def test_sgd_as_coded_equals_duda_momentum(exp):
    """torch.optim.SGD(lr = α(1−γ), momentum = γ) == Duda's m ← γm + (1−γ)g, θ ← θ − αm over 100 steps."""
    alpha, gamma = {"beale2d": (0.017, 0.5), "beale3d": (0.004, 0.5)}[exp]
    rng = np.random.default_rng(7)
    a = rng.standard_normal((3, 3))
    hess = a @ a.T + np.eye(3)  # a quadratic, so the gradients feed back on the trajectory
    theta_ref = np.array([1.0, -2.0, 0.5])
    m = np.zeros(3)
    x = torch.tensor(theta_ref)
    opt = build_optimizer("momentum", exp, [x])
    for _ in range(100):
        noise = rng.standard_normal(3)
        g_ref = hess @ theta_ref + noise
        m = gamma * m + (1 - gamma) * g_ref
        theta_ref = theta_ref - alpha * m
        x.grad = torch.from_numpy(hess) @ x + torch.from_numpy(noise)
        opt.step()
    np.testing.assert_allclose(x.numpy(), theta_ref, rtol=0, atol=1e-12)
    assert np.linalg.norm(theta_ref - np.array([1.0, -2.0, 0.5])) > 0.1  # the check saw real motion


def test_duda_momentum_kwargs_validation():
    assert duda_momentum_kwargs(0.02, 0.25) == {
        "lr": 0.015,
        "momentum": 0.25,
        "dampening": 0.0,
        "nesterov": False,
    }
    with pytest.raises(ValueError, match="alpha"):
        duda_momentum_kwargs(0.0, 0.5)
    with pytest.raises(ValueError, match="gamma"):
        duda_momentum_kwargs(0.01, 1.0)
    with pytest.raises(TypeError, match="alpha"):
        duda_momentum_kwargs("0.1", 0.5)


# ------------------------------------------------------------------------------ batched == per start
def _reference_finals(exp: LatticeExperiment, method: str | LatticeMethod, seed: int, noise_std: float):
    """Each start alone: its own optimizer, value_and_grad with the start's own noise generator."""
    fn = exp.make_function()
    finals = []
    for i, start in enumerate(exp.starts()):
        x = start.clone()
        opt = build_optimizer(method, exp, [x])
        gen = noise_generator(seed, i)
        for _ in range(exp.steps):
            _, g = fn.value_and_grad(x, noise_std=noise_std, generator=gen)
            x.grad = g
            opt.step()
        finals.append(float(fn(x)))
    return finals


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("exp", [SMALL_2D, SMALL_3D], ids=["2d", "3d"])
def test_batched_run_equals_per_start_runs(exp, method):
    row = run_one(exp, method, noise_seed=3, noise_std=0.1)
    ref = _reference_finals(exp, method, 3, 0.1)
    assert all(math.isfinite(v) for v in ref)
    assert row["finals"] == ref  # bit for bit
    assert row["diverged"] == 0 and row["n_starts"] == exp.n_starts and row["steps"] == exp.steps
    assert row["method"] == method and row["experiment"] == exp.name


def test_metrics_against_numpy():
    finals2 = np.array(run_one(SMALL_2D, "adam", 1)["finals"])
    assert run_one(SMALL_2D, "adam", 1)["metric"] == pytest.approx(finals2.mean(), rel=1e-14)
    row3 = run_one(SMALL_3D, "adam", 1)
    assert row3["metric_name"] == "geomean"
    assert row3["metric"] == pytest.approx(math.exp(np.log(np.array(row3["finals"])).mean()), rel=1e-12)


# ------------------------------------------------------------------------------ noise
def test_noise_reproducible_and_seed_dependent():
    a = run_one(SMALL_3D, "ogr-duda", noise_seed=2)
    b = run_one(SMALL_3D, "ogr-duda", noise_seed=2)
    c = run_one(SMALL_3D, "ogr-duda", noise_seed=4)
    assert a["finals"] == b["finals"] and a["metric"] == b["metric"]
    assert all(u != v for u, v in zip(a["finals"], c["finals"], strict=True))
    clean1 = run_one(SMALL_3D, "adam", noise_seed=0, noise_std=0.0)
    clean2 = run_one(SMALL_3D, "adam", noise_seed=9, noise_std=0.0)
    assert clean1["finals"] == clean2["finals"]  # no noise: the seed plays no role
    assert clean1["finals"] != run_one(SMALL_3D, "adam", noise_seed=0)["finals"]


def test_noise_generator_streams():
    g1, g2 = noise_generator(1, 5), torch.Generator().manual_seed(1_000_005)
    assert torch.equal(torch.randn(3, generator=g1), torch.randn(3, generator=g2))
    with pytest.raises(ValueError, match="noise_seed"):
        noise_generator(-1, 0)
    with pytest.raises(ValueError, match="start_index"):
        noise_generator(0, 1_000_000)


def test_divergence_counts_as_inf(monkeypatch):
    """A start whose f or gradient overflows stops there and counts as +inf, in every batching mode."""
    for coupling, batching in (("element", "rows"), ("tensor", "tensors"), ("all", "separate")):
        sgd = Method(f"sgd-{coupling}", "SGD", "plain SGD", "gradient", get_method("momentum").factory,
                     suites={"functions": Setting()}, coupling=coupling)
        monkeypatch.setitem(methods._REGISTRY, sgd.name, sgd)
        big = LatticeMethod("sgd-big", sgd.name, {"2d": {"lr": 1.0}}, "diverges")
        assert big.batching == batching
        row = run_one(SMALL_2D, big, noise_seed=0)
        assert row["diverged"] > 0, batching
        assert sum(math.isinf(v) for v in row["finals"]) == row["diverged"]
        assert row["metric"] == math.inf
        assert row["hyper"]["lr"] == 1.0


# ------------------------------------------------------------------------------ study, summary, table
def test_run_lattice_and_study_rows():
    rows = run_lattice(SMALL_2D, ["momentum", "adam"], noise_seeds=[0, 1])
    assert [(r["method"], r["noise_seed"]) for r in rows] == [
        ("momentum", 0),
        ("momentum", 1),
        ("adam", 0),
        ("adam", 1),
    ]
    assert rows[0]["hyper"]["duda_alpha_gamma"] == {"2d": [0.017, 0.5], "3d": [0.004, 0.5]}
    study = run_study(["beale2d"], ["adam"], noise_seeds=[0, 1])
    assert [(r["experiment"], r["noise_seed"], r["n_starts"]) for r in study] == [
        ("beale2d", 0, 15),
        ("beale2d", 1, 15),
    ]


def _row(exp, method, seed, metric, name="geomean"):
    return {
        "experiment": exp,
        "method": method,
        "noise_seed": seed,
        "metric_name": name,
        "metric": metric,
        "n_starts": 125,
        "steps": 50,
        "diverged": 0,
        "seconds": 0.5,
        "finals": [],
    }


def test_summarize_and_markdown():
    rows = [
        _row("beale3d", "ogr-duda", 0, 0.002),
        _row("beale3d", "ogr-duda", 1, 0.006),
        _row("beale3d", "ogr-duda", 2, 0.004),
        _row("beale3d", "ogr", 0, 5.0),
    ]
    summ = summarize(rows)
    assert [(s["experiment"], s["method"]) for s in summ] == [("beale3d", "ogr-duda"), ("beale3d", "ogr")]
    s = summ[0]
    assert s["mean"] == pytest.approx(0.004, rel=1e-14)
    assert s["std"] == pytest.approx(0.002, rel=1e-12)  # sample std of (2, 6, 4) * 1e-3
    assert (s["min"], s["median"], s["max"], s["n_seeds"]) == (0.002, 0.004, 0.006, 3)
    assert s["published"] == 0.00383803 and s["ratio"] == pytest.approx(0.004 / 0.00383803, rel=1e-14)
    assert s["seconds"] == pytest.approx(1.5)
    assert summ[1]["published"] is None and summ[1]["ratio"] is None and summ[1]["std"] == 0.0
    table = markdown_table(summ)
    lines = table.strip().split("\n")
    assert len(lines) == 4 and lines[0].startswith("| experiment")
    assert "| 0.004 |" in lines[2] and "| 0.00383803 |" in lines[2] and "| 1.04 |" in lines[2]
    assert lines[3].endswith("| – | – |")
    inf_rows = [_row("beale2d", "momentum", 0, 1.0, "mean"), _row("beale2d", "momentum", 1, math.inf, "mean")]
    s = summarize(inf_rows)[0]
    assert s["mean"] == math.inf and math.isnan(s["std"]) and s["ratio"] == math.inf
    assert "| inf |" in markdown_table([s])
    with pytest.raises(ValueError, match="mix metrics"):
        summarize([_row("beale3d", "ogr", 0, 1.0), _row("beale3d", "ogr", 1, 1.0, "mean")])


def test_bad_input():
    with pytest.raises(ValueError, match="unknown lattice experiment"):
        run_one("beale4d", "adam")
    with pytest.raises(ValueError, match="unknown lattice method"):
        run_one("beale2d", "sgd")
    with pytest.raises(ValueError, match="noise_seed"):
        run_one(SMALL_2D, "adam", noise_seed=-1)
    with pytest.raises(ValueError, match="noise_std"):
        run_one(SMALL_2D, "adam", noise_std=-0.1)
    with pytest.raises(TypeError, match="methods"):
        run_lattice(SMALL_2D, "adam")
    with pytest.raises(ValueError, match="noise_seeds"):
        run_lattice(SMALL_2D, ["adam"], noise_seeds=[])
    with pytest.raises(ValueError, match="workers"):
        run_study(["beale2d"], ["adam"], workers=0)
    with pytest.raises(ValueError, match="metric"):
        LatticeExperiment("x", "beale", ((0.0,), (0.0,)), 1, "median", "2d", "")
    with pytest.raises(ValueError, match="unknown method"):
        LatticeMethod("x", "no-such-method", {}, "")
    assert L.NOISE_STD == 0.1


def test_run_study_workers_give_the_serial_rows(monkeypatch):
    """Spawned workers return the same rows, in task order; progress sees every row. The pool is the
    harness's, whose workers die with their parent (tests/bench/test_workers.py)."""
    seen, pools = [], []
    real_pool = L.workers_mod.process_pool

    def pool(workers, start_method, *args):
        pools.append((workers, start_method))
        return real_pool(workers, start_method, *args)

    monkeypatch.setattr(L.workers_mod, "process_pool", pool)
    serial = run_study([SMALL_2D], ["momentum", "adam"], noise_seeds=[1])
    parallel = run_study([SMALL_2D], ["momentum", "adam"], noise_seeds=[1], workers=2, progress=seen.append)
    assert pools == [(2, "spawn")]
    assert [(r["experiment"], r["method"]) for r in parallel] == [
        ("small2d", "momentum"),
        ("small2d", "adam"),
    ]
    assert [r["finals"] for r in parallel] == [r["finals"] for r in serial]
    assert sorted(r["method"] for r in seen) == ["adam", "momentum"]
