"""SQLite results store shared by every benchmark suite (test functions now, neural networks later).

A *run* is one (suite, problem, method, configuration, seed): its identity is the 5-tuple with the
configuration canonicalised to JSON text (:func:`canonical_json`: sorted keys, no spaces), and the
table has a UNIQUE constraint on it. A run row holds its status (``done``, ``diverged`` or
``failed``), a JSON summary (whatever the suite measures: best values at budgets, evaluation counts,
...), its wall time and where and when it ran (UTC time, host name, torch version). Curves go to the
``metrics`` table as (run_id, step, name, value) rows. Two more tables keep what a report needs
besides runs: ``tuning`` (the step sizes chosen per problem and method, with every trial) and
``invocations`` (the command lines that wrote into the store, with their environment).

Durability and concurrency:

* every run is written in its own ``BEGIN IMMEDIATE`` transaction when it ends, so an interrupted
  suite loses at most the runs in flight, and a re-run skips what is stored (:meth:`ResultStore.done_keys`);
* the file is in WAL journal mode with a ``busy_timeout``, so several processes may write one file
  (writers queue on SQLite's lock instead of failing or corrupting it);
* a ``failed`` run (an exception, not a divergence) is retried by a later suite: storing a
  ``done``/``diverged`` result for the same key replaces it. Otherwise the first stored result wins
  and a second write of the same key is ignored, which is also how :func:`merge` deduplicates shards.

``synchronous=NORMAL`` (the usual WAL setting): a crashed or killed process loses nothing that was
committed; an operating-system crash or power loss may lose the last transactions, never consistency.

Cost: one small transaction per run (well under a millisecond for a run with ~20 metric rows); reads
for a report are a few SELECTs over the whole file.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hessopt.bench.harness.environment import environment, torch_version

__all__ = [
    "STATUSES",
    "RunRecord",
    "StoredRun",
    "ResultStore",
    "canonical_json",
    "merge",
]

STATUSES = ("done", "diverged", "failed")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id            INTEGER PRIMARY KEY,
    suite         TEXT NOT NULL,
    problem       TEXT NOT NULL,
    method        TEXT NOT NULL,
    config        TEXT NOT NULL,
    seed          INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('done', 'diverged', 'failed')),
    summary       TEXT NOT NULL,
    wall_time     REAL NOT NULL,
    error         TEXT,
    created_at    TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    torch_version TEXT NOT NULL,
    UNIQUE (suite, problem, method, config, seed)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step   INTEGER NOT NULL,
    name   TEXT NOT NULL,
    value  REAL,
    PRIMARY KEY (run_id, name, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tuning (
    id            INTEGER PRIMARY KEY,
    suite         TEXT NOT NULL,
    problem       TEXT NOT NULL,
    method        TEXT NOT NULL,
    context       TEXT NOT NULL,
    chosen        TEXT NOT NULL,
    objective     REAL,
    trials        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    torch_version TEXT NOT NULL,
    UNIQUE (suite, problem, method, context)
);
CREATE TABLE IF NOT EXISTS invocations (
    id          INTEGER PRIMARY KEY,
    suite       TEXT NOT NULL,
    command     TEXT NOT NULL,
    environment TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    UNIQUE (suite, command, started_at)
);
CREATE INDEX IF NOT EXISTS runs_by_suite ON runs (suite, problem, method);
"""


def canonical_json(value: Any) -> str:
    """JSON text that is equal for equal values: keys sorted, no whitespace, NaN/Inf refused.

    Python floats are written with ``repr`` (shortest round-trip form), so equal floats give equal
    text. Ints and floats stay distinct (``1`` vs ``1.0``): configuration builders must use one type
    per field.
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"configuration must not contain NaN or Inf: {value!r}") from exc
    except TypeError as exc:
        raise TypeError(
            f"configuration must be JSON-serialisable (dict/list/str/int/float/bool): {exc}"
        ) from exc


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """One finished run, as handed to :meth:`ResultStore.add_run`.

    ``created_at``, ``hostname`` and ``torch_version`` default to now / this machine; :func:`merge`
    passes the originals through.
    """

    suite: str
    problem: str
    method: str
    config: Mapping[str, Any]
    seed: int
    status: str
    summary: Mapping[str, Any]
    wall_time: float
    error: str | None = None
    metrics: list[tuple[int, str, float]] = field(default_factory=list)
    created_at: str | None = None
    hostname: str | None = None
    torch_version: str | None = None

    def key(self) -> tuple[str, str, str, str, int]:
        """The run's identity: (suite, problem, method, canonical config JSON, seed)."""
        return (self.suite, self.problem, self.method, canonical_json(dict(self.config)), int(self.seed))


@dataclass(frozen=True)
class StoredRun:
    """A run as read back from the store (``config`` and ``summary`` decoded from JSON)."""

    id: int
    suite: str
    problem: str
    method: str
    config: dict[str, Any]
    seed: int
    status: str
    summary: dict[str, Any]
    wall_time: float
    error: str | None
    created_at: str
    hostname: str
    torch_version: str


def _check_record(rec: RunRecord) -> None:
    if rec.status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {rec.status!r}")
    for name in ("suite", "problem", "method"):
        value = getattr(rec, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if not math.isfinite(rec.wall_time) or rec.wall_time < 0:
        raise ValueError(f"wall_time must be a finite number >= 0, got {rec.wall_time!r}")


class ResultStore:
    """Connection to one SQLite results file (created with its schema when missing).

    Open one store per process (sqlite3 connections must not cross a fork). ``timeout`` is the
    ``busy_timeout`` in seconds: how long a writer waits for another process's transaction.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; every write below opens its own BEGIN IMMEDIATE.
        self._con = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        self._con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        mode = self._con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(
                f"could not put {self.path} in WAL mode (got {mode!r}); is it on a network drive?"
            )
        self._con.execute("PRAGMA synchronous = NORMAL")
        version = self._con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this hessopt's {SCHEMA_VERSION}; "
                "upgrade hessopt to read it"
            )
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._con.execute(statement)
            self._con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- plumbing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` (take the write lock now, waiting up to ``timeout``) ... ``COMMIT``."""
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection."""
        self._con.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _host_torch(self) -> tuple[str, str]:
        return socket.gethostname(), torch_version()

    # -- runs -------------------------------------------------------------------------------------
    def add_run(self, rec: RunRecord) -> bool:
        """Store one run and its metric rows in one transaction.

        Returns True if it was written; False if the key is already stored with a status other than
        ``failed`` (first result wins), or if ``rec`` is ``failed`` and any result is stored.
        A ``done``/``diverged`` record replaces a stored ``failed`` one.
        """
        _check_record(rec)
        suite, problem, method, config, seed = rec.key()
        host, torch_version = self._host_torch()
        with self._transaction() as con:
            row = con.execute(
                "SELECT id, status FROM runs"
                " WHERE suite=? AND problem=? AND method=? AND config=? AND seed=?",
                (suite, problem, method, config, seed),
            ).fetchone()
            if row is not None:
                if row[1] != "failed" or rec.status == "failed":
                    return False
                con.execute("DELETE FROM metrics WHERE run_id=?", (row[0],))
                con.execute("DELETE FROM runs WHERE id=?", (row[0],))
            cur = con.execute(
                "INSERT INTO runs (suite, problem, method, config, seed, status, summary, wall_time, error,"
                " created_at, hostname, torch_version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    suite,
                    problem,
                    method,
                    config,
                    seed,
                    rec.status,
                    json.dumps(dict(rec.summary), sort_keys=True),
                    float(rec.wall_time),
                    rec.error,
                    rec.created_at or _now(),
                    rec.hostname or host,
                    rec.torch_version or torch_version,
                ),
            )
            run_id = cur.lastrowid
            if rec.metrics:
                con.executemany(
                    "INSERT INTO metrics (run_id, step, name, value) VALUES (?,?,?,?)",
                    ((run_id, int(s), str(n), float(v)) for s, n, v in rec.metrics),
                )
        return True

    def done_keys(self, suite: str, *, include_failed: bool = False) -> set[tuple[str, str, str, int]]:
        """Identities (problem, method, canonical config, seed) stored for ``suite``.

        By default ``failed`` runs are left out, so a resumed suite retries them.
        """
        sql = "SELECT problem, method, config, seed FROM runs WHERE suite=?"
        if not include_failed:
            sql += " AND status != 'failed'"
        return {tuple(r) for r in self._con.execute(sql, (suite,))}  # type: ignore[misc]

    def runs(
        self,
        suite: str | None = None,
        *,
        problem: str | None = None,
        method: str | None = None,
        status: str | None = None,
    ) -> list[StoredRun]:
        """Stored runs matching every given filter, in insertion order."""
        clauses, args = [], []
        for name, value in (("suite", suite), ("problem", problem), ("method", method), ("status", status)):
            if value is not None:
                clauses.append(f"{name}=?")
                args.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._con.execute(
            "SELECT id, suite, problem, method, config, seed, status, summary, wall_time, error, created_at,"
            f" hostname, torch_version FROM runs{where} ORDER BY id",
            args,
        ).fetchall()
        return [
            StoredRun(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], json.loads(r[7]), *r[8:])
            for r in rows
        ]

    def suites(self) -> list[str]:
        """The suite names that have runs in this store, sorted."""
        return [r[0] for r in self._con.execute("SELECT DISTINCT suite FROM runs ORDER BY suite")]

    def count(self, suite: str | None = None) -> int:
        """Number of stored runs, of one suite or of all."""
        if suite is None:
            return self._con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        return self._con.execute("SELECT COUNT(*) FROM runs WHERE suite=?", (suite,)).fetchone()[0]

    def metrics(self, run_ids: Iterable[int], name: str) -> dict[int, list[tuple[int, float]]]:
        """Curves ``{run_id: [(step, value), ...]}`` (steps ascending) of metric ``name``."""
        ids = list(run_ids)
        out: dict[int, list[tuple[int, float]]] = {i: [] for i in ids}
        for chunk_start in range(0, len(ids), 500):
            chunk = ids[chunk_start : chunk_start + 500]
            marks = ",".join("?" * len(chunk))
            for run_id, step, value in self._con.execute(
                f"SELECT run_id, step, value FROM metrics WHERE name=? AND run_id IN ({marks})"
                " ORDER BY run_id, step",
                [name, *chunk],
            ):
                out[run_id].append((step, value))
        return out

    def _metric_rows(self, run_id: int) -> list[tuple[int, str, float]]:
        return [
            (s, n, v)
            for s, n, v in self._con.execute(
                "SELECT step, name, value FROM metrics WHERE run_id=? ORDER BY name, step", (run_id,)
            )
        ]

    # -- tuning -----------------------------------------------------------------------------------
    def put_tuning(
        self,
        suite: str,
        problem: str,
        method: str,
        context: Mapping[str, Any],
        chosen: Mapping[str, Any],
        objective: float,
        trials: list[Mapping[str, Any]],
        *,
        created_at: str | None = None,
        hostname: str | None = None,
        torch_version: str | None = None,
    ) -> bool:
        """Store the outcome of tuning ``method`` on ``problem`` (first write of a context wins)."""
        host, tv = self._host_torch()
        with self._transaction() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO tuning (suite, problem, method, context, chosen, objective, trials,"
                " created_at, hostname, torch_version) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    suite,
                    problem,
                    method,
                    canonical_json(dict(context)),
                    canonical_json(dict(chosen)),
                    float(objective) if objective is not None else None,
                    json.dumps([dict(t) for t in trials]),
                    created_at or _now(),
                    hostname or host,
                    torch_version or tv,
                ),
            )
            return cur.rowcount == 1

    def get_tuning(
        self, suite: str, problem: str, method: str, context: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The chosen hyper-parameters stored for this tuning context, or None."""
        row = self._con.execute(
            "SELECT chosen FROM tuning WHERE suite=? AND problem=? AND method=? AND context=?",
            (suite, problem, method, canonical_json(dict(context))),
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def tunings(self, suite: str | None = None) -> list[dict[str, Any]]:
        """Every tuning outcome (optionally of one suite), decoded."""
        sql = (
            "SELECT suite, problem, method, context, chosen, objective, trials, created_at, hostname,"
            " torch_version FROM tuning"
        )
        args: list[Any] = []
        if suite is not None:
            sql += " WHERE suite=?"
            args.append(suite)
        keys = (
            "suite",
            "problem",
            "method",
            "context",
            "chosen",
            "objective",
            "trials",
            "created_at",
            "hostname",
            "torch_version",
        )
        out = []
        for row in self._con.execute(sql + " ORDER BY id", args):
            d = dict(zip(keys, row, strict=True))
            for k in ("context", "chosen", "trials"):
                d[k] = json.loads(d[k])
            out.append(d)
        return out

    # -- invocations ------------------------------------------------------------------------------
    def record_invocation(
        self,
        suite: str,
        command: str,
        env: Mapping[str, Any] | None = None,
        started_at: str | None = None,
    ) -> None:
        """Remember that ``command`` wrote into this store (with its environment, for the report)."""
        with self._transaction() as con:
            con.execute(
                "INSERT OR IGNORE INTO invocations (suite, command, environment, started_at)"
                " VALUES (?,?,?,?)",
                (
                    suite,
                    command,
                    json.dumps(dict(env if env is not None else environment()), sort_keys=True),
                    started_at or _now(),
                ),
            )

    def invocations(self, suite: str | None = None) -> list[dict[str, Any]]:
        """The command lines that wrote into this store, of one suite or of all."""
        sql = "SELECT suite, command, environment, started_at FROM invocations"
        args: list[Any] = []
        if suite is not None:
            sql += " WHERE suite=?"
            args.append(suite)
        return [
            {"suite": s, "command": c, "environment": json.loads(e), "started_at": t}
            for s, c, e, t in self._con.execute(sql + " ORDER BY started_at, id", args)
        ]

    # -- export (used by merge) -------------------------------------------------------------------
    def iter_records(self) -> Iterator[RunRecord]:
        """Every stored run as a :class:`RunRecord` with its metric rows and provenance."""
        for r in self.runs():
            yield RunRecord(
                suite=r.suite,
                problem=r.problem,
                method=r.method,
                config=r.config,
                seed=r.seed,
                status=r.status,
                summary=r.summary,
                wall_time=r.wall_time,
                error=r.error,
                metrics=self._metric_rows(r.id),
                created_at=r.created_at,
                hostname=r.hostname,
                torch_version=r.torch_version,
            )


def merge(dst: str | os.PathLike[str], *srcs: str | os.PathLike[str]) -> int:
    """Copy every run, tuning outcome and invocation of ``srcs`` into ``dst`` (created if missing).

    Deduplicated by run identity: a run already in ``dst`` is kept (unless it is ``failed`` and the
    source has a finished result), so merging shards of one suite, or merging twice, is safe.
    Returns the number of runs written into ``dst``.
    """
    if not srcs:
        raise ValueError("merge() needs at least one source store")
    dst_path = Path(dst).resolve()
    for src in srcs:
        if not Path(src).is_file():
            raise ValueError(f"source store {src} does not exist")
        if Path(src).resolve() == dst_path:
            raise ValueError(f"source {src} is the destination itself; list it once, as DST")
    written = 0
    with ResultStore(dst) as out:
        for src in srcs:
            with ResultStore(src) as inp:
                for rec in inp.iter_records():
                    written += out.add_run(rec)
                for t in inp.tunings():
                    out.put_tuning(
                        t["suite"],
                        t["problem"],
                        t["method"],
                        t["context"],
                        t["chosen"],
                        t["objective"],
                        t["trials"],
                        created_at=t["created_at"],
                        hostname=t["hostname"],
                        torch_version=t["torch_version"],
                    )
                for inv in inp.invocations():
                    out.record_invocation(inv["suite"], inv["command"], inv["environment"], inv["started_at"])
    return written
