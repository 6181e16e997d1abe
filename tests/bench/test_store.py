"""The SQLite results store: identity, replacement rules, crash safety, concurrent writers, merge."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sqlite3
import time

import pytest

from hessopt.bench.harness.store import ResultStore, RunRecord, canonical_json, merge


def _record(
    i: int, *, status: str = "done", problem: str = "p", n_metrics: int = 5, tag: str = ""
) -> RunRecord:
    return RunRecord(
        suite="s",
        problem=problem,
        method="m",
        config={"lr": 0.1, "steps": 10},
        seed=i,
        status=status,
        summary={"best": float(i), "tag": tag},
        wall_time=0.01,
        metrics=[(k, "best_f", float(i * 100 + k)) for k in range(n_metrics)],
    )


def _check_complete(path, n_metrics: int) -> set[int]:
    """Every stored run has exactly its n_metrics rows with the values it was written with."""
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    seeds = set()
    for run_id, seed in con.execute("SELECT id, seed FROM runs"):
        values = [
            v for (v,) in con.execute("SELECT value FROM metrics WHERE run_id=? ORDER BY step", (run_id,))
        ]
        assert values == [float(seed * 100 + k) for k in range(n_metrics)]
        seeds.add(seed)
    assert (
        con.execute("SELECT COUNT(*) FROM metrics WHERE run_id NOT IN (SELECT id FROM runs)").fetchone()[0]
        == 0
    )
    con.close()
    return seeds


def test_roundtrip_and_identity(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as st:
        assert st.add_run(_record(1))
        # same identity with the configuration's keys in another order: ignored
        dup = _record(1, tag="second")
        dup.config = {"steps": 10, "lr": 0.1}
        assert not st.add_run(dup)
        assert st.add_run(_record(2))
        runs = st.runs("s")
        assert [r.seed for r in runs] == [1, 2]
        assert runs[0].summary == {"best": 1.0, "tag": ""}
        assert runs[0].config == {"lr": 0.1, "steps": 10}
        assert st.metrics([runs[1].id], "best_f") == {runs[1].id: [(k, 200.0 + k) for k in range(5)]}
        assert st.done_keys("s") == {("p", "m", canonical_json({"lr": 0.1, "steps": 10}), s) for s in (1, 2)}
        mode = st._con.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_failed_runs_are_replaced_and_retried(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as st:
        assert st.add_run(_record(1, status="failed", tag="boom"))
        assert st.done_keys("s") == set()  # a resumed suite retries it
        assert len(st.done_keys("s", include_failed=True)) == 1
        assert not st.add_run(_record(1, status="failed", tag="again"))
        assert st.add_run(_record(1, status="diverged", tag="ok"))
        (run,) = st.runs("s")
        assert (run.status, run.summary["tag"]) == ("diverged", "ok")
        assert not st.add_run(_record(1, status="done", tag="later"))  # first finished result wins
    assert _check_complete(tmp_path / "r.sqlite", 5) == {1}


def test_bad_input(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as st:
        with pytest.raises(ValueError, match="status"):
            st.add_run(_record(1, status="ok"))
        bad = _record(2)
        bad.config = {"lr": math.nan}
        with pytest.raises(ValueError, match="NaN"):
            st.add_run(bad)
        bad = _record(3)
        bad.wall_time = -1.0
        with pytest.raises(ValueError, match="wall_time"):
            st.add_run(bad)
    with pytest.raises(ValueError, match="does not exist"):
        merge(tmp_path / "d.sqlite", tmp_path / "missing.sqlite")


def _context():
    """fork where available (fast: the writers use only sqlite3), spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _writer(path: str, seeds: list[int], n_metrics: int, barrier=None) -> None:
    """Write the runs of ``seeds``; with a barrier, both writers start together and meet again halfway,
    so their transactions are guaranteed to interleave (whatever the machine's speed)."""
    with ResultStore(path, timeout=30) as st:
        if barrier is None:
            for s in seeds:
                st.add_run(_record(s, n_metrics=n_metrics))
            return
        half = len(seeds) // 2
        barrier.wait(30)
        for s in seeds[:half]:
            st.add_run(_record(s, n_metrics=n_metrics))
        barrier.wait(30)
        for s in seeds[half:]:
            st.add_run(_record(s, n_metrics=n_metrics))


def test_two_processes_write_one_file(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = _context()
    ResultStore(path).close()  # create the schema before the race
    barrier = ctx.Barrier(2)
    # 150 runs each, 50 of them written by both processes; 50 metric rows per run
    procs = [
        ctx.Process(target=_writer, args=(path, list(range(0, 150)), 50, barrier)),
        ctx.Process(target=_writer, args=(path, list(range(100, 250)), 50, barrier)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert _check_complete(path, 50) == set(range(250))
    with ResultStore(path) as st:
        assert st.count("s") == 250
        order = [r.seed for r in st.runs("s")]
    # the writers really interleaved: a run only the second writes precedes one only the first writes
    first_b = min(i for i, s in enumerate(order) if s >= 150)
    assert any(s < 100 for s in order[first_b:])


def test_killed_writer_loses_only_the_run_in_flight(tmp_path):
    path = str(tmp_path / "crash.sqlite")
    ctx = _context()
    proc = ctx.Process(target=_writer, args=(path, list(range(10_000)), 200))
    proc.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until some runs are in
        time.sleep(0.2)
        if os.path.exists(path):
            try:
                with sqlite3.connect(path, timeout=5) as con:
                    if con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] >= 5:
                        break
            except sqlite3.OperationalError:
                continue
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    stored = _check_complete(path, 200)  # every stored run is whole
    assert len(stored) >= 5 and stored == set(range(len(stored)))
    # "resume": the remaining runs are written once each, the stored ones are skipped
    with ResultStore(path) as st:
        written = sum(st.add_run(_record(s, n_metrics=200)) for s in range(len(stored) + 10))
        assert written == 10
    assert _check_complete(path, 200) == set(range(len(stored) + 10))


def test_merge_deduplicates(tmp_path):
    a, b, dst = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "dst.sqlite"
    with ResultStore(a) as st:
        for s in range(0, 6):
            st.add_run(_record(s))
        st.add_run(_record(10, status="failed"))
        st.put_tuning(
            "s", "p", "m", {"steps": 10}, {"lr": 0.1}, 1.5, [{"params": {"lr": 0.1}, "objective": 1.5}]
        )
        st.record_invocation("s", "hessopt bench a", env={"hostname": "a"}, started_at="2026-01-01T00:00:00")
    with ResultStore(b) as st:
        for s in range(4, 10):
            st.add_run(_record(s, tag="from b"))
        st.add_run(_record(10, status="done"))
        st.put_tuning(
            "s", "p", "m", {"steps": 10}, {"lr": 0.1}, 1.5, [{"params": {"lr": 0.1}, "objective": 1.5}]
        )
        st.record_invocation("s", "hessopt bench b", env={"hostname": "b"}, started_at="2026-01-01T00:00:01")
    assert merge(dst, a, b) == 6 + 1 + 4 + 1  # a: 0..5 and failed 10; b: 6..9 and done 10 replacing it
    assert merge(dst, a, b) == 0
    with ResultStore(dst) as st:
        runs = {r.seed: r for r in st.runs("s")}
        assert sorted(runs) == list(range(11))
        assert runs[4].summary["tag"] == ""  # a's copy came first
        assert runs[10].status == "done"
        assert len(st.tunings("s")) == 1
        assert [i["command"] for i in st.invocations()] == ["hessopt bench a", "hessopt bench b"]
        assert runs[0].created_at == ResultStore(a).runs("s")[0].created_at
    assert _check_complete(dst, 5) == set(range(11))
    with pytest.raises(ValueError, match="destination"):
        merge(a, a)
