"""Where OGR's EMA means start: ``mean_init="zero"`` against ``"first"``, with and without a step bound.

Duda's noisy-gradient lattice protocol (arXiv:1901.11457: every start of a lattice, Gaussian gradient noise
σ = 0.1 per coordinate and step, the exact final f per start, the geometric mean over starts), run for
full OGR and DiagOGR at hessopt's defaults with four ways to start:

* ``zero``: the means start at 0 (Duda's code), a phantom observation θ = 0, g = 0 that decays like the prior;
* ``first``: the means start at the first observation;
* ``zero+clip``, ``first+clip``: the same with ``max_step_norm = 1``.

Problems: 3-D Beale from {-2..2}^3 (125 starts, 50 steps), the same translated by +10 in every coordinate
(f(θ − 10), starts shifted alike: "zero" then assumes nothing about where the stationary point is), and
2-D Rosenbrock from {-2..2}^2 (25 starts, 100 steps). Five noise seeds; the table gives the geometric mean
of final f per seed (min-max over seeds). Start i under seed s draws its noise from its own generator
(seed 1,000,000·s + i), so every configuration sees the same noise.

Run: ``python benchmarks/mean_init.py`` (a few minutes on one core); ``--quick``: two seeds, fewer
problems. Writes ``results/mean_init/mean_init.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import torch

from hessopt.optim import OGR, DiagOGR
from hessopt.problems.functions import get_function

NOISE = 0.1
VARIANTS = {
    "zero": {"mean_init": "zero"},
    "first": {"mean_init": "first"},
    "zero+clip": {"mean_init": "zero", "max_step_norm": 1.0},
    "first+clip": {"mean_init": "first", "max_step_norm": 1.0},
}
PROBLEMS = {  # name: (function, lattice values, steps, shift)
    "beale3d": ("beale3d", range(-2, 3), 50, 0.0),
    "beale3d+10": ("beale3d", range(-2, 3), 50, 10.0),
    "rosenbrock2d": ("rosenbrock", range(-2, 3), 100, 0.0),
}


def run(problem: str, cls: type, options: dict, seed: int) -> float:
    """Geometric mean of the final exact f over the lattice (inf if a start diverged)."""
    name, values, steps, shift = PROBLEMS[problem]
    fn = get_function(name, 2) if name == "rosenbrock" else get_function(name)
    starts = fn.lattice_starts(list(values)) + shift
    tensors = [s.clone() for s in starts]
    gens = [torch.Generator().manual_seed(1_000_000 * seed + i) for i in range(len(tensors))]
    if cls is DiagOGR:  # per-tensor statistics: one optimizer over all starts equals one per start
        opts = [DiagOGR(tensors, **options)]
    else:
        opts = [cls([t], **options) for t in tensors]
    for _ in range(steps):
        x = torch.stack(tensors)
        _, g = fn.value_and_grad(x - shift)
        for i, t in enumerate(tensors):
            t.grad = g[i] + NOISE * torch.randn(fn.dim, generator=gens[i], dtype=g.dtype)
        for opt in opts:
            opt.step()
    with torch.no_grad():
        final = fn(torch.stack(tensors) - shift)
    if not bool(torch.isfinite(final).all()):
        return math.inf
    return math.exp(float(torch.log(final.clamp_min(1e-300)).mean()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/mean_init")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    seeds = range(2) if args.quick else range(5)
    problems = ["beale3d", "beale3d+10"] if args.quick else list(PROBLEMS)
    rows = []
    t0 = time.time()
    for problem, (cname, cls), variant in itertools.product(
        problems, (("OGR", OGR), ("DiagOGR", DiagOGR)), VARIANTS
    ):
        values = [run(problem, cls, VARIANTS[variant], s) for s in seeds]
        rows.append({"problem": problem, "optimizer": cname, "variant": variant, "geomeans": values})
        print(problem, cname, variant, " ".join(f"{v:.3g}" for v in values), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mean_init.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# mean_init: geometric mean of final f over the lattice, min-max over noise seeds",
        "",
        f"Command: `python benchmarks/mean_init.py{' --quick' if args.quick else ''}` "
        f"({time.time() - t0:.0f} s)",
        "",
        "| problem | optimizer | " + " | ".join(VARIANTS) + " |",
        "|---|---|" + "---|" * len(VARIANTS),
    ]
    for problem, cname in itertools.product(problems, ("OGR", "DiagOGR")):
        cells = []
        for variant in VARIANTS:
            key = (problem, cname, variant)
            (row,) = [r for r in rows if (r["problem"], r["optimizer"], r["variant"]) == key]
            cells.append(f"{min(row['geomeans']):.2g}-{max(row['geomeans']):.2g}")
        lines.append(f"| {problem} | {cname} | " + " | ".join(cells) + " |")
    (out / "mean_init.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
