"""Saddle escape: iterations a network started at a saddle needs to leave it, per optimizer.

OGR's argument against positive-definite curvature models is that it sees negative curvature and steps
away from it ("repel from saddles", J. Duda, arXiv:1901.11457, abstract). This study starts two networks at
a saddle point of their full-batch loss and counts the iterations until the loss has halved:

* ``deep_linear``: a deep linear network ``x ↦ W3 W2 W1 x`` (4-4-4-2) fitted to a random linear teacher,
  started at ``W = 0`` (a saddle of order 3: the gradient and the Hessian vanish there; Saxe, McClelland,
  Ganguli, arXiv:1312.6120 describe the plateaus it causes);
* ``tanh_symmetric``: a 3-2-1 tanh network fitted to a 2-unit tanh teacher, started with its two hidden
  units identical at the optimum of the tied (one-unit) network: a critical point of the untied network
  whose escape direction separates the units (K. Fukumizu, S. Amari, "Local minima and plateaus in
  hierarchical structures of multilayer perceptrons", Neural Networks 13, 2000).

Exactly at the saddle every per-coordinate method stays (the gradient is 0, or keeps the units identical),
so each run starts from the saddle plus a perturbation of size ``1e-3`` drawn from the run's seed: the
question is how fast the perturbation is amplified. Gradients are full-batch and exact, float64.

A run *escapes* at the first iteration whose loss is at most half the loss at the start; runs that do not
within the budget report ``None``. Optimizers are used at their defaults (Adam also at lr 1e-2; SGD with
momentum 0.9 at lr 0.1, since it has no default learning rate).

:func:`rows` returns plain dicts: ``problem``, ``optimizer``, ``seed``, ``iterations`` (None: not escaped),
``loss_start``, ``loss_end``, ``budget``; :func:`run` writes them with a Markdown table (``hessopt bench
ogr-studies``). Cost: about a minute on one core (``quick``: two seeds and a shorter budget, a few seconds).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hessopt.bench.methods import get_method

__all__ = ["OPTIMIZERS", "PROBLEMS", "rows", "run", "run_one"]

_DTYPE = torch.float64
_PERTURBATION = 1e-3

OPTIMIZERS: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "SGD(lr=0.1, momentum=0.9)": ("momentum", {"lr": 0.1}),
    "Adam()": ("adam", {"lr": 1e-3}),
    "Adam(lr=0.01)": ("adam", {"lr": 1e-2}),
    "DiagOGR()": ("diag-ogr", {}),
    "SubspaceOGR()": ("subspace-ogr", {}),
}
"""The optimizers of the study, by label: a registered method (:mod:`hessopt.bench.methods`) and the values
over its fixed ones (hessopt's optimizers at their defaults)."""


def _build(label: str, params: Any) -> torch.optim.Optimizer:
    name, settings = OPTIMIZERS[label]
    method = get_method(name)
    return method.factory(list(params), {**method.hyper, **settings})


def _data(seed: int, n: int, d_in: int) -> torch.Tensor:
    return torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed), dtype=_DTYPE)


def _deep_linear(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    x = _data(100, 64, 4)
    teacher = torch.randn(4, 2, generator=torch.Generator().manual_seed(101), dtype=_DTYPE)
    model = nn.Sequential(*(nn.Linear(a, b, bias=False) for a, b in ((4, 4), (4, 4), (4, 2)))).to(_DTYPE)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # the saddle W = 0, perturbed
            p.copy_(_PERTURBATION * torch.randn(p.shape, generator=gen, dtype=_DTYPE))
    return model, x, x @ teacher


def _tied_optimum(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tied (one-unit) network's optimum ``(w, b, v)``: a critical point of the two-unit network."""
    gen = torch.Generator().manual_seed(102)
    w = (0.5 * torch.randn(3, generator=gen, dtype=_DTYPE)).requires_grad_()
    b = torch.zeros((), dtype=_DTYPE, requires_grad=True)
    v = torch.ones((), dtype=_DTYPE, requires_grad=True)
    opt = torch.optim.LBFGS([w, b, v], lr=1.0, max_iter=500, tolerance_grad=1e-14, tolerance_change=0,
                            line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * ((v * torch.tanh(x @ w + b) - y.squeeze(1)) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return w.detach(), b.detach(), v.detach()


def _tanh_symmetric(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    x = _data(103, 64, 3)
    gen = torch.Generator().manual_seed(104)
    w_t, b_t = torch.randn(2, 3, generator=gen, dtype=_DTYPE), torch.randn(2, generator=gen, dtype=_DTYPE)
    y = (torch.tanh(x @ w_t.T + b_t) @ torch.tensor([1.0, -1.0], dtype=_DTYPE)).unsqueeze(1)
    w, b, v = _tied_optimum(x, y)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1, bias=False)).to(_DTYPE)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model[0].weight.copy_(torch.stack([w, w]))
        model[0].bias.copy_(torch.stack([b, b]))
        model[2].weight.copy_(torch.stack([v, v]).reshape(1, 2) / 2)
        for p in model.parameters():
            p.add_(_PERTURBATION * torch.randn(p.shape, generator=gen, dtype=_DTYPE))
    return model, x, y


PROBLEMS: dict[str, Callable[[int], tuple[nn.Module, torch.Tensor, torch.Tensor]]] = {
    "deep_linear": _deep_linear,
    "tanh_symmetric": _tanh_symmetric,
}
"""``name -> build(seed) -> (model at the perturbed saddle, inputs, targets)``."""


def run_one(problem: str, optimizer: str, seed: int, budget: int) -> dict[str, Any]:
    """One run: iterations until the full-batch loss is at most half its starting value.

    Args:
        problem: a key of :data:`PROBLEMS`.
        optimizer: a key of :data:`OPTIMIZERS`.
        seed: the perturbation's seed.
        budget: the largest number of iterations.

    Returns:
        A row (see the module docstring).
    """
    model, x, y = PROBLEMS[problem](seed)
    opt = _build(optimizer, model.parameters())

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    start = float(closure().detach())
    escaped = None
    for k in range(1, budget + 1):
        opt.step(closure)
        with torch.no_grad():
            loss = float(0.5 * ((model(x) - y) ** 2).mean())
        if loss <= 0.5 * start:
            escaped = k
            break
    return {
        "problem": problem,
        "optimizer": optimizer,
        "seed": seed,
        "iterations": escaped,
        "loss_start": start,
        "loss_end": loss,
        "budget": budget,
    }


def rows(quick: bool = False) -> list[dict[str, Any]]:
    """Every (problem, optimizer, seed) of the study.

    Args:
        quick: two seeds and a budget of 500 iterations instead of five seeds and 3000.

    Returns:
        The rows of :func:`run_one`, in problem, optimizer, seed order.
    """
    seeds, budget = (range(2), 500) if quick else (range(5), 3000)
    return [run_one(p, o, s, budget) for p in PROBLEMS for o in OPTIMIZERS for s in seeds]


def markdown(table_rows: list[dict[str, Any]]) -> str:
    """The report fragment: iterations to escape per problem and optimizer (median, range, escaped/n)."""
    problems = list(dict.fromkeys(r["problem"] for r in table_rows))
    lines = [
        "# Saddle escape",
        "",
        "Iterations until the full-batch loss halves, from a saddle perturbed by 1e-3 (float64, exact "
        "gradients; `hessopt.bench.studies.saddle_escape`): median and range over the seeds that escaped "
        "within the budget, [k/n] escaped.",
        "",
        "| optimizer | " + " | ".join(problems) + " |",
        "|---" * (len(problems) + 1) + "|",
    ]
    for label in OPTIMIZERS:
        cells = []
        for p in problems:
            its = [r["iterations"] for r in table_rows if r["problem"] == p and r["optimizer"] == label]
            done = sorted(i for i in its if i is not None)
            text = f"{statistics.median(done):g} ({done[0]}-{done[-1]})" if done else "not escaped"
            cells.append(f"{text} [{len(done)}/{len(its)}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    budget = table_rows[0]["budget"] if table_rows else 0
    return "\n".join([*lines, "", f"Budget {budget} iterations.", ""])


def run(out_dir: Path, *, quick: bool = False) -> dict[str, Any]:
    """Run the study and write ``saddle_escape.json`` and the fragment ``saddle_escape.md`` under ``out_dir``.

    Args:
        out_dir: the study folder (created if missing).
        quick: two seeds and 500 iterations.

    Returns:
        ``{"quick", "runtime_s", "files", "rows"}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table_rows = rows(quick)
    (out / "saddle_escape.json").write_text(json.dumps({"quick": quick, "rows": table_rows}, indent=1))
    (out / "saddle_escape.md").write_text(markdown(table_rows))
    files = ["saddle_escape.json", "saddle_escape.md"]
    return {"quick": quick, "runtime_s": time.perf_counter() - t0, "files": files, "rows": table_rows}
