"""The test-function suite's report section, from the store alone.

Per protocol found in the store (runs of equal ``steps`` and ``noise_std``), and per step budget
(checkpoint):

* a figure of the per-start best ``f - f_min`` sorted over starts, one panel per function and one
  curve per method (as the 2025 BFGS/OGR comparison, arXiv:2512.06969, plots them);
* a table of the success fraction (best ``f - f_min`` < :data:`SUCCESS_TOL` = 1e-8) and a table of the
  geometric mean of best ``f - f_min`` (values floored at 1e-300 so the logarithm stays finite),
  method x function. Diverged runs count with the best value they reached; failed runs (exceptions)
  are left out and listed;

then the median best-so-far curves, hessopt's BFGS beside scipy's, the tuned step sizes, evaluation
counts and wall times.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from hessopt.bench.functions.protocol import SUITE, problem_id
from hessopt.bench.harness.stats import FLOOR, geometric_mean
from hessopt.bench.harness.store import ResultStore, StoredRun
from hessopt.bench.methods import method_names
from hessopt.bench.render.markdown import fmt, order, table
from hessopt.bench.render.plots import DISPLAY_FLOOR, curves_figure, sorted_values_figure
from hessopt.problems.functions import protocol_functions

__all__ = ["SUCCESS_TOL", "functions_section"]

SUCCESS_TOL = 1e-8
"""A run succeeds when its best f - f_min is below this (f_min = 0 for the protocol's functions)."""


def _problem_order() -> list[str]:
    return [problem_id(f) for f in protocol_functions()]


def functions_section(store: ResultStore, out: Path, lines: list[str]) -> None:
    """Append the test-function suite's sections (one per protocol found) and its tuning table.

    Args:
        store: the store holding the suite's runs.
        out: the report folder (figures are written there).
        lines: the report's Markdown lines, appended to.
    """
    runs = store.runs(SUITE)
    groups: dict[tuple[int, float], list[StoredRun]] = defaultdict(list)
    for r in runs:
        groups[(int(r.config["steps"]), float(r.config.get("noise_std", 0.0)))].append(r)
    for (steps, noise), group in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        _protocol_section(store, out, lines, steps, noise, group)
    _tuning_section(store, lines)


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
    pair = ("bfgs", "scipy-bfgs")
    if not any(cell.get((p, m)) for p in problems for m in pair):
        return
    lines += [
        "### hessopt BFGS beside scipy's BFGS",
        "",
        "bfgs: hessopt BFGS, strong Wolfe, H0 scaled by s'y/y'y, clamped to the box, start-of-step "
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
    tunings = store.tunings(SUITE)
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
