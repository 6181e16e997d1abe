"""Per-step cost of AdaHesScale and AdaHesScaleGN against torch.optim.Adam, measured in one process.

Two measurements, each a ratio of median step times to ``torch.optim.Adam``'s, with all methods stepped
in interleaved rounds (one step of each per round) so that machine load falls on all alike:

(a) **Depth sweep** (Elsayed & Mahmood, arXiv:2210.11639, computational-cost protocol): bias-free
    ``Linear(64, 512)``, ``L`` x ``[Linear(512, 512), Tanh]``, ``Linear(512, 100)``, mean squared error on
    random inputs and targets, batch 1 and 128, ``L`` in 1..128 (``--quick``: 1, 4, 16). Methods:
    Adam, AdaHesScale, AdaHesScaleGN, AdaHessian (pytorch-optimizer, one Rademacher probe per step,
    ``backward(create_graph=True)``) and, when BackPACK is installed, ``DiagGGNMC`` (one sample) feeding
    the same Adam-style update as AdaHesScale. A "flat in depth" method has max/min of its ratio over
    the depths close to 1.
(b) **fmnist_mlp shape**: 784-256-256-10 tanh MLP (with biases), cross-entropy, batch 128, random
    inputs and labels, the same methods.

A step is the whole training step: ``zero_grad``, forward, loss, backward (with the method's curvature
work, in hooks for HesScale), ``optimizer.step()``. float32, one thread (``--threads``). Timer
(``--timer``): with one thread, the CPU time of the stepping thread (default; everything runs in it, and
it is far less disturbed by other processes on a shared machine than wall-clock time), or wall-clock.
Learning rates are 0 for every method, so the parameters stay at their initialisation and every round
repeats the same arithmetic (the step's operation count does not depend on the learning rate; training on
random data would otherwise drive some methods' weights to saturation). Subnormal numbers are flushed to
zero for all methods (``torch.set_flush_denormal(True)``; ``--keep-denormals`` to measure without): the
gradients of deep tanh networks vanish, beyond about 32 layers Adam's own second moment ``g²`` becomes
subnormal, and subnormal arithmetic, tens of times slower on CPUs, would then dominate the baseline.

Run: ``python benchmarks/hesscale_cost.py`` (about 15 minutes on one core) or ``--quick`` (about two
minutes). Writes ``hesscale_cost.md``, ``hesscale_cost.json`` and ``hesscale_cost.png`` under ``--out``
(default ``results/hesscale``, where ``hessopt report`` finds its fragment). Timings on a shared machine are
indicative; rerun on an idle one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from hessopt.curvature import hesscale
from hessopt.optim.hesscale import AdaHesScale, AdaHesScaleGN

DEPTHS = (1, 2, 4, 8, 16, 32, 64, 128)
QUICK_DEPTHS = (1, 4, 16)
BATCHES = (1, 128)


def deep_tanh(depth: int) -> nn.Module:
    """The protocol's bias-free deep tanh network (64 → 512 x depth → 100)."""
    layers: list[nn.Module] = [nn.Linear(64, 512, bias=False)]
    for _ in range(depth):
        layers += [nn.Linear(512, 512, bias=False), nn.Tanh()]
    layers.append(nn.Linear(512, 100, bias=False))
    return nn.Sequential(*layers)


def fmnist_mlp() -> nn.Module:
    """784-256-256-10 tanh MLP (the fmnist_mlp problem's model)."""
    return nn.Sequential(nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))


class _Runner:
    """One method's model, optimizer and step function."""

    def __init__(self, name: str, model: nn.Module, loss_fn: nn.Module, step: Callable[[], None]) -> None:
        self.name, self.model, self.loss_fn, self.step = name, model, loss_fn, step
        self.times: list[float] = []


def _runners(build: Callable[[], nn.Module], make_loss: Callable[[], nn.Module], x, y) -> list[_Runner]:
    runners = []

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return build()

    model, loss_fn = fresh(), make_loss()
    adam = torch.optim.Adam(model.parameters(), lr=0.0)

    def adam_step(model=model, loss_fn=loss_fn, opt=adam) -> None:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    runners.append(_Runner("Adam", model, loss_fn, adam_step))
    for cls in (AdaHesScale, AdaHesScaleGN):
        model, loss_fn = fresh(), make_loss()
        opt = cls(model.parameters(), lr=0.0)
        opt.attach(model, loss_fn)

        def hs_step(model=model, loss_fn=loss_fn, opt=opt) -> None:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

        runners.append(_Runner(cls.__name__, model, loss_fn, hs_step))
    if importlib.util.find_spec("pytorch_optimizer") is not None:
        from pytorch_optimizer import AdaHessian

        model, loss_fn = fresh(), make_loss()
        opt = AdaHessian(model.parameters(), lr=0.0, num_samples=1, update_period=1, eps=1e-16)

        def adahessian_step(model=model, loss_fn=loss_fn, opt=opt) -> None:
            opt.zero_grad()
            loss_fn(model(x), y).backward(create_graph=True)
            opt.step()
            opt.zero_grad(set_to_none=True)  # breaks the parameter-gradient cycle of create_graph

        runners.append(_Runner("AdaHessian", model, loss_fn, adahessian_step))
    if importlib.util.find_spec("backpack") is not None:
        from backpack import backpack, extend
        from backpack.extensions import DiagGGNMC

        model, loss_fn = extend(fresh()), extend(make_loss())
        opt = AdaHesScale(model.parameters(), lr=0.0)
        params = list(model.parameters())

        def backpack_step(model=model, loss_fn=loss_fn, opt=opt, params=params) -> None:
            opt.zero_grad()
            with backpack(DiagGGNMC(mc_samples=1)):
                loss_fn(model(x), y).backward()
            for p in params:  # the same Adam-style update, fed BackPACK's diagonal
                hesscale._accumulate(p, "hesscale", p.diag_ggn_mc)
            opt.step()

        runners.append(_Runner("BackPACK DiagGGNMC", model, loss_fn, backpack_step))
    return runners


def measure(
    runners: list[_Runner], rounds: int, warmup: int, clock=time.thread_time
) -> dict[str, dict[str, float]]:
    """Median step time of each runner over interleaved rounds; ratio to Adam's median."""
    for r in range(warmup + rounds):
        for run in runners:
            t0 = clock()
            run.step()
            dt = clock() - t0
            if r >= warmup:
                run.times.append(dt)
    medians = {run.name: statistics.median(run.times) for run in runners}
    adam = medians["Adam"]
    out = {}
    for run in runners:
        q = statistics.quantiles(run.times, n=4)
        out[run.name] = {
            "median_s": medians[run.name],
            "ratio": medians[run.name] / adam,
            "iqr_s": q[2] - q[0],
        }
    return out


def _rounds_for(depth: int, batch: int, quick: bool) -> tuple[int, int]:
    work = depth * max(batch, 16)
    if quick:
        return (20, 3) if work <= 512 else (8, 2)
    return (60, 5) if work <= 512 else ((30, 3) if work <= 4096 else (12, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="depths 1, 4, 16 and fewer rounds")
    parser.add_argument("--depths", type=int, nargs="*", default=None)
    parser.add_argument("--batches", type=int, nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timer", choices=("cpu", "wall"), default=None, help="default: cpu with 1 thread")
    parser.add_argument("--keep-denormals", action="store_true", help="do not flush subnormal numbers")
    parser.add_argument("--out", default="results/hesscale")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timer = args.timer or ("cpu" if args.threads == 1 else "wall")
    flushed = not args.keep_denormals and torch.set_flush_denormal(True)
    clock = time.thread_time if timer == "cpu" else time.perf_counter
    depths = args.depths or (QUICK_DEPTHS if args.quick else DEPTHS)
    batches = args.batches or BATCHES
    results: dict = {"depth": {}, "fmnist_mlp": {}, "threads": args.threads, "machine": platform.platform(),
                     "torch": torch.__version__, "timer": timer, "flush_denormal": flushed}  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 784, generator=gen)
    y = torch.randint(0, 10, (128,), generator=gen)
    rounds, warmup = (30, 5) if args.quick else (100, 10)
    results["fmnist_mlp"] = measure(_runners(fmnist_mlp, nn.CrossEntropyLoss, x, y), rounds, warmup, clock)
    print("fmnist_mlp (784-256-256-10 tanh, batch 128):", flush=True)
    for name, r in results["fmnist_mlp"].items():
        print(f"  {name:20s} {r['median_s'] * 1e3:8.2f} ms  x{r['ratio']:.2f}", flush=True)
    for batch in batches:
        for depth in depths:
            xb = torch.randn(batch, 64, generator=gen)
            yb = torch.randn(batch, 100, generator=gen)
            rounds, warmup = _rounds_for(depth, batch, args.quick)
            res = measure(_runners(lambda d=depth: deep_tanh(d), nn.MSELoss, xb, yb), rounds, warmup, clock)
            results["depth"][f"{batch}/{depth}"] = res
            line = "  ".join(f"{n} x{r['ratio']:.2f}" for n, r in res.items() if n != "Adam")
            print(
                f"batch {batch:3d} depth {depth:3d}: Adam {res['Adam']['median_s'] * 1e3:8.2f} ms  {line}",
                flush=True,
            )
    _write(results, depths, batches, Path(args.out))


def _write(results: dict, depths, batches, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "hesscale_cost.json").write_text(json.dumps(results, indent=1))
    methods = list(results["fmnist_mlp"])
    lines = [
        "# HesScale step cost (benchmarks/hesscale_cost.py)",
        "",
        "Whole training step, median over interleaved rounds, ÷ Adam's median; float32, "
        f"{results['threads']} thread(s), {results['timer']} time, subnormals flushed: "
        f"{results['flush_denormal']}, torch {results['torch']}, {results['machine']}.",
        "",
        "## fmnist_mlp shape (784-256-256-10 tanh, batch 128, cross-entropy)",
        "",
        "| method | ms/step | ÷ Adam |",
        "|---|---|---|",
    ]
    for name, r in results["fmnist_mlp"].items():
        lines.append(f"| {name} | {r['median_s'] * 1e3:.2f} | {r['ratio']:.2f} |")
    for batch in batches:
        lines += [
            "",
            f"## Deep tanh MLPs, batch {batch} (ratio to Adam; Adam's ms/step in the last column)",
            "",
        ]
        lines.append("| depth | " + " | ".join(m for m in methods if m != "Adam") + " | Adam ms |")
        lines.append("|---" * len(methods) + "|---|")
        ratios: dict[str, list[float]] = {m: [] for m in methods}
        for depth in depths:
            res = results["depth"][f"{batch}/{depth}"]
            cells = []
            for m in methods:
                if m == "Adam":
                    continue
                value = res.get(m, {}).get("ratio", float("nan"))
                ratios[m].append(value)
                cells.append(f"{value:.2f}")
            lines.append(f"| {depth} | " + " | ".join(cells) + f" | {res['Adam']['median_s'] * 1e3:.2f} |")
        flat = " | ".join(f"{max(v) / min(v):.2f}" for m, v in ratios.items() if m != "Adam" and v)
        lines.append("| max/min | " + flat + " | |")
    (out / "hesscale_cost.md").write_text("\n".join(lines) + "\n")
    _plot(results, depths, batches, methods, out / "hesscale_cost.png")
    print(f"wrote {out / 'hesscale_cost.md'}")


def _plot(results: dict, depths, batches, methods, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        for m in methods:
            values = [results["depth"][f"{batch}/{d}"].get(m, {}).get("ratio", float("nan")) for d in depths]
            ax.plot(depths, values, marker="o", label=m)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden layers L (width 512)")
        ax.set_ylabel("step time ÷ Adam")
        ax.set_title(f"batch {batch}")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
