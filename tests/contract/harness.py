"""Problems, runners and exact comparisons shared by the optimizer contract battery (CPU, deterministic).

Two problems, both with the mini-batch *mean* squared error:

* :func:`make_mlp`: ``Linear(3, 4) - tanh - Linear(4, 2)`` (26 parameters, non-convex), for the state,
  dtype, group, non-finite and DDP checks;
* :func:`make_linear`: ``Linear(5, 2)`` (12 parameters), a convex least-squares problem, for the
  "loss decreases" sanity check.

Every model and data set is built from its own seeded ``torch.Generator``, so two calls with the same
arguments give the same tensors bit for bit in any process (the DDP check relies on that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IN_FEATURES, HIDDEN, OUT_FEATURES = 3, 4, 2
N_SAMPLES = 16
LINEAR_IN = 5


def make_data(dtype: torch.dtype, n: int = N_SAMPLES, in_features: int = IN_FEATURES, seed: int = 0):
    """Inputs ``X`` (n, in_features) and targets ``Y`` (n, 2) from a noisy random linear map."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, in_features, generator=gen, dtype=torch.float64)
    W = torch.randn(in_features, OUT_FEATURES, generator=gen, dtype=torch.float64)
    Y = X @ W + 0.1 * torch.randn(n, OUT_FEATURES, generator=gen, dtype=torch.float64)
    return X.to(dtype), Y.to(dtype)


def _init_(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return model


def make_mlp(dtype: torch.dtype = torch.float64, seed: int = 1) -> nn.Sequential:
    """The 26-parameter tanh MLP, initialised from ``seed``."""
    model = nn.Sequential(nn.Linear(IN_FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT_FEATURES))
    return _init_(model.to(dtype), seed)


def make_linear(dtype: torch.dtype = torch.float64, seed: int = 1) -> nn.Linear:
    """The 12-parameter linear least-squares model, initialised from ``seed``."""
    return _init_(nn.Linear(LINEAR_IN, OUT_FEATURES).to(dtype), seed)


class Closure:
    """The torch.optim closure over one batch: zero the gradients, forward, backward, return the mean loss.

    It carries what a step needs besides: ``step()`` calls ``optimizer.step(self)``, or
    ``optimizer.step(X, Y)`` for optimizers that take the batch (``takes_batch``, Hessian-free). The loss is
    ``loss_fn`` (an ``nn.MSELoss`` module by default: optimizers built with the model watch that module).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        X: torch.Tensor,
        Y: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
        takes_batch: bool = False,
    ) -> None:
        self.model, self.optimizer, self.X, self.Y = model, optimizer, X, Y
        self.loss_fn, self.takes_batch = loss_fn, takes_batch

    def __call__(self) -> torch.Tensor:
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(self.X), self.Y)
        loss.backward()
        return loss

    def step(self) -> Any:
        """One optimizer step on this batch; what ``step`` returned."""
        return self.optimizer.step(self.X, self.Y) if self.takes_batch else self.optimizer.step(self)

    def with_inputs(self, X: torch.Tensor) -> Closure:
        """The same closure on other inputs (e.g. with a NaN), same targets."""
        return Closure(self.model, self.optimizer, X, self.Y, self.loss_fn, self.takes_batch)


def make_closure(
    model: nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, Y: torch.Tensor
) -> Closure:
    """A plain closure (F.mse_loss) for an optimizer built without the model (torch's, in tests)."""
    return Closure(model, optimizer, X, Y)


@torch.no_grad()
def loss_at(model: nn.Module, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """The mean loss at the model's current parameters, evaluated independently of any optimizer."""
    return F.mse_loss(model(X), Y)


def run(optimizer: torch.optim.Optimizer, closure: Closure, steps: int) -> list[Any]:
    """``steps`` steps of ``optimizer`` on the closure's batch; returns what each step returned."""
    assert closure.optimizer is optimizer, "the closure belongs to another optimizer"
    return [closure.step() for _ in range(steps)]


def snapshot(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def iter_tensors(tree: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested dict/list/tuple, with a readable path such as ``state/0/exp_avg``."""
    if isinstance(tree, torch.Tensor):
        yield path, tree
    elif isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from iter_tensors(v, f"{path}/{k}")
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            yield from iter_tensors(v, f"{path}/{i}")


def assert_tree_equal(a: Any, b: Any, path: str = "") -> None:
    """Exact equality of two nested structures: same keys, types, tensor dtype/device/shape and bits.

    NaN equals NaN (a state may legitimately hold one, e.g. an unset scalar), nothing else is forgiven.
    """
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), f"{path}: {type(a)} vs {type(b)}"
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{path}: {m}")
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping), f"{path}: mapping vs {type(b)}"
        assert set(a) == set(b), f"{path}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            assert_tree_equal(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{path}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_tree_equal(x, y, f"{path}/{i}")
    elif isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} vs {b!r}"


def assert_params_equal(actual: Sequence[torch.Tensor], expected: Sequence[torch.Tensor], what: str) -> None:
    assert len(actual) == len(expected)
    for i, (p, q) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(
            p.detach(), q.detach(), rtol=0, atol=0, msg=lambda m, i=i: f"{what} {i}: {m}"
        )
