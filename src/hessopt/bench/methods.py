"""The one registry of methods: every suite, study, report and the optimizer contract battery reads it.

A :class:`Method` is an optimizer configuration under one name: how a step is driven, its factory, its
fixed hyper-parameters, and per suite (``"functions"``, ``"nn"``) a :class:`Setting` with the suite's own
fixed values and tuning grids. A method runs in the suites it has a setting for. ``contract`` lists the
cases of the optimizer contract battery (``tests/contract``) that check it, each a :class:`Contract`.

Adding an optimizer to every suite, study and the contract battery is one :func:`register` call in this
file (see ``docs/architecture.md``).

Drives (how one step is taken):

* ``"gradient"``: the runner sets ``p.grad`` (``zero_grad``, loss, ``backward()``) then calls
  ``opt.step()``: one gradient evaluation per step.
* ``"closure"``: ``opt.step(closure)``, ``torch.optim.LBFGS``'s convention: the closure zeroes the
  gradients, computes the loss, calls ``backward()`` and returns the loss; it may be called several
  times per step (line searches), each call one gradient evaluation.
* ``"hessian"``: the optimizer takes Hutchinson estimates from a double-backward graph
  (``loss.backward(create_graph=True)`` every ``update_period`` steps, a plain ``backward()`` otherwise;
  AdaHessian, SophiaH); each estimate costs ``num_samples`` Hessian-vector products.
* ``"batch"``: the optimizer evaluates the model and the loss itself, ``loss = opt.step(inputs, targets)``
  (Hessian-free: its curvature products need both); its factory takes the model and the loss on outputs.
* ``"scipy"``: not a torch optimizer; the test-function suite drives ``scipy.optimize.minimize``.

Methods with ``needs_model`` are built as ``factory(params, config, model=model, loss_fn=loss_fn)``, where
``loss_fn`` is the loss on the model's outputs (an ``nn.Module`` such as ``nn.CrossEntropyLoss()``) that the
runner then uses for every loss it computes (HesScale's hooks watch that module). They run only on problems
whose loss is such a module of the outputs.

Coupling (what may be batched): ``"element"`` (each coordinate's update depends only on its own history:
n starts may run as the rows of one ``(n, dim)`` tensor), ``"tensor"`` (per parameter tensor: one
optimizer over n separate tensors), ``"all"`` (one optimizer per start).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from hessopt._registry import Registry
from hessopt.optim import (
    BFGS,
    DUDA_DOGR,
    DUDA_SUBSPACE_OGR,
    OGR,
    AdaHesScale,
    AdaHesScaleGN,
    BlockDiagonalHessianFree,
    DiagOGR,
    SubspaceOGR,
)

__all__ = [
    "COUPLINGS",
    "DRIVES",
    "SUITES",
    "Contract",
    "Method",
    "Setting",
    "SuiteMethod",
    "all_methods",
    "get_method",
    "log_grid",
    "method_names",
    "methods_in",
    "register",
]

DRIVES = ("gradient", "closure", "hessian", "batch", "scipy")
COUPLINGS = ("element", "tensor", "all")
SUITES = ("functions", "nn")
GRIDS = ("full", "quick")

Factory = Callable[[Sequence[Any], Mapping[str, Any]], torch.optim.Optimizer]
"""``factory(params, config)``: ``params`` as torch.optim takes them (tensors or param-group dicts)."""

FLAT_NONFINITE_COUNTER = ("state", 0, "nonfinite_skips")
"""Where hessopt optimizers count skipped non-finite steps in ``state_dict()`` (the flat-state slot)."""


def log_grid(lo_exp: float, hi_exp: float, per_decade: int = 2) -> tuple[float, ...]:
    """Log-spaced grid ``10**e`` for ``e`` from ``lo_exp`` to ``hi_exp`` inclusive.

    Values are rounded to 12 significant digits so that a grid (and every configuration holding one of
    its values) has the same JSON text on every machine.

    Args:
        lo_exp: exponent of the first point.
        hi_exp: exponent of the last point.
        per_decade: points per decade.

    Returns:
        The ascending grid.

    Raises:
        ValueError: when ``hi_exp < lo_exp`` or ``per_decade < 1``.
    """
    if hi_exp < lo_exp or per_decade < 1:
        raise ValueError(f"need lo_exp <= hi_exp and per_decade >= 1, got {lo_exp}, {hi_exp}, {per_decade}")
    n = round((hi_exp - lo_exp) * per_decade)
    return tuple(float(f"{10 ** (lo_exp + k / per_decade):.12g}") for k in range(n + 1))


def _frozen(mapping: Mapping[str, Any]) -> MappingProxyType:
    return MappingProxyType(dict(mapping))


def _check_grids(owner: str, fixed: Mapping[str, Any], grids: Mapping[str, Sequence[float]]) -> None:
    for pname, grid in grids.items():
        if pname in fixed:
            raise ValueError(f"{owner}: {pname!r} is both fixed (hyper) and tuned")
        if len(grid) == 0 or list(grid) != sorted(grid):
            raise ValueError(f"{owner}: the grid of {pname!r} must be non-empty and ascending")


@dataclass(frozen=True)
class Setting:
    """How one suite runs a method.

    Attributes:
        hyper: fixed values for this suite, over the method's own ``hyper``.
        tune: hyper-parameters tuned per problem in the full protocol, name -> ascending grid.
        quick_tune: the same names with the quick protocol's (smaller) grids; default ``tune``.
        note: appended to the method's summary in this suite (grids, the suite's own choices).
    """

    hyper: Mapping[str, Any] = field(default_factory=dict)
    tune: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    quick_tune: Mapping[str, tuple[float, ...]] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        quick = self.tune if self.quick_tune is None else self.quick_tune
        if set(quick) != set(self.tune):
            raise ValueError(
                f"quick_tune must tune the same names as tune ({sorted(self.tune)}), got {sorted(quick)}"
            )
        object.__setattr__(self, "hyper", _frozen(self.hyper))
        object.__setattr__(self, "tune", _frozen({k: tuple(v) for k, v in self.tune.items()}))
        object.__setattr__(self, "quick_tune", _frozen({k: tuple(v) for k, v in quick.items()}))


@dataclass(frozen=True)
class Contract:
    """One case of the optimizer contract battery (``tests/contract``) for a method.

    The battery builds the optimizer as ``method.factory(params, {**method.hyper, **hyper, **overrides})``
    on its small float64 problems.

    Attributes:
        label: case id suffix (the case is called ``"<method>"`` or ``"<method>(<label>)"``).
        hyper: values for the battery's small problems (e.g. a learning rate that suits them).
        needs_closure: whether ``step()`` requires a closure (then ``step()`` without one must raise);
            None means "the method's drive is ``"closure"``".
        group_hparam: a hyper-parameter that may differ between param groups (default ``"lr"``), or None
            when the optimizer requires equal values in all groups (implied when ``shared_hparam`` is set).
        group_hparam_off: the value of ``group_hparam`` that makes a group's step exactly zero.
        shared_hparam: ``(name, value_group_0, value_group_1)``: unequal per-group values the constructor
            must reject with a ValueError naming ``name``.
        invalid: ``(constructor kwargs, text)`` pairs: each must raise an error whose message contains
            ``text`` (the argument's name).
        skips_nonfinite: True for optimizers with hessopt's ``nonfinite="skip"|"raise"`` policy; False only
            for controls (the skip checks then run as strict xfail).
        nonfinite_counter: path into ``state_dict()`` of the skipped-step counter.
        scalar_state_keys: state keys exempt from "floating state follows the parameters' dtype/device".
        supports_ddp: run the DistributedDataParallel equivalence check.
        ddp_atol: tolerance of DDP vs one process on the concatenated batch (float64).
        group_split_atol: tolerance of "two equal param groups" vs "one group" (float64).
        decrease_steps: steps of the convex least-squares decrease check.
        decrease_factor: the loss after ``decrease_steps`` must be at most this times the initial loss.
        not_applicable: ``{check key: reason}`` for documented behaviour a check does not cover.
    """

    label: str = ""
    hyper: Mapping[str, Any] = field(default_factory=dict)
    needs_closure: bool | None = None
    group_hparam: str | None = "lr"
    group_hparam_off: Any = 0.0
    shared_hparam: tuple[str, Any, Any] | None = None
    invalid: Sequence[tuple[Mapping[str, Any], str]] = ()
    skips_nonfinite: bool = True
    nonfinite_counter: tuple[Any, ...] | None = FLAT_NONFINITE_COUNTER
    scalar_state_keys: frozenset[str] = frozenset()
    supports_ddp: bool = True
    ddp_atol: float = 1e-12
    group_split_atol: float = 1e-12
    decrease_steps: int = 5
    decrease_factor: float = 0.5
    not_applicable: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shared_hparam is not None and self.group_hparam == "lr":
            object.__setattr__(self, "group_hparam", None)  # the default gives way to shared_hparam
        if (self.group_hparam is None) == (self.shared_hparam is None):
            raise ValueError("a contract sets exactly one of group_hparam and shared_hparam")
        if self.skips_nonfinite and self.nonfinite_counter is None:
            raise ValueError("an optimizer that skips non-finite steps needs nonfinite_counter")
        object.__setattr__(self, "hyper", _frozen(self.hyper))
        object.__setattr__(self, "not_applicable", _frozen(self.not_applicable))


@dataclass(frozen=True)
class Method:
    """One optimizer configuration under one name.

    Attributes:
        name: the registry key, used in stores, reports and on the command line.
        label: display name in figures and study tables.
        summary: what the configuration is and where its values come from.
        drive: how a step is taken (see the module docstring).
        factory: ``factory(params, config)``; None for ``"scipy"``.
        hyper: fixed hyper-parameters common to every suite.
        suites: per suite, its :class:`Setting`; the method runs in exactly these suites.
        coupling: ``"element"``, ``"tensor"`` or ``"all"`` (what may be batched).
        max_params: the method runs only on problems with at most this many parameters.
        requires: an optional package the factory imports (skipped with a message when absent).
        contract: the contract-battery cases of this method (empty: not in the battery).
        needs_model: the factory takes ``model=`` and ``loss_fn=`` (implied by ``drive="batch"``).
        distributed_note: why the method cannot train under DistributedDataParallel; empty when it can
            (``hessopt train`` under torchrun refuses it with this reason).
    """

    name: str
    label: str
    summary: str
    drive: str
    factory: Factory | None
    hyper: Mapping[str, Any] = field(default_factory=dict)
    suites: Mapping[str, Setting] = field(default_factory=dict)
    coupling: str = "all"
    max_params: int | None = None
    requires: str | None = None
    contract: Sequence[Contract] = ()
    needs_model: bool = False
    distributed_note: str = ""

    def __post_init__(self) -> None:
        if self.drive == "batch":
            object.__setattr__(self, "needs_model", True)
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.drive not in DRIVES:
            raise ValueError(f"drive of method {self.name!r} must be one of {DRIVES}, got {self.drive!r}")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"coupling of {self.name!r} must be one of {COUPLINGS}, got {self.coupling!r}")
        if (self.factory is None) != (self.drive == "scipy"):
            raise ValueError(
                f"method {self.name!r}: factory is required for torch drives and None for 'scipy'"
            )
        if self.coupling == "element" and self.drive != "gradient":
            raise ValueError(f"method {self.name!r}: only 'gradient' methods can be batched elementwise")
        unknown = set(self.suites) - set(SUITES)
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown suites {sorted(unknown)}; known: {SUITES}")
        for suite, setting in self.suites.items():
            fixed = {**self.hyper, **setting.hyper}
            _check_grids(f"method {self.name!r} in suite {suite!r}", fixed, setting.tune)
            _check_grids(f"method {self.name!r} in suite {suite!r}", fixed, setting.quick_tune)
        if self.drive == "hessian":
            for setting in self.suites.values():
                if "update_period" not in {**self.hyper, **setting.hyper}:
                    raise ValueError(f"method {self.name!r}: a 'hessian' method must fix update_period")
        if self.max_params is not None and (isinstance(self.max_params, bool) or self.max_params < 1):
            raise ValueError(f"method {self.name!r}: max_params must be a positive int or None")
        labels = [c.label for c in self.contract]
        if len(set(labels)) != len(labels):
            raise ValueError(f"method {self.name!r}: contract case labels must be distinct, got {labels}")
        object.__setattr__(self, "hyper", _frozen(self.hyper))
        object.__setattr__(self, "suites", _frozen(self.suites))
        object.__setattr__(self, "contract", tuple(self.contract))

    def in_suite(self, suite: str, grid: str = "full") -> SuiteMethod:
        """This method as suite ``suite`` runs it, with the ``"full"`` or ``"quick"`` tuning grid.

        Args:
            suite: ``"functions"`` or ``"nn"``.
            grid: which of the setting's grids becomes ``tune``.

        Returns:
            The resolved :class:`SuiteMethod`.

        Raises:
            ValueError: when the method does not run in ``suite`` or ``grid`` is unknown.
        """
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
        if suite not in self.suites:
            runs_in = ", ".join(self.suites) or "no suite"
            raise ValueError(
                f"method {self.name!r} does not run in the {suite!r} suite (it runs in: {runs_in})"
            )
        setting = self.suites[suite]
        note = f"; {setting.note}" if setting.note else ""
        return SuiteMethod(
            method=self,
            suite=suite,
            hyper=_frozen({**self.hyper, **setting.hyper}),
            tune=setting.tune if grid == "full" else setting.quick_tune,
            summary=self.summary + note,
        )

    def contract_config(self, case: Contract, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The configuration the contract battery builds ``case`` with (plus ``overrides``)."""
        return {**self.hyper, **case.hyper, **(overrides or {})}

    @property
    def distributed(self) -> bool:
        """Whether the method trains correctly under DistributedDataParallel."""
        return not self.distributed_note

    def build(
        self,
        params: Sequence[Any],
        config: Mapping[str, Any],
        *,
        model: torch.nn.Module | None = None,
        loss_fn: torch.nn.Module | None = None,
    ) -> torch.optim.Optimizer:
        """The optimizer over ``params`` (see :meth:`SuiteMethod.build`)."""
        if self.factory is None:
            raise TypeError(
                f"method {self.name!r} is driven by scipy, not a torch optimizer; it has no build()"
            )
        missing = self.missing_requirement()
        if missing:
            raise RuntimeError(missing)
        if not self.needs_model:
            return self.factory(list(params), config)
        if model is None or loss_fn is None:
            raise TypeError(
                f"method {self.name!r} needs the model and the loss on its outputs (model=, loss_fn=)"
            )
        return self.factory(list(params), config, model=model, loss_fn=loss_fn)

    def needs_closure(self, case: Contract) -> bool:
        """Whether the contract case ``case`` of this method requires a closure in ``step()``."""
        return self.drive == "closure" if case.needs_closure is None else case.needs_closure

    def missing_requirement(self) -> str | None:
        """None when runnable, else why not and the fix."""
        if self.requires is None or importlib.util.find_spec(self.requires) is not None:
            return None
        return (
            f"method {self.name!r} needs the package {self.requires!r}, which is not installed; "
            "install the peers extra (see the README) to include it"
        )


@dataclass(frozen=True)
class SuiteMethod:
    """A method resolved for one suite and grid: what the suite's runner and tuner read.

    Attributes:
        method: the registered :class:`Method`.
        suite: the suite it was resolved for.
        hyper: fixed hyper-parameters (the method's, then the suite's).
        tune: the tuned names and the chosen grid.
        summary: the method's summary with the suite's note.
    """

    method: Method
    suite: str
    hyper: Mapping[str, Any]
    tune: Mapping[str, tuple[float, ...]]
    summary: str

    @property
    def name(self) -> str:
        """The method's name."""
        return self.method.name

    @property
    def drive(self) -> str:
        """How a step is taken."""
        return self.method.drive

    @property
    def max_params(self) -> int | None:
        """The largest problem (number of parameters) the method runs on; None: no limit."""
        return self.method.max_params

    @property
    def batchable(self) -> bool:
        """True when n independent starts may run as the rows of one ``(n, dim)`` parameter."""
        return self.method.coupling == "element"

    def config(self, tuned: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The complete hyper-parameter set: ``hyper`` plus one value for every tuned name.

        Args:
            tuned: a value for every tuned name.

        Returns:
            The configuration passed to the factory and recorded with each run.

        Raises:
            ValueError: when ``tuned`` misses a tuned name or has an unknown one.
        """
        tuned = dict(tuned or {})
        missing, extra = set(self.tune) - set(tuned), set(tuned) - set(self.tune)
        if missing or extra:
            raise ValueError(
                f"method {self.name!r} tunes {sorted(self.tune)}; got values for {sorted(tuned)}"
                f" (missing {sorted(missing)}, unexpected {sorted(extra)})"
            )
        return {**self.hyper, **{k: float(v) for k, v in tuned.items()}}

    def build(
        self,
        params: Sequence[Any],
        config: Mapping[str, Any],
        *,
        model: torch.nn.Module | None = None,
        loss_fn: torch.nn.Module | None = None,
    ) -> torch.optim.Optimizer:
        """The optimizer over ``params`` for a configuration from :meth:`config`.

        Args:
            params: tensors or param-group dicts (groups may override tuned values: a suite runs a grid of
                step sizes of an elementwise method in one optimizer that way).
            config: the configuration.
            model: the model (passed to methods with ``needs_model``).
            loss_fn: the loss module on the model's outputs (likewise).

        Returns:
            The optimizer.

        Raises:
            TypeError: for a ``"scipy"`` method, which has no torch optimizer, or a method that needs the
                model built without one.
            RuntimeError: when a required package is missing.
        """
        return self.method.build(params, config, model=model, loss_fn=loss_fn)

    def missing_requirement(self) -> str | None:
        """None when runnable, else why not and the fix."""
        return self.method.missing_requirement()

    def hessian_period(self, config: Mapping[str, Any]) -> int:
        """Steps between two Hutchinson estimates (0 for methods that take none)."""
        return int(config["update_period"]) if self.drive == "hessian" else 0

    def probes(self, config: Mapping[str, Any]) -> int:
        """Hessian-vector products per estimate."""
        return int(config.get("num_samples", 1)) if self.drive == "hessian" else 0

    def applies_to(self, num_parameters: int) -> bool:
        """Whether the method runs on a problem with ``num_parameters`` parameters."""
        return self.method.max_params is None or num_parameters <= self.method.max_params


_REGISTRY: Registry[Method] = Registry("method")


def register(method: Method, *, replace: bool = False) -> Method:
    """Add a method to the registry.

    Args:
        method: the entry.
        replace: overwrite an entry of the same name (keeping its position).

    Returns:
        ``method``.

    Raises:
        ValueError: when the name is taken and ``replace`` is False.
    """
    return _REGISTRY.register(method, replace=replace)


def get_method(name: str) -> Method:
    """The registered method called ``name``; ValueError listing the known names otherwise."""
    return _REGISTRY.get(name)


def method_names() -> list[str]:
    """Registered names, in registration order (the order of report columns)."""
    return _REGISTRY.names()


def all_methods() -> list[Method]:
    """Registered methods, in registration order."""
    return _REGISTRY.all()


def methods_in(suite: str) -> list[Method]:
    """The registered methods that run in ``suite``, in registration order."""
    return [m for m in _REGISTRY.all() if suite in m.suites]


def _lr_setting(lo: float, hi: float, *, quick: tuple[float, float]) -> Setting:
    """The NN suites' usual setting: lr tuned on the half-decade grid ``10**lo..10**hi``, quick a sub-grid."""
    full = log_grid(lo, hi)
    return Setting(
        tune={"lr": full}, quick_tune={"lr": log_grid(*quick)}, note=f"lr tuned on {full[0]:g}..{full[-1]:g}"
    )


# ------------------------------------------------------------------------------------------ factories
def _hessopt(cls: type[torch.optim.Optimizer]) -> Factory:
    def factory(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
        return cls(params, **cfg)

    factory.__name__ = f"build_{cls.__name__}"
    return factory


def _adam(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, **{**cfg, "betas": tuple(cfg["betas"])})


def _adamw(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, **{**cfg, "betas": tuple(cfg["betas"])})


def _sgd(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, **cfg)


def _lbfgs(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.LBFGS(params, **cfg)


def _muon(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Muon on the hidden weight matrices, its AdamW fallback on the output layer and the 1-D parameters.

    The output layer is the last parameter with two or more dimensions (the parameters come in model
    order), as Muon's authors prescribe for classifier heads.
    """
    import pytorch_optimizer

    tensors = list(params)
    matrices = [p for p in tensors if p.ndim >= 2]
    head = matrices[-1] if matrices else None
    hidden = [p for p in matrices if p is not head]
    rest = [p for p in tensors if p.ndim < 2 or p is head]
    groups = [
        g for g in ({"params": hidden, "use_muon": True}, {"params": rest, "use_muon": False}) if g["params"]
    ]
    return pytorch_optimizer.Muon(groups, **{**cfg, "adamw_betas": tuple(cfg["adamw_betas"])})


def _hesscale(cls: type[torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    def factory(
        params: Sequence[Any], cfg: Mapping[str, Any], *, model: torch.nn.Module, loss_fn: torch.nn.Module
    ) -> torch.optim.Optimizer:
        opt = cls(params, **{**cfg, **({"betas": tuple(cfg["betas"])} if "betas" in cfg else {})})
        opt.attach(model, loss_fn)
        return opt

    factory.__name__ = f"build_{cls.__name__}"
    return factory


def _hessian_free(blocks: str) -> Callable[..., torch.optim.Optimizer]:
    def factory(
        params: Sequence[Any], cfg: Mapping[str, Any], *, model: torch.nn.Module, loss_fn: torch.nn.Module
    ) -> torch.optim.Optimizer:
        return BlockDiagonalHessianFree(params, model=model, loss_fn=loss_fn, blocks=blocks, **cfg)

    factory.__name__ = f"build_hessian_free_{blocks}"
    return factory


def _pytorch_optimizer(class_name: str) -> Factory:
    def factory(params: Sequence[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
        import pytorch_optimizer

        if "betas" in cfg:
            cfg = {**cfg, "betas": tuple(cfg["betas"])}
        return getattr(pytorch_optimizer, class_name)(params, **cfg)

    factory.__name__ = f"build_{class_name}"
    return factory


# -------------------------------------------------------------------------------------- the entries
register(
    Method(
        "adam",
        "Adam",
        "torch.optim.Adam, betas (0.9, 0.999), eps 1e-8 (PyTorch defaults)",
        "gradient",
        _adam,
        hyper={"betas": [0.9, 0.999], "eps": 1e-8},
        suites={
            "functions": Setting(
                tune={"lr": log_grid(-4, 2)},
                note="lr tuned on a half-decade grid 1e-4..100 (boxes reach +-500)",
            ),
            "nn": _lr_setting(-4, -1, quick=(-2.5, -1.5)),
        },
        coupling="element",
        contract=(
            Contract(
                label="control",
                hyper={"lr": 0.1},
                invalid=(
                    ({"lr": -1.0}, "learning rate"),
                    ({"betas": (0.9, 1.5)}, "beta"),
                    ({"eps": -1.0}, "epsilon"),
                ),
                skips_nonfinite=False,
                nonfinite_counter=None,
                scalar_state_keys=frozenset({"step"}),
                group_split_atol=0.0,
                not_applicable={
                    "nonfinite_raise": "torch.optim.Adam has no non-finite policy (control case)"
                },
            ),
        ),
    )
)
register(
    Method(
        "adamw",
        "AdamW",
        "torch.optim.AdamW, betas (0.9, 0.999), eps 1e-8, decoupled weight decay 0.01 (PyTorch defaults)",
        "gradient",
        _adamw,
        hyper={"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01},
        suites={"nn": _lr_setting(-4, -1, quick=(-2.5, -1.5))},
        coupling="element",
    )
)
register(
    Method(
        "momentum",
        "Momentum",
        "torch.optim.SGD with heavy-ball momentum 0.9, no dampening (m <- 0.9 m + g, theta <- theta - lr m)",
        "gradient",
        _sgd,
        hyper={"momentum": 0.9},
        suites={
            "functions": Setting(
                tune={"lr": log_grid(-8, 0)},
                note="lr tuned on a half-decade grid 1e-8..1 (Zakharov's quartic term needs tiny steps)",
            ),
            "nn": _lr_setting(-3, 0, quick=(-2, -0.5)),
        },
        coupling="element",
    )
)
register(
    Method(
        "lbfgs",
        "L-BFGS",
        "torch.optim.LBFGS, strong-Wolfe line search (first trial lr = 1), max_iter=1 so that one step() "
        "is one iteration (each step() re-evaluates the closure once at its start: counted); max_eval=26 "
        "because torch gives the line search max_eval - 1 evaluations and its default max_iter*5//4 would "
        "allow none at max_iter=1; tolerance_grad = tolerance_change = 0 so that the suite's budget or "
        "gradient tolerance stops runs, not torch's own (which freeze L-BFGS at f ~ 1e-10 on Rosenbrock); "
        "nothing tuned",
        "closure",
        _lbfgs,
        hyper={
            "lr": 1.0,
            "max_iter": 1,
            "max_eval": 26,
            "tolerance_grad": 0.0,
            "tolerance_change": 0.0,
            "line_search_fn": "strong_wolfe",
        },
        suites={
            "functions": Setting(hyper={"history_size": 100}, note="history 100 (torch default)"),
            "nn": Setting(
                hyper={"history_size": 10},
                note="on each step's mini-batch; history 10 pairs (the usual L-BFGS memory)",
            ),
        },
        distributed_note="torch.optim.LBFGS's line search compares each process's own loss, so the "
        "processes would take different steps",
    )
)
_BFGS_TEXTBOOK = {"initial_scaling": "nocedal_wright", "curvature_failure": "skip"}
_BFGS_INVALID = (
    ({"lr": -1.0}, "lr"),
    ({"line_search": "wolfe"}, "line_search"),
    ({"initial_scaling": "unit"}, "initial_scaling"),
    ({"curvature_failure": "ignore"}, "curvature_failure"),
    ({"c1": 0.0}, "c1"),
    ({"c1": 1.0}, "c1"),
    ({"c2": 1.0}, "c2"),
    ({"c1": 0.5, "c2": 0.4}, "c2"),
    ({"max_line_search_evals": 0}, "max_line_search_evals"),
    ({"tolerance_grad": -1.0}, "tolerance_grad"),
    ({"nonfinite": "ignore"}, "nonfinite"),
    ({"curvature_eps": -1.0}, "curvature_eps"),
    ({"max_memory_fraction": 0.0}, "max_memory_fraction"),
    ({"memory_limit_bytes": 0}, "memory_limit_bytes"),
    ({"memory_limit_bytes": 1000}, "memory_limit_bytes"),
)

register(
    Method(
        "bfgs",
        "BFGS (strong Wolfe)",
        "hessopt BFGS, textbook (docs/algorithms/bfgs.md): strong-Wolfe line search (c1 1e-4, c2 0.9, "
        "first trial 1), H0 = (s'y / y'y) I before the first update (Nocedal-Wright eq. 6.20), skip when "
        "s'y is not positive; nothing tuned",
        "closure",
        _hessopt(BFGS),
        hyper={"lr": 1.0, "line_search": "strong_wolfe", **_BFGS_TEXTBOOK},
        suites={
            "functions": Setting(
                hyper={"reuse_evaluation": True},
                note="reuse_evaluation=True (the test functions are deterministic), so an unclamped step "
                "costs scipy's count",
            ),
            "nn": Setting(
                note="on each step's mini-batch, secant pair from the same batch; only problems with "
                "<= 1,000 parameters (a dense D x D inverse Hessian)"
            ),
        },
        max_params=1_000,
        contract=(
            Contract(shared_hparam=("c1", 1e-4, 1e-3), invalid=_BFGS_INVALID),
            Contract(
                label="reuse_evaluation",
                hyper={"reuse_evaluation": True},
                shared_hparam=("reuse_evaluation", True, False),
                not_applicable={
                    "nonfinite_after_steps": (
                        "reuse_evaluation=True starts a step from the previous step's cached evaluation "
                        "(documented: deterministic closures only); a closure turning non-finite is first "
                        "seen at line-search trials, where nan/inf means 'step too long'"
                    ),
                    "closure_called_first": "reuse_evaluation=True returns the cached loss at the start",
                },
            ),
        ),
    )
)
register(
    Method(
        "bfgs-armijo",
        "BFGS (Armijo)",
        "hessopt BFGS with a backtracking Armijo search instead of Wolfe (s'y > 0 is not guaranteed, so "
        "updates may be skipped); otherwise as bfgs",
        "closure",
        _hessopt(BFGS),
        hyper={"lr": 1.0, "line_search": "armijo", **_BFGS_TEXTBOOK},
        suites={"functions": Setting(hyper={"reuse_evaluation": True})},
        contract=(Contract(shared_hparam=("line_search", "armijo", "strong_wolfe")),),
    )
)
register(
    Method(
        "bfgs-fixed",
        "BFGS (fixed step)",
        "hessopt BFGS without line search: theta <- theta - lr H g; lr tuned per function on a "
        "half-decade grid 0.03..1 (the 2025 OGR-vs-BFGS benchmark code used lr 0.5; smaller steps never "
        "won in trial runs)",
        "closure",
        _hessopt(BFGS),
        hyper={"line_search": None, **_BFGS_TEXTBOOK},
        suites={"functions": Setting(tune={"lr": log_grid(-1.5, 0)})},
        contract=(Contract(hyper={"lr": 0.5}, needs_closure=False, shared_hparam=("lr", 0.5, 0.25)),),
    )
)
register(
    Method(
        "scipy-bfgs",
        "scipy BFGS",
        "scipy.optimize.minimize(method='BFGS') with the exact gradient as jac: H0 = I, Wolfe line search "
        "(c1 1e-4, c2 0.9); maxiter = steps, gtol = the suite's gradient tolerance in the 2-norm. Runs "
        "UNCLAMPED (scipy's BFGS has no box)",
        "scipy",
        None,
        suites={"functions": Setting()},
    )
)

_OGR_INVALID = (
    ({"lr": -1.0}, "lr"),
    ({"beta": 1.0}, "beta"),
    ({"gamma": -0.1}, "gamma"),
    ({"div": 0.0}, "div"),
    ({"cut": 0.0}, "cut"),
    ({"sigma0": -1.0}, "sigma0"),
    ({"mean_init": "mean"}, "mean_init"),
    ({"ridge_rel": -1.0}, "ridge_rel"),
    ({"max_step_norm": 0.0}, "max_step_norm"),
    ({"line_search": "wolfe"}, "line_search"),
    ({"c1": 0.0}, "c1"),
    ({"max_line_search_evals": 0}, "max_line_search_evals"),
    ({"nonfinite": "ignore"}, "nonfinite"),
    ({"memory_limit_bytes": 1000}, "memory_limit_bytes"),
)
# cut = 1 (not the test-function default 10) so that the battery's small convex problem decreases quickly
_OGR_CONTRACT = {"cut": 1.0}

register(
    Method(
        "ogr",
        "OGR",
        "hessopt OGR with its defaults (docs/algorithms/ogr.md: beta 0.5, gamma 0.4, div 1.5, cut 10, "
        "prior s0 1 towards H = 0), no line search; the step size lr (eta) tuned per function on a "
        "half-decade grid 0.1..3.16",
        "gradient",
        _hessopt(OGR),
        suites={"functions": Setting(tune={"lr": log_grid(-1, 0.5)})},
        contract=(Contract(hyper=_OGR_CONTRACT, shared_hparam=("beta", 0.5, 0.6), invalid=_OGR_INVALID),),
    )
)
register(
    Method(
        "ogr-r2",
        "OGR (2025 benchmark settings)",
        "hessopt OGR configured as the 2025 OGR-vs-BFGS benchmark code (github.com/ReadHegel/pytorch-ogr; "
        "docs/algorithms/ogr.md): means from 0, beta 0.8 (the code's 0.2 in the new-sample convention), "
        "raw gradient (gamma 0), lr 0.5, div 1, prior Sigma0 = C0 = I (sigma0 1, h_prior 1), no eigenvalue "
        "floor (cut 1e-12), ridge only 1e-12 (the code's jitter), step norm clipped; the code set the clip "
        "per function (1, 1.5 or 2.5), here it is tuned on the tuning starts from that set",
        "gradient",
        _hessopt(OGR),
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
        suites={"functions": Setting(tune={"max_step_norm": (1.0, 1.5, 2.5)})},
    )
)
register(
    Method(
        "ogr-wolfe",
        "OGR + strong Wolfe",
        "hessopt OGR with its defaults plus a strong-Wolfe line search along the saddle-free step (first "
        "trial alpha = 1; the raw-gradient saddle-free step where the momentum step ascends); nothing tuned",
        "closure",
        _hessopt(OGR),
        hyper={"line_search": "strong_wolfe"},
        suites={"functions": Setting()},
        contract=(Contract(hyper=_OGR_CONTRACT, shared_hparam=("line_search", "strong_wolfe", None)),),
    )
)
register(
    Method(
        "diag-ogr",
        "DiagOGR",
        "hessopt DiagOGR (coordinate-wise OGR, saddle-free per coordinate; docs/algorithms/ogr.md)",
        "gradient",
        _hessopt(DiagOGR),
        suites={
            "functions": Setting(
                hyper={k: v for k, v in DUDA_DOGR.items() if k != "lr"},
                tune={"lr": log_grid(-1, 0.5)},
                note="Duda's dOGR test-function settings (DUDA_DOGR: beta 0.4, gamma 0.3, div 1.4, cut 5); "
                "lr tuned on 0.1..3.16",
            ),
            "nn": Setting(
                tune={"lr": log_grid(-1.5, 1.5)},
                quick_tune={"lr": log_grid(-0.5, 1)},
                note="its network defaults (beta 0.9, cut 1e-4, per-coordinate step at most 0.01); lr "
                "(default 0.1) tuned on 0.0316..31.6",
            ),
        },
        coupling="tensor",
        contract=(
            Contract(
                hyper={"lr": 0.5, "cut": 1.0, "max_coord_step": None},
                invalid=(
                    ({"lr": -1.0}, "lr"),
                    ({"beta": 1.0}, "beta"),
                    ({"gamma": 1.5}, "gamma"),
                    ({"div": 0.0}, "div"),
                    ({"cut": 0.0}, "cut"),
                    ({"sigma0": -1.0}, "sigma0"),
                    ({"ridge_abs": -1.0}, "ridge_abs"),
                    ({"nonfinite": "ignore"}, "nonfinite"),
                ),
            ),
            Contract(label="corr1", hyper={"lr": 0.5, "cut": 1.0, "corr1": True, "max_coord_step": None}),
        ),
    )
)
register(
    Method(
        "subspace-ogr",
        "SubspaceOGR",
        "hessopt SubspaceOGR: OGR in a d-dimensional subspace tracked by online PCA of the gradients (Oja's "
        "rule), one QR-method step per update, saddle-free Newton inside, diagonal OGR outside "
        "(docs/algorithms/ogr.md)",
        "gradient",
        _hessopt(SubspaceOGR),
        suites={
            "functions": Setting(
                hyper={k: v for k, v in DUDA_SUBSPACE_OGR.items() if k != "lr"},
                tune={"lr": log_grid(-1, 0.5)},
                note="Duda's dsOGR test-function settings (DUDA_SUBSPACE_OGR: d 2, beta 0.4, gamma 0.3, div "
                "1.5, cut 6, rotation rate 0.1, mix 0.4); lr tuned on 0.1..3.16",
            ),
            "nn": Setting(
                tune={"lr": log_grid(-1.5, 1.5)},
                quick_tune={"lr": log_grid(-0.5, 1)},
                note="its network defaults; lr (default 0.1) tuned on 0.0316..31.6",
            ),
        },
        contract=(
            Contract(
                hyper={"lr": 0.5, "cut": 1.0, "rank": 3, "max_coord_step": None},
                shared_hparam=("rank", 3, 2),
                invalid=(
                    ({"rank": 0}, "rank"),
                    ({"rank": 1000}, "rank"),
                    ({"rotation": "gram"}, "rotation"),
                    ({"outside": "adam"}, "outside"),
                    ({"mix": 1.5}, "mix"),
                    ({"lr": -1.0}, "lr"),
                    ({"h_prior": float("nan")}, "h_prior"),
                ),
            ),
            Contract(
                label="sgd-outside",
                hyper={
                    "lr": 0.5,
                    "cut": 1.0,
                    "rank": 3,
                    "outside": "sgd",
                    "rotation": "duda",
                    "outside_scale": 0.3,
                },
                shared_hparam=("rank", 3, 2),
            ),
        ),
    )
)
register(
    Method(
        "adahessian",
        "AdaHessian",
        "pytorch-optimizer AdaHessian (Yao et al., arXiv:2006.00719) with the library defaults: betas "
        "(0.9, 0.999), Hessian power 1, one Rademacher Hutchinson probe every step, eps 1e-16, no weight "
        "decay, no spatial averaging",
        "hessian",
        _pytorch_optimizer("AdaHessian"),
        hyper={
            "betas": [0.9, 0.999],
            "hessian_power": 1.0,
            "update_period": 1,
            "num_samples": 1,
            "hessian_distribution": "rademacher",
            "eps": 1e-16,
        },
        suites={"nn": _lr_setting(-3, 0, quick=(-1.5, -0.5))},
        requires="pytorch_optimizer",
        distributed_note="its Hutchinson estimate differentiates the gradient again, and DDP does not "
        "support double backward (pytorch/pytorch#63812)",
    )
)
register(
    Method(
        "sophiah",
        "SophiaH",
        "pytorch-optimizer SophiaH (Liu et al., arXiv:2305.14342, Hutchinson variant) with the library "
        "defaults: betas (0.96, 0.99), clip p = 0.01 (per-coordinate step at most lr * p), one Gaussian "
        "probe every 10 steps, eps 1e-12, no weight decay",
        "hessian",
        _pytorch_optimizer("SophiaH"),
        hyper={
            "betas": [0.96, 0.99],
            "p": 0.01,
            "update_period": 10,
            "num_samples": 1,
            "hessian_distribution": "gaussian",
            "eps": 1e-12,
        },
        suites={"nn": _lr_setting(-2, 1, quick=(-1.5, 0))},
        requires="pytorch_optimizer",
        distributed_note="its Hutchinson estimate differentiates the gradient again, and DDP does not "
        "support double backward (pytorch/pytorch#63812)",
    )
)
register(
    Method(
        "soap",
        "SOAP",
        "pytorch-optimizer SOAP (Vyas et al., arXiv:2409.11321: Adam in the eigenbasis of Shampoo's "
        "preconditioner) with the paper's settings: betas (0.95, 0.95), weight decay 0.01, eigenbasis "
        "update every 10 steps (the paper's frequency), bias correction",
        "gradient",
        _pytorch_optimizer("SOAP"),
        hyper={
            "betas": [0.95, 0.95],
            "weight_decay": 0.01,
            "precondition_frequency": 10,
            "max_precondition_dim": 10000,
            "eps": 1e-8,
        },
        suites={"nn": _lr_setting(-4, -1, quick=(-3, -2))},
        requires="pytorch_optimizer",
    )
)
register(
    Method(
        "shampoo",
        "Shampoo",
        "pytorch-optimizer ScalableShampoo (Anil et al., arXiv:2002.09018; the AlgoPerf-winning family) "
        "with RMSProp (Adam-style) grafting, betas (0.9, 0.999), preconditioning from step 25 with inverse "
        "roots recomputed every 100 steps (the per-step recomputation of plain Shampoo costs ~40x an Adam "
        "step), blocks of 256, Nesterov momentum",
        "gradient",
        _pytorch_optimizer("ScalableShampoo"),
        hyper={
            "betas": [0.9, 0.999],
            "start_preconditioning_step": 25,
            "preconditioning_compute_steps": 100,
            "statistics_compute_steps": 1,
            "block_size": 256,
            "graft_type": 3,
            "nesterov": True,
        },
        suites={"nn": _lr_setting(-4, -1, quick=(-3, -2))},
        requires="pytorch_optimizer",
    )
)
register(
    Method(
        "kron",
        "PSGD-Kron",
        "pytorch-optimizer Kron (X.-L. Li, arXiv:1512.04202; PSGD with Kronecker-factored preconditioners) "
        "with momentum 0.9, the library's preconditioner-update probability schedule (1 annealed to 0.03) "
        "and memory_save_mode 'smart_one_diag' (the largest dimension of each matrix gets a diagonal "
        "factor); needs opt-einsum for torch.einsum's contraction order",
        "gradient",
        _pytorch_optimizer("Kron"),
        hyper={"momentum": 0.9, "memory_save_mode": "smart_one_diag", "weight_decay": 0.0},
        suites={"nn": _lr_setting(-4, -1, quick=(-3, -2))},
        requires="pytorch_optimizer",
    )
)
register(
    Method(
        "muon",
        "Muon",
        "pytorch-optimizer Muon (K. Jordan et al. 2024, kellerjordan.github.io/posts/muon; Liu et al., "
        "arXiv:2502.16982): Nesterov momentum 0.95 orthogonalised by 5 Newton-Schulz steps on the hidden "
        "weight matrices; the output layer and the 1-D parameters take its AdamW fallback (lr 3e-4, betas "
        "(0.9, 0.95)), as the authors prescribe",
        "gradient",
        _muon,
        hyper={
            "momentum": 0.95,
            "nesterov": True,
            "ns_steps": 5,
            "adamw_lr": 3e-4,
            "adamw_betas": [0.9, 0.95],
            "adamw_wd": 0.0,
        },
        suites={
            "nn": Setting(
                tune={"lr": log_grid(-3, 0)},
                quick_tune={"lr": log_grid(-2, -1)},
                note="Muon lr tuned on 1e-3..1",
            )
        },
        requires="pytorch_optimizer",
    )
)
_HF_NOT_APPLICABLE = {
    "closure_called_first": "step(inputs, targets) takes the batch, not a closure",
    "nonfinite_gradient": "the optimizer computes its gradients itself: an inf cannot be injected",
    "unused_parameter": "parameters must belong to the model (refused at construction; tested on its own)",
}
_HF_NN = Setting(
    hyper={"cg_max_iterations": 50},
    tune={"damping": (1e-3, 1e-2, 1e-1, 1.0)},
    quick_tune={"damping": (1e-2, 1.0)},
    note="CG capped at 50 iterations per step (Martens' 250 makes one step cost seconds on a CPU); the "
    "initial Levenberg-Marquardt damping tuned on 1e-3..1",
)
register(
    Method(
        "hf",
        "HF",
        "hessopt HessianFree (Martens, ICML 2010; docs/algorithms/hessian-free.md): one damped Gauss-Newton "
        "system over all parameters solved by truncated CG (Martens' stopping rule, warm start 0.95, CG "
        "backtracking), Levenberg-Marquardt damping on the undamped model, Armijo line search; curvature on "
        "the first quarter of each batch",
        "batch",
        _hessian_free("single"),
        suites={"nn": _HF_NN},
        contract=(
            Contract(
                # a few CG iterations: near CG's convergence on this tiny system the rounding of DDP's
                # two-way average grows to ~1e-3 in 20 iterations (1e-11 in 5)
                hyper={"cg_max_iterations": 5, "damping": 1e-2, "curvature_fraction": 1.0},
                shared_hparam=("lr", 1.0, 0.5),
                ddp_atol=1e-8,
                invalid=(({"damping": -1.0}, "damping"), ({"curvature_fraction": 0.0}, "curvature_fraction")),
                not_applicable=_HF_NOT_APPLICABLE,
            ),
        ),
    )
)
register(
    Method(
        "bdhf",
        "BDHF",
        "hessopt BlockDiagonalHessianFree (Zhang et al., arXiv:1712.07296; docs/algorithms/hessian-free.md): "
        "Hessian-free with the Gauss-Newton matrix restricted to one block per layer, all blocks solved by "
        "CG in lock step; otherwise as hf",
        "batch",
        _hessian_free("layers"),
        suites={"nn": _HF_NN},
        contract=(
            Contract(
                # a few CG iterations: near CG's convergence on this tiny system the rounding of DDP's
                # two-way average grows to ~1e-3 in 20 iterations (1e-11 in 5)
                hyper={"cg_max_iterations": 5, "damping": 1e-2, "curvature_fraction": 1.0},
                shared_hparam=("lr", 1.0, 0.5),
                ddp_atol=1e-8,
                not_applicable=_HF_NOT_APPLICABLE,
            ),
        ),
    )
)
_HESSCALE_INVALID = (
    ({"lr": -1.0}, "lr"),
    ({"betas": (0.9, 1.0)}, "betas[1]"),
    ({"eps": -1e-8}, "eps"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"variant": "sqrt"}, "variant"),
    ({"delta": 0.0}, "delta"),
    ({"max_scale": 0.0}, "max_scale"),
    ({"nonfinite": "ignore"}, "nonfinite"),
)
for _name, _cls, _what in (
    ("adahesscale", AdaHesScale, "HesScale"),
    ("adahesscale-gn", AdaHesScaleGN, "HesScaleGN (Gauss-Newton)"),
):
    register(
        Method(
            _name,
            _cls.__name__,
            f"hessopt {_cls.__name__} (Elsayed & Mahmood, arXiv:2210.11639; docs/algorithms/hesscale.md): "
            f"Adam with the squared {_what} Hessian diagonal, computed during backward, in place of the "
            "squared gradient; its defaults (lr 2e-3, betas (0.9, 0.999), eps 1e-3, measured against "
            "Adam's)",
            "gradient",
            _hesscale(_cls),
            # quick grid as Adam's: at 1e-3..1e-2 the choice sat at the top edge on all four quick problems
            suites={"nn": _lr_setting(-4, -1, quick=(-2.5, -1.5))},
            needs_model=True,
            contract=(Contract(hyper={"lr": 0.5}, invalid=_HESSCALE_INVALID),),
        )
    )
