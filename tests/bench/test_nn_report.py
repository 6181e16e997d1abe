"""The NN section of the report (hessopt.bench.nn.report), performance ratios, the HTML page, the CLI:
a store with hand-chosen values whose tables are computed here by hand, and one real tiny suite."""

from __future__ import annotations

import math
import re

import pytest

from helpers import tiny_suite
from hessopt.bench.harness.store import ResultStore, RunRecord
from hessopt.bench.nn import suite as nn_suite
from hessopt.bench.nn.report import nn_suite_names, seed_band
from hessopt.bench.render.html import to_html
from hessopt.bench.render.plots import performance_ratios
from hessopt.bench.report import write_report
from hessopt.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# (problem, method) -> per seed (time_to_target, steps_to_target, step_time_median); None = not reached
CELLS = {
    ("digits_mlp", "adam"): [(1.0, 100, 0.002), (3.0, 300, 0.002), (2.0, 200, 0.002)],
    ("digits_mlp", "momentum"): [(0.5, 50, 0.001), (1.0, 100, 0.001), (None, None, 0.001)],
    ("digits_mlp", "diag-ogr"): [(None, None, 0.004), (None, None, 0.004), (4.0, 400, 0.004)],
    ("mnist1d_mlp", "adam"): [(None, None, 0.003)] * 3,
    ("mnist1d_mlp", "momentum"): [(2.0, 20, 0.003)] * 3,
}
STEPS = (0, 100, 200, 300)


def _summary(problem, tt, st, step_time, seed):
    return {
        "role": "evaluation",
        "target_metric": "test_accuracy",
        "target_value": 0.95 if problem == "digits_mlp" else 0.58,
        "steps_per_epoch": 100,
        "num_parameters": 2410,
        "time_to_target": tt,
        "steps_to_target": st,
        "epochs_to_target": None if st is None else st / 100,
        "step_time_median": step_time,
        "steps": 300,
        "grad_evals": 300,
        "curvature_calls": 0,
        "wall_time": 300 * step_time,
        "eval_time": 0.5,
        "final_train_loss": 0.1 * (seed + 1),
        "final_test_loss": 0.2,
        "final_test_accuracy": 0.9 + 0.01 * seed,
        "best_test_accuracy": 0.95,
        "threads": 1,
    }


def _fill(path):
    with ResultStore(path) as st:
        st.record_invocation("nn-quick", "hessopt bench nn (synthetic)")
        for (problem, method), seeds in CELLS.items():
            for seed, (tt, steps, step_time) in enumerate(seeds):
                diverged = (problem, method, seed) == ("digits_mlp", "momentum", 2)
                kept = STEPS[:2] if diverged else STEPS  # a diverged run's curves stop early
                metrics = []
                for s in kept:
                    metrics += [
                        (s, "train_loss", 2.0 / (1 + s) + seed),
                        (s, "test_accuracy", 0.1 + s / 400),
                        (s, "wall_time", s * step_time),
                    ]
                st.add_run(
                    RunRecord(
                        suite="nn-quick",
                        problem=problem,
                        method=method,
                        config={"hyper": {"lr": 0.01}, "batch_size": 32, "steps": 300, "seconds": None},
                        seed=seed,
                        status="diverged" if diverged else "done",
                        summary=_summary(problem, tt, steps, step_time, seed),
                        wall_time=1.0,
                        metrics=metrics,
                    )
                )
        st.add_run(
            RunRecord(
                "nn-quick",
                "digits_mlp",
                "adam",
                {"hyper": {"lr": 0.1}},
                9,
                "failed",
                {},
                0.1,
                error="OSError: x",
            )
        )
        st.add_run(
            RunRecord(
                "nn-quick-tuning",
                "digits_mlp",
                "adam",
                {"hyper": {"lr": 0.01}},
                10_000,
                "done",
                _summary("digits_mlp", 1.0, 100, 0.002, 0),
                1.0,
            )
        )
        st.put_tuning(
            "nn-quick", "digits_mlp", "adam", {"grid": {"lr": [1e-4, 1e-3, 1e-2]}}, {"lr": 1e-2}, 0.05, []
        )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnreport")
    _fill(root / "nn.sqlite")
    path = write_report(root / "nn.sqlite", root / "out", command="hessopt report --store nn.sqlite")
    return root, path.read_text()


def _row(text: str, first: str, second: str | None = None) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first and (second is None or cells[1] == second):
            return cells
    raise AssertionError(f"no row {first!r} {second!r}")


def test_time_and_steps_to_target_tables(report):
    _, text = report
    section = text[text.index("### Time to target") : text.index("### Performance profile")]
    time_part, steps_part = section.split("Steps to target")
    assert _row(time_part, "problem") == ["problem", "adam", "momentum", "diag-ogr"]
    # medians: adam 2 s; momentum median(0.5, 1, inf) = 1 s -> 0.50x, 2 of 3 seeds; diag-ogr: inf
    assert _row(time_part, "digits_mlp") == [
        "digits_mlp",
        "2 s (1.00x)",
        "1 s (0.50x) [2/3]",
        "not reached [1/3]",
    ]
    # Adam never reached the target: no ratio; diag-ogr did not run
    assert _row(time_part, "mnist1d_mlp") == ["mnist1d_mlp", "not reached [0/3]", "2 s", "-"]
    assert _row(steps_part, "digits_mlp")[1:3] == ["200 (1.00x)", "100 (0.50x) [2/3]"]


def test_profile_counts_cost_table_tuning_and_problems(report):
    root, text = report
    # reached target: digits (adam, momentum), mnist1d (momentum); fastest: momentum on both
    assert _row(text, "adam")[1:] == ["2/2", "1", "0", "0"]
    assert _row(text, "momentum")[1:] == ["2/2", "2", "2", "2"]
    assert _row(text, "diag-ogr")[1:] == ["1/2", "0", "0", "0"]
    # step cost: median step time 1 ms vs Adam's 2 ms
    cost = text[text.index("### Step cost") : text.index("### Tuning")]
    assert _row(cost, "digits_mlp", "momentum")[2:6] == ["1", "0.50", "1.00", "0.00"]
    assert _row(cost, "digits_mlp", "diag-ogr")[2:4] == ["4", "2.00"]
    tuning = text[text.index("### Tuning") :]
    assert _row(tuning, "digits_mlp", "adam")[2:] == ["lr = 0.01 (grid edge)", "0.05", "lr: 1e-04..1e-02 (3)"]
    assert "- digits_mlp / momentum: 1 diverged" in text
    assert "- FAILED digits_mlp / adam seed 9: OSError: x" in text
    assert (
        "| digits_mlp | scikit-learn digits" in text
        and "| 300 steps (3 epochs) | test_accuracy >= 0.95 |" in text
    )
    assert "1 tuning runs" in text
    assert "**Warning**" not in text
    # final metrics: train loss mean/sd over seeds 0.1, 0.2, 0.3 for Adam on digits
    final = text[text.index("### Final metrics") : text.index("### Step cost")]
    assert _row(final, "digits_mlp", "adam")[3] == "0.2 ± 0.1"
    for name in ("nn-quick_curves.png", "nn-quick_profile.png"):
        data = (root / "out" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        assert f"]({name})" in text


def test_html_page_is_self_contained(report):
    root, text = report
    page = (root / "out" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "<td>1 s (0.50x) [2/3]</td>" in page


def test_to_html_links_and_errors(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG_MAGIC + b"x")
    page = to_html("![a](a.png) ![u](https://example.org/u.png)", tmp_path)
    assert 'src="data:image/png;base64,iVBORw0KGgp4"' in page
    assert 'src="https://example.org/u.png"' in page
    with pytest.raises(ValueError, match="'b.png'"):
        to_html("![b](b.png)", tmp_path)


def test_performance_ratios_by_hand():
    costs = {"p": {"a": 2.0, "b": 1.0, "c": math.inf}, "q": {"a": math.inf, "b": 3.0}, "r": {"a": math.inf}}
    assert performance_ratios(costs, ["a", "b", "c"]) == {
        "a": [2.0, math.inf, math.inf],
        "b": [1.0, 1.0, math.inf],
        "c": [math.inf, math.inf, math.inf],
    }
    assert performance_ratios({"p": {"a": 0.0, "b": 1.0}}, ["a", "b"]) == {"a": [1.0], "b": [math.inf]}
    with pytest.raises(ValueError, match="cost of a on p"):
        performance_ratios({"p": {"a": math.nan}}, ["a"])


def test_seed_band_uses_steps_every_seed_has(tmp_path):
    _fill(tmp_path / "s.sqlite")
    with ResultStore(tmp_path / "s.sqlite") as st:
        runs = st.runs("nn-quick", problem="digits_mlp", method="momentum")
        ids = [r.id for r in runs]
        loss = {i: dict(v) for i, v in st.metrics(ids, "train_loss").items()}
        wall = {i: dict(v) for i, v in st.metrics(ids, "wall_time").items()}
    x, mid, lo, hi = seed_band(runs, loss, None)
    assert x == [0.0, 100.0]  # seed 2 diverged after step 100
    assert mid == pytest.approx([2.0 + 1.0, 2.0 / 101 + 1.0]) and lo[0] == 2.0 and hi[0] == 4.0
    x, *_ = seed_band(runs, loss, wall)
    assert x == pytest.approx([0.0, 0.1])


def test_cli_report_defaults_and_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 2
    assert "hessopt bench nn" in capsys.readouterr().err
    (tmp_path / "results").mkdir()
    _fill(tmp_path / "results" / "nn.sqlite")
    assert main(["report"]) == 0
    assert "## Neural networks: suite `nn-quick`" in (tmp_path / "results" / "report.md").read_text()
    assert main(["report", "--store", "missing.sqlite"]) == 2
    assert "no results store at missing.sqlite" in capsys.readouterr().err


def test_report_of_a_real_tiny_suite(tmp_path):
    suite = tiny_suite("nn-quick", methods=("adam", "lbfgs"), steps=6, evaluations=3)
    with ResultStore(tmp_path / "nn.sqlite") as st:
        nn_suite.run_suite(st, suite, progress=False, command="tiny")
        assert nn_suite_names(st) == ["nn-quick"]
    text = write_report(tmp_path / "nn.sqlite", tmp_path / "out").read_text()
    section = text[text.index("### Time to target") :]
    assert _row(section, "problem")[1:] == ["adam", "lbfgs"]
    cost = text[text.index("### Step cost") :]
    assert _row(cost, "quadratic_deep", "adam")[3] == "1.00"  # step-cost ratio of Adam to itself
    assert _row(cost, "quadratic_deep", "lbfgs")[4] != "1.00"  # L-BFGS's line search: several grads/step
    assert (tmp_path / "out" / "nn-quick_curves.png").read_bytes().startswith(PNG_MAGIC)


def test_cells_mixing_configurations_are_flagged(tmp_path):
    _fill(tmp_path / "m.sqlite")
    with ResultStore(tmp_path / "m.sqlite") as st:
        st.add_run(
            RunRecord(
                "nn-quick",
                "digits_mlp",
                "adam",
                {"hyper": {"lr": 0.1}, "batch_size": 32, "steps": 300, "seconds": None},
                5,
                "done",
                _summary("digits_mlp", 1.0, 100, 0.002, 0),
                1.0,
            )
        )
    text = write_report(tmp_path / "m.sqlite", tmp_path / "out").read_text()
    assert (
        "cells mix configurations (e.g. merged shards that tuned differently, or budget overrides): "
        "digits_mlp/adam." in text
    )
