"""Optimizer step cost: DiagOGR, SubspaceOGR (and BFGS/OGR where they fit) against torch.optim.Adam.

Two measurements, written to ``results/step_cost/`` (``step_cost.json``, ``step_cost.md``,
``ogr_vs_dim.png``):

1. **NN scale.** A 784-1000-256-10 tanh MLP (1,043,826 parameters). Gradients are fixed random tensors, so
   only ``optimizer.step()`` is timed. The optimizers are stepped in interleaved rounds (one step of each per
   round) so that they share the machine's load; the reported number per optimizer is the median over
   rounds, and the headlines are the ratios of medians to Adam with torch's default implementation choice
   for the device (``Adam()``) and to the fastest of ``Adam()``, ``Adam(foreach=True)`` and
   ``Adam(fused=True)``. ``DiagOGR()`` at its defaults compiles its update (this group is above
   ``FUSED_MIN_NUMEL``); the compilation happens in the warm-up rounds and is not timed.
   ``DiagOGR(fused=False)`` is the eager multi-tensor form. ``SubspaceOGR(rank=d)`` is at its defaults
   otherwise.
2. **Full OGR vs D.** Median step time of full-matrix OGR (and BFGS without line search) for D from 2 to
   ``--max-dim``, against Adam on the same D: the O(D^3) ``eigh`` cost made visible.

Run: ``python benchmarks/step_cost.py`` (a few minutes on one core, including one compilation);
``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from hessopt.optim import BFGS, OGR, DiagOGR, SubspaceOGR


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 1000),
        torch.nn.Tanh(),
        torch.nn.Linear(1000, 256),
        torch.nn.Tanh(),
        torch.nn.Linear(256, 10),
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _interleaved_medians(makers: dict, rounds: int, warmup: int, device: str = "cpu") -> dict[str, float]:
    """Median seconds per ``step()`` of each optimizer, stepping them in interleaved rounds."""
    opts = {}
    for name, make in makers.items():
        model = _mlp().to(device)
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(device)
        opts[name] = make(model.parameters())
    times: dict[str, list[float]] = {name: [] for name in opts}
    for r in range(warmup + rounds):
        for name, opt in opts.items():
            _sync(device)
            t0 = time.perf_counter()
            opt.step()
            _sync(device)
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
    return {name: statistics.median(ts) for name, ts in times.items()}


def nn_scale(rounds: int, device: str = "cpu") -> dict:
    makers = {
        "Adam()": lambda ps: torch.optim.Adam(ps),
        "Adam(foreach=True)": lambda ps: torch.optim.Adam(ps, foreach=True),
        "Adam(fused=True)": lambda ps: torch.optim.Adam(ps, fused=True),
        "SGD(momentum=0.9)": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9),
        "DiagOGR()": lambda ps: DiagOGR(ps),
        "DiagOGR(fused=False)": lambda ps: DiagOGR(ps, fused=False),
        "DiagOGR(corr1=True)": lambda ps: DiagOGR(ps, corr1=True),
        "SubspaceOGR(rank=2)": lambda ps: SubspaceOGR(ps, rank=2),
        "SubspaceOGR(rank=10)": lambda ps: SubspaceOGR(ps, rank=10),
    }
    med = _interleaved_medians(makers, rounds=rounds, warmup=5, device=device)
    d = sum(p.numel() for p in _mlp().parameters())
    adams = [k for k in med if k.startswith("Adam")]
    fastest = min(adams, key=med.__getitem__)
    return {
        "parameters": d,
        "fastest_adam": fastest,
        "median_step_ms": {k: v * 1e3 for k, v in med.items()},
        "ratio_to_adam": {k: v / med["Adam()"] for k, v in med.items()},
        "ratio_to_fastest_adam": {k: v / med[fastest] for k, v in med.items()},
    }


def _median_step(make, d: int, steps: int) -> float:
    x = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    opt = make([x])
    gen = torch.Generator().manual_seed(0)
    ts = []
    for k in range(steps + 3):
        x.grad = torch.randn(d, generator=gen, dtype=torch.float64)
        t0 = time.perf_counter()
        opt.step()
        if k >= 3:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def ogr_vs_dim(max_dim: int, steps: int) -> dict:
    dims = [d for d in (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if d <= max_dim]
    makers = {
        "OGR": lambda ps: OGR(ps, lr=1e-3),
        "BFGS (fixed lr)": lambda ps: BFGS(ps, lr=1e-3, line_search=None),
        "DiagOGR": lambda ps: DiagOGR(ps, lr=1e-3),
        "Adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    }  # (a D-dimensional vector: DiagOGR stays eager below FUSED_MIN_NUMEL)
    out = {name: [] for name in makers}
    for d in dims:
        for name, make in makers.items():
            out[name].append(_median_step(make, d, steps if d <= 500 else max(5, steps // 5)) * 1e3)
    return {"dims": dims, "median_step_ms": out}


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ms in res["median_step_ms"].items():
        ax.loglog(res["dims"], ms, marker="o", label=name)
    ax.set_xlabel("D (parameters)")
    ax.set_ylabel("median step time [ms]")
    ax.set_title("Optimizer step time vs D (float64, CPU)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/step_cost", help="output folder")
    ap.add_argument("--rounds", type=int, default=60, help="interleaved rounds at NN scale")
    ap.add_argument("--max-dim", type=int, default=1000, help="largest D for full OGR")
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 rounds, D <= 100")
    ap.add_argument("--device", default="cpu", help="device of the NN-scale measurement (e.g. cuda)")
    args = ap.parse_args(argv)
    rounds, max_dim, steps = (10, 100, 10) if args.quick else (args.rounds, args.max_dim, 30)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    nn = nn_scale(rounds, args.device)
    dim = ogr_vs_dim(max_dim, steps)
    (out / "step_cost.json").write_text(json.dumps({"env": env, "nn": nn, "ogr_vs_dim": dim}, indent=2))
    _plot(dim, out / "ogr_vs_dim.png")
    lines = [
        "# Optimizer step cost",
        "",
        f"Command: `python benchmarks/step_cost.py{' --quick' if args.quick else ''} "
        f"--device {args.device}`; {env}",
        "",
        f"## {nn['parameters']:,}-parameter MLP (784-1000-256-10 tanh, float32, {args.device}), "
        "ratio of medians",
        "",
        f"| optimizer | median step [ms] | / Adam() | / fastest Adam ({nn['fastest_adam']}) |",
        "|---|---|---|---|",
    ]
    for k, v in nn["median_step_ms"].items():
        lines.append(
            f"| {k} | {v:.3f} | {nn['ratio_to_adam'][k]:.2f} | {nn['ratio_to_fastest_adam'][k]:.2f} |"
        )
    lines += ["", "## Step time vs D (float64)", "", "| D | " + " | ".join(dim["median_step_ms"]) + " |"]
    lines.append("|---" * (len(dim["median_step_ms"]) + 1) + "|")
    for i, d in enumerate(dim["dims"]):
        lines.append(f"| {d} | " + " | ".join(f"{v[i]:.3f}" for v in dim["median_step_ms"].values()) + " |")
    lines += ["", "![step time vs D](ogr_vs_dim.png)", ""]
    (out / "step_cost.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
