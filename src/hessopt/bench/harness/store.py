"""SQLite results store shared by every benchmark suite (test functions, neural networks).

A *run* is one (suite, problem, method, configuration, seed): its identity is the 5-tuple with the
configuration canonicalised to JSON text (:func:`canonical_json`: sorted keys, no spaces), and the
table has a UNIQUE constraint on it. A run row holds its status (``done``, ``diverged`` or
``failed``), a JSON summary (whatever the suite measures: best values at budgets, evaluation counts,
...), its wall time and where and when it ran (UTC time, host name, torch version). Curves go to the
``metrics`` table as (run_id, step, name, value) rows. More tables keep what a report needs besides
runs: ``tuning`` (the step sizes chosen per problem and method, with every trial), ``invocations``
(the command lines that wrote into the store, with their environment) and ``notes`` (problems and
methods a suite left out, and why, so that the report can repeat them). ``claims`` and ``claimants``
hold the runs a live process is computing (see Concurrency).

Opening a store (:class:`ResultStore`):

* a path that does not exist becomes a new store; an existing path must be a hessopt store: a
  directory, a device, an empty or non-SQLite file, an SQLite file without the ``runs`` table or
  with another ``user_version`` are refused with :class:`StoreError`, *before* anything is written;
* ``PRAGMA quick_check`` runs on every open, so a damaged file is refused at once (not at the first
  write, after hours of computing);
* ``readonly=True`` (``hessopt report``, the sources of ``hessopt merge``) never writes: not into the
  file and not beside it. A store without a ``-wal`` file (no writer has it open) is read as
  ``immutable``; one with a ``-wal`` (a writer is running, or one was killed) is read through that
  log with ``mode=ro``;
* stores of an older schema version are read as they are and upgraded when opened for writing.

Durability and concurrency:

* every run is written in its own ``BEGIN IMMEDIATE`` transaction when it ends, so an interrupted
  suite loses at most the runs in flight, and a re-run skips what is stored (:meth:`ResultStore.done_keys`);
* the file is in WAL journal mode with a ``busy_timeout``, so several processes may write one file
  (writers queue on SQLite's lock instead of failing or corrupting it);
* a process *claims* the runs it is about to compute (:meth:`ResultStore.claim`); a second process
  running the same command skips runs claimed by a live process on this host, or by a process on
  another host that stored a run within :data:`FOREIGN_CLAIM_TTL` seconds, and takes over claims of
  processes that are gone. A claim ends when its run is stored, and all of a process's claims when it
  closes the store;
* a ``failed`` run (an exception, not a divergence) is retried by a later suite: storing a
  ``done``/``diverged`` result for the same key replaces it. Otherwise the first stored result wins
  and a second write of the same key is ignored, which is also how :func:`merge` deduplicates shards.

``synchronous=NORMAL`` (the usual WAL setting): a crashed or killed process loses nothing that was
committed; an operating-system crash or power loss may lose the last transactions, never consistency.

Cost: one small transaction per run (well under a millisecond for a run with ~20 metric rows); reads
for a report are a few SELECTs over the whole file; the check on open reads the file once.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import socket
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hessopt.bench.harness.environment import environment, torch_version

__all__ = [
    "FOREIGN_CLAIM_TTL",
    "SCHEMA_VERSION",
    "STATUSES",
    "ClaimOutcome",
    "RunKey",
    "RunRecord",
    "StoredRun",
    "ResultStore",
    "StoreError",
    "canonical_json",
    "merge",
    "same_file",
]

STATUSES = ("done", "diverged", "failed")
SCHEMA_VERSION = 2
"""1: runs, metrics, tuning, invocations. 2: + notes, claims, claimants (version-1 stores are upgraded
when opened for writing, and read as they are)."""

FOREIGN_CLAIM_TTL = 6 * 3600.0
"""Seconds after which a claim of a process on another host is taken over, counted from the last time
that process stored a run (its liveness cannot be checked from here)."""

RunKey = tuple[str, str, str, str, int]
"""A run's identity: (suite, problem, method, canonical configuration JSON, seed)."""

_SQLITE_HEADER = b"SQLite format 3\x00"

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
CREATE TABLE IF NOT EXISTS notes (
    id         INTEGER PRIMARY KEY,
    suite      TEXT NOT NULL,
    problem    TEXT NOT NULL DEFAULT '',
    method     TEXT NOT NULL DEFAULT '',
    message    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    hostname   TEXT NOT NULL,
    UNIQUE (suite, problem, method, message)
);
CREATE TABLE IF NOT EXISTS claimants (
    token         TEXT PRIMARY KEY,
    hostname      TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    process_start TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    suite   TEXT NOT NULL,
    problem TEXT NOT NULL,
    method  TEXT NOT NULL,
    config  TEXT NOT NULL,
    seed    INTEGER NOT NULL,
    token   TEXT NOT NULL,
    PRIMARY KEY (suite, problem, method, config, seed)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_by_token ON claims (token);
"""


class StoreError(ValueError):
    """A results store that cannot be used as asked; the message names the file, the problem and the fix.

    Raised for paths that are not hessopt stores (directories, devices, empty, text or unrelated
    SQLite files), damaged or newer stores, read-only files opened for writing, and merges of a store
    into itself. ``hessopt`` prints it as one line.
    """


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (hard links and symbolic links too); False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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


_TABLES = ("runs", "metrics", "tuning", "invocations", "notes", "claimants", "claims")


def _check_path(path: Path, readonly: bool) -> None:
    """Refuse what cannot be a results store, touching nothing (creates a missing folder for writing)."""
    if not path.exists():
        if readonly:
            raise StoreError(
                f"no results store at {path}; run `hessopt bench functions` or `hessopt bench nn` first, "
                "or pass another --store"
            )
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise StoreError(f"cannot create {path}: {parent} is a file, not a folder")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder {parent} of {path}: {exc.strerror or exc}") from exc
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StoreError(f"cannot create {path}: its folder {parent} is not writable")
        return
    if path.is_dir():
        raise StoreError(
            f"{path} is a folder, not a results store; pass a file such as {path / 'results.sqlite'}"
        )
    if not path.is_file():
        raise StoreError(f"{path} is not a regular file (a device or a pipe?); pass a .sqlite file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head and head != _SQLITE_HEADER:
        raise StoreError(f"{path} is not a hessopt results store (not an SQLite file); pass another path")
    if readonly:
        if not head:
            raise StoreError(
                f"{path} is an empty file, not a hessopt results store; delete it or pass another path"
            )
        return
    # for writing, an empty file counts as new: nothing in it to lose (SQLite creates a file empty)
    if not os.access(path, os.W_OK):
        raise StoreError(
            f"{path} is read-only; make it writable (chmod u+w) or pass another --store "
            "(`hessopt report` and `hessopt merge` read stores without writing)"
        )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreError(
            f"the folder of {path} is read-only; a store being written needs it (SQLite keeps "
            f"{path.name}-wal beside it): make it writable or copy the store elsewhere"
        )


def _process_start(pid: int) -> str:
    """When process ``pid`` started (Linux: clock ticks since boot), to tell a reused pid apart; else ''."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, process_start: str) -> bool:
    """Whether process ``pid`` of this host still runs (and is the one that started at ``process_start``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    except OSError:
        return False
    return not process_start or _process_start(pid) in ("", process_start)


@dataclass
class ClaimOutcome:
    """What :meth:`ResultStore.claim` did with each key.

    Attributes:
        claimed: keys this store now holds (new, already its own, or taken over from a process that is
            gone); compute these.
        held: keys a live process holds, with a description of it (host, pid, since when); skip these.
        stored: keys whose run was stored in the meantime (by another process); skip these.
    """

    claimed: list[RunKey] = field(default_factory=list)
    held: dict[RunKey, str] = field(default_factory=dict)
    stored: list[RunKey] = field(default_factory=list)


class ResultStore:
    """Connection to one SQLite results file (created with its schema when missing).

    Open one store per process (sqlite3 connections must not cross a fork). Use as a context manager
    or call :meth:`close`.

    Args:
        path: the store's file. For writing, a missing file (and its folder) is created; an existing
            one must be a hessopt store.
        timeout: the ``busy_timeout`` in seconds: how long a writer waits for another process's
            transaction.
        readonly: open without writing anything, into the file or beside it (reports, merge sources);
            the file must exist.

    Raises:
        StoreError: the path is not a usable hessopt store (see the module docstring), or is read-only
            and ``readonly`` is False.
        ValueError: ``timeout`` is not positive.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 60.0, readonly: bool = False
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.path = Path(path)
        self.readonly = bool(readonly)
        self._token = uuid.uuid4().hex
        self._claimant = False
        _check_path(self.path, self.readonly)
        try:
            self._con = self._connect(timeout)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path} as a results store: {exc}") from exc
        try:
            self._prepare(timeout)
        except BaseException:
            self._con.close()
            raise

    def _connect(self, timeout: float) -> sqlite3.Connection:
        """The connection: read-write (autocommit; writes open their own transactions) or read-only."""
        if not self.readonly:
            return sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        # no -wal beside the file: no writer has it open and everything is in the file, so read it as
        # immutable (SQLite then creates no -wal/-shm files); else read through the log, read-only
        query = "mode=ro" if Path(f"{self.path}-wal").exists() else "mode=ro&immutable=1"
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?{query}"
        return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)

    def _prepare(self, timeout: float) -> None:
        """Check what the file is (before any write), then set WAL mode and create or upgrade the schema."""
        try:
            tables = {r[0] for r in self._con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = self._con.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a readable hessopt results store ({exc}); pass another path"
            ) from exc
        if not tables and not version:  # an empty database: a store being created, or nothing
            if self.readonly:
                raise StoreError(f"{self.path} holds no results (an empty database); pass another path")
        else:
            if "runs" not in tables or version < 1:
                listed = ", ".join(sorted(tables)) or "none"
                raise StoreError(
                    f"{self.path} is an SQLite file but not a hessopt results store (tables: {listed}); "
                    "pass another path"
                )
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this hessopt's "
                    f"{SCHEMA_VERSION}; upgrade hessopt to read it"
                )
            try:
                check = self._con.execute("PRAGMA quick_check(1)").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                check = str(exc)
            if check != "ok":
                raise StoreError(
                    f"{self.path} is damaged (SQLite's integrity check: {check.splitlines()[-1].strip()}); "
                    "move it aside and re-run to compute its runs again, or restore a copy"
                )
        self._tables = tables
        if self.readonly:
            return
        try:
            self._con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = self._con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"could not put {self.path} in WAL mode (got {mode!r}); is it on a network drive?"
                )
            self._con.execute("PRAGMA synchronous = NORMAL")
            if version < SCHEMA_VERSION:
                with self._transaction():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._con.execute(statement)
                    self._con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise StoreError(
                    f"{self.path} is read-only ({exc}); make it and its folder writable, or pass another "
                    "--store (`hessopt report` and `hessopt merge` read stores without writing)"
                ) from exc
            raise
        self._tables = set(_TABLES)

    # -- plumbing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` (take the write lock now, waiting up to ``timeout``) ... ``COMMIT``."""
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only; open it with readonly=False to write")
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def close(self) -> None:
        """Release this store's claims (if any) and close the database connection."""
        try:
            if self._claimant:
                self.release_claims()
        finally:
            self._con.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _host_torch(self) -> tuple[str, str]:
        return socket.gethostname(), torch_version()

    # -- runs -------------------------------------------------------------------------------------
    def add_run(self, rec: RunRecord) -> bool:
        """Store one run and its metric rows in one transaction, and end any claim on its key.

        Returns True if it was written; False if the key is already stored with a status other than
        ``failed`` (first result wins), or if ``rec`` is ``failed`` and any result is stored.
        A ``done``/``diverged`` record replaces a stored ``failed`` one.
        """
        _check_record(rec)
        with self._transaction() as con:
            written = self._write_run(con, rec)
            con.execute(
                "DELETE FROM claims WHERE suite=? AND problem=? AND method=? AND config=? AND seed=?",
                rec.key(),
            )
            if self._claimant:
                con.execute("UPDATE claimants SET heartbeat=? WHERE token=?", (time.time(), self._token))
        return written

    def _write_run(self, con: sqlite3.Connection, rec: RunRecord) -> bool:
        """The body of :meth:`add_run`, inside the caller's transaction."""
        suite, problem, method, config, seed = rec.key()
        host, torch_version = self._host_torch()
        row = con.execute(
            "SELECT id, status FROM runs WHERE suite=? AND problem=? AND method=? AND config=? AND seed=?",
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
        if rec.metrics:
            con.executemany(
                "INSERT INTO metrics (run_id, step, name, value) VALUES (?,?,?,?)",
                ((cur.lastrowid, int(s), str(n), float(v)) for s, n, v in rec.metrics),
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
        row = (
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
        )
        with self._transaction() as con:
            return _insert_tuning(con, row)

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
        row = (
            suite,
            command,
            json.dumps(dict(env if env is not None else environment()), sort_keys=True),
            started_at or _now(),
        )
        with self._transaction() as con:
            _insert_invocation(con, row)

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

    # -- notes ----------------------------------------------------------------------------------
    def add_note(self, suite: str, message: str, *, problem: str = "", method: str = "") -> None:
        """Record that ``suite`` left something out (a problem, a method, a pair) and why, for the report.

        ``problem``/``method`` name what was left out ("" for any); a note already stored is kept once.
        """
        with self._transaction() as con:
            _insert_note(con, (suite, problem, method, message, _now(), socket.gethostname()))

    def notes(self, suite: str | None = None) -> list[dict[str, Any]]:
        """The recorded notes (of one suite or of all), oldest first; [] for a store older than notes."""
        if "notes" not in self._tables:
            return []
        sql = "SELECT suite, problem, method, message, created_at, hostname FROM notes"
        args: list[Any] = []
        if suite is not None:
            sql += " WHERE suite=?"
            args.append(suite)
        keys = ("suite", "problem", "method", "message", "created_at", "hostname")
        return [dict(zip(keys, row, strict=True)) for row in self._con.execute(sql + " ORDER BY id", args)]

    # -- claims -----------------------------------------------------------------------------------
    def claim(self, keys: Iterable[RunKey]) -> ClaimOutcome:
        """Claim the runs of ``keys`` for this process before computing them (one transaction).

        A key is claimed unless its run is stored (not ``failed``) or a live process holds it: a
        process of this host that still runs, or one of another host whose last sign of life (its
        claim, or a run it stored) is less than :data:`FOREIGN_CLAIM_TTL` seconds old. The claims of
        processes that are gone, and of earlier stores of this very process, are taken over.

        Args:
            keys: run identities (suite, problem, method, canonical configuration JSON, seed).

        Returns:
            Which keys are claimed now, held by another process, or already stored.
        """
        out = ClaimOutcome()
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        verdicts: dict[str, str | None] = {self._token: None}  # token -> holder text, None = take over
        with self._transaction() as con:
            con.execute(
                "INSERT INTO claimants (token, hostname, pid, process_start, started_at, heartbeat)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (token) DO UPDATE SET heartbeat=excluded.heartbeat",
                (self._token, host, pid, _process_start(pid), _now(), now),
            )
            self._claimant = True
            for key in keys:
                key = (key[0], key[1], key[2], key[3], int(key[4]))
                stored = con.execute(
                    "SELECT 1 FROM runs WHERE suite=? AND problem=? AND method=? AND config=? AND seed=?"
                    " AND status != 'failed'",
                    key,
                ).fetchone()
                if stored:
                    out.stored.append(key)
                    continue
                row = con.execute(
                    "SELECT token FROM claims"
                    " WHERE suite=? AND problem=? AND method=? AND config=? AND seed=?",
                    key,
                ).fetchone()
                if row is not None:
                    token = row[0]
                    if token not in verdicts:
                        verdicts[token] = _holder(con, token, host, pid, now)
                    if verdicts[token] is not None:
                        out.held[key] = str(verdicts[token])
                        continue
                con.execute(
                    "INSERT OR REPLACE INTO claims (suite, problem, method, config, seed, token)"
                    " VALUES (?,?,?,?,?,?)",
                    (*key, self._token),
                )
                out.claimed.append(key)
            gone = [t for t, holder in verdicts.items() if holder is None and t != self._token]
            con.executemany("DELETE FROM claimants WHERE token=?", [(t,) for t in gone])
        return out

    def release_claims(self) -> None:
        """End every claim of this store (runs claimed but not stored become free for others)."""
        if self.readonly or not self._claimant:
            return
        with self._transaction() as con:
            con.execute("DELETE FROM claims WHERE token=?", (self._token,))
            con.execute("DELETE FROM claimants WHERE token=?", (self._token,))
        self._claimant = False

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

    def add_store(self, other: ResultStore) -> int:
        """Copy every run, tuning outcome, invocation and note of ``other`` into this store.

        One transaction; deduplicated by identity exactly as :meth:`add_run` and :meth:`put_tuning`
        do, so copying a store twice changes nothing. Claims are not copied.

        Returns:
            The number of runs written.
        """
        written = 0
        with self._transaction() as con:
            for rec in other.iter_records():
                _check_record(rec)
                written += self._write_run(con, rec)
            for t in other.tunings():
                _insert_tuning(
                    con,
                    (
                        t["suite"],
                        t["problem"],
                        t["method"],
                        canonical_json(t["context"]),
                        canonical_json(t["chosen"]),
                        t["objective"],
                        json.dumps(t["trials"]),
                        t["created_at"],
                        t["hostname"],
                        t["torch_version"],
                    ),
                )
            for inv in other.invocations():
                _insert_invocation(
                    con,
                    (
                        inv["suite"],
                        inv["command"],
                        json.dumps(inv["environment"], sort_keys=True),
                        inv["started_at"],
                    ),
                )
            for n in other.notes():
                _insert_note(
                    con, (n["suite"], n["problem"], n["method"], n["message"], n["created_at"], n["hostname"])
                )
        return written


def _holder(con: sqlite3.Connection, token: str, host: str, pid: int, now: float) -> str | None:
    """Who holds claims under ``token``, or None when they are to be taken over (the holder is gone)."""
    row = con.execute(
        "SELECT hostname, pid, process_start, started_at, heartbeat FROM claimants WHERE token=?", (token,)
    ).fetchone()
    if row is None:
        return None
    c_host, c_pid, c_start, started_at, heartbeat = row
    if c_host == host:
        if c_pid == pid or not _alive(c_pid, c_start):
            return None
    elif now - heartbeat > FOREIGN_CLAIM_TTL:
        return None
    return f"pid {c_pid} on {c_host}, since {started_at}"


def _insert_tuning(con: sqlite3.Connection, row: tuple[Any, ...]) -> bool:
    cur = con.execute(
        "INSERT OR IGNORE INTO tuning (suite, problem, method, context, chosen, objective, trials,"
        " created_at, hostname, torch_version) VALUES (?,?,?,?,?,?,?,?,?,?)",
        row,
    )
    return cur.rowcount == 1


def _insert_invocation(con: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    con.execute(
        "INSERT OR IGNORE INTO invocations (suite, command, environment, started_at) VALUES (?,?,?,?)", row
    )


def _insert_note(con: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    con.execute(
        "INSERT OR IGNORE INTO notes (suite, problem, method, message, created_at, hostname)"
        " VALUES (?,?,?,?,?,?)",
        row,
    )


def merge(dst: str | os.PathLike[str], *srcs: str | os.PathLike[str]) -> int:
    """Copy every run, tuning outcome, invocation and note of ``srcs`` into ``dst``.

    Deduplicated by run identity: a run already in ``dst`` is kept (unless it is ``failed`` and the
    source has a finished result), so merging shards of one suite, or merging twice, is safe. The
    sources are opened read-only and all checked before ``dst`` is opened; ``dst`` must be a new file
    or a hessopt store, and no source may be ``dst`` itself (hard links included).

    Args:
        dst: the destination store (created if missing).
        *srcs: the source stores.

    Returns:
        The number of runs written into ``dst``.

    Raises:
        StoreError: a source is missing or not a hessopt store, ``dst`` is not a hessopt store, or a
            source is ``dst``.
    """
    if not srcs:
        raise ValueError("merge() needs at least one source store")
    for src in srcs:
        if not Path(src).exists():
            raise StoreError(f"source store {src} does not exist")
        if same_file(src, dst):
            raise StoreError(f"source {src} is the destination {dst} itself; list it once, as DST")
    with contextlib.ExitStack() as stack:
        inputs = [stack.enter_context(ResultStore(src, readonly=True)) for src in srcs]
        written = 0
        with ResultStore(dst) as out:
            for inp in inputs:
                written += out.add_store(inp)
    return written
