"""Hessian tracking: how close OGR's and BFGS's curvature estimates stay to the exact Hessian on their runs.

Przybysz, Kołek, Sobota and Duda (arXiv:2512.06969) contrast BFGS's Sherman-Morrison estimate, positive
definite by construction, with OGR's regression estimate, which "can thus handle non-convex structures".
Their public benchmark code (github.com/ReadHegel/pytorch-ogr, ``ogr_bfgs_bench.py``) tracks both
estimates against the exact Hessian in 2-D; on Rastrigin its plots show OGR's H staying within 0-30 while
the true H jumps between ±400 (with a slow β, OGR sees a smoothed, regional curvature;
docs/benchmarks/functions.md). This module measures that.

Each method runs on its own trajectory, noise-free, in float64, with the positions clamped to the function's
box after every step (the test-function protocol, docs/benchmarks/functions.md). After iteration ``k``
(1-based) the estimate ``Ĥ_k`` is compared with the exact Hessian ``∇²f``
(:func:`hessopt.curvature.exact.hessian`, ``torch.func``) at the point where the method uses it:

* **OGR** (:class:`hessopt.optim.OGR`): ``Ĥ_k = opt.hessian()`` is the regression estimate that already
  includes the gradient at ``θ_{k-1}`` and from which the step leaving ``θ_{k-1}`` was taken, so it is
  compared at ``θ_{k-1}``; also, as a second number, at the EMA mean ``θ̄`` of the positions, the centre of
  the window the regression averages over.
* **BFGS** (:class:`hessopt.optim.BFGS`, strong-Wolfe line search): ``Ĥ_k = inv(H_k)`` with ``H_k`` the
  inverse-Hessian approximation after the update with ``(s_k, y_k)``; the next step, from ``θ_k``, uses it,
  so it is compared at ``θ_k``. It satisfies the secant equation ``Ĥ_k s_k = y_k``. A restart (``H`` reset
  to ``I`` when ``−Hg`` is not a descent direction) is recorded as it is.

Numbers per step: the relative Frobenius error ``‖Ĥ − ∇²f‖_F / ‖∇²f‖_F`` and the smallest eigenvalues of
``Ĥ`` and ``∇²f``. A run stops early once ``‖∇f‖ ≤ 1e-8`` (the protocol's stopping rule), or when an
iteration leaves θ unchanged: at a point converged to rounding, BFGS's line search finds no decrease and
restarts from ``H = I``, an artefact that would otherwise be recorded as the estimate.

Methods (:data:`METHODS`, registry names of :mod:`hessopt.bench.methods`): OGR with hessopt's defaults;
OGR with the settings of the 2025 benchmark code (:func:`r2_ogr_options`: ``mean_init="zero"``, β 0.8, γ 0,
div 1, ``Σ0 = C0 = I``, the smallest cut, lr and ``max_step_norm`` per function); BFGS with hessopt's
defaults (strong Wolfe, c1 = 1e-4, c2 = 0.9, scaled ``H0``; docs/algorithms/bfgs.md).

Cost: per step one optimizer step, one exact Hessian (D Hessian-vector products; two with OGR) and two
``eigvalsh``. In 2-D the full study (4 functions × 3 methods × up to 200 steps) takes ~10-20 s on 2 CPU cores,
half of it plotting.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from hessopt.bench.methods import get_method
from hessopt.curvature.exact import hessian
from hessopt.optim.base import HessoptOptimizer
from hessopt.problems.functions import BenchmarkFunction, get_function

__all__ = [
    "TrackedMethod",
    "TrackingCase",
    "Track",
    "METHODS",
    "GTOL",
    "r2_ogr_options",
    "default_cases",
    "relative_error",
    "track",
    "summarize",
    "run",
]

GTOL = 1e-8
"""Stop a run once ``‖∇f‖ ≤ GTOL`` (the 2025 protocol's rule)."""


@dataclass(frozen=True)
class TrackedMethod:
    """A configuration of the study: a registered method (:mod:`hessopt.bench.methods`) and its settings.

    ``options(fn)`` gives its hyper-parameters for a function over the registry's fixed ones (the 2025
    benchmark's OGR settings depend on the function).
    """

    key: str
    label: str
    method: str
    options: Callable[[BenchmarkFunction], dict[str, Any]]


def r2_ogr_options(fn: BenchmarkFunction) -> dict[str, Any]:
    """OGR settings that reproduce the OGR of the 2025 benchmark code (github.com/ReadHegel/pytorch-ogr).

    β 0.8 (the code's 0.2 in its new-sample EMA convention), γ 0 (raw gradient), div 1, ``Σ0 = C0 = I``
    (``sigma0=1``, ``h_prior=1``), means initialised at zero, the smallest cut (the code has no eigenvalue
    floor), and per function (lr, ``max_step_norm``): Rastrigin (0.6, 2.5), Schwefel and Ackley (0.5, 1.5),
    all others (0.5, 1.0). hessopt's ridge floor stays on; the code has a 1e-12·I jitter instead.

    Args:
        fn: the test function.

    Returns:
        Keyword arguments for :class:`hessopt.optim.OGR`.
    """
    lr, max_step = {"rastrigin": (0.6, 2.5), "schwefel": (0.5, 1.5), "ackley": (0.5, 1.5)}.get(
        fn.name, (0.5, 1.0)
    )
    return dict(lr=lr, beta=0.8, gamma=0.0, div=1.0, cut=1e-12, max_step_norm=max_step,
                mean_init="zero", sigma0=1.0, h_prior=1.0)


METHODS: tuple[TrackedMethod, ...] = (
    TrackedMethod("ogr", "OGR (hessopt defaults)", "ogr", lambda fn: {}),
    TrackedMethod("ogr_r2", "OGR (2025 benchmark settings)", "ogr", r2_ogr_options),
    TrackedMethod("bfgs", "BFGS (strong Wolfe)", "bfgs", lambda fn: {}),
)
"""The three methods tracked, in plotting order."""


@dataclass(frozen=True)
class TrackingCase:
    """A function and the start of every method's run on it."""

    key: str
    title: str
    function: BenchmarkFunction
    start: tuple[float, ...]


def default_cases() -> list[TrackingCase]:
    """The four functions of the study.

    * 2-D Rosenbrock from (-1.2, 1) (MGH start): a curved valley, indefinite near the start.
    * :class:`~hessopt.problems.functions.QuarticSaddle` from (1, 1e-3): the run starts next to a
      saddle.
    * Himmelblau from (0.1, 2.9), 0.02 from its saddle point ≈ (0.0867, 2.8843) (eigenvalues ≈ −34, 74).
    * 2-D Rastrigin from the protocol's first random start (seed 42) ≈ (-4.5245, -4.4758): the
      true Hessian ``2 + 40π² cos(2πx_i)`` per coordinate swings between −393 and +397 (pitfall 12). Not its
      hessopt ``x0`` = (2.56, 2.56): on the diagonal x = y every method stays on it (the function is
      symmetric and separable), so OGR's Σ has rank one and the across-diagonal curvature is never observed.
    """
    rastrigin = get_function("rastrigin", 2)
    rastrigin_start = tuple(rastrigin.sample_starts(1, seed0=42)[0].tolist())
    return [
        TrackingCase("rosenbrock", "Rosenbrock 2-D from (-1.2, 1)", get_function("rosenbrock", 2),
                     (-1.2, 1.0)),
        TrackingCase("quartic_saddle", "x²/2 − y²/2 + y⁴/4 from (1, 1e-3)", get_function("quartic_saddle"),
                     (1.0, 1e-3)),
        TrackingCase("himmelblau", "Himmelblau from (0.1, 2.9), by a saddle", get_function("himmelblau"),
                     (0.1, 2.9)),
        TrackingCase("rastrigin", "Rastrigin 2-D from (-4.52, -4.48) (protocol start, seed 42)", rastrigin,
                     rastrigin_start),
    ]


@dataclass
class Track:
    """One method's run: per iteration ``k = 1..n`` (row ``k-1``) the point of comparison and the numbers.

    ``points``: (n, D) where each estimate is compared (OGR: the iterate the step left; BFGS: the iterate
    the step reached). ``estimates``, ``exact``: (n, D, D). ``error``: relative Frobenius error (n,).
    ``estimate_min_eig``, ``exact_min_eig``: (n,). For OGR also ``mean_points`` (θ̄ after the step) and
    ``error_at_mean`` (the error against ``∇²f(θ̄)``); None for BFGS. ``final_point`` and ``final_f``: where
    the run ended; ``final_grad_norm``; ``stop_reason``: ``"steps"`` (all iterations ran), ``"gtol"``
    (``‖∇f‖ ≤ gtol`` before an iteration) or ``"stalled"`` (an iteration left θ unchanged, e.g. a failed
    BFGS line search; it is not recorded); ``evaluations``: closure calls (line-search trials included).
    """

    method: str
    points: Tensor
    estimates: Tensor
    exact: Tensor
    error: Tensor
    estimate_min_eig: Tensor
    exact_min_eig: Tensor
    final_point: Tensor
    final_f: float
    final_grad_norm: float
    stop_reason: str
    evaluations: int
    mean_points: Tensor | None = None
    error_at_mean: Tensor | None = None

    @property
    def steps(self) -> int:
        """Iterations recorded."""
        return int(self.error.numel())


def relative_error(estimate: Tensor, exact: Tensor) -> Tensor:
    """``‖estimate − exact‖_F / ‖exact‖_F`` over the last two dimensions (batched).

    A zero ``exact`` (possible at isolated points) divides by the smallest normal number of the dtype
    instead, so the result is finite and huge unless the estimate is zero too.
    """
    diff = torch.linalg.matrix_norm(estimate - exact)
    scale = torch.linalg.matrix_norm(exact).clamp_min(torch.finfo(exact.dtype).tiny)
    return diff / scale


def _check_start(fn: BenchmarkFunction, start: Sequence[float] | Tensor) -> Tensor:
    x = torch.as_tensor(start, dtype=torch.float64).detach().clone().reshape(-1)
    if x.numel() != fn.dim:
        raise ValueError(f"start must have dim={fn.dim} entries for {fn.name}, got {x.numel()}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"start must be finite, got {x.tolist()}")
    return x


def _exact_hessians(fn: BenchmarkFunction, points: Tensor) -> Tensor:
    """Exact Hessians at the rows of ``points``.

    Exact Hessians (n, D, D) at the rows of ``points`` (n, D): :func:`hessian` vmapped over the points
    (one batched ``torch.func`` call instead of n, ~100x faster in 2-D).
    """
    if points.shape[0] == 0:
        return points.new_empty(0, fn.dim, fn.dim)
    return torch.func.vmap(lambda x: hessian(fn, x))(points)


def hessian_estimate(opt: torch.optim.Optimizer) -> Tensor:
    """The (D, D) Hessian estimate of an optimizer that keeps one.

    The (D, D) Hessian estimate of an optimizer that keeps one: ``hessian()`` (OGR), or the inverse of
    ``inverse_hessian()`` (BFGS); TypeError naming the optimizer otherwise.
    """
    if hasattr(opt, "hessian"):
        return opt.hessian().clone()
    if hasattr(opt, "inverse_hessian"):
        inv = opt.inverse_hessian()
        return torch.linalg.solve(inv, torch.eye(inv.shape[0], dtype=inv.dtype, device=inv.device))
    raise TypeError(f"{type(opt).__name__} keeps no Hessian estimate (no hessian() or inverse_hessian())")


def track(
    fn: BenchmarkFunction,
    start: Sequence[float] | Tensor,
    method: str,
    steps: int,
    *,
    clamp: bool = True,
    gtol: float = GTOL,
    **options: Any,
) -> Track:
    """Track one method's Hessian estimate along its own run.

    Run the registered ``method`` on ``fn`` from ``start`` for up to ``steps`` iterations, recording its
    Hessian estimate (:func:`hessian_estimate`) against the exact Hessian after every iteration.

    ``options`` go over the registry's fixed hyper-parameters. With ``clamp``
    the positions are clamped to ``fn``'s box after every step. Everything runs in float64 on CPU.
    Cost: ``steps`` optimizer steps plus ``steps`` exact (D, D) Hessians (two with OGR).
    """
    registered = get_method(method)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not (isinstance(gtol, (int, float)) and not isinstance(gtol, bool) and gtol >= 0):
        raise ValueError(f"gtol must be a number >= 0, got {gtol!r}")
    p = _check_start(fn, start).requires_grad_(True)
    opt = registered.factory([p], {**registered.hyper, **options})
    evaluations = 0

    def closure() -> Tensor:
        nonlocal evaluations
        evaluations += 1
        opt.zero_grad()
        loss = fn(p)
        loss.backward()
        return loss

    points, estimates, means = [], [], []
    stop_reason = "steps"
    for _ in range(steps):
        _, g = fn.value_and_grad(p.detach())
        if float(torch.linalg.vector_norm(g)) <= gtol:
            stop_reason = "gtol"
            break
        before = p.detach().clone()
        opt.step(closure)
        if clamp:
            with torch.no_grad():
                p.copy_(fn.clamp(p))
        if torch.equal(p.detach(), before):
            stop_reason = "stalled"
            break
        estimates.append(hessian_estimate(opt))
        if isinstance(opt, HessoptOptimizer) and "theta_mean" in opt.flat_state():
            # a regression estimate describes the region around its mean position, fitted before the step
            points.append(before)
            means.append(opt.flat_state()["theta_mean"].detach().clone())
        else:
            points.append(p.detach().clone())
    f_end, g_end = fn.value_and_grad(p.detach())
    d = fn.dim
    pts = torch.stack(points) if points else torch.empty(0, d, dtype=torch.float64)
    est = torch.stack(estimates) if estimates else torch.empty(0, d, d, dtype=torch.float64)
    ex = _exact_hessians(fn, pts)
    out = Track(
        method=method,
        points=pts,
        estimates=est,
        exact=ex,
        error=relative_error(est, ex),
        estimate_min_eig=torch.linalg.eigvalsh(est)[..., 0],
        exact_min_eig=torch.linalg.eigvalsh(ex)[..., 0],
        final_point=p.detach().clone(),
        final_f=float(f_end),
        final_grad_norm=float(torch.linalg.vector_norm(g_end)),
        stop_reason=stop_reason,
        evaluations=evaluations,
    )
    if means:
        out.mean_points = torch.stack(means) if means else torch.empty(0, d, dtype=torch.float64)
        out.error_at_mean = relative_error(est, _exact_hessians(fn, out.mean_points))
    return out


def _last_half_median(values: Tensor) -> float | None:
    n = values.numel()
    if n == 0:
        return None
    return float(statistics.median(values[n // 2:].tolist()))


def summarize(tr: Track) -> dict[str, Any]:
    """The summary numbers of one run.

    ``median_error_last_half``: median relative error over iterations ``n//2+1..n`` of the ``n`` run (also
    ``median_error_at_mean_last_half`` for OGR); ``min_estimate_eig``/``min_exact_eig`` and
    ``max_estimate_eig``/``max_exact_eig``: the smallest and largest eigenvalue over the run;
    ``steps_estimate_negative``/``steps_exact_negative``: iterations where the estimate/``∇²f`` had a negative
    eigenvalue; ``steps_both_negative``: those where both had one; ``negative_when_exact_negative``: whether
    that ever happened.
    """
    both = (tr.exact_min_eig < 0) & (tr.estimate_min_eig < 0)
    out: dict[str, Any] = {
        "steps_run": tr.steps,
        "stop_reason": tr.stop_reason,
        "evaluations": tr.evaluations,
        "final_f": tr.final_f,
        "final_point": tr.final_point.tolist(),
        "final_grad_norm": tr.final_grad_norm,
        "median_error_last_half": _last_half_median(tr.error),
        "median_error_at_mean_last_half": (
            None if tr.error_at_mean is None else _last_half_median(tr.error_at_mean)
        ),
        "min_estimate_eig": float(tr.estimate_min_eig.min()) if tr.steps else None,
        "max_estimate_eig": float(torch.linalg.eigvalsh(tr.estimates)[..., -1].max()) if tr.steps else None,
        "min_exact_eig": float(tr.exact_min_eig.min()) if tr.steps else None,
        "max_exact_eig": float(torch.linalg.eigvalsh(tr.exact)[..., -1].max()) if tr.steps else None,
        "steps_estimate_negative": int((tr.estimate_min_eig < 0).sum()),
        "steps_exact_negative": int((tr.exact_min_eig < 0).sum()),
        "steps_both_negative": int(both.sum()),
        "negative_when_exact_negative": bool(both.any()),
    }
    return out


# ----------------------------------------------------------------------------- output

def _finite_list(values: Tensor) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.reshape(-1).tolist()]


def _series(tr: Track) -> dict[str, Any]:
    out: dict[str, Any] = {
        "points": tr.points.tolist(),
        "error": _finite_list(tr.error),
        "estimate_min_eig": _finite_list(tr.estimate_min_eig),
        "exact_min_eig": _finite_list(tr.exact_min_eig),
    }
    if tr.error_at_mean is not None and tr.mean_points is not None:
        out["mean_points"] = tr.mean_points.tolist()
        out["error_at_mean"] = _finite_list(tr.error_at_mean)
    return out


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def _panels(n: int, title: str) -> tuple[Figure, list[Any]]:
    cols = min(2, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(6.0 * cols, 4.0 * rows))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.07, top=0.92, hspace=0.32, wspace=0.22)
    fig.suptitle(title)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


Tracks = Mapping[str, Mapping[str, Track]]


def _error_figure(path: Path, cases: Sequence[TrackingCase], tracks: Tracks) -> None:
    fig, axes = _panels(len(cases), "Relative Frobenius error of the Hessian estimate vs the exact Hessian")
    for ax, case in zip(axes, cases, strict=True):
        for i, m in enumerate(METHODS):
            tr = tracks[case.key][m.key]
            steps = np.arange(1, tr.steps + 1)
            ax.plot(steps, np.maximum(tr.error.numpy(), 1e-17), color=f"C{i}", label=m.label, lw=1.2)
        ax.set_yscale("log")
        ax.set_title(case.title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("‖Ĥ − ∇²f(θ)‖ / ‖∇²f(θ)‖")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(fig, path)


def _eig_figure(path: Path, cases: Sequence[TrackingCase], tracks: Tracks) -> None:
    fig, axes = _panels(
        len(cases), "Smallest eigenvalue: estimate (solid) and exact Hessian on the same run (dotted)"
    )
    for ax, case in zip(axes, cases, strict=True):
        for i, m in enumerate(METHODS):
            tr = tracks[case.key][m.key]
            steps = np.arange(1, tr.steps + 1)
            ax.plot(steps, tr.estimate_min_eig.numpy(), color=f"C{i}", lw=1.3, label=f"{m.label}: estimate")
            ax.plot(steps, tr.exact_min_eig.numpy(), color=f"C{i}", lw=0.9, ls=":", label=f"{m.label}: exact")
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_title(case.title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("λ_min (symlog)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(fig, path)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    return f"{v:.3g}"


_STOP_NOTE = {"steps": "", "gtol": " (‖∇f‖ ≤ gtol)", "stalled": " (stalled)"}


def _markdown(cases: Sequence[TrackingCase], summary: Mapping[str, Any], files: Mapping[str, str],
              steps: int) -> str:
    lines = [
        "## Hessian tracking along the optimizer's own trajectory",
        "",
        f"Each method runs up to {steps} iterations (float64, exact gradients, positions clamped to the "
        f"box, stop at ‖∇f‖ ≤ {GTOL:g} or when an iteration does not move). After each iteration its Hessian "
        "estimate Ĥ (OGR: the regression estimate; BFGS: the inverse of its inverse-Hessian approximation) "
        "is compared with the exact Hessian (torch.func) at the point where the method uses it. "
        "Error = ‖Ĥ − ∇²f‖_F / ‖∇²f‖_F, median over the last half of the iterations run; \"at θ̄\" compares "
        "OGR's estimate with ∇²f at the EMA mean of its positions instead. \"neg. seen\" counts iterations "
        "where estimate and truth both had a negative eigenvalue, over those where the truth had one; the "
        "λ ranges run over all iterations.",
        "",
        "| function | method | iterations | final f | median error | at θ̄ | λ range, estimate "
        "| λ range, exact | neg. seen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    labels = {m.key: m.label for m in METHODS}
    for case in cases:
        for key, s in summary[case.key].items():
            lines.append(
                f"| {case.title} | {labels[key]} | {s['steps_run']}{_STOP_NOTE[s['stop_reason']]}"
                f" | {_fmt(s['final_f'])} | {_fmt(s['median_error_last_half'])}"
                f" | {_fmt(s['median_error_at_mean_last_half'])}"
                f" | [{_fmt(s['min_estimate_eig'])}, {_fmt(s['max_estimate_eig'])}]"
                f" | [{_fmt(s['min_exact_eig'])}, {_fmt(s['max_exact_eig'])}]"
                f" | {s['steps_both_negative']}/{s['steps_exact_negative']} |"
            )
    bfgs_pd = all(summary[c.key]["bfgs"]["min_estimate_eig"] is None
                  or summary[c.key]["bfgs"]["min_estimate_eig"] > 0 for c in cases)
    lines += [
        "",
        "BFGS's estimate was positive definite at every iteration of every run"
        if bfgs_pd else "BFGS's estimate lost positive definiteness in some run (see the table)",
        "(it is, by construction, whenever sᵀy > 0, which a Wolfe line search guarantees); OGR's regression "
        "estimate carries the sign of the curvature.",
        "",
        f"![Hessian estimate error]({files['error_png']})",
        "",
        f"![Smallest eigenvalues]({files['eig_png']})",
        "",
    ]
    return "\n".join(lines)


def run(out_dir: Path, *, quick: bool = False) -> dict[str, Any]:
    """Run the Hessian-tracking study and write its figures, data and report fragment.

    Run the study and write, under ``out_dir``: ``hessian_tracking_error.png`` (error vs iteration, one
    panel per function), ``hessian_tracking_eigenvalues.png`` (smallest eigenvalues),
    ``hessian_tracking.json`` (settings, per-iteration series and summaries) and ``hessian_tracking.md`` (a
    report fragment linking the PNGs by file name).

    200 iterations per run (``quick``: 50). Returns ``{"steps", "quick", "runtime_s", "files", "summary"}``,
    ``summary[function][method]`` as :func:`summarize`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = 50 if quick else 200
    t0 = time.perf_counter()
    cases = default_cases()
    tracks: dict[str, dict[str, Track]] = {}
    for case in cases:
        tracks[case.key] = {
            m.key: track(case.function, case.start, m.method, steps, **m.options(case.function))
            for m in METHODS
        }
    summary = {c.key: {k: summarize(tr) for k, tr in tracks[c.key].items()} for c in cases}
    files = {
        "error_png": "hessian_tracking_error.png",
        "eig_png": "hessian_tracking_eigenvalues.png",
        "json": "hessian_tracking.json",
        "markdown": "hessian_tracking.md",
    }
    _error_figure(out_dir / files["error_png"], cases, tracks)
    _eig_figure(out_dir / files["eig_png"], cases, tracks)
    runtime = time.perf_counter() - t0
    payload = {
        "study": "hessian_tracking",
        "steps": steps,
        "quick": quick,
        "gtol": GTOL,
        "torch": torch.__version__,
        "runtime_s": runtime,
        "methods": {
            m.key: {"label": m.label, "method": m.method,
                    "options": {c.key: m.options(c.function) for c in cases}}
            for m in METHODS
        },
        "cases": {
            c.key: {
                "title": c.title,
                "start": list(c.start),
                "summary": summary[c.key],
                "series": {k: _series(tr) for k, tr in tracks[c.key].items()},
            }
            for c in cases
        },
    }
    (out_dir / files["json"]).write_text(json.dumps(payload, indent=1))
    (out_dir / files["markdown"]).write_text(_markdown(cases, summary, files, steps))
    return {
        "steps": steps,
        "quick": quick,
        "runtime_s": runtime,
        "files": [str(out_dir / f) for f in files.values()],
        "summary": summary,
    }
