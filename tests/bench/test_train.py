"""``hessopt train`` (hessopt.bench.nn.train): one run recorded like a suite run; under torchrun the
data-parallel processes take the steps of one process on the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hessopt.bench.harness.store import ResultStore
from hessopt.bench.methods import get_method
from hessopt.bench.nn.train import TRAIN_SUITE, parse_config, resolve_config
from hessopt.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _only_run(path):
    with ResultStore(path, readonly=True) as st:
        (run,) = st.runs(TRAIN_SUITE)
        return run, st.metrics([run.id], "train_loss")[run.id]


def _torchrun(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",
        "-m",
        "hessopt",
        "train",
        *args,
        "--no-progress",
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)


def test_train_stores_one_run_like_a_suite_run(tmp_path, capsys):
    store = tmp_path / "t.sqlite"
    args = [
        "train",
        "digits_mlp",
        "--method",
        "adam",
        "--config",
        '{"lr": 0.01}',
        "--steps",
        "12",
        "--store",
        str(store),
        "--no-progress",
    ]
    assert main(args) == 0
    run, curve = _only_run(store)
    assert (run.problem, run.method, run.status, run.seed) == ("digits_mlp", "adam", "done", 0)
    assert run.config["hyper"]["lr"] == 0.01 and run.config["processes"] == 1
    assert run.summary["steps"] == 12 and len(curve) >= 2 and curve[-1][1] < curve[0][1]
    assert "digits_mlp / adam: done, 12 steps" in capsys.readouterr().out


def test_train_needs_the_tuned_values_and_says_which(tmp_path, capsys):
    assert main(["train", "digits_mlp", "--method", "adam", "--store", str(tmp_path / "x.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "tunes lr" in err and "--config" in err and "\n" == err[-1] and err.count("\n") == 1
    assert not (tmp_path / "x.sqlite").exists()
    with pytest.raises(ValueError, match="JSON object"):
        parse_config("[1, 2]")
    config = resolve_config(get_method("adam").in_suite("nn"), {"lr": 0.1, "eps": 1e-6})
    assert config == {"betas": [0.9, 0.999], "eps": 1e-6, "lr": 0.1}


@pytest.mark.ddp
@pytest.mark.parametrize(
    ("problem", "method", "config"),
    [("digits_mlp", "diag-ogr", '{"lr": 1.0}'), ("quadratic_deep", "bfgs", None)],
)
def test_torchrun_two_processes_take_the_steps_of_one(tmp_path, problem, method, config):
    extra = ["--config", config] if config else []
    single = tmp_path / "one.sqlite"
    assert (
        main(
            [
                "train",
                problem,
                "--method",
                method,
                *extra,
                "--steps",
                "14",
                "--store",
                str(single),
                "--no-progress",
            ]
        )
        == 0
    )
    out = _torchrun(tmp_path, problem, "--method", method, *extra, "--steps", "14", "--store", "two.sqlite")
    assert out.returncode == 0, out.stderr[-2000:]
    one_run, one_curve = _only_run(single)
    two_run, two_curve = _only_run(tmp_path / "two.sqlite")
    assert two_run.config["processes"] == 2 and two_run.summary["steps"] == 14
    # float32: the mean of the two halves' mean gradients equals the whole batch's up to rounding
    assert [s for s, _ in two_curve] == [s for s, _ in one_curve]
    for (_, a), (_, b) in zip(two_curve, one_curve, strict=True):
        assert a == pytest.approx(b, rel=1e-4)


@pytest.mark.ddp
def test_torchrun_refuses_a_method_that_is_not_data_parallel_safe(tmp_path):
    out = _torchrun(tmp_path, "quadratic_deep", "--method", "lbfgs", "--steps", "3", "--store", "x.sqlite")
    assert out.returncode != 0  # torchrun reports its failed children (with its own traceback)
    ours = [line for line in out.stderr.splitlines() if line.startswith("hessopt train: error:")]
    assert ours and all("cannot train under DistributedDataParallel" in line for line in ours)
    assert "line search" in ours[0] and not (tmp_path / "x.sqlite").exists()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_run_is_the_cpu_run_up_to_rounding():
    from hessopt.bench.nn.suite import run_one
    from hessopt.problems.registry import Budget

    config = get_method("diag-ogr").in_suite("nn").config({"lr": 1.0})
    runs = [
        run_one("digits_mlp", "diag-ogr", config, 0, budget=Budget(steps=20), device=d)
        for d in ("cpu", "cuda")
    ]
    assert [r.status for r in runs] == ["done", "done"]
    assert runs[1].summary["final_train_loss"] == pytest.approx(runs[0].summary["final_train_loss"], rel=1e-3)
