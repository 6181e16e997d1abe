"""Registry of optimizer configurations for the neural-network suites (:mod:`hessopt.bench.nn_suite`).

Mirrors :mod:`hessopt.bench.methods` (the test-function registry): an :class:`NNMethod` is a name, a
kind that says how the runner drives it, fixed hyper-parameters (recorded in every run's configuration),
the tuned hyper-parameters with their log-spaced grids, and a factory ``factory(params, config)``. A new
optimizer joins with one :func:`register_nn_method` call.

Kinds (how one optimizer step is driven on a mini-batch; :func:`hessopt.bench.nn_suite.run_one`):

* ``"gradient"``: ``zero_grad``, loss, ``backward()``, ``opt.step()``: one gradient evaluation per step.
* ``"closure"``: ``opt.step(closure)`` where the closure (``torch.optim.LBFGS``'s convention: zero the
  gradients, compute the loss on the step's mini-batch, ``backward()``, return the loss) may be called
  several times (line searches); every call is counted as a gradient evaluation.
* ``"hessian"``: the optimizer estimates curvature from a double-backward graph (peers.md §3, item 1:
  AdaHessian and SophiaH of ``pytorch-optimizer``): ``loss.backward(create_graph=True)`` on the steps where
  it takes a Hutchinson estimate (every ``update_period`` steps, ``hessian_period``), a plain
  ``backward()`` on the others, then ``opt.step()``; the gradients are reset to None after every step, which
  breaks the parameter-gradient reference cycle PyTorch warns about. Each estimate costs ``num_samples``
  Hessian-vector products (``curvature_calls``).

Grids: ``tune`` is the full suite's grid (half-decade log grids, DeepOBS practice of a log grid over the
learning rate, peers.md §5.1, cut to 7 points for a CPU budget) and ``quick_tune`` the quick suite's
3-4 points. ``max_params``: the method runs only on problems with at most that many parameters (dense
BFGS keeps three D x D matrices). ``requires``: an optional package; when it is not installed the suites
skip the method with a message (``pip install pytorch-optimizer``, the ``peers`` extra).

Built-in entries: ``adam``, ``adamw``, ``momentum`` (torch.optim), ``lbfgs`` (torch.optim.LBFGS),
``bfgs`` and ``diag-ogr`` (hessopt), ``adahessian`` and ``sophiah`` (pytorch-optimizer).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch

from hessopt._registry import Registry
from hessopt.bench.methods import adam_factory, lbfgs_factory, log_grid, momentum_factory
from hessopt.optim import BFGS, DiagOGR

__all__ = [
    "NN_KINDS",
    "NNMethod",
    "all_nn_methods",
    "get_nn_method",
    "nn_method_names",
    "register_nn_method",
]

NN_KINDS = ("gradient", "closure", "hessian")

Factory = Callable[[Sequence[Any], Mapping[str, Any]], torch.optim.Optimizer]


@dataclass(frozen=True)
class NNMethod:
    """One optimizer configuration of the neural-network benchmark.

    ``hyper``: fixed hyper-parameters passed to ``factory`` and recorded in each run's configuration.
    ``tune``: hyper-parameters tuned per problem in the full suite, name -> ascending grid;
    ``quick_tune``: the same names with the quick suite's (smaller) grids, default ``tune``.
    """

    name: str
    kind: str
    summary: str
    factory: Factory
    hyper: Mapping[str, Any] = field(default_factory=dict)
    tune: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    quick_tune: Mapping[str, tuple[float, ...]] | None = None
    max_params: int | None = None
    requires: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.kind not in NN_KINDS:
            raise ValueError(f"kind of method {self.name!r} must be one of {NN_KINDS}, got {self.kind!r}")
        quick = self.tune if self.quick_tune is None else self.quick_tune
        if set(quick) != set(self.tune):
            raise ValueError(
                f"method {self.name!r}: quick_tune must tune the same names as tune ({sorted(self.tune)}), "
                f"got {sorted(quick)}"
            )
        for grids in (self.tune, quick):
            for pname, grid in grids.items():
                if pname in self.hyper:
                    raise ValueError(f"method {self.name!r}: {pname!r} is both fixed (hyper) and tuned")
                if len(grid) == 0 or list(grid) != sorted(grid):
                    raise ValueError(
                        f"method {self.name!r}: the grid of {pname!r} must be non-empty and ascending"
                    )
        if self.kind == "hessian" and "update_period" not in self.hyper:
            raise ValueError(f"method {self.name!r}: a 'hessian' method must fix update_period in hyper")
        if self.max_params is not None and (isinstance(self.max_params, bool) or self.max_params < 1):
            raise ValueError(f"method {self.name!r}: max_params must be a positive int or None")
        object.__setattr__(self, "hyper", MappingProxyType(dict(self.hyper)))
        object.__setattr__(self, "tune", MappingProxyType({k: tuple(v) for k, v in self.tune.items()}))
        object.__setattr__(self, "quick_tune", MappingProxyType({k: tuple(v) for k, v in quick.items()}))

    # -- configuration ------------------------------------------------------------------------------
    def with_grid(self, grid: str) -> NNMethod:
        """This method with ``tune`` set to the ``"full"`` or the ``"quick"`` grid (what :func:`tune`
        iterates over)."""
        if grid == "full":
            return self
        if grid == "quick":
            return replace(self, tune=dict(self.quick_tune), quick_tune=dict(self.quick_tune))
        raise ValueError(f"grid must be 'full' or 'quick', got {grid!r}")

    def config(self, tuned: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The complete hyper-parameter set: ``hyper`` plus one value for every tuned name."""
        tuned = dict(tuned or {})
        missing, extra = set(self.tune) - set(tuned), set(tuned) - set(self.tune)
        if missing or extra:
            raise ValueError(
                f"method {self.name!r} tunes {sorted(self.tune)}; got values for {sorted(tuned)}"
                f" (missing {sorted(missing)}, unexpected {sorted(extra)})"
            )
        return {**self.hyper, **{k: float(v) for k, v in tuned.items()}}

    def build(self, params: Sequence[Any], config: Mapping[str, Any]) -> torch.optim.Optimizer:
        """The optimizer over ``params`` for a configuration from :meth:`config`."""
        missing = self.missing_requirement()
        if missing:
            raise RuntimeError(missing)
        return self.factory(list(params), config)

    # -- driving --------------------------------------------------------------------------------------
    def hessian_period(self, config: Mapping[str, Any]) -> int:
        """Steps between two Hutchinson estimates (0 for methods that take none)."""
        return int(config["update_period"]) if self.kind == "hessian" else 0

    def probes(self, config: Mapping[str, Any]) -> int:
        """Hessian-vector products per estimate."""
        return int(config.get("num_samples", 1)) if self.kind == "hessian" else 0

    def missing_requirement(self) -> str | None:
        """None when runnable, else why not and the fix."""
        if self.requires is None or importlib.util.find_spec(self.requires) is not None:
            return None
        return (
            f"method {self.name!r} needs the package {self.requires!r}, which is not installed; "
            "install the peers extra (`pip install --no-deps pytorch-optimizer`) to include it"
        )

    def applies_to(self, num_parameters: int) -> bool:
        return self.max_params is None or num_parameters <= self.max_params


_REGISTRY: Registry[NNMethod] = Registry("method", lookup_noun="neural-network method", known_label="known")


def register_nn_method(method: NNMethod, *, replace: bool = False) -> NNMethod:
    """Add ``method`` (``replace=True`` to overwrite an entry of the same name)."""
    return _REGISTRY.register(method, replace=replace)


def get_nn_method(name: str) -> NNMethod:
    return _REGISTRY.get(name)


def nn_method_names() -> list[str]:
    """Registered names in registration order (the order of report columns)."""
    return _REGISTRY.names()


def all_nn_methods() -> list[NNMethod]:
    return _REGISTRY.all()


# -- built-in entries ----------------------------------------------------------------------------


def _adamw(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"], weight_decay=cfg["weight_decay"]
    )


def _bfgs(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return BFGS(params, **cfg)


def _diag_ogr(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return DiagOGR(params, **cfg)


def _adahessian(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    from pytorch_optimizer import AdaHessian

    return AdaHessian(
        params,
        lr=cfg["lr"],
        betas=tuple(cfg["betas"]),
        hessian_power=cfg["hessian_power"],
        update_period=cfg["update_period"],
        num_samples=cfg["num_samples"],
        hessian_distribution=cfg["hessian_distribution"],
        eps=cfg["eps"],
    )


def _sophiah(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    from pytorch_optimizer import SophiaH

    return SophiaH(
        params,
        lr=cfg["lr"],
        betas=tuple(cfg["betas"]),
        p=cfg["p"],
        update_period=cfg["update_period"],
        num_samples=cfg["num_samples"],
        hessian_distribution=cfg["hessian_distribution"],
        eps=cfg["eps"],
    )


register_nn_method(
    NNMethod(
        "adam",
        "gradient",
        "torch.optim.Adam, betas (0.9, 0.999), eps 1e-8 (PyTorch defaults); lr tuned on 1e-4..1e-1",
        adam_factory,
        hyper={"betas": [0.9, 0.999], "eps": 1e-8},
        tune={"lr": log_grid(-4, -1)},
        quick_tune={"lr": log_grid(-2.5, -1.5)},
    )
)
register_nn_method(
    NNMethod(
        "adamw",
        "gradient",
        "torch.optim.AdamW, betas (0.9, 0.999), eps 1e-8, decoupled weight decay 0.01 (PyTorch defaults); "
        "lr tuned on 1e-4..1e-1",
        _adamw,
        hyper={"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01},
        tune={"lr": log_grid(-4, -1)},
        quick_tune={"lr": log_grid(-2.5, -1.5)},
    )
)
register_nn_method(
    NNMethod(
        "momentum",
        "gradient",
        "torch.optim.SGD with heavy-ball momentum 0.9 (m <- 0.9 m + g, theta <- theta - lr m); lr tuned on "
        "1e-3..1",
        momentum_factory,
        hyper={"momentum": 0.9},
        tune={"lr": log_grid(-3, 0)},
        quick_tune={"lr": log_grid(-2, -0.5)},
    )
)
register_nn_method(
    NNMethod(
        "lbfgs",
        "closure",
        "torch.optim.LBFGS on each step's mini-batch: strong-Wolfe line search (first trial lr = 1), history "
        "10 pairs (the usual L-BFGS memory; torch's default is 100), max_iter=1 so one step() is one "
        "iteration, max_eval=26 (the line search's own limit of 25 trials; torch's max_iter*5//4 would allow "
        "none), tolerance_grad = tolerance_change = 0 (the budget stops runs); nothing tuned",
        lbfgs_factory,
        hyper={
            "lr": 1.0,
            "max_iter": 1,
            "max_eval": 26,
            "history_size": 10,
            "tolerance_grad": 0.0,
            "tolerance_change": 0.0,
            "line_search_fn": "strong_wolfe",
        },
    )
)
register_nn_method(
    NNMethod(
        "bfgs",
        "closure",
        "hessopt BFGS (dense D x D inverse Hessian) on each step's mini-batch: strong-Wolfe line search "
        "(c1 1e-4, c2 0.9, first trial 1), secant pair from the same batch, H0 = (s'y/y'y) I (Nocedal-Wright "
        "eq. 6.20), skip when s'y <= 0; nothing tuned; only problems with <= 1,000 parameters (one step "
        "costs ~0.1 s at D = 2,410 on one core)",
        _bfgs,
        hyper={"lr": 1.0, "line_search": "strong_wolfe", "initial_scaling": "nocedal_wright"},
        max_params=1_000,
    )
)
register_nn_method(
    NNMethod(
        "diag-ogr",
        "gradient",
        "hessopt DiagOGR with its defaults (beta 0.4, gamma 0.3, div 1.4, cut 5: Duda's dOGR test-function "
        "tuning, ogr.md §3.4); the per-coordinate rate is at most lr/cut; lr tuned on 0.0316..31.6",
        _diag_ogr,
        tune={"lr": log_grid(-1.5, 1.5)},
        quick_tune={"lr": log_grid(-0.5, 1)},
    )
)
register_nn_method(
    NNMethod(
        "adahessian",
        "hessian",
        "pytorch-optimizer AdaHessian (Yao et al. 2021) with the library defaults: betas (0.9, 0.999), "
        "Hessian power 1, one Rademacher Hutchinson probe every step, eps 1e-16, no weight decay, no "
        "spatial averaging; lr tuned on 1e-3..1",
        _adahessian,
        hyper={
            "betas": [0.9, 0.999],
            "hessian_power": 1.0,
            "update_period": 1,
            "num_samples": 1,
            "hessian_distribution": "rademacher",
            "eps": 1e-16,
        },
        tune={"lr": log_grid(-3, 0)},
        quick_tune={"lr": log_grid(-1.5, -0.5)},
        requires="pytorch_optimizer",
    )
)
register_nn_method(
    NNMethod(
        "sophiah",
        "hessian",
        "pytorch-optimizer SophiaH (Liu et al. 2023, Hutchinson variant) with the library defaults: betas "
        "(0.96, 0.99), clip p = 0.01 (per-coordinate step at most lr * p), one Gaussian probe every 10 "
        "steps, eps 1e-12, no weight decay; lr tuned on 1e-2..10",
        _sophiah,
        hyper={
            "betas": [0.96, 0.99],
            "p": 0.01,
            "update_period": 10,
            "num_samples": 1,
            "hessian_distribution": "gaussian",
            "eps": 1e-12,
        },
        tune={"lr": log_grid(-2, 1)},
        quick_tune={"lr": log_grid(-1.5, 0)},
        requires="pytorch_optimizer",
    )
)
