"""The Ray executor (hessopt.bench.harness.executors): a suite slice run as Ray tasks stores the same runs,
with the same numbers up to timing, as the local process pool; an interrupted Ray suite resumes."""

from __future__ import annotations

import dataclasses

import pytest

from helpers import tiny_suite
from hessopt.bench.harness.store import ResultStore
from hessopt.bench.nn import suite as nn_suite

ray = pytest.importorskip("ray")

SLICE = tiny_suite("nn-ray", ("digits_mlp",), ("momentum", "diag-ogr"), steps=8, evaluations=2, limit=256)
TIME_KEYS = {"wall_time", "eval_time", "time_to_target", "step_time_median", "step_time_mean", "threads"}


def _runs(path) -> dict:
    with ResultStore(path, readonly=True) as st:
        return {
            (r.suite, r.problem, r.method, repr(r.config), r.seed): (
                r.status,
                {k: v for k, v in r.summary.items() if k not in TIME_KEYS},
                st.metrics([r.id], "train_loss")[r.id],
            )
            for r in st.runs()
        }


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_stores_the_same_runs_as_the_process_pool_and_resumes(tmp_path, monkeypatch, ray_instance):
    with ResultStore(tmp_path / "pool.sqlite") as st:
        pool = nn_suite.run_suite(st, SLICE, workers=2, progress=False)
    with ResultStore(tmp_path / "ray.sqlite") as st:
        on_ray = nn_suite.run_suite(st, SLICE, executor="ray", progress=False)
    assert pool.written == on_ray.written > 0
    assert _runs(tmp_path / "ray.sqlite") == _runs(tmp_path / "pool.sqlite")

    # interrupted after the first stored run: a re-run completes the suite, every run exactly once
    original = ResultStore.add_run
    calls = {"n": 0}

    def interrupt(self, rec):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, rec)

    path = tmp_path / "resumed.sqlite"
    monkeypatch.setattr(ResultStore, "add_run", interrupt)
    with ResultStore(path) as st, pytest.raises(KeyboardInterrupt):
        nn_suite.run_suite(st, SLICE, executor="ray", progress=False)
    monkeypatch.setattr(ResultStore, "add_run", original)
    with ResultStore(path) as st:
        assert st.count() == 1
        resumed = nn_suite.run_suite(st, SLICE, executor="ray", progress=False)
    assert resumed.written == pool.written - 1
    assert _runs(path) == _runs(tmp_path / "pool.sqlite")


def test_executor_arguments_are_checked(tmp_path):
    with ResultStore(tmp_path / "x.sqlite") as st:
        with pytest.raises(ValueError, match="executor"):
            nn_suite.run_suite(st, SLICE, executor="dask", progress=False)
        with pytest.raises(ValueError, match="--executor ray"):
            nn_suite.run_suite(st, dataclasses.replace(SLICE), address="auto", progress=False)
