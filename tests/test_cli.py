"""The ``hessopt`` command: list, a tiny suite, report, merge, and argument errors."""

from __future__ import annotations

import pytest

from hessopt.bench.harness.store import ResultStore
from hessopt.cli import main

TINY = [
    "--starts",
    "2",
    "--steps",
    "10",
    "--tune-starts",
    "2",
    "--functions",
    "sphere,beale",
    "--methods",
    "adam,bfgs",
    "--workers",
    "1",
    "--no-progress",
]


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("bfgs", "bfgs-armijo", "bfgs-fixed", "scipy-bfgs", "lbfgs", "adam", "momentum"):
        assert f"  {name} " in out
    assert "* rosenbrock" in out and "  beale3d" in out


def test_bench_report_merge(tmp_path, capsys):
    store = tmp_path / "f.sqlite"
    assert main(["bench", "functions", *TINY, "--store", str(store)]) == 0
    assert "8 runs" in capsys.readouterr().out  # 2 functions x 2 methods x 2 starts
    with ResultStore(store) as st:
        runs = st.runs("functions")
        assert {(r.problem, r.method) for r in runs} == {
            (p, m) for p in ("sphere-10d", "beale-2d") for m in ("adam", "bfgs")
        }
        assert {r.seed for r in runs} == {42, 43}
        assert {r.config["steps"] for r in runs} == {10}
        (inv,) = st.invocations()
        assert inv["command"].startswith("hessopt bench functions --starts 2")
    # resuming does nothing
    assert main(["bench", "functions", *TINY, "--store", str(store)]) == 0
    assert "0 runs" in capsys.readouterr().out

    assert main(["report", "--store", str(store), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| function | adam | bfgs |" in text and "### Budget 10 steps" in text
    assert f"hessopt report --store {store}" in text

    shards = [tmp_path / "s1.sqlite", tmp_path / "s2.sqlite"]
    for i, shard in enumerate(shards, start=1):
        assert main(["bench", "functions", *TINY, "--store", str(shard), "--shard", f"{i}/2"]) == 0
    merged = tmp_path / "m.sqlite"
    assert main(["merge", str(merged), *map(str, shards)]) == 0
    assert "8 new runs" in capsys.readouterr().out
    with ResultStore(merged) as a, ResultStore(store) as b:
        key = lambda r: (r.problem, r.method, r.seed)  # noqa: E731
        assert {key(r): r.summary["best_f"] for r in a.runs()} == {
            key(r): r.summary["best_f"] for r in b.runs()
        }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "functions", "--shard", "3/2"], "1 <= i <= n"),
        (["bench", "functions", "--shard", "x"], "i/n"),
        (["bench", "functions", "--steps", "0"], "positive integer"),
        (["bench", "functions", "--noise-std", "-1"], "number >= 0"),
        (["bench", "nosuite"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_value_errors(tmp_path, capsys):
    store = str(tmp_path / "f.sqlite")
    assert main(["bench", "functions", "--methods", "nosuch", "--store", store, "--no-progress"]) == 2
    assert "unknown method 'nosuch'" in capsys.readouterr().err
    assert main(["bench", "functions", "--functions", "nosuch", "--store", store, "--no-progress"]) == 2
    assert "unknown test function 'nosuch'" in capsys.readouterr().err
    assert main(["report", "--store", str(tmp_path / "missing.sqlite")]) == 2
    assert "no results store" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "d.sqlite"), str(tmp_path / "missing.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err
