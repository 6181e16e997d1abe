"""Do DiagOGR and SubspaceOGR train ordinary networks out of the box? Defaults against Adam's defaults.

Every optimizer is built with the model's parameters and nothing else (``torch.optim.Adam(params)``,
``DiagOGR(params)``, ``SubspaceOGR(params)``), plus any extra configurations given with ``--extra``.
Problems (float32, CPU, mini-batches drawn with a seeded generator, the same batches for every optimizer):

* ``digits_mlp``: scikit-learn digits, MLP 64-32-10 tanh, cross-entropy, batch 32, 450 steps;
* ``mnist1d_mlp``: MNIST-1D (``hessopt.problems``), MLP 40-100-100-10 ReLU, batch 128, 620 steps;
* ``digits_cnn``: the 8x8 digits as images, conv 1→8 (3x3) - ReLU - conv 8→16 (3x3) - ReLU - max-pool 2 -
  linear 64→10, batch 32, 450 steps;
* ``digits_autoencoder``: 64-32-16-8-16-32-64 with sigmoid after every layer, MSE on the pixels scaled
  to [0, 1], batch 64, 600 steps (the deep-autoencoder plateau case of issue 12).

Reported per problem and optimizer, over seeds 0-2 (model init and batch order): the final training loss on
the whole training set (mean ± spread) and, for classifiers, the final test accuracy. A configuration
"trains at least as well as Adam" when its mean final training loss is at most Adam's and, for
classifiers, its mean test accuracy at least Adam's minus 0.01.

Run: ``python benchmarks/network_defaults.py`` (about 10 minutes on one core);
``--quick`` (one seed, a third of the steps); ``--extra 'name=DiagOGR(lr=0.1)'`` adds configurations.
Writes ``results/network_defaults/network_defaults.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import hessopt
from hessopt.problems.registry import get_problem

PROBLEMS = ("digits_mlp", "mnist1d_mlp", "digits_cnn", "digits_autoencoder")


def _data(problem: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    split = get_problem("mnist1d_mlp" if problem == "mnist1d_mlp" else "digits_mlp").load_data()
    x_train, x_test = split.x_train, split.x_test
    if problem.startswith("digits"):  # pixel values 0..16 (or standardised): min-max to [0, 1]
        lo, hi = x_train.min(), x_train.max()
        x_train, x_test = (x_train - lo) / (hi - lo), (x_test - lo) / (hi - lo)
    if problem == "digits_cnn":
        x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    return x_train, split.y_train, x_test, split.y_test


def _model(problem: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if problem == "digits_mlp":
        return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    if problem == "mnist1d_mlp":
        return nn.Sequential(
            nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
        )
    if problem == "digits_cnn":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 10),
        )
    widths = (64, 32, 16, 8, 16, 32, 64)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Sigmoid()]
    return nn.Sequential(*layers)


SETTINGS = {  # batch size, steps
    "digits_mlp": (32, 450),
    "mnist1d_mlp": (128, 620),
    "digits_cnn": (32, 450),
    "digits_autoencoder": (64, 600),
}


def _loss(problem: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if problem == "digits_autoencoder":
        return F.mse_loss(out, x)
    return F.cross_entropy(out, y)


def run(problem: str, make: Callable, seed: int, steps_factor: float = 1.0) -> dict[str, float]:
    """Train one configuration; final training loss (whole set) and test accuracy (classifiers)."""
    x_train, y_train, x_test, y_test = _data(problem)
    model = _model(problem, seed)
    opt = make(model.parameters())
    batch, steps = SETTINGS[problem]
    steps = max(1, int(steps * steps_factor))
    gen = torch.Generator().manual_seed(1000 + seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, x_train.shape[0], (batch,), generator=gen)

        def closure(idx=idx):
            opt.zero_grad()
            loss = _loss(problem, model, x_train[idx], y_train[idx])
            loss.backward()
            return loss

        opt.step(closure)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        out = {"train_loss": float(_loss(problem, model, x_train, y_train)), "seconds": seconds}
        if problem != "digits_autoencoder":
            out["test_accuracy"] = float((model(x_test).argmax(1) == y_test).float().mean())
    return out


def _parse_extra(spec: str) -> tuple[str, Callable]:
    name, _, expr = spec.partition("=")
    cls_name, _, args = expr.partition("(")
    cls = getattr(hessopt.optim, cls_name, None) or getattr(torch.optim, cls_name)
    kwargs = eval(f"dict({args[:-1]})", {"float": float})  # noqa: S307 -- a benchmark's own command line
    return name, lambda ps, cls=cls, kwargs=kwargs: cls(ps, **kwargs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/network_defaults")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--problems", nargs="*", default=list(PROBLEMS), choices=PROBLEMS)
    ap.add_argument(
        "--extra", action="append", default=[], help="name=Class(kwargs), e.g. 'x=DiagOGR(lr=0.1)'"
    )
    ap.add_argument("--no-defaults", action="store_true", help="only Adam and the --extra configurations")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    configs: dict[str, Callable] = {"Adam()": lambda ps: torch.optim.Adam(ps)}
    if not args.no_defaults:
        configs["DiagOGR()"] = lambda ps: hessopt.optim.DiagOGR(ps)
        configs["SubspaceOGR()"] = lambda ps: hessopt.optim.SubspaceOGR(ps)
    configs.update(_parse_extra(s) for s in args.extra)
    seeds = [0] if args.quick else [0, 1, 2]
    factor = 1 / 3 if args.quick else 1.0
    rows = []
    for problem in args.problems:
        for name, make in configs.items():
            runs = [run(problem, make, s, factor) for s in seeds]
            row = {"problem": problem, "config": name, "runs": runs}
            rows.append(row)
            losses = [r["train_loss"] for r in runs]
            acc = [r["test_accuracy"] for r in runs if "test_accuracy" in r]
            print(problem, name, [f"{v:.4g}" for v in losses], [f"{v:.3f}" for v in acc], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "network_defaults.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# Network defaults: every optimizer with the parameters only, against torch.optim.Adam()",
        "",
        f"Command: `python benchmarks/network_defaults.py{' --quick' if args.quick else ''}` "
        f"(seeds {seeds}; final training loss over the training set, mean [min, max]; test accuracy)",
        "",
        "| problem | optimizer | train loss | test accuracy | seconds/run |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        losses = [r["train_loss"] for r in row["runs"]]
        acc = [r["test_accuracy"] for r in row["runs"] if "test_accuracy" in r]
        acc_cell = f"{statistics.mean(acc):.3f}" if acc else "-"
        secs = statistics.mean(r["seconds"] for r in row["runs"])
        lines.append(
            f"| {row['problem']} | {row['config']} | {statistics.mean(losses):.4g} "
            f"[{min(losses):.3g}, {max(losses):.3g}] | {acc_cell} | {secs:.1f} |"
        )
    (out / "network_defaults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
