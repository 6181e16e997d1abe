"""Registry of optimizer configurations ("methods") that benchmark suites run.

A :class:`Method` is a name, a kind that says how a suite drives it, its fixed hyper-parameters
(recorded in every run's configuration) and the step-size hyper-parameters that are tuned per
problem, each with its log-spaced grid. Line-search methods tune nothing.

Kinds:

* ``"gradient"``: a ``torch.optim.Optimizer`` stepped with ``opt.step()`` after the suite has set
  ``p.grad`` (one gradient evaluation per step). ``elementwise=True`` declares that every coordinate's
  update depends only on that coordinate's own history (Adam, SGD with momentum): the rows of an
  ``(n, dim)`` parameter are then independent problems, and a suite may run n starts as one batch.
* ``"closure"``: a ``torch.optim.Optimizer`` stepped with ``opt.step(closure)``; one ``step()`` is one
  iteration, which may evaluate the closure several times (line searches).
* ``"scipy"``: not a torch optimizer; the suite drives ``scipy.optimize.minimize`` itself (see
  :mod:`hessopt.bench.functions_suite`), so ``factory`` is None.

Built-in entries (defaults and their sources in each ``summary``): ``ogr``, ``ogr-r2``, ``ogr-wolfe``
(hessopt OGR with its defaults, with the 2025 benchmark's settings, with line search), ``diag-ogr``
(hessopt DiagOGR), ``bfgs-wolfe``, ``bfgs-armijo``,
``bfgs-fixed`` (hessopt BFGS), ``scipy-bfgs``, ``lbfgs`` (torch.optim.LBFGS), ``adam``, ``momentum``.
A new optimizer joins with one :func:`register` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from hessopt._registry import Registry
from hessopt.optim import BFGS, OGR, DiagOGR

__all__ = [
    "KINDS",
    "Method",
    "register",
    "get_method",
    "method_names",
    "all_methods",
    "log_grid",
    "adam_factory",
    "momentum_factory",
    "lbfgs_factory",
]

KINDS = ("gradient", "closure", "scipy")

Factory = Callable[[Sequence[Any], Mapping[str, Any]], torch.optim.Optimizer]
"""``factory(params, config)``: ``params`` as torch.optim takes them (tensors or param-group dicts)."""


def log_grid(lo_exp: float, hi_exp: float, per_decade: int = 2) -> tuple[float, ...]:
    """``10**e`` for e from ``lo_exp`` to ``hi_exp`` inclusive, ``per_decade`` points per decade.

    Values are rounded to 12 significant digits so that the grid (and every configuration that holds
    one of its values) has the same JSON text on every machine.
    """
    if hi_exp < lo_exp or per_decade < 1:
        raise ValueError(f"need lo_exp <= hi_exp and per_decade >= 1, got {lo_exp}, {hi_exp}, {per_decade}")
    n = round((hi_exp - lo_exp) * per_decade)
    return tuple(float(f"{10 ** (lo_exp + k / per_decade):.12g}") for k in range(n + 1))


@dataclass(frozen=True)
class Method:
    """One optimizer configuration of the benchmark.

    ``hyper``: fixed hyper-parameters passed to ``factory`` and recorded in each run's configuration.
    ``tune``: hyper-parameters tuned per problem, name -> grid (ascending).
    """

    name: str
    kind: str
    summary: str
    hyper: Mapping[str, Any] = field(default_factory=dict)
    tune: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    elementwise: bool = False
    factory: Factory | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind of method {self.name!r} must be one of {KINDS}, got {self.kind!r}")
        if (self.factory is None) != (self.kind == "scipy"):
            raise ValueError(
                f"method {self.name!r}: factory is required for torch kinds and None for 'scipy'"
            )
        if self.elementwise and self.kind != "gradient":
            raise ValueError(f"method {self.name!r}: only 'gradient' methods can be elementwise (batched)")
        for pname, grid in self.tune.items():
            if pname in self.hyper:
                raise ValueError(f"method {self.name!r}: {pname!r} is both fixed (hyper) and tuned")
            if len(grid) == 0 or list(grid) != sorted(grid):
                raise ValueError(
                    f"method {self.name!r}: the grid of {pname!r} must be non-empty and ascending"
                )
        object.__setattr__(self, "hyper", MappingProxyType(dict(self.hyper)))
        object.__setattr__(self, "tune", MappingProxyType({k: tuple(v) for k, v in self.tune.items()}))

    @property
    def batchable(self) -> bool:
        """True when n independent starts may run as the rows of one ``(n, dim)`` parameter."""
        return self.kind == "gradient" and self.elementwise

    def config(self, tuned: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The complete hyper-parameter set: ``hyper`` plus one value for every tuned name."""
        tuned = dict(tuned or {})
        missing = set(self.tune) - set(tuned)
        extra = set(tuned) - set(self.tune)
        if missing or extra:
            raise ValueError(
                f"method {self.name!r} tunes {sorted(self.tune)}; got values for {sorted(tuned)}"
                f" (missing {sorted(missing)}, unexpected {sorted(extra)})"
            )
        return {**self.hyper, **{k: float(v) for k, v in tuned.items()}}

    def build(self, params: Sequence[Any], config: Mapping[str, Any]) -> torch.optim.Optimizer:
        """The optimizer over ``params`` for a configuration from :meth:`config`.

        ``params`` may be param-group dicts that override tuned values per group: a suite runs a grid
        of step sizes of an elementwise method in one optimizer that way.
        """
        if self.factory is None:
            raise TypeError(
                f"method {self.name!r} is driven by scipy, not a torch optimizer; it has no build()"
            )
        return self.factory(list(params), config)


_REGISTRY: Registry[Method] = Registry("method")


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``replace=True`` to overwrite an entry of the same name)."""
    return _REGISTRY.register(method, replace=replace)


def get_method(name: str) -> Method:
    """The registered method called ``name``."""
    return _REGISTRY.get(name)


def method_names() -> list[str]:
    """Registered names, in registration order (the order of report columns)."""
    return _REGISTRY.names()


def all_methods() -> list[Method]:
    return _REGISTRY.all()


# -- built-in entries ----------------------------------------------------------------------------


def _bfgs(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return BFGS(
        params,
        lr=cfg["lr"],
        line_search=cfg["line_search"],
        initial_scaling=cfg["initial_scaling"],
        curvature_failure=cfg["curvature_failure"],
        reuse_evaluation=cfg.get("reuse_evaluation", False),
    )


_TEXTBOOK = {"initial_scaling": "nocedal_wright", "curvature_failure": "skip"}

register(
    Method(
        "bfgs-wolfe",
        "closure",
        "hessopt BFGS, textbook (ogr.md §5.6): strong-Wolfe line search (c1 1e-4, c2 0.9, alpha0 1), "
        "H0 = (s'y / y'y) I before the first update (Nocedal-Wright eq. 6.20), skip when s'y is not "
        "positive; reuse_evaluation=True (the test functions are deterministic), so an unclamped step "
        "costs scipy's count",
        hyper={"lr": 1.0, "line_search": "strong_wolfe", "reuse_evaluation": True, **_TEXTBOOK},
        factory=_bfgs,
    )
)
register(
    Method(
        "bfgs-armijo",
        "closure",
        "hessopt BFGS with backtracking Armijo search instead of Wolfe (s'y > 0 not guaranteed, so updates "
        "may be skipped); otherwise as bfgs-wolfe",
        hyper={"lr": 1.0, "line_search": "armijo", "reuse_evaluation": True, **_TEXTBOOK},
        factory=_bfgs,
    )
)
register(
    Method(
        "bfgs-fixed",
        "closure",
        "hessopt BFGS without line search: theta <- theta - lr H g, lr tuned per function "
        "(R2's benchmark used lr 0.5; ogr.md §5.3) on a half-decade grid 0.03..1 (smaller steps never won "
        "in trial runs, and each grid point costs a per-start run)",
        hyper={"line_search": None, **_TEXTBOOK},
        tune={"lr": log_grid(-1.5, 0)},
        factory=_bfgs,
    )
)
register(
    Method(
        "scipy-bfgs",
        "scipy",
        "scipy.optimize.minimize(method='BFGS') with the exact gradient as jac: H0 = I, Wolfe line search "
        "(c1 1e-4, c2 0.9); maxiter = steps, gtol = the suite's gradient tolerance in the 2-norm. "
        "Runs UNCLAMPED (scipy's BFGS has no box)",
    )
)


def _ogr(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return OGR(params, **cfg)


def _diag_ogr(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return DiagOGR(params, **cfg)


register(
    Method(
        "ogr",
        "gradient",
        "hessopt OGR with its defaults (beta 0.5, gamma 0.4, div 1.5, cut 10, prior s0 1 towards H = 0, "
        "means from the first observation: Duda's fOGR settings, ogr.md §9), no line search; the step size "
        "lr (eta) tuned per function on a half-decade grid 0.1..3.16",
        hyper={},
        tune={"lr": log_grid(-1, 0.5)},
        factory=_ogr,
    )
)
register(
    Method(
        "ogr-r2",
        "gradient",
        "hessopt OGR configured as the 2025 OGR-vs-BFGS benchmark code (ReadHegel/pytorch-ogr, ogr.md §5.3, "
        "§9): means from 0, beta 0.8 (D: 0.2), raw gradient (gamma 0), lr 0.5, div 1, prior "
        "Sigma0 = C0 = I (sigma0 1, h_prior 1), no eigenvalue floor (cut 1e-12), ridge only 1e-12 (R2's "
        "jitter), step norm clipped; R2 set the clip per function (1, 1.5 or 2.5), here it is tuned on the "
        "tuning starts from that set",
        hyper={
            "mean_init": "zero",
            "beta": 0.8,
            "gamma": 0.0,
            "lr": 0.5,
            "div": 1.0,
            "sigma0": 1.0,
            "h_prior": 1.0,
            "cut": 1e-12,
            "ridge_rel": 0.0,
            "ridge_abs": 1e-12,
        },
        tune={"max_step_norm": (1.0, 1.5, 2.5)},
        factory=_ogr,
    )
)
register(
    Method(
        "ogr-wolfe",
        "closure",
        "hessopt OGR with its defaults plus a strong-Wolfe line search along the saddle-free step "
        "(first trial alpha = 1; the raw-gradient saddle-free step where the momentum step ascends); "
        "nothing tuned",
        hyper={"line_search": "strong_wolfe"},
        factory=_ogr,
    )
)
register(
    Method(
        "diag-ogr",
        "gradient",
        "hessopt DiagOGR (coordinate-wise OGR) with its defaults (beta 0.4, gamma 0.3, div 1.4, cut 5: "
        "Duda's dOGR tuning, ogr.md §3.4); lr tuned per function on a half-decade grid 0.1..3.16",
        hyper={},
        tune={"lr": log_grid(-1, 0.5)},
        factory=_diag_ogr,
    )
)


def lbfgs_factory(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.LBFGS(
        params,
        lr=cfg["lr"],
        max_iter=cfg["max_iter"],
        max_eval=cfg["max_eval"],
        history_size=cfg["history_size"],
        tolerance_grad=cfg["tolerance_grad"],
        tolerance_change=cfg["tolerance_change"],
        line_search_fn=cfg["line_search_fn"],
    )


register(
    Method(
        "lbfgs",
        "closure",
        "torch.optim.LBFGS, strong-Wolfe line search, history 100 (torch default), max_iter=1 so that one "
        "step() is one iteration (each step() re-evaluates the closure once at its start: counted); "
        "max_eval=26 because torch gives the line search max_eval - 1 evaluations and its default "
        "max_iter*5//4 would allow 0 at max_iter=1 (26 restores _strong_wolfe's own limit of 25); "
        "tolerance_grad=0 and tolerance_change=0 so that the suite's gradient tolerance stops runs, not "
        "torch's 1e-7 max-norm or its 1e-9 floor on the directional derivative (which freezes L-BFGS at "
        "f ~ 1e-10 on Rosenbrock); the zoom phase of the line search keeps torch's 1e-9 interval tolerance",
        hyper={
            "lr": 1.0,
            "max_iter": 1,
            "max_eval": 26,
            "history_size": 100,
            "tolerance_grad": 0.0,
            "tolerance_change": 0.0,
            "line_search_fn": "strong_wolfe",
        },
        factory=lbfgs_factory,
    )
)


def adam_factory(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"])


def momentum_factory(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], dampening=0.0, nesterov=False)


register(
    Method(
        "adam",
        "gradient",
        "torch.optim.Adam, betas (0.9, 0.999) and eps 1e-8 (PyTorch defaults; Duda's P2 baseline used "
        "(0.8, 0.9), ogr.md §6), lr tuned per function on a half-decade grid 1e-4..100 (the boxes reach "
        "+-500)",
        hyper={"betas": [0.9, 0.999], "eps": 1e-8},
        tune={"lr": log_grid(-4, 2)},
        elementwise=True,
        factory=adam_factory,
    )
)
register(
    Method(
        "momentum",
        "gradient",
        "torch.optim.SGD with heavy-ball momentum 0.9, no dampening (m <- 0.9 m + g, theta <- theta - lr m; "
        "Duda's baseline used 0.5, ogr.md §6), lr tuned per function on a half-decade grid 1e-8..1 "
        "(Zakharov's quartic term needs tiny steps)",
        hyper={"momentum": 0.9},
        tune={"lr": log_grid(-8, 0)},
        elementwise=True,
        factory=momentum_factory,
    )
)
