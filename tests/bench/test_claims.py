"""Claims in the results store: which a process respects, which it takes over, when they end; and the
suites skipping what another process holds."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from helpers import tiny_suite
from hessopt.bench.functions import protocol as fp
from hessopt.bench.functions import suite as fs
from hessopt.bench.harness import store as store_mod
from hessopt.bench.harness.store import FOREIGN_CLAIM_TTL, ResultStore, RunRecord, canonical_json
from hessopt.bench.nn import suite as nn_suite

CONFIG = canonical_json({"lr": 0.1})
KEYS = [("s", "p", "m", CONFIG, seed) for seed in range(3)]


def _hold(path, keys, *, host: str, pid: int, process_start: str = "", heartbeat: float | None = None):
    """Write a claim of another process (as that process's store would) straight into the file."""
    con = sqlite3.connect(path)
    token = f"{host}-{pid}-{process_start}"
    con.execute(
        "INSERT INTO claimants (token, hostname, pid, process_start, started_at, heartbeat)"
        " VALUES (?,?,?,?,?,?)",
        (
            token,
            host,
            pid,
            process_start,
            "2026-01-01T00:00:00+00:00",
            time.time() if heartbeat is None else heartbeat,
        ),
    )
    con.executemany(
        "INSERT INTO claims (suite, problem, method, config, seed, token) VALUES (?,?,?,?,?,?)",
        [(*k, token) for k in keys],
    )
    con.commit()
    con.close()


def _claims(path) -> int:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def sleeper():
    """A live process of this host (killed at the end)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def test_live_claims_are_respected_and_those_of_gone_processes_taken_over(tmp_path, sleeper):
    path = tmp_path / "c.sqlite"
    ResultStore(path).close()
    host = socket.gethostname()
    start = store_mod._process_start(sleeper.pid)
    _hold(path, KEYS[:1], host=host, pid=sleeper.pid, process_start=start)
    with ResultStore(path) as st:
        out = st.claim(KEYS)
        assert out.claimed == KEYS[1:] and list(out.held) == KEYS[:1]
        assert f"pid {sleeper.pid} on {host}" in out.held[KEYS[0]]
        assert st.claim(KEYS[1:]).claimed == KEYS[1:]  # its own claims stay its own
    assert _claims(path) == 1  # closing ended this store's claims, not the other process's
    sleeper.kill()
    sleeper.wait()
    with ResultStore(path) as st:
        assert st.claim(KEYS).claimed == KEYS  # the holder is gone: taken over
        con = st._con
        assert con.execute("SELECT COUNT(*) FROM claimants").fetchone()[0] == 1  # the dead one removed


def test_a_reused_pid_does_not_keep_a_claim(tmp_path, sleeper):
    path = tmp_path / "c.sqlite"
    ResultStore(path).close()
    if not store_mod._process_start(sleeper.pid):
        pytest.skip("process start times are read from /proc (Linux)")
    _hold(path, KEYS, host=socket.gethostname(), pid=sleeper.pid, process_start="1")  # another start
    with ResultStore(path) as st:
        assert st.claim(KEYS).claimed == KEYS


def test_claims_of_other_hosts_expire_after_the_ttl(tmp_path):
    path = tmp_path / "c.sqlite"
    ResultStore(path).close()
    _hold(path, KEYS[:1], host="elsewhere", pid=1)
    _hold(path, KEYS[1:2], host="gone-host", pid=1, heartbeat=time.time() - FOREIGN_CLAIM_TTL - 60)
    with ResultStore(path) as st:
        out = st.claim(KEYS)
        assert list(out.held) == KEYS[:1] and "on elsewhere" in out.held[KEYS[0]]
        assert out.claimed == KEYS[1:]


def test_a_claim_ends_when_its_run_is_stored_and_stored_runs_are_not_claimed(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResultStore(path) as st:
        assert st.claim(KEYS).claimed == KEYS
        st.add_run(RunRecord("s", "p", "m", {"lr": 0.1}, 0, "done", {}, 0.1))
        assert _claims(path) == 2
        with ResultStore(path) as other:  # a second store of this process takes claims over...
            out = other.claim(KEYS)
            assert out.stored == KEYS[:1] and out.claimed == KEYS[1:]  # ...but never a stored run
        st.release_claims()
        assert _claims(path) == 0


TINY_NN = tiny_suite()


def test_the_nn_suite_leaves_held_runs_to_their_holder(tmp_path, sleeper):
    """Another live process holds one tuning run of momentum and one evaluation run of L-BFGS: this
    invocation runs the rest, does not tune momentum (its grid is incomplete) and says who holds what."""
    path = tmp_path / "nn.sqlite"
    pairs, _ = nn_suite.plan(TINY_NN)
    momentum, lbfgs = pairs
    tuning_cfg = canonical_json(
        nn_suite.run_config(momentum.problem, momentum.method.config({"lr": 0.01}), momentum.budget, 1, 1000)
    )
    lbfgs_cfg = canonical_json(
        nn_suite.run_config(lbfgs.problem, lbfgs.method.config(), lbfgs.budget, 1, 1000)
    )
    ResultStore(path).close()
    held = [
        ("nn-test-tuning", "quadratic_deep", "momentum", tuning_cfg, 100),
        ("nn-test", "quadratic_deep", "lbfgs", lbfgs_cfg, 1),
    ]
    _hold(
        path,
        held,
        host=socket.gethostname(),
        pid=sleeper.pid,
        process_start=store_mod._process_start(sleeper.pid),
    )
    with ResultStore(path) as st:
        out = nn_suite.run_suite(st, TINY_NN, progress=False)
        assert (out.planned, out.held, out.executed, out.tuned) == (8, 2, 4, 0)
        assert out.holders == [
            f"pid {sleeper.pid} on {socket.gethostname()}, since 2026-01-01T00:00:00+00:00"
        ]
        assert not any("tuning incomplete" in n for n in out.notes)
        assert {(r.method, r.seed) for r in st.runs("nn-test")} == {("lbfgs", 0)}
    assert _claims(path) == 2  # this invocation's claims ended with it; the holder's remain


def test_the_functions_suite_leaves_held_runs_and_tunings_to_their_holder(tmp_path, sleeper):
    path = tmp_path / "f.sqlite"
    protocol = fp.Protocol(starts=3, steps=5, tune_starts=1)
    (fn,) = fp.resolve_functions(["sphere"])
    adam, bfgs = fs.resolve_methods(["adam", "bfgs"])
    context = canonical_json(fs._tuning_context(fn, adam, protocol))
    bfgs_cfg = canonical_json(fs.run_config(fn, bfgs, bfgs.config(), protocol))
    ResultStore(path).close()
    held = [
        ("functions-tuning", fp.problem_id(fn), "adam", context, 0),
        ("functions", fp.problem_id(fn), "bfgs", bfgs_cfg, 43),
    ]
    _hold(
        path,
        held,
        host=socket.gethostname(),
        pid=sleeper.pid,
        process_start=store_mod._process_start(sleeper.pid),
    )
    with ResultStore(path) as st:
        out = fs.run_suite(
            st, functions=["sphere"], methods=["adam", "bfgs"], protocol=protocol, progress=False
        )
        assert (out.planned, out.held, out.executed, out.tuned) == (
            6,
            4,
            2,
            0,
        )  # adam's 3 wait for its tuning
        assert {(r.method, r.seed) for r in st.runs()} == {("bfgs", 42), ("bfgs", 44)}
