"""Flat views of parameter lists: the one place that owns hessopt's parameter order.

Every hessopt object that treats a list of tensors as one vector theta in R^D (full-matrix
optimizers, exact Hessians of a model's loss, Hessian-vector products) flattens them here, in the
order given: for an optimizer that order is ``optimizer.param_groups`` order, group by group and
parameter by parameter, each tensor in row-major (``reshape(-1)``) order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["flatten", "numel", "unflatten", "assign_flat", "add_flat_"]


def numel(tensors: Iterable[torch.Tensor]) -> int:
    """Total number of elements D of a sequence of tensors."""
    return sum(t.numel() for t in tensors)


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``tensors`` into one 1-D tensor (a copy), in the given order."""
    if len(tensors) == 0:
        raise ValueError("flatten() needs at least one tensor")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vec: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector into views shaped like ``like`` (the inverse of :func:`flatten`)."""
    total = numel(like)
    if vec.dim() != 1 or vec.numel() != total:
        raise ValueError(f"expected a 1-D tensor of {total} elements, got shape {tuple(vec.shape)}")
    out, offset = [], 0
    for t in like:
        n = t.numel()
        out.append(vec[offset : offset + n].view_as(t))
        offset += n
    return out


@torch.no_grad()
def assign_flat(tensors: Sequence[torch.Tensor], vec: torch.Tensor) -> None:
    """In place: ``tensors <- unflatten(vec)``."""
    for t, v in zip(tensors, unflatten(vec, tensors), strict=True):
        t.copy_(v)


@torch.no_grad()
def add_flat_(tensors: Sequence[torch.Tensor], vec: torch.Tensor, alpha: float = 1.0) -> None:
    """In place: ``tensors <- tensors + alpha * unflatten(vec)``."""
    for t, v in zip(tensors, unflatten(vec, tensors), strict=True):
        t.add_(v, alpha=alpha)
