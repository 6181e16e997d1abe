"""What the results store accepts, refuses and never writes: files that are not stores, damaged and older
stores, read-only opening (report and merge inputs), merges into or from what is not a store."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import stat

import pytest

from hessopt.bench.harness import store as store_mod
from hessopt.bench.harness.store import SCHEMA_VERSION, ResultStore, RunRecord, StoreError, merge
from hessopt.bench.report import write_report


def _record(i: int, n_metrics: int = 3) -> RunRecord:
    return RunRecord(
        suite="s",
        problem="p",
        method="m",
        config={"lr": 0.1},
        seed=i,
        status="done",
        summary={"best": float(i)},
        wall_time=0.01,
        metrics=[(k, "best_f", float(k)) for k in range(n_metrics)],
    )


def _store(path, n: int = 3, n_metrics: int = 3):
    with ResultStore(path) as st:
        for i in range(n):
            st.add_run(_record(i, n_metrics))
    return path


def _state(folder) -> dict[str, str]:
    """Every file of ``folder`` with the digest of its bytes: what must not change."""
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in sorted(os.listdir(folder))
        if (folder / name).is_file()
    }


def _unrelated(path, wal: bool = False):
    con = sqlite3.connect(path)
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE people (name TEXT)")
    con.execute("INSERT INTO people VALUES ('ada')")
    con.commit()
    con.close()
    return path


def _newer(path):
    _store(path)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    return path


CASES = {
    "folder": (lambda p: (p.mkdir(), p)[1], "is a folder"),
    "text file": (lambda p: (p.write_text("name,value\na,1\n"), p)[1], "not an SQLite file"),
    "unrelated SQLite file": (_unrelated, r"not a hessopt results store \(tables: people\)"),
    "unrelated SQLite file in WAL mode": (lambda p: _unrelated(p, wal=True), "tables: people"),
    "newer store": (_newer, "newer than this hessopt"),
}


@pytest.mark.parametrize("readonly", [False, True], ids=["for writing", "read-only"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_what_is_not_a_store_is_refused_untouched(tmp_path, case, readonly):
    make, message = CASES[case]
    path = make(tmp_path / "x.sqlite")
    before = _state(tmp_path)
    with pytest.raises(StoreError, match=message):
        ResultStore(path, readonly=readonly)
    assert _state(tmp_path) == before  # not a byte changed, no -wal/-shm/-journal beside it


def test_devices_and_empty_files(tmp_path):
    if os.path.exists("/dev/null"):
        for readonly in (False, True):
            with pytest.raises(StoreError, match="not a regular file"):
                ResultStore("/dev/null", readonly=readonly)
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(StoreError, match="empty file"):
        ResultStore(empty, readonly=True)
    assert empty.stat().st_size == 0
    with pytest.raises(StoreError, match="no results store"):
        ResultStore(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(StoreError, match="is a file, not a folder"):
        ResultStore(tmp_path / "empty.sqlite" / "r.sqlite")
    # for writing, an empty file holds nothing to lose: it becomes a store (as a new path would)
    with ResultStore(empty) as st:
        assert st.add_run(_record(0))


def test_a_store_damaged_mid_file_is_refused_on_open(tmp_path):
    path = _store(tmp_path / "r.sqlite", n=300, n_metrics=30)
    data = bytearray(path.read_bytes())
    page = len(data) // 4096 // 2  # a page in the middle of the file (a metrics B-tree page)
    data[page * 4096 + 200 : page * 4096 + 700] = random.Random(0).randbytes(500)
    path.write_bytes(bytes(data))
    before = _state(tmp_path)
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"is damaged \(SQLite's integrity check"):
            ResultStore(path, readonly=readonly)
    assert _state(tmp_path) == before


def test_read_only_opening_writes_nothing_into_or_beside_the_store(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = _store(folder / "r.sqlite")
    before = _state(folder)
    assert list(before) == ["r.sqlite"]  # closed cleanly: no -wal
    path.chmod(stat.S_IRUSR | stat.S_IRGRP)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with ResultStore(path, readonly=True) as st:
            assert st.count() == 3 and st.notes() == []
            with pytest.raises(StoreError, match="read-only"):
                st.add_run(_record(7))
        assert merge(tmp_path / "copy.sqlite", path) == 3
        write_report([path, path], tmp_path / "out")
        assert _state(folder) == before
        if os.geteuid() != 0:  # root writes through file modes
            with pytest.raises(StoreError, match="read-only"):
                ResultStore(path)
    finally:
        folder.chmod(stat.S_IRWXU)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_a_read_only_file_is_refused_for_writing_with_the_fix(tmp_path, monkeypatch):
    path = _store(tmp_path / "r.sqlite")
    before = _state(tmp_path)
    real_access = os.access
    monkeypatch.setattr(
        store_mod.os, "access", lambda p, mode: False if mode & os.W_OK else real_access(p, mode)
    )
    with pytest.raises(StoreError, match=r"is read-only; make it writable .* or pass another --store"):
        ResultStore(path)
    assert _state(tmp_path) == before


def test_read_only_opening_sees_what_a_live_writer_committed(tmp_path):
    path = tmp_path / "live.sqlite"
    writer = ResultStore(path)
    try:
        writer._con.execute("PRAGMA wal_autocheckpoint = 0")  # keep the runs in the -wal file
        writer.add_run(_record(0))
        writer.add_run(_record(1))
        assert (tmp_path / "live.sqlite-wal").stat().st_size > 0
        with ResultStore(path, readonly=True) as reader:
            assert sorted(r.seed for r in reader.runs()) == [0, 1]
        writer.add_run(_record(2))
        with ResultStore(path, readonly=True) as reader:
            assert reader.count() == 3
    finally:
        writer.close()


def test_version_1_stores_are_read_as_they_are_and_upgraded_for_writing(tmp_path):
    path = _store(tmp_path / "v1.sqlite")
    con = sqlite3.connect(path)  # what a version-1 store holds: no notes, claims, claimants
    for table in ("notes", "claims", "claimants"):
        con.execute(f"DROP TABLE {table}")
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    before = _state(tmp_path)
    with ResultStore(path, readonly=True) as st:
        assert st.count() == 3 and st.notes() == []
    assert _state(tmp_path) == before
    merge(tmp_path / "m.sqlite", path)
    with ResultStore(path) as st:
        st.add_note("s", "problem 'q' needs data", problem="q")
        assert [n["message"] for n in st.notes()] == ["problem 'q' needs data"]
        assert st.claim([("s", "p", "m", '{"lr":0.1}', 9)]).claimed
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_merge_refuses_what_is_not_a_store_and_changes_nothing(tmp_path):
    store = _store(tmp_path / "store.sqlite")
    other = _unrelated(tmp_path / "other.sqlite")
    before = _state(tmp_path)
    with pytest.raises(StoreError, match="not a hessopt results store"):
        merge(store, other)  # an unrelated source into an existing store
    with pytest.raises(StoreError, match="not a hessopt results store"):
        merge(tmp_path / "new.sqlite", store, other)  # checked before the new destination is created
    with pytest.raises(StoreError, match="not a hessopt results store"):
        merge(other, store)  # an unrelated destination
    assert _state(tmp_path) == before
    os.link(store, tmp_path / "hard.sqlite")
    os.symlink(store, tmp_path / "soft.sqlite")
    before = _state(tmp_path)
    for alias in ("hard.sqlite", "soft.sqlite"):
        with pytest.raises(StoreError, match="is the destination"):
            merge(tmp_path / alias, store)
        with pytest.raises(StoreError, match="is the destination"):
            merge(store, tmp_path / alias)
    assert _state(tmp_path) == before
