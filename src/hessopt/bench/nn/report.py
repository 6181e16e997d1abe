"""The neural-network part of ``hessopt report``: one section per NN suite found in a store.

For a suite (``nn-quick``, ``nn-full``; :mod:`hessopt.bench.nn.suite`) the section has

* **time to target** and **steps to target** tables (the headline): per problem and method the median
  over evaluation seeds of the training time (evaluation excluded) / optimizer steps at the first
  evaluation point meeting the problem's target, a seed that never reached it counting as infinite,
  with the ratio to Adam's median in the same store and ``[k/n]`` when only k of n seeds reached it;
* a **performance profile** (Dolan & Moré 2002) over the suite's problems of both measures;
* **curves**: training loss and the target metric against steps and against training wall-clock time,
  the mean over seeds with the min-max band shaded; a point is drawn only where every seed of the cell
  has a finite value, so a diverged seed ends its method's curve (the tables say which);
* **final metrics** (mean ± standard deviation over seeds) and **step cost**: median seconds per
  optimizer step (each run's median, then the median over runs) and its ratio to Adam's, gradient
  evaluations and Hessian-vector products per step;
* the **tuning** outcome (chosen learning rate, whether it sits at the grid's edge) and runs that
  diverged or failed.

Ratios compare runs of one store, i.e. one machine and one invocation's threading; a ratio across
machines or thread counts means nothing, which is why it is computed here and not stored.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hessopt.bench.harness.store import ResultStore, StoredRun, canonical_json
from hessopt.bench.methods import methods_in
from hessopt.bench.nn.suites import SUITE, SUITES
from hessopt.bench.render.markdown import fmt, order, table
from hessopt.bench.render.plots import Panel, band_figure, performance_profile_figure
from hessopt.problems.registry import get_problem, problem_names

__all__ = ["BASELINE", "nn_section", "nn_suite_names", "seed_band", "time_to_target_rows"]

BASELINE = "adam"
"""The method every ratio is taken against."""


def nn_suite_names(store: ResultStore) -> list[str]:
    """The NN evaluation suites present in ``store`` (``nn-*`` without the ``-tuning`` ones), quick first."""
    names = {s for s in store.suites() if s.startswith("nn-") and not s.endswith("-tuning")}
    known = [s.name for s in SUITES.values()]
    return order(names, known)


@dataclass
class _Cell:
    """The evaluation runs of one (problem, method) that did not fail."""

    problem: str
    method: str
    runs: list[StoredRun]

    def values(self, key: str) -> list[float]:
        """``summary[key]`` of each run, ``None`` as ``inf`` (target never reached)."""
        return [math.inf if r.summary.get(key) is None else float(r.summary[key]) for r in self.runs]

    def median(self, key: str) -> float:
        return statistics.median(self.values(key))

    def reached(self) -> int:
        return sum(r.summary.get("time_to_target") is not None for r in self.runs)


def _cells(runs: Sequence[StoredRun]) -> dict[tuple[str, str], _Cell]:
    cells: dict[tuple[str, str], _Cell] = {}
    for r in runs:
        if r.status == "failed":
            continue
        cells.setdefault((r.problem, r.method), _Cell(r.problem, r.method, [])).runs.append(r)
    return cells


def _ratio(value: float, base: float | None) -> float | None:
    """``value / base`` when both are finite and ``base > 0``, else None."""
    if base is None or not math.isfinite(base) or not math.isfinite(value) or base <= 0:
        return None
    return value / base


def _with_ratio(text: str, value: float, base: float | None) -> str:
    r = _ratio(value, base)
    return text if r is None else f"{text} ({r:.2f}x)"


def time_to_target_rows(
    cells: dict[tuple[str, str], _Cell], problems: Sequence[str], methods: Sequence[str], key: str, unit: str
) -> list[list[str]]:
    """Rows of the time/steps-to-target table: ``median unit (ratio to Adam) [k/n]`` per method."""
    rows = []
    for p in problems:
        base_cell = cells.get((p, BASELINE))
        base = base_cell.median(key) if base_cell else None
        row = [p]
        for m in methods:
            cell = cells.get((p, m))
            if cell is None:
                row.append("-")
                continue
            med = cell.median(key)
            n, k = len(cell.runs), cell.reached()
            if math.isinf(med):
                text = "not reached"
            elif unit == "s":
                text = _with_ratio(f"{med:.3g} s", med, base)
            else:
                text = _with_ratio(f"{med:.0f}", med, base)
            row.append(text + (f" [{k}/{n}]" if k < n else ""))
        rows.append(row)
    return rows


def _mean_sd(values: Sequence[float], spec: str) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0], spec)
    return f"{fmt(statistics.fmean(values), spec)} ± {fmt(statistics.stdev(values), spec)}"


def _problem_lines(problems: Sequence[str], cells: dict[tuple[str, str], _Cell]) -> list[str]:
    rows = []
    for p in problems:
        any_run = next(c.runs[0] for (q, _), c in cells.items() if q == p)
        s, cfg = any_run.summary, any_run.config
        known = p in problem_names()
        summary = get_problem(p).summary if known else "(not in this version's registry)"
        sense = ">=" if s["target_metric"].endswith("accuracy") else "<="
        budget = f"{cfg['steps']} steps ({cfg['steps'] / s['steps_per_epoch']:g} epochs)"
        if cfg.get("seconds"):
            budget += f", at most {cfg['seconds']:g} s"
        rows.append(
            [
                p,
                summary,
                f"{s['num_parameters']:,}",
                str(cfg["batch_size"]),
                budget,
                f"{s['target_metric']} {sense} {s['target_value']:g}",
            ]
        )
    return table(["problem", "model and data", "parameters", "batch", "budget", "target"], rows)


def seed_band(
    runs: Sequence[StoredRun],
    curves: dict[int, dict[int, float]],
    xcurves: dict[int, dict[int, float]] | None,
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Mean and min/max over runs of one metric.

    Mean and min/max over runs at the steps where every run has a value; x = step, or the mean of
    ``xcurves`` (e.g. wall time) at that step.
    """
    steps = set.intersection(*(set(curves[r.id]) for r in runs)) if runs else set()
    if xcurves is not None:
        steps &= set.intersection(*(set(xcurves[r.id]) for r in runs))
    x, mid, lo, hi = [], [], [], []
    for s in sorted(steps):
        vals = [curves[r.id][s] for r in runs]
        x.append(float(s) if xcurves is None else statistics.fmean(xcurves[r.id][s] for r in runs))
        mid.append(statistics.fmean(vals))
        lo.append(min(vals))
        hi.append(max(vals))
    return x, mid, lo, hi


def _curve_figure(
    store: ResultStore,
    out: Path,
    suite: str,
    problems: Sequence[str],
    methods: Sequence[str],
    cells: dict[tuple[str, str], _Cell],
) -> Path:
    ids = [r.id for c in cells.values() for r in c.runs]

    def load(name: str) -> dict[int, dict[int, float]]:
        return {i: dict(v) for i, v in store.metrics(ids, name).items()}

    wall, train = load("wall_time"), load("train_loss")
    panels = []
    for p in problems:
        first = next(c.runs[0] for (q, _), c in cells.items() if q == p)
        metric, target = first.summary["target_metric"], float(first.summary["target_value"])
        targets = train if metric == "train_loss" else load(metric)
        for name, curves, hline in (("train_loss", train, None), (metric, targets, target)):
            positive = all(v > 0 for c in curves.values() for v in c.values())
            yscale = "log" if name.endswith("loss") and positive else "linear"
            for xname, xc in (("step", None), ("training time [s]", wall)):
                series = {m: seed_band(cells[(p, m)].runs, curves, xc) for m in methods if (p, m) in cells}
                panels.append(
                    Panel(
                        title=f"{p}: {name}",
                        xlabel=xname,
                        ylabel=name,
                        series=series,
                        yscale=yscale,
                        hline=hline,
                        hline_label="target" if hline is not None else "",
                    )
                )
    # per problem: [train vs step, train vs time, target vs step, target vs time] -> reorder to
    # [train vs step, target vs step, train vs time, target vs time]
    ordered = [panels[4 * i + j] for i in range(len(problems)) for j in (0, 2, 1, 3)]
    return band_figure(
        out / f"{suite}_curves.png",
        ordered,
        methods,
        title=f"{suite}: mean over evaluation seeds (band: min-max); columns 1-2 against steps, "
        "3-4 against training time",
        cols=4,
    )


def _profile_figure(
    out: Path,
    suite: str,
    problems: Sequence[str],
    methods: Sequence[str],
    cells: dict[tuple[str, str], _Cell],
) -> tuple[Path, dict[str, dict[str, dict[str, float]]]]:
    profiles: dict[str, dict[str, dict[str, float]]] = {}
    for measure, key in (("time to target", "time_to_target"), ("steps to target", "steps_to_target")):
        profiles[measure] = {
            p: {m: cells[(p, m)].median(key) for m in methods if (p, m) in cells} for p in problems
        }
    path = performance_profile_figure(
        out / f"{suite}_profile.png",
        profiles,
        methods,
        title=f"{suite}: performance profiles (median over seeds; not reached / not run = failure)",
    )
    return path, profiles


def _cost_rows(
    problems: Sequence[str], methods: Sequence[str], cells: dict[tuple[str, str], _Cell]
) -> list[list[str]]:
    rows = []
    for p in problems:
        base_cell = cells.get((p, BASELINE))
        base = base_cell.median("step_time_median") if base_cell else None
        for m in methods:
            cell = cells.get((p, m))
            if cell is None:
                continue
            step = cell.median("step_time_median")
            steps = sum(r.summary["steps"] for r in cell.runs) or 1
            rows.append(
                [
                    p,
                    m,
                    f"{1e3 * step:.3g}",
                    fmt(_ratio(step, base), ".2f") if _ratio(step, base) is not None else "-",
                    f"{sum(r.summary['grad_evals'] for r in cell.runs) / steps:.2f}",
                    f"{sum(r.summary['curvature_calls'] for r in cell.runs) / steps:.2f}",
                    f"{statistics.fmean(r.summary['wall_time'] for r in cell.runs):.1f}",
                    f"{statistics.fmean(r.summary['eval_time'] for r in cell.runs):.1f}",
                ]
            )
    return rows


def _final_rows(
    problems: Sequence[str], methods: Sequence[str], cells: dict[tuple[str, str], _Cell]
) -> list[list[str]]:
    rows = []
    for p in problems:
        for m in methods:
            cell = cells.get((p, m))
            if cell is None:
                continue

            def col(key: str, spec: str, c: _Cell = cell) -> str:
                return _mean_sd([r.summary.get(key) for r in c.runs], spec)

            diverged = sum(r.status == "diverged" for r in cell.runs)
            rows.append(
                [
                    p,
                    m,
                    str(len(cell.runs)),
                    col("final_train_loss", ".3g"),
                    col("final_test_loss", ".3g"),
                    col("final_test_accuracy", ".4f"),
                    col("best_test_accuracy", ".4f"),
                    str(diverged),
                ]
            )
    return rows


def _tuning_rows(
    store: ResultStore, suite: str, problems: Sequence[str], methods: Sequence[str]
) -> list[list[str]]:
    rows = []
    tunings = {(t["problem"], t["method"]): t for t in store.tunings(suite)}
    for p in problems:
        for m in methods:
            t = tunings.get((p, m))
            if t is None:
                continue
            grid = t["context"]["grid"]
            chosen = ", ".join(f"{k} = {v:.3g}" for k, v in t["chosen"].items())
            edge = any(v in (grid[k][0], grid[k][-1]) for k, v in t["chosen"].items() if k in grid)
            span = "; ".join(
                f"{k}: {fmt(v[0], '.0e')}..{fmt(v[-1], '.0e')} ({len(v)})" for k, v in grid.items()
            )
            rows.append([p, m, chosen + (" (grid edge)" if edge else ""), fmt(t["objective"], ".4g"), span])
    return rows


def nn_section(store: ResultStore, out: Path, lines: list[str], suite: str) -> None:
    """Append the section of NN suite ``suite`` (figures written to ``out``) to ``lines``."""
    runs = store.runs(suite)
    cells = _cells(runs)
    failed = [r for r in runs if r.status == "failed"]
    lines += [f"## Neural networks: suite `{suite}`", ""]
    if not cells:
        lines += [f"No completed runs of suite {suite} in this store.", ""]
        return
    by_name = {s.name: s for s in SUITES.values()}
    preferred = list(by_name[suite].problems) if suite in by_name else []
    problems = order({p for p, _ in cells}, list(dict.fromkeys(preferred + problem_names())))
    methods = order({m for _, m in cells}, [m.name for m in methods_in(SUITE)])
    seeds = sorted({r.seed for r in runs})
    tuning_runs = store.count(f"{suite}-tuning")
    threads = sorted({r.summary.get("threads") for c in cells.values() for r in c.runs})
    lines += [
        f"{len(runs)} evaluation runs ({len(problems)} problems x {len(methods)} methods, seeds "
        f"{', '.join(map(str, seeds))}) after {tuning_runs} tuning runs on separate tuning seeds; float32 "
        f"on the CPU, {'/'.join(map(str, threads))} torch thread(s) per run. Training time excludes "
        "evaluation. Each method's learning rate was tuned per problem on a log grid (see Tuning below).",
        "",
    ]
    lines += _problem_lines(problems, cells)
    mixed = sorted(k for k, c in cells.items() if len({canonical_json(r.config) for r in c.runs}) > 1)
    if mixed:
        lines += [
            "**Warning**: these cells mix configurations (e.g. merged shards that tuned differently, or "
            f"budget overrides): {', '.join(f'{p}/{m}' for p, m in mixed)}.",
            "",
        ]
    lines += [
        "### Time to target",
        "",
        "Median over seeds of the training seconds until the first evaluation point meeting the target "
        f"(a seed that never reached it counts as infinite); in parentheses the ratio to {BASELINE}'s "
        "median (below 1 = faster); [k/n] when only k of n seeds reached the target. Resolution: the "
        "problem's evaluation interval.",
        "",
    ]
    lines += table(
        ["problem", *methods], time_to_target_rows(cells, problems, methods, "time_to_target", "s")
    )
    lines += ["Steps to target (same conventions, optimizer steps):", ""]
    lines += table(
        ["problem", *methods], time_to_target_rows(cells, problems, methods, "steps_to_target", "steps")
    )
    fig, profiles = _profile_figure(out, suite, problems, methods, cells)
    lines += [
        "### Performance profile",
        "",
        f"![performance profiles]({fig.name})",
        "",
        "rho(1) = the fraction of problems on which the method was the fastest to the target; the curve's "
        "height at tau = the fraction it solved within tau times the best method's cost.",
        "",
    ]
    counts = []
    for m in methods:
        time_costs = profiles["time to target"]
        row = [
            m,
            f"{sum((p, m) in cells for p in problems)}/{len(problems)}",
            str(sum(math.isfinite(time_costs[p].get(m, math.inf)) for p in problems)),
        ]
        for costs in profiles.values():
            row.append(
                str(
                    sum(
                        math.isfinite(costs[p].get(m, math.inf)) and costs[p][m] == min(costs[p].values())
                        for p in problems
                    )
                )
            )
        counts.append(row)
    lines += table(["method", "ran on", "reached target", "fastest (time)", "fastest (steps)"], counts)
    lines += [
        "(reached target: problems where the median seed reached it; fastest: problems where the method's "
        "median cost was the smallest, ties counting for each tied method)",
        "",
    ]
    fig = _curve_figure(store, out, suite, problems, methods, cells)
    lines += ["### Curves", "", f"![training curves]({fig.name})", ""]
    lines += [
        "### Final metrics",
        "",
        "At the end of the budget (a diverged run: its last finite evaluation), mean ± standard deviation "
        "over seeds.",
        "",
    ]
    lines += table(
        [
            "problem",
            "method",
            "seeds",
            "train loss",
            "test loss",
            "test accuracy",
            "best test acc.",
            "diverged",
        ],
        _final_rows(problems, methods, cells),
    )
    lines += [
        "### Step cost",
        "",
        f"Median over runs of each run's median seconds per optimizer step (forward, backward, curvature "
        f"and update; closure methods: all their evaluations) and its ratio to {BASELINE}'s; gradient "
        "evaluations and Hessian-vector products per step; mean training and evaluation seconds per run. "
        "Runs of one store ran on one machine, but possibly side by side in worker processes: treat "
        "ratios within 10-20 % as equal.",
        "",
    ]
    lines += table(
        [
            "problem",
            "method",
            "ms/step",
            f"ratio to {BASELINE}",
            "grads/step",
            "HVPs/step",
            "train s",
            "eval s",
        ],
        _cost_rows(problems, methods, cells),
    )
    tuning = _tuning_rows(store, suite, problems, methods)
    if tuning:
        lines += [
            "### Tuning",
            "",
            "Chosen on the tuning seeds by the final value of the target metric (smaller-is-better form, "
            "geometric mean over tuning seeds; ties to the smaller value). A choice at the grid's edge "
            "means the grid may not contain the best value.",
            "",
        ]
        lines += table(["problem", "method", "chosen", "objective", "grid (points)"], tuning)
    diverged = defaultdict(int)
    for c in cells.values():
        for r in c.runs:
            if r.status == "diverged":
                diverged[(c.problem, c.method)] += 1
    if diverged or failed:
        lines += ["### Runs that did not finish normally", ""]
        for (p, m), n in sorted(diverged.items()):
            lines.append(f"- {p} / {m}: {n} diverged (kept, with the metrics before the non-finite loss)")
        for r in failed[:20]:
            lines.append(f"- FAILED {r.problem} / {r.method} seed {r.seed}: {r.error}")
        if len(failed) > 20:
            lines.append(f"- ... and {len(failed) - 20} more failed runs")
        lines.append("")
