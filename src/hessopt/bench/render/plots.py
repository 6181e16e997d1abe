"""Figures of the benchmark report (matplotlib, Agg canvas; no pyplot global state).

* :func:`sorted_values_figure`: one panel per problem, the per-start values sorted ascending on a
  log axis, one curve per method — the presentation of the 2025 BFGS/OGR comparison (arXiv:2512.06969;
  "sorted over starts and shown as a log-scale scatter per function").
* :func:`curves_figure`: one panel per problem, the median over starts of a best-so-far curve
  against steps (symlog axis, so step 0 shows), with the interquartile range shaded.
* :func:`band_figure`: panels of curves with a shaded band (the NN report's mean and min-max over
  seeds against steps and against training time).
* :func:`performance_profile_figure` / :func:`performance_ratios`: Dolan-Moré performance profiles.

Values are drawn at no less than :data:`DISPLAY_FLOOR` = 1e-32: on a float64 test function anything
below is "solved", and exact zeros must stay on a log axis; a lower floor (the tables use 1e-300)
would squeeze every other difference into the top of the panel. NaN counts as ``inf`` (not drawn).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "DISPLAY_FLOOR",
    "Panel",
    "band_figure",
    "curves_figure",
    "method_colors",
    "performance_profile_figure",
    "performance_ratios",
    "sorted_values_figure",
]

DISPLAY_FLOOR = 1e-32


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method (tab10, then 14 more), the same in every figure."""
    palette = [f"C{i}" for i in range(10)]
    extra = [  # chosen to stand apart from tab10 by eye, most distinct first
        "#000000", "#393b79", "#e7ba52", "#98df8a", "#ff9896", "#c5b0d5", "#aec7e8",
        "#ffbb78", "#637939", "#ce6dbd", "#843c39", "#bcbddc", "#fdae6b", "#9edae5",
    ]  # fmt: skip
    colors = palette + extra
    return {m: colors[i % len(colors)] for i, m in enumerate(methods)}


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, n)
    return math.ceil(n / cols), cols


def _floored(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    arr = np.where(np.isnan(arr), np.inf, arr)
    return np.maximum(arr, DISPLAY_FLOOR)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _finish(
    fig: Figure, axes: np.ndarray, used: int, labels: dict[str, object], title: str, path: Path
) -> Path:
    """Hide the panels after the first ``used``, add the shared legend and the title, save the PNG."""
    for ax in list(axes.flat)[used:]:
        ax.set_visible(False)
    if labels:
        fig.legend(
            list(labels.values()),
            list(labels.keys()),
            loc="outside lower center",
            ncol=min(len(labels), 8),
            fontsize=8,
        )
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _panels(
    data: Mapping[str, object], methods: Sequence[str], who: str
) -> tuple[list[str], dict, Figure, Any]:
    """The problems, method colours, figure and axes grid of a one-panel-per-problem figure."""
    problems = list(data)
    if not problems:
        raise ValueError(f"{who} needs at least one problem")
    rows, cols = _grid(len(problems))
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    return problems, method_colors(methods), fig, fig.subplots(rows, cols, squeeze=False)


def sorted_values_figure(
    path: str | Path,
    data: Mapping[str, Mapping[str, Sequence[float]]],
    methods: Sequence[str],
    *,
    title: str,
    ylabel: str,
) -> Path:
    """``data[problem][method]`` = per-start values; writes a PNG with one panel per problem."""
    problems, colors, fig, axes = _panels(data, methods, "sorted_values_figure")
    labels: dict[str, object] = {}
    for ax, problem in zip(axes.flat, problems, strict=False):
        for method in methods:
            values = data[problem].get(method)
            if not values:
                continue
            y = np.sort(_floored(values))
            finite = np.isfinite(y)
            (line,) = ax.plot(
                np.arange(1, len(y) + 1)[finite],
                y[finite],
                marker=".",
                markersize=3,
                linewidth=0.8,
                color=colors[method],
                label=method,
            )
            labels.setdefault(method, line)
        ax.set_yscale("log")
        ax.set_title(problem, fontsize=10)
        ax.set_xlabel("start (sorted)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
    return _finish(fig, axes, len(problems), labels, title, Path(path))


def curves_figure(
    path: str | Path,
    data: Mapping[str, Mapping[str, Mapping[int, Sequence[float]]]],
    methods: Sequence[str],
    *,
    title: str,
    ylabel: str,
) -> Path:
    """``data[problem][method][step]`` = per-start values; median and quartiles against steps."""
    problems, colors, fig, axes = _panels(data, methods, "curves_figure")
    labels: dict[str, object] = {}
    for ax, problem in zip(axes.flat, problems, strict=False):
        for method in methods:
            per_step = data[problem].get(method)
            if not per_step:
                continue
            steps = sorted(per_step)
            q = np.array([np.quantile(_floored(per_step[s]), [0.25, 0.5, 0.75]) for s in steps])
            (line,) = ax.plot(steps, q[:, 1], color=colors[method], linewidth=1.2, label=method)
            ax.fill_between(steps, q[:, 0], q[:, 2], color=colors[method], alpha=0.15, linewidth=0)
            labels.setdefault(method, line)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_yscale("log")
        ax.set_title(problem, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
    return _finish(fig, axes, len(problems), labels, title, Path(path))


@dataclass(frozen=True)
class Panel:
    """One panel of :func:`band_figure`.

    One panel of :func:`band_figure`: ``series[method] = (x, middle, low, high)`` (equal-length
    sequences; the band ``low..high`` is shaded), axis labels and scales, and an optional horizontal
    reference line ``hline`` (e.g. a target) labelled ``hline_label``.
    """

    title: str
    xlabel: str
    ylabel: str
    series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]]
    xscale: str = "linear"
    yscale: str = "linear"
    hline: float | None = None
    hline_label: str = ""


def band_figure(
    path: str | Path, panels: Sequence[Panel], methods: Sequence[str], *, title: str, cols: int
) -> Path:
    """Panels of curves with shaded bands.

    Panels of curves with shaded bands (mean and spread over seeds), ``cols`` panels per row, one
    colour per method as in every other figure; writes a PNG.
    """
    if not panels:
        raise ValueError("band_figure needs at least one panel")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols!r}")
    rows = math.ceil(len(panels) / cols)
    colors = method_colors(methods)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    labels: dict[str, object] = {}
    for ax, panel in zip(axes.flat, panels, strict=False):
        for method in methods:
            if method not in panel.series:
                continue
            x, mid, lo, hi = (np.asarray(v, dtype=float) for v in panel.series[method])
            if x.size == 0:
                continue
            (line,) = ax.plot(x, mid, color=colors[method], linewidth=1.2, marker=".", markersize=3)
            ax.fill_between(x, lo, hi, color=colors[method], alpha=0.15, linewidth=0)
            labels.setdefault(method, line)
        if panel.hline is not None:
            ax.axhline(panel.hline, color="k", linestyle="--", linewidth=0.8)
            if panel.hline_label:
                ax.annotate(
                    panel.hline_label,
                    (0.01, panel.hline),
                    xycoords=("axes fraction", "data"),
                    fontsize=7,
                    va="bottom",
                )
        ax.set_xscale(panel.xscale)
        ax.set_yscale(panel.yscale)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(panel.xlabel, fontsize=8)
        ax.set_ylabel(panel.ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
    return _finish(fig, axes, len(panels), labels, title, Path(path))


def performance_profile_figure(
    path: str | Path,
    profiles: Mapping[str, Mapping[str, Mapping[str, float]]],
    methods: Sequence[str],
    *,
    title: str,
) -> Path:
    """Dolan-Moré performance profiles, one panel per cost measure.

    ``profiles[measure][problem][method]`` = the cost (smaller is better; ``inf`` = failed, e.g. the
    target was never reached or the method did not run). For each problem the ratio of a method's
    cost to the best method's is ``r``; the curve of a method is ``rho(tau)`` = the fraction of
    problems with ``r <= tau``, on a log2 axis (Dolan & Moré 2002, Math. Program. 91:201-213).
    A problem no method solved counts as failed for every method.
    """
    if not profiles:
        raise ValueError("performance_profile_figure needs at least one measure")
    colors = method_colors(methods)
    cols = len(profiles)
    fig = Figure(figsize=(4.6 * cols, 3.6), layout="constrained")
    axes = fig.subplots(1, cols, squeeze=False)
    labels: dict[str, object] = {}
    for ax, (measure, costs) in zip(axes.flat, profiles.items(), strict=True):
        ratios = performance_ratios(costs, methods)
        finite = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
        tau_max = max(2.0, 2.0 * max(finite, default=1.0))
        for method in methods:
            r = np.sort(np.asarray(ratios[method], dtype=float))
            taus = np.concatenate([[1.0], r[np.isfinite(r)], [tau_max]])
            rho = np.array([np.mean(r <= t) for t in taus])
            (line,) = ax.step(taus, rho, where="post", color=colors[method], linewidth=1.3)
            labels.setdefault(method, line)
        ax.set_xscale("log", base=2)
        ax.set_xlim(1.0, tau_max)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{measure} ({len(costs)} problems)", fontsize=9)
        ax.set_xlabel("tau: cost / best cost on the problem", fontsize=8)
        ax.set_ylabel("fraction of problems with ratio <= tau", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
    return _finish(fig, axes, cols, labels, title, Path(path))


def performance_ratios(
    costs: Mapping[str, Mapping[str, float]], methods: Sequence[str]
) -> dict[str, list[float]]:
    """Performance ratios of every method on every problem (Dolan and Moré).

    ``{method: [r_p for each problem]}``: the cost on problem p over the best method's cost on p
    (``inf`` where the method failed or did not run; every method ``inf`` where all failed).
    """
    out: dict[str, list[float]] = {m: [] for m in methods}
    for problem, by_method in costs.items():
        for m, c in by_method.items():
            if not (c >= 0):  # NaN or negative
                raise ValueError(f"cost of {m} on {problem} must be >= 0 or inf, got {c!r}")
        best = min((by_method.get(m, math.inf) for m in methods), default=math.inf)
        for m in methods:
            c = by_method.get(m, math.inf)
            if not math.isfinite(best) or not math.isfinite(c):
                out[m].append(math.inf)
            elif best == 0:
                out[m].append(1.0 if c == 0 else math.inf)
            else:
                out[m].append(c / best)
    return out
