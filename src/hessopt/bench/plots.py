"""Figures of the benchmark report (matplotlib, Agg canvas; no pyplot global state).

* :func:`sorted_values_figure`: one panel per problem, the per-start values sorted ascending on a
  log axis, one curve per method — the presentation of the 2025 BFGS/OGR comparison (ogr.md §5.4:
  "sorted over starts and shown as a log-scale scatter per function").
* :func:`curves_figure`: one panel per problem, the median over starts of a best-so-far curve
  against steps (symlog axis, so step 0 shows), with the interquartile range shaded.

Values are drawn at no less than :data:`DISPLAY_FLOOR` = 1e-32: on a float64 test function anything
below is "solved", and exact zeros must stay on a log axis; a lower floor (the tables use 1e-300)
would squeeze every other difference into the top of the panel. NaN counts as ``inf`` (not drawn).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["DISPLAY_FLOOR", "method_colors", "sorted_values_figure", "curves_figure"]

DISPLAY_FLOOR = 1e-32


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method (matplotlib's tab10/tab20 order), the same in every figure."""
    palette = [f"C{i}" for i in range(10)]
    extra = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31"]
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


def sorted_values_figure(
    path: str | Path,
    data: Mapping[str, Mapping[str, Sequence[float]]],
    methods: Sequence[str],
    *,
    title: str,
    ylabel: str,
) -> Path:
    """``data[problem][method]`` = per-start values; writes a PNG with one panel per problem."""
    problems = list(data)
    if not problems:
        raise ValueError("sorted_values_figure needs at least one problem")
    rows, cols = _grid(len(problems))
    colors = method_colors(methods)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
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
    for ax in list(axes.flat)[len(problems) :]:
        ax.set_visible(False)
    fig.legend(
        list(labels.values()),
        list(labels.keys()),
        loc="outside lower center",
        ncol=min(len(labels), 7),
        fontsize=8,
    )
    fig.suptitle(title, fontsize=11)
    return _save(fig, Path(path))


def curves_figure(
    path: str | Path,
    data: Mapping[str, Mapping[str, Mapping[int, Sequence[float]]]],
    methods: Sequence[str],
    *,
    title: str,
    ylabel: str,
) -> Path:
    """``data[problem][method][step]`` = per-start values; median and quartiles against steps."""
    problems = list(data)
    if not problems:
        raise ValueError("curves_figure needs at least one problem")
    rows, cols = _grid(len(problems))
    colors = method_colors(methods)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
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
    for ax in list(axes.flat)[len(problems) :]:
        ax.set_visible(False)
    fig.legend(
        list(labels.values()),
        list(labels.keys()),
        loc="outside lower center",
        ncol=min(len(labels), 7),
        fontsize=8,
    )
    fig.suptitle(title, fontsize=11)
    return _save(fig, Path(path))
