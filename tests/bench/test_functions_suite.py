"""The test-function protocol: metric, clamping, stopping, batching, tuning seeds, resume, shards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch

from hessopt.bench.functions import protocol as fp
from hessopt.bench.functions import suite as fs
from hessopt.bench.harness.stats import geometric_mean
from hessopt.bench.harness.store import ResultStore, merge
from hessopt.bench.harness.tuning import tune
from hessopt.bench.methods import Method, Setting, get_method
from hessopt.problems.functions import BenchmarkFunction, get_function

TINY = fp.Protocol(starts=3, steps=20, tune_starts=2)


def _rosen_np(x: np.ndarray) -> tuple[float, np.ndarray]:
    return float(scipy.optimize.rosen(x)), scipy.optimize.rosen_der(x)


def test_momentum_matches_an_independent_reference_with_clamping():
    """Best f among θ_0..θ_c, clamping after each step, SGD(momentum) as m <- mu m + g, θ <- θ - lr m."""
    fn = get_function("rosenbrock")
    lr, mu, steps = 5e-4, 0.9, 40
    protocol = fp.Protocol(starts=2, steps=steps, tune_starts=1)
    method = get_method("momentum").in_suite("functions")
    (run,) = fs.run_starts(fn, method, method.config({"lr": lr}), [42], protocol)
    x = fn.sample_starts(1, seed0=42)[0].numpy().copy()
    m = np.zeros_like(x)
    values, clamped = [], False
    for k in range(steps + 1):
        f, g = _rosen_np(x)
        values.append(f)
        if k == steps:
            break
        m = mu * m + g
        x = x - lr * m
        clamped |= bool(np.any(np.abs(x) > 2.0))
        x = np.clip(x, -2.0, 2.0)
    assert clamped, "the reference trajectory should hit the box so that clamping is tested"
    for s, best in run.curve.items():
        assert best == pytest.approx(min(values[: s + 1]), rel=1e-9)
    assert run.final_f == pytest.approx(values[-1], rel=1e-9)
    assert (run.status, run.stop, run.steps_taken, run.n_evals) == ("done", "budget", steps, steps)


def test_scipy_bfgs_matches_scipy_unclamped():
    fn = get_function("rosenbrock")
    protocol = fp.Protocol(starts=1, steps=15, tune_starts=1)
    (run,) = fs.run_starts(fn, "scipy-bfgs", {}, [42], protocol)
    x0 = fn.sample_starts(1, seed0=42)[0].numpy()
    values = [_rosen_np(x0)[0]]
    res = scipy.optimize.minimize(
        _rosen_np,
        x0,
        jac=True,
        method="BFGS",
        callback=lambda xk: values.append(_rosen_np(xk)[0]),
        options={"maxiter": 15, "gtol": 1e-8, "norm": 2},
    )
    assert run.steps_taken == res.nit == 15
    assert run.n_evals == res.nfev
    for s, best in run.curve.items():
        assert best == pytest.approx(min(values[: s + 1]), rel=1e-8, abs=1e-12)


def test_batched_equals_per_start_and_grid_batch():
    fn = get_function("rosenbrock")
    method = get_method("adam").in_suite("functions")
    seeds = [42, 43, 44]
    for noise in (0.0, 0.3):
        protocol = fp.Protocol(starts=3, steps=25, noise_std=noise, tune_starts=1)
        configs = [method.config({"lr": 0.03}), method.config({"lr": 0.3})]
        grid = fs.run_grid(fn, method, configs, seeds, protocol)
        for config, batch in zip(configs, grid, strict=True):
            assert [r.seed for r in batch] == seeds
            for r in batch:
                (alone,) = fs.run_starts(fn, method, config, [r.seed], protocol)
                assert alone.batch == 1 and r.batch == 6
                assert (alone.steps_taken, alone.n_evals, alone.stop) == (r.steps_taken, r.n_evals, r.stop)
                for s in protocol.record_steps:
                    assert r.curve[s] == pytest.approx(alone.curve[s], rel=1e-12, abs=1e-300)
        assert grid[0][0].curve != grid[1][0].curve  # the two step sizes really differ


def test_one_long_run_gives_every_budget():
    fn = get_function("beale")
    short = fs.run_starts(
        fn,
        "bfgs",
        get_method("bfgs").in_suite("functions").config(),
        [42, 45],
        fp.Protocol(starts=1, steps=50, tune_starts=1),
    )
    long = fs.run_starts(
        fn,
        "bfgs",
        get_method("bfgs").in_suite("functions").config(),
        [42, 45],
        fp.Protocol(starts=1, steps=60, tune_starts=1),
    )
    assert fp.Protocol(steps=2000).checkpoints == (50, 250, 2000)
    assert fp.Protocol(steps=250).checkpoints == (50, 250)
    for a, b in zip(short, long, strict=True):
        assert a.curve[50] == b.curve[50]


def test_gradient_tolerance_stops_early():
    fn = get_function("sphere")
    (run,) = fs.run_starts(fn, "bfgs", get_method("bfgs").in_suite("functions").config(), [42], TINY)
    assert run.stop == "gtol" and run.status == "done" and run.steps_taken <= 3
    assert run.grad_norm < 1e-8
    assert run.curve[TINY.steps] == run.curve[run.steps_taken] < 1e-16


def test_stalled_closure_method_stops():
    still = Method(
        "test-still",
        "still",
        "SGD with a step too small to move θ",
        "closure",
        lambda params, cfg: torch.optim.SGD(params, lr=1e-300),
        suites={"functions": Setting()},
    ).in_suite("functions")
    (run,) = fs.run_starts(get_function("sphere"), still, {}, [42], TINY)
    assert (run.stop, run.status, run.steps_taken, run.n_evals) == ("stalled", "done", 5, 5)


class _Shifted(BenchmarkFunction):
    """sum (x - 3)^2; with ``trap``, NaN once x_0 > 2, so a run heading for the minimum diverges."""

    def __init__(self, trap: bool) -> None:
        super().__init__(
            name="shifted",
            dim=2,
            lower=-5.0,
            upper=5.0,
            x0=(0.0, 0.0),
            f_min=0.0,
            minimizers=[(3.0, 3.0)],
            convex=True,
        )
        self.trap = trap

    def _evaluate(self, x: torch.Tensor) -> torch.Tensor:
        f = ((x - 3.0) ** 2).sum(-1)
        return torch.where(x[..., 0] > 2.0, torch.full_like(f, math.nan), f) if self.trap else f


def test_divergence_is_recorded_with_the_best_value_so_far():
    method = get_method("adam").in_suite("functions")
    config = method.config({"lr": 0.5})
    protocol = fp.Protocol(starts=2, steps=60, tune_starts=1)
    runs = fs.run_starts(_Shifted(trap=True), method, config, [42, 43], protocol)
    for r in runs:
        assert (r.status, r.stop) == ("diverged", "nonfinite")
        assert math.isnan(r.final_f) and 0 < r.steps_taken < 60
        # the same trajectory without the trap, cut before the NaN point: same best value
        (clean,) = fs.run_starts(
            _Shifted(trap=False),
            method,
            config,
            [r.seed],
            fp.Protocol(starts=1, steps=r.steps_taken - 1, tune_starts=1),
        )
        assert 1.0 <= r.curve[60] == clean.curve[r.steps_taken - 1]  # x_0 <= 2 keeps f >= 1
        (alone,) = fs.run_starts(_Shifted(trap=True), method, config, [r.seed], protocol)
        assert alone.curve == r.curve and alone.steps_taken == r.steps_taken


def test_tuning_uses_only_tuning_seeds(monkeypatch):
    fn = get_function("rosenbrock")
    seen: list[int] = []
    original = BenchmarkFunction.sample_starts

    def spy(self, n, *, seed0=42, dtype=torch.float64):
        seen.extend(range(seed0, seed0 + n))
        return original(self, n, seed0=seed0, dtype=dtype)

    monkeypatch.setattr(BenchmarkFunction, "sample_starts", spy)
    protocol = fp.Protocol(starts=4, steps=10, tune_starts=3)
    for name in ("adam", "bfgs-fixed"):
        seen.clear()
        outcome = fs.tune_on_function(fn, name, protocol)
        assert set(seen) == set(protocol.tuning_seeds) == {10_000, 10_001, 10_002}
        assert not set(seen) & set(protocol.evaluation_seeds)
        objectives = [t["objective"] for t in outcome.trials]
        assert outcome.objective == min(objectives)
        assert outcome.chosen == outcome.trials[objectives.index(min(objectives))]["params"]
        grid = get_method(name).in_suite("functions").tune["lr"]
        assert [t["params"]["lr"] for t in outcome.trials] == list(grid)
    with pytest.raises(ValueError, match="overlap"):
        fp.Protocol(starts=20, tune_seed0=50)


def test_tune_rules():
    method = get_method("momentum").in_suite("functions")
    received = []

    def evaluate(configs, seeds):
        received.append(list(seeds))
        # objective 1 everywhere except two equal minima 0.5; the first (smaller lr) must win
        return [[0.25, 1.0] if c["lr"] in (1e-4, 1e-2) else [1.0, 1.0] for c in configs]

    out = tune(method, evaluate, tuning_seeds=[7, 8], evaluation_seeds=range(42, 50))
    assert out.chosen == {"lr": 1e-4} and out.objective == pytest.approx(0.5)
    assert received == [[7, 8]]
    with pytest.raises(ValueError, match="overlap"):
        tune(method, evaluate, tuning_seeds=[42], evaluation_seeds=range(42, 50))
    values = [1e-3, 0.0, 5.0, 1e-320]
    expected = math.exp(np.mean(np.log(np.maximum(values, 1e-300))))
    assert geometric_mean(values) == pytest.approx(expected, rel=1e-12)
    assert geometric_mean([1.0, math.nan]) == math.inf


SUITE_ARGS = {
    "functions": ["rosenbrock", "beale"],
    "methods": ["adam", "bfgs", "scipy-bfgs"],
    "protocol": TINY,
    "progress": False,
}


def _snapshot(path) -> dict:
    with ResultStore(path) as st:
        return {
            (r.problem, r.method, str(r.config), r.seed): (
                r.status,
                {k: v for k, v in r.summary.items() if k != "batch"},
            )
            for r in st.runs(fp.SUITE)
        }


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.sqlite"
    with ResultStore(path) as st:
        out = fs.run_suite(st, **SUITE_ARGS, command="reference")
    assert (out.planned, out.executed, out.written, out.tuned) == (18, 18, 18, 2)
    return path


def test_interrupted_suite_resumes_and_runs_everything_once(tmp_path, monkeypatch, reference_store):
    path = tmp_path / "resume.sqlite"
    calls = {"n": 0}
    original = ResultStore.add_run

    def flaky(self, rec):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(self, rec)

    monkeypatch.setattr(ResultStore, "add_run", flaky)
    with ResultStore(path) as st, pytest.raises(KeyboardInterrupt):
        fs.run_suite(st, **SUITE_ARGS)
    monkeypatch.setattr(ResultStore, "add_run", original)
    with ResultStore(path) as st:
        assert st.count() == 7
        out = fs.run_suite(st, **SUITE_ARGS)
        assert (out.planned, out.skipped, out.executed, out.written, out.tuned) == (18, 7, 11, 11, 0)
        again = fs.run_suite(st, **SUITE_ARGS)
        assert (again.skipped, again.executed) == (18, 0)
    assert _snapshot(path) == _snapshot(reference_store)


def test_shards_with_workers_merge_into_the_whole_suite(tmp_path, reference_store):
    paths = [tmp_path / "s1.sqlite", tmp_path / "s2.sqlite"]
    sizes = []
    for i, (path, workers) in enumerate(zip(paths, (2, 1), strict=True), start=1):
        with ResultStore(path) as st:
            out = fs.run_suite(st, **SUITE_ARGS, shard=(i, 2), workers=workers)
            sizes.append(out.planned)
    assert sizes == [9, 9]
    merged = tmp_path / "merged.sqlite"
    assert merge(merged, *paths) == 18
    assert _snapshot(merged) == _snapshot(reference_store)
    with pytest.raises(ValueError, match="shard"):
        with ResultStore(tmp_path / "x.sqlite") as st:
            fs.run_suite(st, **SUITE_ARGS, shard=(3, 2))
