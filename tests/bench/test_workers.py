"""Worker pools (hessopt.bench.harness.workers): workers die with their parent, even after kill -9, and are
killed at once when the pool's block raises. Linux (/proc) only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import alive, children, process_state, wait_for
from hessopt.bench.harness.workers import process_pool

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads processes from /proc")


_POOL_THEN_HANG = """
import os, sys, time
from hessopt.bench.harness.workers import process_pool
with process_pool(2, sys.argv[1]) as pool:
    pids = set()
    while len(pids) < 2:  # until both workers have started (and run their initializer)
        pids |= {f.result() for f in [pool.submit(os.getpid) for _ in range(20)]}
    for _ in range(2):
        pool.submit(time.sleep, 300)
    print(*pids, flush=True)
    time.sleep(300)
"""


@pytest.mark.parametrize("start_method", ["spawn"])
def test_workers_die_when_their_parent_is_killed(start_method):
    """spawn: the lattice study's pool (the suites' forked pool is checked through the CLI in
    tests/test_cli.py). Before the fix the workers re-parented to PID 1 and ran their tasks on."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen(
        [sys.executable, "-c", _POOL_THEN_HANG, start_method], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(alive(p) for p in workers)
        assert set(workers) <= set(children(parent.pid))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert wait_for(lambda: not any(alive(p) for p in workers), 5), [
            (p, process_state(p)) for p in workers if alive(p)
        ]
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()


def test_workers_are_killed_when_the_block_raises():
    """An exception (Ctrl-C, SIGTERM in the CLI) leaves the block at once; the workers' running tasks
    are not waited for."""
    others = set(children(os.getpid()))  # e.g. multiprocessing's resource tracker, started earlier
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="stop"), process_pool(2, "fork") as pool:
        pool.submit(time.sleep, 300)
        pool.submit(time.sleep, 300)
        assert wait_for(lambda: len(set(children(os.getpid())) - others) >= 2, 30)
        workers = set(children(os.getpid())) - others
        raise RuntimeError("stop")
    assert time.monotonic() - t0 < 20
    assert wait_for(lambda: not any(alive(p) for p in workers), 5)
