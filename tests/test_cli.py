"""The ``hessopt`` command: list, a tiny suite, report, merge, argument errors; and what a demanding user
tries: stores that are not stores, missing packages, signals, kill -9, two identical commands at once."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import hessopt
from helpers import alive, children, wait_for
from hessopt.bench.harness.store import ResultStore, RunRecord
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
    assert not os.path.exists(store)  # names are checked before the store file is created
    assert main(["report", "--store", str(tmp_path / "missing.sqlite")]) == 2
    assert "no results store" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "d.sqlite"), str(tmp_path / "missing.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------ robustness (issue 8)


def _digests(folder) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def _one_line_error(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith(f"hessopt {command}: error: ")
    return lines[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"hessopt {hessopt.__version__}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "hessopt", "--version"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"hessopt {hessopt.__version__}"


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    """A folder of things that are not (usable) stores, and one store with runs."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "adir").mkdir()
    (folder / "empty.sqlite").touch()
    (folder / "text.sqlite").write_text("a,b\n1,2\n")
    con = sqlite3.connect(folder / "other.sqlite")
    con.execute("CREATE TABLE people (name TEXT)")
    con.commit()
    con.close()
    with ResultStore(folder / "store.sqlite") as st:
        for seed in range(300):
            st.add_run(
                RunRecord(
                    "s", "p", "m", {}, seed, "done", {}, 0.1, metrics=[(k, "f", 1.0) for k in range(30)]
                )
            )
    data = bytearray((folder / "store.sqlite").read_bytes())
    middle = len(data) // 4096 // 2 * 4096
    data[middle + 200 : middle + 700] = bytes(range(250)) * 2
    (folder / "corrupt.sqlite").write_bytes(bytes(data))
    with ResultStore(folder / "store.sqlite"):
        pass
    os.link(folder / "store.sqlite", folder / "hardlink.sqlite")
    return folder


ERRORS = [
    (["bench", "functions", "--store", "{adir}"], "is a folder, not a results store"),
    (["bench", "functions", "--store", "/dev/null"], "is not a regular file"),
    (["bench", "functions", "--store", "{text.sqlite}"], "not an SQLite file"),
    (["bench", "functions", "--store", "{corrupt.sqlite}"], "is damaged (SQLite's integrity check"),
    (["bench", "functions", "--store", "{text.sqlite}/x.sqlite"], "is a file, not a folder"),
    (
        ["bench", "nn", "--problems", "quadratic_deep", "--store", "{other.sqlite}"],
        "not a hessopt results store",
    ),
    (["report", "--store", "{empty.sqlite}"], "is an empty file"),
    (["report", "--store", "{adir}"], "is a folder"),
    (["report", "--store", "{other.sqlite}"], "not a hessopt results store (tables: people)"),
    (["report", "--store", "{corrupt.sqlite}"], "is damaged"),
    (["report", "--store", "{store.sqlite}", "--out", "{text.sqlite}"], "is a file; pass a folder"),
    (["merge", "{hardlink.sqlite}", "{store.sqlite}"], "is the destination"),
    (["merge", "{store.sqlite}", "{other.sqlite}"], "not a hessopt results store"),
    (["merge", "{other.sqlite}", "{store.sqlite}"], "not a hessopt results store"),
    (["bench", "ogr-studies", "--out", "{text.sqlite}"], "is a file; pass a folder"),
]


@pytest.mark.parametrize(("argv", "message"), ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_user_errors_are_one_line_and_change_nothing(bad_inputs, argv, message, capsys):
    argv = [re.sub(r"\{(.+?)\}", lambda m: str(bad_inputs / m.group(1)), a) for a in argv]
    before = _digests(bad_inputs)
    status = main(
        [*argv, *(["--no-progress"] if argv[:2] in (["bench", "functions"], ["bench", "nn"]) else [])]
    )
    assert status != 0
    assert message in _one_line_error(capsys, argv[0])
    assert _digests(bad_inputs) == before


SMALL = ["--functions", "sphere", "--methods", "adam", "--starts", "1", "--steps", "2", "--tune-starts", "1"]
_BLOCKED = """
import sys
sys.modules[sys.argv[1]] = None  # as if the package were not installed
from hessopt.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    ("package", "argv"),
    [
        ("rich", ["bench", "functions", *SMALL]),
        ("matplotlib", ["report"]),
        ("scipy", ["bench", "functions", *SMALL]),
    ],
)
def test_a_missing_bench_package_is_one_line_naming_the_extra(tmp_path, package, argv):
    store = tmp_path / "r.sqlite"
    if argv == ["report"]:
        ResultStore(store).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED, package, *argv, "--store", str(store)],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"the package '{package}' is not installed" in lines[0]
    assert "pip install 'hessopt[bench]'" in lines[0]
    assert store.exists() == (argv == ["report"])  # a bench command did not create its store


def test_merge_into_or_from_an_unrelated_sqlite_file_changes_nothing(tmp_path, capsys):
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    ResultStore(tmp_path / "out.sqlite").close()
    before = _digests(tmp_path)
    assert main(["merge", str(tmp_path / "out.sqlite"), str(other)]) == 2
    assert "not a hessopt results store" in _one_line_error(capsys, "merge")
    assert main(["merge", str(tmp_path / "new.sqlite"), str(other)]) == 2
    assert main(["merge", str(other), str(tmp_path / "out.sqlite")]) == 2
    capsys.readouterr()
    assert _digests(tmp_path) == before  # byte-identical, nothing created (no new.sqlite, -wal, -shm)
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert main(["report", "--store", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert "empty file" in _one_line_error(capsys, "report")
    assert empty.stat().st_size == 0


def test_workers_above_the_cpu_count_are_warned_and_recorded(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    store = tmp_path / "f.sqlite"
    argv = [*TINY[: TINY.index("--workers")], "--workers", "2", "--no-progress", "--store", str(store)]
    assert main(["bench", "functions", *argv]) == 0
    assert "warning: --workers 2 exceeds the 1 CPUs of this machine" in capsys.readouterr().err
    with ResultStore(store) as st:
        (inv,) = st.invocations()
    assert inv["environment"]["workers"] == 2 and "2 workers on 1 CPUs" in inv["environment"]["warning"]
    assert main(["report", "--store", str(store), "--out", str(tmp_path / "out")]) == 0
    assert "warning: 2 workers on 1 CPUs" in (tmp_path / "out" / "report.md").read_text()


# ------------------------------------------------------------------ signals and orphans (issue 7), Linux


LONG_NN = [
    "bench", "nn", "--problems", "quadratic_deep", "--methods", "momentum", "--steps", "1000000",
    "--seeds", "1", "--tune-seeds", "1", "--workers", "2", "--no-progress",
]  # fmt: skip


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads processes from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill -9"])
def test_no_worker_outlives_a_signalled_bench(tmp_path, sig):
    """Before: after SIGTERM or kill -9 the workers re-parented to PID 1 and ran on for minutes.
    SIGTERM is handled like Ctrl-C (exit 143, the same message, claims released)."""
    store = tmp_path / "nn.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with open(tmp_path / "err", "w") as err:  # a file, not a pipe: orphans would hold a pipe open
        proc = subprocess.Popen(
            [sys.executable, "-m", "hessopt", *LONG_NN, "--store", str(store)],
            env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    workers: list[int] = []
    try:
        assert wait_for(lambda: len(children(proc.pid)) >= 2, 120), "the workers did not start"
        time.sleep(0.5)
        workers = children(proc.pid)
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        assert wait_for(lambda: not any(alive(p) for p in workers), 5), [p for p in workers if alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in filter(alive, workers):  # orphans of a failed check
            os.kill(pid, signal.SIGKILL)
    err = (tmp_path / "err").read_text()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        assert err.strip().splitlines()[-1] == (
            "hessopt: terminated; finished runs are stored, re-run the same command to resume"
        )
        with ResultStore(store, readonly=True) as st:
            assert st._con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    else:
        assert proc.returncode == -signal.SIGKILL


# Both children wait for each other, then run the same command; every run sleeps 0.5 s and is logged.
_SLOW_TWIN = """
import os, sys, time
from pathlib import Path
from hessopt.bench.nn import suite
folder = Path(sys.argv[1])
(folder / f"ready-{os.getpid()}").touch()
deadline = time.monotonic() + 120
while len(list(folder.glob("ready-*"))) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
real = suite.run_one
def run_one(problem, method, hyper, seed, **kwargs):
    time.sleep(0.5)
    with open(folder / "log", "a") as fh:
        fh.write(f"{os.getpid()} {kwargs['role']} {hyper['lr']} {seed}\\n")
    return real(problem, method, hyper, seed, **kwargs)
suite.run_one = run_one
from hessopt.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_two_identical_bench_commands_compute_each_run_once(tmp_path):
    store = tmp_path / "nn.sqlite"
    argv = [
        "bench", "nn", "--problems", "quadratic_deep", "--methods", "momentum", "--steps", "10",
        "--seeds", "2", "--tune-seeds", "1", "--workers", "1", "--no-progress", "--store", str(store),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SLOW_TWIN, str(tmp_path), *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    log = (tmp_path / "log").read_text().splitlines()
    runs = [line.split(" ", 1)[1] for line in log]
    assert len(runs) == len(set(runs)) == 6  # 4 tuning + 2 evaluation runs, each computed once
    executed = sorted(int(re.search(r"nn-quick: (\d+) runs", out).group(1)) for out, _ in outputs)
    assert sum(executed) == 6
    assert any("runs left to another process that claimed them (pid" in err for _, err in outputs)
    with ResultStore(store) as st:
        assert st.count() == 6
        assert st._con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
