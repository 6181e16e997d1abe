"""2-D optimizer trajectories on contour plots: OGR, BFGS (strong Wolfe) and Adam on Beale and Rosenbrock.

The picture of Duda's OGR papers (arXiv:1901.11457, Fig. 1: OGR and its competitors on Beale) and of the 2025
comparison (arXiv:2512.06969), drawn for hessopt's implementations. Every method starts from the same point,
runs noise-free in float64 for up to 100 iterations (``quick``: 30), and its positions are clamped to the
function's box after every iteration (the test-function protocol, docs/benchmarks/functions.md). A path ends
early when ``‖∇f‖ ≤ 1e-8`` (the protocol's stopping rule) or when an iteration leaves the position unchanged
(a BFGS line search that found no decrease).

Methods:
* OGR (:class:`hessopt.optim.OGR`) with hessopt's defaults: Duda's test-function settings (β 0.5, γ 0.4,
  lr 1, div 1.5, cut 10; docs/algorithms/ogr.md).
* BFGS (:class:`hessopt.optim.BFGS`) with hessopt's defaults: strong-Wolfe line search (c1 1e-4, c2 0.9),
  scaled initial matrix (docs/algorithms/bfgs.md). One iteration may evaluate the function several times; the
  legend counts evaluations too.
* Adam (``torch.optim.Adam``, PyTorch's betas (0.9, 0.999) and eps 1e-8). Its learning rate is the best of
  :data:`ADAM_LR_GRID` (half-decade steps from 1e-3 to 1) by the geometric mean, over
  :data:`TUNING_STARTS` = 3 random starts of the box (seeds 1000-1002, :meth:`sample_starts`), of the final
  ``f − f_min`` after the same number of iterations; never tuned on the plotted start.

Contours: ``f − f_min`` on a 300 × 300 grid at log-spaced levels over the region the paths visit (padded,
inside the box). Cost: 3 methods + 7 × 3 Adam tuning runs of ≤ 100 iterations per function, plus the grid: a
few seconds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from torch import Tensor

from hessopt.bench.methods import get_method
from hessopt.problems.functions import BenchmarkFunction, get_function

__all__ = [
    "ADAM_LR_GRID",
    "TUNING_STARTS",
    "TUNING_SEED0",
    "GTOL",
    "Path2D",
    "default_problems",
    "optimize_path",
    "choose_adam_lr",
    "run",
]

ADAM_LR_GRID: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
"""Adam learning rates tried: half-decade steps up to 1. Adam's first steps move every coordinate by about
``lr``, so a larger lr crosses a large part of Rosenbrock's box (width 4) per step and the box clamping, not
the optimizer, shapes the path (with 3 and 10 added, Rosenbrock's 100-iteration tuning picks 10)."""

TUNING_STARTS = 3
TUNING_SEED0 = 1000
"""Adam is tuned from ``fn.sample_starts(TUNING_STARTS, seed0=TUNING_SEED0)``: uniform in the box, seeds
1000, 1001, 1002 (not the protocol's 42 + i and never the plotted start)."""

GTOL = 1e-8
"""A path ends once ``‖∇f‖ ≤ GTOL`` (the 2025 protocol's rule)."""

_FLOOR = 1e-300  # f − f_min below this counts as this in the geometric mean

METHODS = ("ogr", "bfgs", "adam")
"""The registered methods (:mod:`hessopt.bench.methods`) drawn, in this order."""


@dataclass
class Path2D:
    """One method's run on a 2-D function.

    One method's run: ``points`` (n+1, D) from the start through every iterate, ``values`` (n+1,) their
    ``f``, ``evaluations`` (closure calls, line-search trials included) and ``stop_reason`` (``"steps"``,
    ``"gtol"`` or ``"stalled"``).
    """

    method: str
    points: Tensor
    values: Tensor
    evaluations: int
    stop_reason: str

    @property
    def iterations(self) -> int:
        """Iterations taken."""
        return int(self.points.shape[0]) - 1

    @property
    def final_f(self) -> float:
        """The final function value."""
        return float(self.values[-1])


def default_problems() -> list[tuple[BenchmarkFunction, tuple[float, ...]]]:
    """Beale from (1, 1) and 2-D Rosenbrock from (-1.2, 1): both MGH starts (the functions' ``x0``)."""
    return [(get_function("beale"), (1.0, 1.0)), (get_function("rosenbrock", 2), (-1.2, 1.0))]


def _labels() -> dict[str, str]:
    return {m: get_method(m).label for m in METHODS}


def _build(method: str, params: list[Tensor], adam_lr: float | None) -> torch.optim.Optimizer:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    registered = get_method(method)
    config = dict(registered.hyper)
    if method == "adam":
        if adam_lr is None:
            raise ValueError("adam_lr is required for method 'adam'")
        config["lr"] = adam_lr
    return registered.factory(params, config)


def optimize_path(
    fn: BenchmarkFunction,
    start: Sequence[float] | Tensor,
    method: str,
    steps: int,
    *,
    adam_lr: float | None = None,
    gtol: float = GTOL,
) -> Path2D:
    """Run one method on a 2-D function and return its path.

    Run ``method`` (``"ogr"``, ``"bfgs"`` or ``"adam"``, settings in the module docstring) on ``fn`` from
    ``start`` for up to ``steps`` iterations, clamping to the box after each, and return the path.

    ``start`` may be a batch ``(n, D)`` for Adam (elementwise, so the rows are independent runs; used for
    tuning): then ``points`` is (n_iter+1, n, D), ``values`` (n_iter+1, n), and the gradient test uses the
    largest row norm. Cost: ``steps`` iterations of the method.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    x = torch.as_tensor(start, dtype=torch.float64).detach().clone()
    if x.shape[-1:] != (fn.dim,) or x.dim() > 2 or (x.dim() == 2 and method != "adam"):
        raise ValueError(
            f"start must have shape ({fn.dim},) (or (n, {fn.dim}) for method 'adam'), got {tuple(x.shape)}"
        )
    p = x.requires_grad_(True)
    opt = _build(method, [p], adam_lr)
    evaluations = 0

    def closure() -> Tensor:
        nonlocal evaluations
        evaluations += 1
        opt.zero_grad()
        loss = fn(p).sum()
        loss.backward()
        return loss

    points = [p.detach().clone()]
    values = [fn(p.detach())]
    stop_reason = "steps"
    for _ in range(steps):
        _, g = fn.value_and_grad(p.detach())
        if float(torch.linalg.vector_norm(g, dim=-1).max()) <= gtol:
            stop_reason = "gtol"
            break
        before = p.detach().clone()
        opt.step(closure)
        with torch.no_grad():
            p.copy_(fn.clamp(p))
        if torch.equal(p.detach(), before):
            stop_reason = "stalled"
            break
        points.append(p.detach().clone())
        values.append(fn(p.detach()))
    return Path2D(method, torch.stack(points), torch.stack(values), evaluations, stop_reason)


def _geometric_mean_gap(fn: BenchmarkFunction, values: Tensor) -> float:
    gaps = (values - fn.f_min).clamp_min(_FLOOR)
    return float(torch.exp(torch.log(gaps).mean()))


def choose_adam_lr(fn: BenchmarkFunction, steps: int) -> tuple[float, dict[float, float]]:
    """Adam's learning rate for ``fn``, tuned on other starts.

    Adam's learning rate for ``fn``: the grid value with the smallest geometric mean of the final
    ``f − f_min`` over the tuning starts after ``steps`` iterations (ties: the smaller lr).

    Returns ``(lr, {lr: score})``. Cost: ``len(ADAM_LR_GRID)`` batched Adam runs.
    """
    starts = fn.sample_starts(TUNING_STARTS, seed0=TUNING_SEED0)
    scores = {lr: _geometric_mean_gap(fn, optimize_path(fn, starts, "adam", steps, adam_lr=lr).values[-1])
              for lr in ADAM_LR_GRID}
    best = min(ADAM_LR_GRID, key=lambda lr: (scores[lr], lr))
    return best, scores


# ----------------------------------------------------------------------------- figure

def _region(
    fn: BenchmarkFunction, paths: Sequence[Path2D], start: Tensor
) -> tuple[float, float, float, float]:
    pts = [start.reshape(1, 2)] + [pth.points for pth in paths]
    pts += [torch.tensor(m, dtype=torch.float64).reshape(1, 2) for m in fn.minimizers]
    allp = torch.cat(pts)
    lo, hi = allp.min(0).values, allp.max(0).values
    pad = torch.clamp(0.15 * (hi - lo), min=0.5)
    lo = torch.clamp(lo - pad, min=fn.lower)
    hi = torch.clamp(hi + pad, max=fn.upper)
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _figure(path: Path, fn: BenchmarkFunction, start: Tensor, paths: Mapping[str, Path2D],
            labels: Mapping[str, str]) -> None:
    x0, x1, y0, y1 = _region(fn, list(paths.values()), start)
    xs = torch.linspace(x0, x1, 300, dtype=torch.float64)
    ys = torch.linspace(y0, y1, 300, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    z = (fn(torch.stack([gx, gy], dim=-1)) - fn.f_min).numpy()
    hi = float(z.max())
    positive = z[z > 0]
    lo = max(float(positive.min()) if positive.size else hi * 1e-8, hi * 1e-8)
    levels = np.logspace(math.log10(lo), math.log10(hi), 25)
    z = np.maximum(z, lo)

    fig = Figure(figsize=(7.0, 6.0))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.08, top=0.94)
    ax = fig.add_subplot(1, 1, 1)
    norm = LogNorm(lo, hi)
    ax.contour(gx.numpy(), gy.numpy(), z, levels=levels, norm=norm, cmap="viridis", linewidths=0.6)
    fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=ax,
                 label=f"f − f_min (25 log-spaced levels; f_min = {fn.f_min:g})")
    for i, (key, pth) in enumerate(paths.items()):
        pts = pth.points.numpy()
        label = f"{labels[key]}: final f = {pth.final_f:.3g} ({pth.iterations} it., {pth.evaluations} ev.)"
        ax.plot(pts[:, 0], pts[:, 1], "-o", color=f"C{i + 1}", ms=2.5, lw=1.2, label=label)
    ax.plot([float(start[0])], [float(start[1])], "ko", ms=8, mfc="white", mew=2, label="start", zorder=5)
    for j, m in enumerate(fn.minimizers):
        ax.plot([m[0]], [m[1]], "*", color="red", ms=14, mec="k", label="minimum" if j == 0 else None,
                zorder=5)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{fn.name} from ({float(start[0]):g}, {float(start[1]):g}), positions clamped to the box")
    ax.legend(fontsize=7, loc="best")
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


# ----------------------------------------------------------------------------- study

def _markdown(results: Mapping[str, Any], steps: int) -> str:
    lines = [
        "## Optimizer trajectories",
        "",
        f"OGR (hessopt defaults), BFGS (strong Wolfe) and Adam from the same start, up to {steps} "
        f"iterations, float64, exact gradients, positions clamped to the box, stop at ‖∇f‖ ≤ {GTOL:g}. "
        f"Adam's learning rate is the best of {list(ADAM_LR_GRID)} by the geometric mean of the final "
        f"f − f_min over {TUNING_STARTS} random starts of the box (seeds {TUNING_SEED0}-"
        f"{TUNING_SEED0 + TUNING_STARTS - 1}), not the plotted start.",
        "",
        "| function | start | method | final f | iterations | evaluations |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for key, m in res["methods"].items():
            label = _labels()[key] + (f" (lr {res['adam_lr']:g})" if key == "adam" else "")
            stop = f" ({m['stop_reason']})" if m["stop_reason"] != "steps" else ""
            lines.append(
                f"| {name} | {tuple(res['start'])} | {label} | {m['final_f']:.3g} | {m['iterations']}{stop}"
                f" | {m['evaluations']} |"
            )
    lines.append("")
    for name, res in results.items():
        lines += [f"![Trajectories on {name}]({res['png']})", ""]
    return "\n".join(lines)


def run(out_dir: Path, *, quick: bool = False) -> dict[str, Any]:
    """Draw the trajectories and write their figures, data and report fragment.

    Draw the trajectories and write, under ``out_dir``: ``trajectories_<function>.png`` (one per function),
    ``trajectories.json`` (paths, values, Adam's tuning scores) and ``trajectories.md`` (a report fragment
    linking the PNGs by file name). 100 iterations (``quick``: 30).

    Returns ``{"steps", "quick", "runtime_s", "files", "summary"}`` with ``summary[function]`` =
    ``{"adam_lr", method: {"final_f", "iterations", "evaluations", "stop_reason"}}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = 30 if quick else 100
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    files: list[str] = []
    for fn, start in default_problems():
        lr, scores = choose_adam_lr(fn, steps)
        paths = {m: optimize_path(fn, start, m, steps, adam_lr=lr) for m in ("ogr", "bfgs", "adam")}
        labels = {**_labels(), "adam": f"Adam (lr {lr:g})"}
        png = f"trajectories_{fn.name}.png"
        _figure(out_dir / png, fn, torch.tensor(start, dtype=torch.float64), paths, labels)
        files.append(png)
        results[fn.name] = {
            "start": list(start),
            "minimizers": [list(m) for m in fn.minimizers],
            "f_min": fn.f_min,
            "adam_lr": lr,
            "adam_tuning": {"starts": fn.sample_starts(TUNING_STARTS, seed0=TUNING_SEED0).tolist(),
                            "geometric_mean_gap": {f"{k:g}": v for k, v in scores.items()}},
            "png": png,
            "methods": {
                key: {"final_f": pth.final_f, "iterations": pth.iterations, "evaluations": pth.evaluations,
                      "stop_reason": pth.stop_reason, "points": pth.points.tolist(),
                      "values": pth.values.tolist()}
                for key, pth in paths.items()
            },
        }
    runtime = time.perf_counter() - t0
    payload = {"study": "trajectories", "steps": steps, "quick": quick, "gtol": GTOL,
               "torch": torch.__version__, "runtime_s": runtime, "adam_lr_grid": list(ADAM_LR_GRID),
               "functions": results}
    (out_dir / "trajectories.json").write_text(json.dumps(payload, indent=1))
    (out_dir / "trajectories.md").write_text(_markdown(results, steps))
    files += ["trajectories.json", "trajectories.md"]
    summary = {
        name: {"adam_lr": res["adam_lr"],
               **{k: {f: m[f] for f in ("final_f", "iterations", "evaluations", "stop_reason")}
                  for k, m in res["methods"].items()}}
        for name, res in results.items()
    }
    return {"steps": steps, "quick": quick, "runtime_s": runtime, "files": [str(out_dir / f) for f in files],
            "summary": summary}
