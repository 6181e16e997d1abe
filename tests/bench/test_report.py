"""report.md and its figures from a store with known values."""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest

from hessopt.bench.functions import protocol as fp
from hessopt.bench.functions import suite as fs
from hessopt.bench.harness.store import ResultStore, RunRecord, merge
from hessopt.bench.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VALUES = {  # (problem, method) -> best f - f_min of three starts at budgets 5 and 20
    ("sphere-10d", "adam"): ([1.0, 0.5, 2.0], [0.0, 1e-9, 1e-3]),
    ("sphere-10d", "bfgs"): ([1e-3, 1e-2, 1e-1], [1e-20, 1e-18, 1e-16]),
    ("beale-2d", "adam"): ([3.0, 3.0, 3.0], [0.5, 0.25, 2.0]),
    ("beale-2d", "bfgs"): ([1.0, 1.0, 1.0], [1e-12, 0.7, 1e-10]),
}


def _geo(values):
    return math.exp(np.mean(np.log(np.maximum(values, 1e-300))))


def _fill(path):
    with ResultStore(path) as st:
        for (problem, method), (at5, at20) in VALUES.items():
            for i, (a, b) in enumerate(zip(at5, at20, strict=True)):
                st.add_run(
                    RunRecord(
                        suite="functions",
                        problem=problem,
                        method=method,
                        config={"steps": 20, "noise_std": 0.0, "hyper": {}},
                        seed=42 + i,
                        status="diverged" if (problem, method, i) == ("beale-2d", "adam", 2) else "done",
                        summary={
                            "best_f": {"5": a, "20": b},
                            "steps_taken": 20,
                            "n_evals": 20 + i,
                            "stop": "budget",
                            "final_f": b,
                            "batch": 1,
                        },
                        wall_time=0.01,
                        metrics=[(0, "best_f", 10.0), (5, "best_f", a), (20, "best_f", b)],
                    )
                )
        st.add_run(
            RunRecord(
                "functions",
                "beale-2d",
                "adam",
                {"steps": 20, "noise_std": 0.0, "hyper": {}},
                99,
                "failed",
                {"best_f": {"5": 1.0, "20": 1.0}},
                0.0,
                error="RuntimeError: boom",
            )
        )
        st.put_tuning(
            "functions",
            "sphere-10d",
            "adam",
            {"steps": 20, "seeds": [10000, 3], "grid": {"lr": [0.01, 0.1, 1.0]}},
            {"lr": 0.1},
            0.25,
            [{"params": {"lr": 0.1}, "objective": 0.25}],
        )
        st.record_invocation(
            "functions",
            "hessopt bench functions --steps 20",
            env={"hostname": "box", "torch": "9.9"},
            started_at="2026-01-01T00:00:00+00:00",
        )


def test_report_tables_and_figures(tmp_path):
    store = tmp_path / "r.sqlite"
    _fill(store)
    path = write_report(store, tmp_path / "out", command="hessopt report --store r.sqlite")
    text = path.read_text()
    lines = text.splitlines()
    assert "`hessopt report --store r.sqlite`" in text
    assert "`hessopt bench functions --steps 20`" in text
    # success fraction at 20 steps, functions in protocol order, methods in registry order
    i = lines.index("### Budget 20 steps")
    h = lines.index("| function | adam | bfgs |", i)
    table = lines[h:]
    assert table[2] == "| sphere-10d | 0.67 (2/3) | 1.00 (3/3) |"
    assert table[3] == "| beale-2d | 0.00 (0/3) | 0.67 (2/3) |"
    j = lines.index("| function | adam | bfgs |", h + 1)
    geo_sphere = f"{_geo(VALUES[('sphere-10d', 'bfgs')][1]):.2e}"
    assert lines[j + 2] == f"| sphere-10d | {_geo(VALUES[('sphere-10d', 'adam')][1]):.2e} | {geo_sphere} |"
    assert f"{_geo([0.0, 1e-9, 1e-3]):.2e}" == "1.00e-104"  # the 1e-300 floor keeps the exact 0 finite
    k = lines.index("### Budget 5 steps")
    assert "| beale-2d | 0.00 (0/3) | 0.00 (0/3) |" in lines[k:i]
    assert "- beale-2d / adam: 1 diverged (counted with their best value)" in lines
    assert any(line.startswith("- FAILED beale-2d / adam seed 99: RuntimeError: boom") for line in lines)
    assert "| sphere-10d | adam | 20 | 3 | lr = 0.1 | 2.50e-01 |" in text
    assert "| 2026-01-01T00:00:00+00:00 | functions | box | 9.9 |" in text
    for name in (
        "functions_20steps_best_at5.png",
        "functions_20steps_best_at20.png",
        "functions_20steps_curves.png",
    ):
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert f"]({name})" in text


def test_report_errors(tmp_path):
    with pytest.raises(ValueError, match="no results store"):
        write_report(tmp_path / "missing.sqlite", tmp_path / "out")
    ResultStore(tmp_path / "empty.sqlite").close()
    text = write_report(tmp_path / "empty.sqlite", tmp_path / "out").read_text()
    assert "No runs in the stores" in text and "hessopt bench nn` first" in text
    assert f"- `{tmp_path / 'empty.sqlite'}`: 0 runs (no runs)" in text
    with pytest.raises(ValueError, match="at least one"):
        write_report([], tmp_path / "out")


def test_several_stores_make_one_report_over_their_union(tmp_path):
    """Before: one section per store under the same title, statistics not pooled, the second store's
    figures overwriting the first's under the same PNG names, and a store given twice reported twice."""
    protocol = fp.Protocol(starts=4, steps=10, tune_starts=2)
    shards = [tmp_path / "s1.sqlite", tmp_path / "s2.sqlite"]
    for i, path in enumerate(shards, start=1):
        with ResultStore(path) as st:
            fs.run_suite(
                st, functions=["sphere", "beale"], methods=["adam", "bfgs"], protocol=protocol,
                shard=(i, 2), progress=False,
            )  # fmt: skip
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards}
    merged = tmp_path / "merged.sqlite"
    assert merge(merged, *shards) == 16
    union = write_report([shards[0], shards[1], shards[0]], tmp_path / "union").read_text()
    whole = write_report(merged, tmp_path / "whole").read_text()

    def body(text: str) -> str:  # the sections, without the header that names the stores
        return text[text.index("\n## ") : text.index("## Environment")]

    assert body(union) == body(whole)  # pooled: the tables of one store holding every run
    assert union.count("## Test functions: 10-step runs") == 1 and union.count("### Budget 10 steps") == 1
    links = re.findall(r"\]\(([^)]+\.png)\)", union)
    assert links and len(links) == len(set(links))
    assert f"- `{shards[0]}`: 8 runs (functions; given 2 times, read once)" in union
    assert f"- `{shards[1]}`: 8 runs (functions)" in union
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shards} == digests
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s")) == ["s1.sqlite", "s2.sqlite"]
