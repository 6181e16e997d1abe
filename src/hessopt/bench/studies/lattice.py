"""Duda's lattice experiments: noisy-gradient runs from lattices of starts, beside his published numbers.

J. Duda reports OGR against momentum and ADAM on Beale functions with Gaussian gradient noise, from every
point of a lattice of starts: the paper (arXiv:1901.11457, Figs. 1 and 4) and its Mathematica notebooks
(github.com/JarekDuda/SGD-OGR-Hessian-estimator, "the notebooks" below). docs/benchmarks/functions.md
collects the protocols and the published numbers. This module reruns those protocols with hessopt's
optimizers and puts the results beside the published numbers.

Protocol of one run (:func:`run_one`), in float64 on the CPU:

* from each start θ_0 of the lattice, ``steps`` iterations; iteration k evaluates the exact gradient at θ_k,
  adds independent N(0, σ²) noise to every coordinate (σ = ``noise_std``, 0.1 in the paper and the notebooks)
  and hands it to the optimizer through ``.grad`` (one ``step()``);
* no box and no clamping (the Beale notebooks have none);
* the result of a start is the exact, noise-free f(θ_steps); the experiment's metric aggregates them: the
  arithmetic mean for 2-D Beale (Fig. 1 of the paper reports "mean final f"), the geometric mean for 3-D Beale
  (the notebooks' ``subspace OGR.png``); see :data:`EXPERIMENTS`;
* noise: start i under noise seed s draws from its own ``torch.Generator`` seeded ``1_000_000·s + i``
  (:func:`noise_generator`), ``dim`` normals per iteration, so a start's noise does not depend on the
  batch, on the other starts or on the method (every method sees the same draws: common random numbers);
* a start whose f or gradient becomes non-finite stops there and counts as f = +inf ("diverged"), which
  makes the run's metric +inf. Duda's momentum sits at its stability edge (α = 0.017; he reports that
  0.018 diverges): on 2-D Beale about one noise seed in twenty loses the start (−1, −2), and on the
  {−3..3}³ lattice α = 0.004 loses about a third of the starts (the paper tuned it per lattice there).

Speed: a per-step Python overhead dominates (about 0.3-1 ms per optimizer step or gradient evaluation of
a 3-D function), so all starts of a run advance in lockstep and share one batched gradient evaluation
(``value_and_grad`` differentiates ``f(x).sum()``, so each row gets its own gradient). How the optimizer
side is batched depends on the method (:attr:`LatticeMethod.batching`): the elementwise methods (SGD
with momentum, Adam) run all starts as the rows of one ``(n, dim)`` tensor; DiagOGR runs one optimizer
over ``n`` separate ``(dim,)`` tensors (its update is per tensor; a stopped start gets ``.grad = None``
and is skipped); full OGR couples all its parameters, so every start gets its own optimizer. Each way
gives bit-for-bit the results of independent per-start runs (tested). The whole default study (four
experiments, five methods, five noise seeds: 100 runs) costs about 230-260 s of CPU on a shared 2-core
machine, 92% of it inside ``OGR.step`` (two OGR rows × 24,300 per-start steps per seed, ~0.5-0.9 ms
each); ``workers=2`` halves the wall time when two cores are free.
"""

from __future__ import annotations

import json
import math
import numbers
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from hessopt.bench.harness import workers as workers_mod
from hessopt.bench.harness.stats import geometric_mean
from hessopt.bench.methods import get_method
from hessopt.optim import DUDA_DOGR, DUDA_SUBSPACE_OGR
from hessopt.problems.functions import BenchmarkFunction, get_function

__all__ = [
    "LatticeExperiment",
    "LatticeMethod",
    "Published",
    "EXPERIMENTS",
    "METHODS",
    "DEFAULT_METHODS",
    "PUBLISHED",
    "NOISE_STD",
    "NOISE_SEED_STRIDE",
    "duda_momentum_kwargs",
    "noise_generator",
    "build_optimizer",
    "run_one",
    "run_lattice",
    "run_study",
    "summarize",
    "markdown_table",
]

NOISE_STD = 0.1
"""Gradient-noise standard deviation of the paper's Figs. 1 and 4 and of the Beale notebooks."""

NOISE_SEED_STRIDE = 1_000_000
"""Start i under noise seed s uses the generator seed ``NOISE_SEED_STRIDE * s + i`` (< 10^6 starts)."""

_DTYPE = torch.float64
_METRICS = ("mean", "geomean")


# ----------------------------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class LatticeExperiment:
    """One of Duda's lattice protocols.

    Attributes:
        name: key in :data:`EXPERIMENTS`.
        function: :func:`~hessopt.problems.functions.get_function` name.
        axes: the lattice values of each coordinate (the starts are their Cartesian product, last
            coordinate fastest, as :meth:`~hessopt.problems.functions.BenchmarkFunction.lattice_starts`).
        steps: iterations (gradient evaluations) per start.
        metric: ``"mean"`` (arithmetic mean of the final f over the starts) or ``"geomean"`` (geometric).
        family: ``"2d"`` or ``"3d"``: which of Duda's per-problem settings the methods use.
        source: where the protocol comes from.
    """

    name: str
    function: str
    axes: tuple[tuple[float, ...], ...]
    steps: int
    metric: str
    family: str
    source: str

    def __post_init__(self) -> None:
        if self.metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {self.metric!r}")
        if self.family not in ("2d", "3d"):
            raise ValueError(f"family must be '2d' or '3d', got {self.family!r}")

    @property
    def n_starts(self) -> int:
        """Number of lattice points: the product of the axes' lengths."""
        return math.prod(len(a) for a in self.axes)

    def make_function(self) -> BenchmarkFunction:
        """The test function (a new instance)."""
        return get_function(self.function)

    def starts(self) -> torch.Tensor:
        """The lattice starts, shape ``(n_starts, dim)``, float64."""
        return self.make_function().lattice_starts([list(a) for a in self.axes], dtype=_DTYPE)


def _axis(lo: int, hi: int) -> tuple[float, ...]:
    return tuple(float(v) for v in range(lo, hi + 1))


EXPERIMENTS: Mapping[str, LatticeExperiment] = MappingProxyType(
    {
        "beale2d": LatticeExperiment(
            "beale2d",
            "beale",
            (_axis(-1, 1), _axis(-2, 2)),
            30,
            "mean",
            "2d",
            "notebook SGD-ORG basic.nb (its lattice: x in {-1,0,1}, y in {-2..2}); numbers of Fig. 1 "
            "of the paper",
        ),
        "beale2d-caption": LatticeExperiment(
            "beale2d-caption",
            "beale",
            (_axis(-2, 2), _axis(-1, 1)),
            30,
            "mean",
            "2d",
            "the lattice of Fig. 1's caption, {-2..2} x {-1,0,1} (the notebook's transposed); "
            "same published numbers",
        ),
        "beale3d": LatticeExperiment(
            "beale3d",
            "beale3d",
            (_axis(-2, 2),) * 3,
            50,
            "geomean",
            "3d",
            "notebook SGD-sORG 3D subspace.nb / subspace OGR.png: b(x,y)+b(z,y), 125 starts {-2..2}^3",
        ),
        "beale3d-343": LatticeExperiment(
            "beale3d-343",
            "beale3d",
            (_axis(-3, 3),) * 3,
            50,
            "geomean",
            "3d",
            "Fig. 4 of the paper (notebook dsOGR.nb): lattice {-3..3}^3 with Duda's settings of beale3d "
            "(the paper "
            "sorted curves, with per-method tuning, so there is no number to compare)",
        ),
    }
)
"""Duda's lattice protocols, noise σ = 0.1 in all of them."""


# ----------------------------------------------------------------------------------------------- methods
def duda_momentum_kwargs(alpha: float, gamma: float) -> dict[str, Any]:
    """``torch.optim.SGD`` arguments equal to Duda's momentum ``m ← γm + (1−γ)g, θ ← θ − αm`` (m0 = 0).

    SGD keeps ``b ← γb + g`` (``b_1 = g_1``, dampening 0) and steps ``θ ← θ − lr·b``; by induction
    ``m = (1−γ)b``, so ``lr = α(1−γ)`` gives the same iterates (tested).
    """
    for name, value in (("alpha", alpha), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise TypeError(f"{name} must be a finite real number, got {value!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not 0 <= gamma < 1:
        raise ValueError(f"gamma must be in [0, 1) (Duda's momentum weight of the old value), got {gamma}")
    return {"lr": alpha * (1.0 - gamma), "momentum": gamma, "dampening": 0.0, "nesterov": False}


_BATCHING = {"element": "rows", "tensor": "tensors", "all": "separate"}


@dataclass(frozen=True)
class LatticeMethod:
    """An optimizer configuration of the lattice study: a registered method with the study's settings.

    Attributes:
        name: key in :data:`METHODS` (the study's name of this configuration).
        method: the :mod:`hessopt.bench.methods` registry name of the optimizer.
        settings: hyper-parameters per experiment family (``"2d"``, ``"3d"``) over the registry's fixed
            ones; an empty dict means the registry's (for hessopt optimizers: the class defaults).
        description: what the configuration is and where its values come from.
        notes: extra values recorded in every run's ``hyper`` (e.g. Duda's own (α, γ) behind SGD's ``lr``).
    """

    name: str
    method: str
    settings: Mapping[str, Mapping[str, Any]]
    description: str
    notes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_method(self.method)  # an unknown registry name fails here, listing the known ones

    @property
    def batching(self) -> str:
        """How the starts of a run are batched.

        ``"rows"`` (one ``(n, dim)`` tensor: elementwise updates), ``"tensors"`` (one optimizer over n
        tensors: per-tensor updates) or ``"separate"`` (one optimizer per start), from the registry.
        """
        return _BATCHING[get_method(self.method).coupling]

    def build(self, family: str, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
        """The optimizer over ``params`` with the settings of experiment family ``family``."""
        registered = get_method(self.method)
        return registered.factory(list(params), {**registered.hyper, **self.settings[family]})


_DUDA_OGR = {
    "lr": 1.0,
    "beta": 0.5,
    "div": 1.5,
    "cut": 10.0,
    "sigma0": 1.0,
    "h_prior": 0.0,
    "mean_init": "zero",
    "ridge_rel": 0.0,
    "ridge_abs": 0.0,
}
_MOMENTUM = {"2d": (0.017, 0.5), "3d": (0.004, 0.5)}
# the notebook's tuned subspace settings per d (SGD-sORG 3D subspace.nb), converted to hessopt's convention
_SUBSPACE_TUNED = {
    1: {"beta": 0.4, "gamma": 0.3, "rotation_rate": 0.1, "div": 1.5, "cut": 15.0},
    2: {"beta": 0.4, "gamma": 0.1, "rotation_rate": 0.2, "div": 4.0, "cut": 20.0},
}
_SUBSPACE_TUNED_TEXT = {
    d: ", ".join(f"{k} {v:g}" for k, v in cfg.items()) for d, cfg in _SUBSPACE_TUNED.items()
}


def _duda_subspace(d: int) -> dict[str, Any]:
    """The notebook's subspace prototype for dimension ``d``, as SubspaceOGR settings."""
    return {
        "lr": 1.0,
        "mean_init": "zero",
        "ridge_rel": 0.0,
        "ridge_abs": 0.0,
        "max_coord_step": None,
        **_SUBSPACE_TUNED[d],
        "rank": d,
        "rotation": "duda",
        "qr": False,
        "outside": "sgd",
        "outside_scale": 0.0,
    }


def _dsogr(d: int) -> dict[str, Any]:
    """Hessopt's dsOGR settings for dimension ``d`` (mix 0.3 for d = 1, 0.4 for d = 2, as the notebook)."""
    return {
        **DUDA_SUBSPACE_OGR,
        "rank": d,
        "mix": 0.3 if d == 1 else 0.4,
    }  # Duda's (alpha, gamma) as coded in the notebooks


METHODS: Mapping[str, LatticeMethod] = MappingProxyType(
    {
        "ogr-duda": LatticeMethod(
            "ogr-duda",
            "ogr",
            {"2d": {**_DUDA_OGR, "gamma": 0.1}, "3d": {**_DUDA_OGR, "gamma": 0.4}},
            "full OGR with Duda's settings converted to hessopt's EMA convention: beta 0.5, gamma 0.1 "
            "(2-D; Duda's 0.9 in his new-sample convention) or 0.4 (3-D; his 0.6), eta 1, div 1.5, cut 10, "
            "Sigma0 = I, C0 = 0, means and m start at 0 (mean_init 'zero'); hessopt's ridge floor off "
            "(0, 0), as the notebooks have none",
        ),
        "ogr": LatticeMethod(
            "ogr",
            "ogr",
            {"2d": {}, "3d": {}},
            "full OGR with hessopt's defaults (docs/algorithms/ogr.md): beta 0.5, gamma 0.4, eta 1, div 1.5, "
            "cut 10, ridge floor on",
        ),
        "diag-ogr": LatticeMethod(
            "diag-ogr",
            "diag-ogr",
            {"2d": dict(DUDA_DOGR), "3d": dict(DUDA_DOGR)},
            "DiagOGR with Duda's dOGR settings (DUDA_DOGR; notebook dsOGR.nb's tuning): beta 0.4, gamma 0.3, "
            "eta 1, div 1.4, cut 5, means from 0",
        ),
        **{
            f"subspace-d{d}": LatticeMethod(
                f"subspace-d{d}",
                "subspace-ogr",
                {"2d": _duda_subspace(d), "3d": _duda_subspace(d)},
                f"SubspaceOGR as the notebook's d = {d} prototype: Duda's rotation (every row plus Γg, "
                "Gram-Schmidt), no QR step, nothing outside the subspace (its evaluation cells set alpha "
                "= 0), "
                f"his tuned d = {d} settings converted ({_SUBSPACE_TUNED_TEXT[d]}), means from 0, no ridge "
                "floor; hessopt rotates the statistics with the basis, the prototype does not",
            )
            for d in (1, 2)
        },
        **{
            f"dsogr-d{d}": LatticeMethod(
                f"dsogr-d{d}",
                "subspace-ogr",
                {"2d": _dsogr(d), "3d": _dsogr(d)},
                f"SubspaceOGR d = {d} with hessopt's Oja rotation and QR step and diagonal OGR outside "
                f"(DUDA_SUBSPACE_OGR, the dsOGR mix w = {_dsogr(d)['mix']})",
            )
            for d in (1, 2)
        },
        "momentum": LatticeMethod(
            "momentum",
            "momentum",
            {fam: duda_momentum_kwargs(a, g) for fam, (a, g) in _MOMENTUM.items()},
            "Duda's momentum as coded, m <- gamma m + (1-gamma) g, theta <- theta - alpha m, gamma 0.5, "
            "alpha 0.017 (2-D) or 0.004 (3-D) (the notebooks), run as torch.optim.SGD(lr = alpha(1-gamma), "
            "momentum = gamma, dampening 0)",
            notes={"duda_alpha_gamma": {fam: list(v) for fam, v in _MOMENTUM.items()}},
        ),
        "adam": LatticeMethod(
            "adam",
            "adam",
            {
                "2d": {"lr": 0.4, "betas": (0.8, 0.9), "eps": 1e-8},
                "3d": {"lr": 0.6, "betas": (0.8, 0.9), "eps": 1e-8},
            },
            "Duda's ADAM (standard, bias-corrected): torch.optim.Adam(lr 0.4 (2-D) or 0.6 (3-D), "
            "betas (0.8, 0.9), eps 1e-8) (the notebooks)",
        ),
        "ogr-duda-first": LatticeMethod(
            "ogr-duda-first",
            "ogr",
            {
                "2d": {**_DUDA_OGR, "gamma": 0.1, "mean_init": "first"},
                "3d": {**_DUDA_OGR, "gamma": 0.4, "mean_init": "first"},
            },
            "diagnostic: ogr-duda with the means started at the first sample instead of 0 "
            "(isolates mean_init)",
        ),
    }
)
"""The configurations; :data:`DEFAULT_METHODS` are run unless a list is given."""

DEFAULT_METHODS: tuple[str, ...] = (
    "ogr-duda",
    "ogr",
    "diag-ogr",
    "subspace-d1",
    "subspace-d2",
    "dsogr-d1",
    "dsogr-d2",
    "momentum",
    "adam",
)


@dataclass(frozen=True)
class Published:
    """A published value of an experiment's metric and where it is printed."""

    value: float
    source: str


_FIG1 = (
    "arXiv:1901.11457 Fig. 1 caption (also notebook SGD-ORG basic.nb; its saved output: "
    "0.01866 / 1.04607 / 0.473392)"
)
_3D = "the notebooks' subspace OGR.png (SGD-sORG 3D subspace.nb)"
PUBLISHED: Mapping[tuple[str, str], Published] = MappingProxyType(
    {
        **{
            (exp, method): Published(value, _FIG1)
            for exp in ("beale2d", "beale2d-caption")
            for method, value in (("ogr-duda", 0.0179328), ("momentum", 1.04891), ("adam", 0.473392))
        },
        ("beale3d", "ogr-duda"): Published(0.00383803, _3D),
        ("beale3d", "subspace-d1"): Published(0.00742048, _3D),
        ("beale3d", "subspace-d2"): Published(0.0119627, _3D),
        ("beale3d", "momentum"): Published(4.65359, _3D),
        ("beale3d", "adam"): Published(0.0416618, _3D),
    }
)
"""Published metric per (experiment, method). The 2-D numbers are attached to both 2-D lattices
because the paper's caption and the notebook disagree on which one produced them."""


# ----------------------------------------------------------------------------------------------- running
def _check_seed(seed: object, name: str = "noise_seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name} must be an int >= 0, got {seed!r}")
    return int(seed)


def _check_noise_std(noise_std: object) -> float:
    if isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real):
        raise TypeError(f"noise_std must be a float, got {type(noise_std).__name__}")
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
    return float(noise_std)


def _experiment(name: object) -> LatticeExperiment:
    if isinstance(name, LatticeExperiment):
        return name
    if not isinstance(name, str) or name not in EXPERIMENTS:
        raise ValueError(f"unknown lattice experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _method(name: object) -> LatticeMethod:
    if isinstance(name, LatticeMethod):
        return name
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"unknown lattice method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def _method_list(methods: Iterable[str | LatticeMethod] | None) -> list[LatticeMethod]:
    if isinstance(methods, str):
        raise TypeError("methods must be a list of method names, not a single string; wrap it in a list")
    return [_method(m) for m in (DEFAULT_METHODS if methods is None else methods)]


def noise_generator(noise_seed: int, start_index: int) -> torch.Generator:
    """The CPU generator of start ``start_index`` under ``noise_seed``: seed ``1_000_000·noise_seed + i``."""
    noise_seed = _check_seed(noise_seed)
    start_index = _check_seed(start_index, "start_index")
    if start_index >= NOISE_SEED_STRIDE:
        raise ValueError(f"start_index must be < {NOISE_SEED_STRIDE}, got {start_index}")
    return torch.Generator().manual_seed(NOISE_SEED_STRIDE * noise_seed + start_index)


def build_optimizer(
    method: str | LatticeMethod, experiment: str | LatticeExperiment, params: Sequence[torch.Tensor]
) -> torch.optim.Optimizer:
    """``method``'s optimizer with ``experiment``'s settings over ``params``."""
    m, e = _method(method), _experiment(experiment)
    return m.build(e.family, params)


def _hyper(opt: torch.optim.Optimizer, method: LatticeMethod) -> dict[str, Any]:
    """The effective hyper-parameters of ``opt`` (group 0), JSON-friendly, plus the method's notes."""
    out: dict[str, Any] = {}
    for key, value in opt.param_groups[0].items():
        if key == "params":
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    out.update(method.notes)
    return out


class _Lockstep:
    """All starts of one run, advanced together; the optimizer side is batched per ``method.batching``."""

    def __init__(self, method: LatticeMethod, experiment: LatticeExperiment, starts: torch.Tensor) -> None:
        self.method = method
        self.n = starts.shape[0]
        if method.batching == "rows":
            self.tensors = [starts.clone()]
            self.opts = [build_optimizer(method, experiment, self.tensors)]
        else:
            self.tensors = [row.clone() for row in starts]
            if method.batching == "tensors":
                self.opts = [build_optimizer(method, experiment, self.tensors)]
            else:
                self.opts = [build_optimizer(method, experiment, [t]) for t in self.tensors]

    def points(self) -> torch.Tensor:
        if self.method.batching == "rows":
            return self.tensors[0].detach().clone()
        return torch.stack(self.tensors)

    def step(self, grads: torch.Tensor, active: list[bool]) -> None:
        """One optimizer step per active start; ``grads`` is ``(n, dim)``; inactive starts do not move."""
        if self.method.batching == "rows":
            rows = torch.tensor(active).unsqueeze(-1)
            self.tensors[0].grad = torch.where(rows, grads, 0.0)
            self.opts[0].step()
            return
        for i, t in enumerate(self.tensors):
            t.grad = grads[i].clone() if active[i] else None
        if self.method.batching == "tensors":
            if any(active):
                self.opts[0].step()
            return
        for opt, on in zip(self.opts, active, strict=True):
            if on:
                opt.step()


def run_one(
    experiment: str | LatticeExperiment,
    method: str | LatticeMethod,
    noise_seed: int = 0,
    noise_std: float = NOISE_STD,
) -> dict[str, Any]:
    """One run: every lattice start of ``experiment`` under ``method`` with the noise of ``noise_seed``.

    Returns a row (a plain dict): ``experiment``, ``method``, ``noise_seed``, ``noise_std``, ``steps``,
    ``n_starts``, ``metric_name`` (``"mean"``/``"geomean"``), ``metric`` (that statistic of ``finals``),
    ``finals`` (final exact f per start, lattice order; ``inf`` for a diverged start), ``diverged`` (count),
    ``hyper`` (the optimizer's effective hyper-parameters), ``seconds`` (wall time of the run) and
    ``cpu_seconds`` (CPU time of this process during the run: the cost on a shared machine).
    Cost: ``steps`` batched gradient evaluations plus ``n_starts·steps`` optimizer updates.
    """
    exp, meth = _experiment(experiment), _method(method)
    noise_seed, noise_std = _check_seed(noise_seed), _check_noise_std(noise_std)
    t0, c0 = time.perf_counter(), time.process_time()
    fn = exp.make_function()
    starts = exp.starts()
    n = starts.shape[0]
    runner = _Lockstep(meth, exp, starts)
    gens = [noise_generator(noise_seed, i) for i in range(n)] if noise_std > 0 else []
    active = [True] * n
    for _ in range(exp.steps):
        f, g = fn.value_and_grad(runner.points())
        ok = (torch.isfinite(f) & torch.isfinite(g).all(-1)).tolist()
        active = [a and o for a, o in zip(active, ok, strict=True)]
        if not any(active):
            break
        if noise_std > 0:
            g = torch.stack(
                [g[i] + noise_std * torch.randn(fn.dim, generator=gens[i], dtype=g.dtype) for i in range(n)]
            )
        runner.step(g, active)
    with torch.no_grad():
        final = fn(runner.points())
    finals = [v if a and math.isfinite(v) else math.inf for v, a in zip(final.tolist(), active, strict=True)]
    metric = geometric_mean(finals) if exp.metric == "geomean" else math.fsum(finals) / n
    return {
        "experiment": exp.name,
        "method": meth.name,
        "noise_seed": noise_seed,
        "noise_std": noise_std,
        "steps": exp.steps,
        "n_starts": n,
        "metric_name": exp.metric,
        "metric": metric,
        "finals": finals,
        "diverged": sum(not math.isfinite(v) for v in finals),
        "hyper": _hyper(runner.opts[0], meth),
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }


def run_lattice(
    experiment: str | LatticeExperiment,
    methods: Iterable[str | LatticeMethod] | None = None,
    noise_seeds: Iterable[int] = range(5),
    noise_std: float = NOISE_STD,
) -> list[dict[str, Any]]:
    """Rows of :func:`run_one` for every method (default :data:`DEFAULT_METHODS`) and noise seed."""
    exp = _experiment(experiment)
    seeds = [_check_seed(s) for s in noise_seeds]
    if not seeds:
        raise ValueError("noise_seeds must hold at least one seed, e.g. range(5)")
    return [run_one(exp, m, s, noise_std) for m in _method_list(methods) for s in seeds]


_Task = tuple[LatticeExperiment, LatticeMethod, int, float]


def _task(args: _Task) -> dict[str, Any]:
    return run_one(*args)


def _cost(task: _Task) -> int:
    """A run's relative cost: optimizer steps, the elementwise (batched) methods counted 20 times cheaper."""
    exp, meth = task[0], task[1]
    return exp.n_starts * exp.steps // (20 if meth.batching == "rows" else 1)


def run_study(
    experiments: Iterable[str | LatticeExperiment] | None = None,
    methods: Iterable[str | LatticeMethod] | None = None,
    noise_seeds: Iterable[int] = range(5),
    noise_std: float = NOISE_STD,
    *,
    workers: int = 1,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every (experiment, method, noise seed) of the study; rows in that order.

    ``experiments`` defaults to all of :data:`EXPERIMENTS`, ``methods`` to :data:`DEFAULT_METHODS`.
    ``workers > 1`` runs the runs in that many spawned processes (the results do not depend on it),
    which end with this process (:func:`hessopt.bench.harness.workers.process_pool`).
    ``progress`` is called with each row as it finishes (in completion order).
    """
    exps = [_experiment(e) for e in (EXPERIMENTS if experiments is None else experiments)]
    meths = _method_list(methods)
    seeds = [_check_seed(s) for s in noise_seeds]
    noise_std = _check_noise_std(noise_std)
    if not seeds:
        raise ValueError("noise_seeds must hold at least one seed, e.g. range(5)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    tasks: list[_Task] = [(e, m, s, noise_std) for e in exps for m in meths for s in seeds]
    if workers == 1:
        rows = []
        for t in tasks:
            rows.append(_task(t))
            if progress is not None:
                progress(rows[-1])
        return rows
    order = sorted(range(len(tasks)), key=lambda i: -_cost(tasks[i]))  # longest first: a short tail
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    with workers_mod.process_pool(workers, "spawn") as pool:
        futures = {pool.submit(_task, tasks[i]): i for i in order}
        for fut in as_completed(futures):
            results[futures[fut]] = row = fut.result()
            if progress is not None:
                progress(row)
    return [r for r in results if r is not None]


# ----------------------------------------------------------------------------------------------- summary
def summarize(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (experiment, method), in order of first appearance: the metric over the noise seeds.

    Keys: ``experiment``, ``method``, ``metric_name``, ``n_seeds``, ``n_starts``, ``steps``, ``mean``,
    ``std`` (sample standard deviation; 0 for one seed), ``min``, ``max`` of the per-seed metric,
    ``diverged`` (diverged starts over all seeds), ``seconds`` and ``cpu_seconds`` (summed wall and CPU
    time; rows without ``cpu_seconds`` count 0), ``published`` and
    ``source`` (None when nothing is published), ``ratio`` = ``mean / published`` (None likewise).
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["experiment"], row["method"]), []).append(row)
    out = []
    for (exp, meth), group in groups.items():
        values = [float(r["metric"]) for r in group]
        names = {r["metric_name"] for r in group}
        if len(names) != 1:
            raise ValueError(f"rows of ({exp}, {meth}) mix metrics {sorted(names)}; summarize one protocol")
        finite = all(math.isfinite(v) for v in values)
        mean = math.fsum(values) / len(values) if finite else math.inf
        std = statistics.stdev(values) if finite and len(values) > 1 else (0.0 if finite else math.nan)
        pub = PUBLISHED.get((exp, meth))
        out.append(
            {
                "experiment": exp,
                "method": meth,
                "metric_name": names.pop(),
                "n_seeds": len(values),
                "n_starts": group[0]["n_starts"],
                "steps": group[0]["steps"],
                "mean": mean,
                "std": std,
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "diverged": sum(int(r["diverged"]) for r in group),
                "seconds": math.fsum(float(r["seconds"]) for r in group),
                "cpu_seconds": math.fsum(float(r.get("cpu_seconds", 0.0)) for r in group),
                "published": None if pub is None else pub.value,
                "source": None if pub is None else pub.source,
                "ratio": None if pub is None else mean / pub.value,
            }
        )
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def markdown_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`summarize`'s entries (one line each), numbers to 3 significant digits."""
    header = [
        "experiment",
        "starts × steps",
        "method",
        "metric",
        "mean over seeds",
        "std",
        "median",
        "min",
        "max",
        "seeds",
        "diverged starts",
        "published",
        "ours / published",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summary:
        cells = [
            s["experiment"],
            f"{s['n_starts']} × {s['steps']}",
            s["method"],
            s["metric_name"],
            _fmt(s["mean"]),
            _fmt(s["std"], 2),
            _fmt(s["median"]),
            _fmt(s["min"]),
            _fmt(s["max"]),
            str(s["n_seeds"]),
            str(s["diverged"]),
            _fmt(s["published"], 6),
            _fmt(s["ratio"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(out_dir: Path, *, quick: bool = False, workers: int = 1) -> dict[str, Any]:
    """Run the study and write ``lattice.json`` (rows and summary) and ``lattice.md`` under ``out_dir``.

    Full: every experiment of :data:`EXPERIMENTS` with :data:`DEFAULT_METHODS` over 5 noise seeds (about
    4 CPU-minutes). ``quick``: the notebook's 2-D lattice and the 125-start 3-D lattice, 2 noise seeds.
    Returns ``{"quick", "runtime_s", "files", "summary"}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    experiments = ("beale2d", "beale3d") if quick else tuple(EXPERIMENTS)
    seeds = range(2) if quick else range(5)
    t0 = time.perf_counter()
    rows = run_study(experiments, DEFAULT_METHODS, seeds, workers=workers)
    runtime = time.perf_counter() - t0
    summary = summarize(rows)
    (out_dir / "lattice.json").write_text(
        json.dumps({"rows": rows, "summary": summary}, indent=1, default=str)
    )
    text = [
        "## Duda's lattice protocol (noisy gradients)",
        "",
        f"Gradient noise N(0, {NOISE_STD}²) per coordinate and step, {len(seeds)} noise seeds; "
        "2-D Beale: mean final f over 15 lattice starts after 30 steps; 3-D Beale b(x,y)+b(z,y): geometric "
        "mean of final f after 50 steps. `ogr-duda` is full OGR with Duda's settings (means from 0, no "
        "ridge floor), `ogr` hessopt's defaults, `diag-ogr` DiagOGR with Duda's dOGR settings, "
        "`subspace-d1`/`-d2` the notebook's subspace prototypes (his rotation, no QR step, nothing outside "
        "the subspace), `dsogr-d1`/`-d2` hessopt's SubspaceOGR (Oja, QR step, diagonal OGR outside); "
        "momentum and Adam as Duda coded them. Published numbers: J. Duda, arXiv:1901.11457 and its "
        "notebooks. "
        f"Runtime {runtime:.0f} s.",
        "",
        markdown_table(summary),
        "",
    ]
    (out_dir / "lattice.md").write_text("\n".join(text))
    return {"quick": quick, "runtime_s": runtime, "files": ["lattice.json", "lattice.md"], "summary": summary}
