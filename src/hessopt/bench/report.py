"""``hessopt report``: results stores turned into ``report.md`` plus PNG figures and ``report.html``.

For the test-function suite (:mod:`hessopt.bench.functions_suite`) the report has, per protocol
found in the store (runs of equal ``steps`` and ``noise_std``), and per step budget (checkpoint):

* a figure of the per-start best ``f - f_min`` sorted over starts, one panel per function and one
  curve per method (as the 2025 BFGS/OGR comparison plots them);
* a table of the success fraction (best ``f - f_min`` < :data:`SUCCESS_TOL` = 1e-8) and a table of the
  geometric mean of best ``f - f_min`` (values floored at 1e-300 so the logarithm stays finite),
  method x function. Diverged runs count with the best value they reached; failed runs (exceptions)
  are left out and listed;

then the median best-so-far curves, hessopt's BFGS beside scipy's, the tuned step sizes, evaluation
counts and wall times. Each neural-network suite in a store gets the section of
:mod:`hessopt.bench.nn_report` (time to target with ratios to Adam, performance profile, curves against
steps and wall-clock time, final metrics, step cost, tuning). Study fragments follow, then the
environment and commands that produced the stores. ``report.html`` is the same report as one page
with its figures inlined (:func:`hessopt.bench.markdown.to_html`).
"""

from __future__ import annotations

import datetime
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hessopt.bench import functions_suite
from hessopt.bench.markdown import environment_lines, fmt, order, table, to_html
from hessopt.bench.methods import method_names
from hessopt.bench.nn_report import nn_section, nn_suite_names
from hessopt.bench.plots import DISPLAY_FLOOR, curves_figure, sorted_values_figure
from hessopt.bench.store import ResultStore, StoredRun
from hessopt.bench.tuning import FLOOR, geometric_mean
from hessopt.problems.functions import protocol_functions

__all__ = ["SUCCESS_TOL", "write_report"]

SUCCESS_TOL = 1e-8
"""A run succeeds when its best f - f_min is below this (f_min = 0 for the protocol's functions)."""


def _problem_order() -> list[str]:
    return [functions_suite.problem_id(f) for f in protocol_functions()]


def _functions_section(store: ResultStore, out: Path, lines: list[str]) -> None:
    runs = store.runs(functions_suite.SUITE)
    groups: dict[tuple[int, float], list[StoredRun]] = defaultdict(list)
    for r in runs:
        groups[(int(r.config["steps"]), float(r.config.get("noise_std", 0.0)))].append(r)
    for (steps, noise), group in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        _protocol_section(store, out, lines, steps, noise, group)


def _protocol_section(
    store: ResultStore, out: Path, lines: list[str], steps: int, noise: float, runs: list[StoredRun]
) -> None:
    tag = f"{steps}steps" + (f"_noise{noise:g}" if noise else "")
    ok = [r for r in runs if r.status != "failed"]
    failed = [r for r in runs if r.status == "failed"]
    problems = order({r.problem for r in runs}, _problem_order())
    methods = order({r.method for r in runs}, method_names())
    cell: dict[tuple[str, str], list[StoredRun]] = defaultdict(list)
    for r in ok:
        cell[(r.problem, r.method)].append(r)
    budgets = sorted({int(c) for r in ok for c in r.summary["best_f"]})
    starts = sorted({len(v) for v in cell.values()}) or [0]
    noise_text = f", gradient noise N(0, {noise:g}^2) per coordinate" if noise else ", exact gradients"
    lines += [
        f"## Test functions: {steps}-step runs",
        "",
        f"{len(runs)} runs: {len(problems)} functions x {len(methods)} methods, "
        f"{starts[0] if len(starts) == 1 else f'{starts[0]}-{starts[-1]}'} starts per cell "
        "(start i seeded 42 + i)"
        f"{noise_text}, float64 on CPU. The value of a run at budget c is its best f - f_min among θ_0..θ_c "
        "(f evaluated before each step); one run gives every budget. θ is clamped to the box after every "
        "step, except for scipy-bfgs (scipy's BFGS has no box: it runs unclamped). "
        + (
            ""
            if noise
            else "Runs stop early when ||g|| < 1e-8, closure methods also when θ has not moved for 5 steps. "
        )
        + "Diverged runs (non-finite f or gradient) count with the best value they reached.",
        "",
    ]
    mixed = [k for k, v in cell.items() if len({str(r.config) for r in v}) > 1]
    if mixed:
        lines += [
            f"**Warning**: cells mixing configurations (e.g. different tuned step sizes from shards that "
            f"tuned differently): {', '.join(f'{p}/{m}' for p, m in mixed)}.",
            "",
        ]
    for c in budgets:
        values = {
            p: {m: [r.summary["best_f"][str(c)] for r in cell[(p, m)]] for m in methods if cell.get((p, m))}
            for p in problems
        }
        values = {p: v for p, v in values.items() if v}
        if not values:
            continue
        fig = sorted_values_figure(
            out / f"functions_{tag}_best_at{c}.png",
            values,
            methods,
            title=f"best f - f_min within {c} steps, sorted over starts",
            ylabel=f"best f - f_min (>= {DISPLAY_FLOOR:g})",
        )
        lines += [f"### Budget {c} steps", "", f"![best f - f_min within {c} steps]({fig.name})", ""]
        lines += [f"Success fraction (best f - f_min < {SUCCESS_TOL:g}), successes/runs:", ""]
        rows = []
        for p in problems:
            row = [p]
            for m in methods:
                v = values.get(p, {}).get(m)
                row.append(
                    "-"
                    if not v
                    else f"{sum(x < SUCCESS_TOL for x in v) / len(v):.2f} "
                    f"({sum(x < SUCCESS_TOL for x in v)}/{len(v)})"
                )
            rows.append(row)
        lines += table(["function", *methods], rows)
        lines += [
            f"Geometric mean of best f - f_min (each value floored at {FLOOR:g} to keep the log finite):",
            "",
        ]
        rows = []
        for p in problems:
            row = [p]
            for m in methods:
                v = values.get(p, {}).get(m)
                row.append("-" if not v else fmt(geometric_mean(v)))
            rows.append(row)
        lines += table(["function", *methods], rows)

    # median best-so-far curves
    curve_rows = store.metrics([r.id for r in ok], "best_f")
    curves: dict[str, dict[str, dict[int, list[float]]]] = {}
    for (p, m), rs in cell.items():
        per_step: dict[int, list[float]] = defaultdict(list)
        for r in rs:
            for s, v in curve_rows.get(r.id, []):
                per_step[s].append(v)
        curves.setdefault(p, {})[m] = dict(per_step)
    curves = {p: curves[p] for p in problems if p in curves}
    if curves:
        fig = curves_figure(
            out / f"functions_{tag}_curves.png",
            curves,
            methods,
            title="best f - f_min so far: median over starts (band: quartiles)",
            ylabel=f"best f - f_min (>= {DISPLAY_FLOOR:g})",
        )
        lines += ["### Best-so-far curves", "", f"![median best-so-far curves]({fig.name})", ""]

    _bfgs_comparison(lines, problems, cell, steps)
    _cost_table(lines, problems, methods, cell)
    nonfinite = [(p, m, sum(r.status == "diverged" for r in rs)) for (p, m), rs in cell.items()]
    nonfinite = [t for t in nonfinite if t[2]]
    if nonfinite or failed:
        lines += ["### Runs that did not finish normally", ""]
        for p, m, n in nonfinite:
            lines.append(f"- {p} / {m}: {n} diverged (counted with their best value)")
        for r in failed[:20]:
            lines.append(f"- FAILED {r.problem} / {r.method} seed {r.seed}: {r.error}")
        if len(failed) > 20:
            lines.append(f"- ... and {len(failed) - 20} more failed runs")
        lines.append("")


def _bfgs_comparison(
    lines: list[str], problems: list[str], cell: dict[tuple[str, str], list[StoredRun]], steps: int
) -> None:
    pair = ("bfgs-wolfe", "scipy-bfgs")
    if not any(cell.get((p, m)) for p in problems for m in pair):
        return
    lines += [
        "### hessopt BFGS beside scipy's BFGS",
        "",
        "bfgs-wolfe: hessopt BFGS, strong Wolfe, H0 scaled by s'y/y'y, clamped to the box, start-of-step "
        "evaluation reused when θ did not move; scipy-bfgs: `scipy.optimize.minimize(method='BFGS')`, "
        "H0 = I, unclamped. Both stop at ||g|| < 1e-8. Columns: success fraction, geometric mean of best "
        "f - f_min at "
        f"{steps} steps, median iterations, median (f, g) evaluations, mean wall time per run.",
        "",
    ]
    rows = []
    for p in problems:
        for m in pair:
            rs = cell.get((p, m))
            if not rs:
                continue
            best = [r.summary["best_f"][str(steps)] for r in rs]
            rows.append(
                [
                    p,
                    m,
                    f"{sum(b < SUCCESS_TOL for b in best) / len(best):.2f}",
                    fmt(geometric_mean(best)),
                    f"{statistics.median(r.summary['steps_taken'] for r in rs):g}",
                    f"{statistics.median(r.summary['n_evals'] for r in rs):g}",
                    f"{1e3 * statistics.fmean(r.wall_time for r in rs):.1f} ms",
                ]
            )
    lines += table(["function", "method", "success", "geo. mean", "iterations", "evaluations", "wall"], rows)


def _cost_table(
    lines: list[str], problems: list[str], methods: list[str], cell: dict[tuple[str, str], list[StoredRun]]
) -> None:
    lines += [
        "### Cost: evaluations and wall time",
        "",
        "Median (f, g) evaluations per run / mean wall time per run. Batched methods (Adam, momentum) run "
        "all "
        "starts as one (n, dim) tensor; their wall time is the batch's divided by n, so compare it with "
        "per-start methods only as an order of magnitude.",
        "",
    ]
    rows = []
    for p in problems:
        row = [p]
        for m in methods:
            rs = cell.get((p, m))
            row.append(
                "-"
                if not rs
                else f"{statistics.median(r.summary['n_evals'] for r in rs):g} / "
                f"{1e3 * statistics.fmean(r.wall_time for r in rs):.1f} ms"
            )
        rows.append(row)
    lines += table(["function", *methods], rows)


def _tuning_section(store: ResultStore, lines: list[str]) -> None:
    tunings = store.tunings(functions_suite.SUITE)
    if not tunings:
        return
    lines += [
        "## Tuned step sizes",
        "",
        "Chosen per function on separate tuning starts (seeds 10000 + i, never the evaluation seeds 42 + i) "
        "by the smallest geometric mean of best f - f_min at the run's step budget; log-spaced grids, ties "
        "to the "
        "smaller value.",
        "",
    ]
    order = _problem_order()
    tunings.sort(
        key=lambda t: (
            -t["context"]["steps"],
            order.index(t["problem"]) if t["problem"] in order else 99,
            t["method"],
        )
    )
    rows = []
    for t in tunings:
        grid = "; ".join(
            f"{k}: {fmt(v[0])}..{fmt(v[-1])} ({len(v)} values)" for k, v in t["context"]["grid"].items()
        )
        chosen = ", ".join(f"{k} = {v:.3g}" for k, v in t["chosen"].items())
        edge = any(
            v in (t["context"]["grid"][k][0], t["context"]["grid"][k][-1]) for k, v in t["chosen"].items()
        )
        rows.append(
            [
                t["problem"],
                t["method"],
                str(t["context"]["steps"]),
                f"{t['context']['seeds'][1]}",
                chosen + (" (grid edge)" if edge else ""),
                fmt(t["objective"]),
                grid,
            ]
        )
    lines += table(["function", "method", "steps", "tuning starts", "chosen", "objective", "grid"], rows)


def _studies_section(out: Path, lines: list[str], studies: Sequence[str | Path]) -> None:
    """Append the Markdown fragments (``*.md``) found in each study folder, with image links rewritten
    relative to the report. Folders that do not exist are skipped (the study was not run)."""
    for folder in (Path(s) for s in studies):
        if not folder.is_dir():
            continue
        rel = Path(os.path.relpath(folder.resolve(), out.resolve()))
        for fragment in sorted(folder.glob("*.md")):
            text = fragment.read_text(encoding="utf-8")
            link = (rel / "\\1").as_posix()
            text = re.sub(r"\]\(([^)/:]+\.png)\)", f"]({link})", text)
            levels = [len(h) for h in re.findall(r"^(#+) ", text, flags=re.MULTILINE)]
            shift = 2 - min(levels, default=2)  # the fragment's top heading becomes a report section
            text = re.sub(
                r"^(#+) ", lambda h, k=shift: "#" * max(1, len(h.group(1)) + k) + " ", text, flags=re.M
            )
            lines += [text.rstrip(), "", f"(from `{fragment.as_posix()}`)", ""]


def write_report(
    stores: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | Path,
    *,
    command: str | None = None,
    studies: Sequence[str | Path] = (),
) -> Path:
    """Write ``out_dir/report.md``, its PNG figures and ``out_dir/report.html`` (the same report as one
    self-contained page) from one or several results stores.

    Each store contributes the sections of the suites it holds: the test-function suite
    (:mod:`hessopt.bench.functions_suite`) and the NN suites (:mod:`hessopt.bench.nn_report`).
    Returns the path of ``report.md``. ``command`` is the provenance line (the CLI passes its argv).
    ``studies``: folders of study fragments (``hessopt bench ogr-studies``, ``benchmarks/step_cost.py``)
    appended after the suites when present.
    """
    paths = [Path(stores)] if isinstance(stores, (str, os.PathLike)) else [Path(s) for s in stores]
    if not paths:
        raise ValueError("write_report needs at least one results store")
    for path in paths:
        if not path.is_file():
            raise ValueError(
                f"no results store at {path}; run `hessopt bench functions` or `hessopt bench nn` first, "
                "or pass --store"
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [
        "# hessopt benchmark report",
        "",
        f"Generated {date} by `{command or 'hessopt.bench.report.write_report'}` from "
        f"{', '.join(f'`{p}`' for p in paths)}.",
        "",
    ]
    invocations: list[dict[str, Any]] = []
    for path in paths:
        with ResultStore(path) as store:
            invocations += store.invocations()
    if invocations:
        lines += ["Commands that wrote the stores:", ""]
        lines += [
            f"- `{inv['command']}` ({inv['started_at']}, {inv['environment'].get('hostname', '?')})"
            for inv in invocations
        ]
        lines.append("")
    for path in paths:
        with ResultStore(path) as store:
            nn_suites = nn_suite_names(store)
            if store.count(functions_suite.SUITE):
                _functions_section(store, out, lines)
                _tuning_section(store, lines)
            elif not nn_suites:
                lines += [
                    f"No runs in `{path}`: run `hessopt bench functions` or `hessopt bench nn` first.",
                    "",
                ]
            for suite in nn_suites:
                nn_section(store, out, lines, suite)
    _studies_section(out, lines, studies)
    lines += ["## Environment", ""]
    lines += environment_lines(invocations)
    text = "\n".join(lines)
    report = out / "report.md"
    report.write_text(text, encoding="utf-8")
    (out / "report.html").write_text(to_html(text, out), encoding="utf-8")
    return report
