"""Cost of (block-diagonal) Hessian-free on the deep autoencoder, against a gradient evaluation and Adam.

The Hinton-Salakhutdinov autoencoder 784-1000-500-250-30 and mirror (2,837,314 parameters, logistic units,
BCE on logits; 8 blocks of one Linear layer each), inputs from Fashion-MNIST when installed, else uniform
random pixels (the cost does not depend on the data). Written to ``results/hf_cost/`` (``hf_cost.json``,
``hf_cost.md``):

1. **One CG iteration vs one gradient.** For each gradient batch size ``n`` (the experiments' sizes), the
   median time of a gradient evaluation (forward + backward) on ``n`` rows, and of one block-GGN product
   sweep (all 8 blocks, i.e. one lock-step CG iteration's products) on the curvature batch of ``n/4`` rows
   (the default curvature fraction) and of ``n`` rows, for each back-end (``loop``/``vmap``) and ``J v``
   mode (``reverse`` = double backward, ``forward`` = forward-mode AD); also the full-GGN product (HF's
   iteration) and the one-off operator build. Interleaved rounds, medians. The issue's target: a sweep on
   the experiments' curvature batch costs at most 2 gradient evaluations.
2. **Outer step vs Adam.** Median wall-clock of a BDHF and an HF step (defaults) and of an Adam step
   (``zero_grad``, forward, backward, ``step``) on the same batches, with the mean CG iterations.

Timings on a shared machine are indicative; re-run on an idle one for the record.
Run: ``python benchmarks/hf_cost.py`` (several minutes on 2 cores); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from hessopt.curvature.products import BlockCurvature
from hessopt.optim.hessian_free import BlockDiagonalHessianFree, HessianFree
from hessopt.problems import data as data_mod
from hessopt.problems.models import autoencoder


def _images(n: int) -> tuple[torch.Tensor, str]:
    if data_mod.is_available("fashion_mnist"):
        return data_mod.load("fashion_mnist", limit=n).x_train, "Fashion-MNIST"
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(0)), "uniform random pixels"


def _median_interleaved(tasks: dict, rounds: int, warmup: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in tasks}
    for r in range(warmup + rounds):
        for name, fn in tasks.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def product_costs(n: int, x: torch.Tensor, rounds: int, warmup: int, variants: list[tuple[str, str]]) -> dict:
    """Gradient vs one block sweep on n/4 and n rows for each (backend, jvp), and the full GGN product."""
    model = autoencoder(seed=0)
    loss_fn = nn.BCEWithLogitsLoss()
    batch = x[:n]
    params = dict(model.named_parameters())
    blocks = [[f"{i}.weight", f"{i}.bias"] for i, m in enumerate(model) if isinstance(m, nn.Linear)]

    def gradient() -> None:
        model.zero_grad()
        loss_fn(model(batch), batch).backward()

    tasks = {"gradient": gradient}
    builds = {}
    gen = torch.Generator().manual_seed(1)
    for rows in sorted({max(1, n // 4), n}):
        sub = batch[:rows]
        for backend, jvp in variants:
            t0 = time.perf_counter()
            op = BlockCurvature(model, loss_fn, (sub,), sub, params, blocks, backend=backend, jvp=jvp)
            builds[f"build {backend}/{jvp} rows={rows}"] = time.perf_counter() - t0
            v = torch.randn(sum(op.sizes), generator=gen)
            tasks[f"sweep {backend}/{jvp} rows={rows}"] = lambda op=op, v=v: op.matvec(v)
        full = BlockCurvature(model, loss_fn, (sub,), sub, params, [[n for b in blocks for n in b]])
        v = torch.randn(sum(full.sizes), generator=gen)
        tasks[f"full GGN product rows={rows}"] = lambda op=full, v=v: op.matvec(v)
    medians = _median_interleaved(tasks, rounds, warmup)
    g = medians["gradient"]
    return {
        "batch": n,
        "gradient_s": g,
        "ratios_to_gradient": {k: v / g for k, v in medians.items() if k != "gradient"},
        "seconds": medians,
        "build_ratios_to_gradient": {k: v / g for k, v in builds.items()},
    }


def step_costs(n: int, x: torch.Tensor, steps: int) -> dict:
    """Median outer-step time of BDHF, HF (defaults) and Adam on the same batches."""
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(2)
    batches = [x[torch.randint(0, x.shape[0], (n,), generator=gen)] for _ in range(steps)]
    out = {}
    for name in ("adam", "bdhf", "hf"):
        model = autoencoder(seed=0)
        if name == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def step(b, model=model, opt=opt):
                opt.zero_grad()
                loss_fn(model(b), b).backward()
                opt.step()

        else:
            cls = BlockDiagonalHessianFree if name == "bdhf" else HessianFree
            opt = cls(model, loss_fn=loss_fn)

            def step(b, opt=opt):
                opt.step(b, b)

        times, iterations = [], []
        for b in batches:
            t0 = time.perf_counter()
            step(b)
            times.append(time.perf_counter() - t0)
            if name != "adam":
                iterations.append(max(opt.last_step["cg_iterations"]))
        out[name] = {"median_s": statistics.median(times[1:] or times)}
        if iterations:
            out[name]["mean_cg_iterations"] = sum(iterations) / len(iterations)
    for name in ("bdhf", "hf"):
        out[name]["ratio_to_adam"] = out[name]["median_s"] / out["adam"]["median_s"]
        iterations = max(1.0, out[name]["mean_cg_iterations"])
        out[name]["seconds_per_cg_iteration"] = out[name]["median_s"] / iterations
    return {"batch": n, **out}


def _markdown(result: dict) -> str:
    lines = [
        "# Hessian-free cost on the deep autoencoder (784-1000-500-250-30, 2,837,314 parameters)",
        "",
        f"Data: {result['data']}; torch {result['torch']}, {result['threads']} thread(s), "
        f"{result['machine']}.",
        "Indicative (shared machine). Ratios are medians of interleaved rounds.",
        "",
        "| gradient batch | product | rows | time / gradient evaluation |",
        "|---|---|---|---|",
    ]
    for entry in result["products"]:
        for key, ratio in entry["ratios_to_gradient"].items():
            name, rows = key.rsplit(" rows=", 1)
            lines.append(f"| {entry['batch']} | {name} | {rows} | {ratio:.2f} |")
    lines += [
        "",
        "| gradient batch | optimizer | step time / Adam step | mean CG iterations |",
        "|---|---|---|---|",
    ]
    for entry in result["steps"]:
        for name in ("bdhf", "hf"):
            e = entry[name]
            ratio, iterations = e["ratio_to_adam"], e["mean_cg_iterations"]
            lines.append(f"| {entry['batch']} | {name} | {ratio:.1f} | {iterations:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run both measurements and write the JSON and Markdown results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="256,1024", help="gradient batch sizes (default 256,1024)")
    ap.add_argument("--rounds", type=int, default=7, help="timed interleaved rounds (default 7)")
    ap.add_argument("--steps", type=int, default=6, help="outer steps per optimizer (default 6)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--out", default="results/hf_cost", help="output folder")
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 128, 2 rounds, 2 steps")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [128] if args.quick else [int(s) for s in args.batches.split(",")]
    rounds, warmup, steps = (2, 1, 2) if args.quick else (args.rounds, 1, args.steps)
    variants = [("loop", "reverse"), ("loop", "forward"), ("vmap", "reverse")]
    x, source = _images(max(sizes) * (1 if args.quick else 8))
    result = {
        "data": source,
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "products": [product_costs(n, x, rounds, warmup, variants) for n in sizes],
        "steps": [step_costs(n, x, steps) for n in sizes],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hf_cost.json").write_text(json.dumps(result, indent=2))
    (out / "hf_cost.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
