"""HesScale accuracy study: per-layer L1 error of diagonal curvature estimators against the exact diagonal.

Protocol of Elsayed & Mahmood (arXiv:2210.11639, approximation-quality experiment; docs/algorithms/
hesscale.md, "Accuracy"): a Linear(6,16)-act-Linear(16,16)-act-Linear(16,16)-act-Linear(16,10)
network (826 parameters, PyTorch's default initialisation, float64) for each of tanh, ReLU and sigmoid;
inputs ``x ~ N(0, I_6)``, labels uniform over the 10 classes; cross-entropy (mean) on single examples
(batch size 1); every estimate at the initialisation (no training). For every sample and layer (weights
and bias of one Linear layer) the L1 error ``Σ_i |H_ii - Ĥ_ii|`` against the exact Hessian diagonal;
errors are averaged over samples and seeds and normalised by HesScale's (HesScale = 1).

Estimators: HesScale, HesScaleGN, BL89 (:mod:`hessopt.curvature.hesscale`, through forward/backward hooks
as in training), the exact GGN diagonal, GGN Monte-Carlo with 1 and 50 sampled labels (the labels from
:func:`hessopt.curvature.loss_curvature.sample_output_factor`), Hutchinson with 1 and 50 Rademacher
probes (signed ``v ∘ H v``), the squared gradient, and the zero estimator (its error is ``Σ |H_ii|``, the
floor a useful estimator must beat). The references are computed per seed for all samples at once with
``torch.func``: the exact diagonal from each layer's exact output Hessian (with one example,
``∂²L/∂W_ij² = x_j² ∂²L/∂a_i²``), Hutchinson from Hessian-vector products, the GGN from per-sample
output Jacobians; they agree with :func:`hessopt.curvature.estimators.diagonal` (tested). All
randomness comes from generators seeded by the seed number.

:func:`run` returns plain rows; :data:`PUBLISHED` holds the ratios of a float64 re-implementation of the
published protocol, for comparison.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, hessian, jacrev, jvp, vmap

from hessopt.curvature import hesscale
from hessopt.curvature.loss_curvature import loss_spec, sample_output_factor
from hessopt.problems.models import mlp

__all__ = ["ACTIVATIONS", "ESTIMATORS", "FULL", "PUBLISHED", "QUICK", "markdown", "run", "write"]

ESTIMATORS = (
    "hesscale", "hesscale_gn", "bl89", "ggn", "ggn_mc_1", "ggn_mc_50", "hutchinson_1", "hutchinson_50",
    "grad_squared", "zero",
)  # fmt: skip
ACTIVATIONS = ("tanh", "relu", "sigmoid")
#: ``(seeds, samples per seed)`` of the published protocol and of the quick version.
FULL = (40, 1000)
QUICK = (10, 10)
#: Mean L1 error normalised by HesScale's, from a float64 re-implementation of the protocol (10 seeds x 10
#: samples); docs/algorithms/hesscale.md, "Accuracy".
PUBLISHED = {
    "tanh": {"hesscale_gn": 18.1, "bl89": 8.4, "ggn": 18.1, "ggn_mc_1": 27.6, "hutchinson_1": 836,
             "grad_squared": 27.5, "zero": 24.1},
    "relu": {"hesscale_gn": 1.0, "bl89": 21.5, "ggn": 0.0, "ggn_mc_1": 33.8, "hutchinson_1": 1154,
             "grad_squared": 34.4, "zero": 23.8},
    "sigmoid": {"hesscale_gn": 30.0, "bl89": 414, "ggn": 29.9, "ggn_mc_1": 727, "hutchinson_1": 5766,
                "grad_squared": 758, "zero": 482},
}  # fmt: skip
_LAYERS = 4
_CHUNK = 25


def _model(activation: str, seed: int) -> nn.Module:
    return mlp(6, (16, 16, 16), 10, activation, seed=seed).double()


def _layer_slices(model: nn.Module) -> list[slice]:
    """Flat-parameter index ranges of the four Linear layers (weight and bias)."""
    slices, start = [], 0
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for layer in linears:
        size = layer.weight.numel() + layer.bias.numel()
        slices.append(slice(start, start + size))
        start += size
    return slices


def _exact_diagonal(model: nn.Sequential, x: Tensor, y: Tensor) -> Tensor:
    """The exact Hessian diagonal ``(samples, P)`` of single-example losses, layer by layer.

    With one example, weight ``W_ij`` of a Linear layer enters the loss only through ``a_i = Σ_j W_ij x_j``,
    so ``∂²L/∂W_ij² = x_j² ∂²L/∂a_i²`` and ``∂²L/∂b_i² = ∂²L/∂a_i²`` exactly; the exact Hessian with respect
    to the layer's output ``a`` (16 x 16) comes from ``torch.func.hessian`` of the rest of the network.
    """
    loss_fn = nn.CrossEntropyLoss()
    layers = list(model)
    parts = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Linear):
            continue
        before, after = nn.Sequential(*layers[:i]), nn.Sequential(*layers[i + 1 :])
        with torch.no_grad():
            h_in = before(x)
            a = layer(h_in)

        def tail(ai: Tensor, yi: Tensor, after: nn.Module = after) -> Tensor:
            return loss_fn(after(ai.unsqueeze(0)), yi.unsqueeze(0))

        d = vmap(hessian(tail))(a, y).diagonal(dim1=1, dim2=2)  # (S, out)
        parts += [(d.unsqueeze(2) * (h_in * h_in).unsqueeze(1)).flatten(1), d]
    return torch.cat(parts, 1).detach()


def _references(model: nn.Module, x: Tensor, y: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
    """Exact diagonal and the torch.func estimators, ``(samples, P)`` each, for single-example losses."""
    named = [(n, p) for n, p in model.named_parameters()]
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])
    loss_fn = nn.CrossEntropyLoss()
    spec = loss_spec(loss_fn)

    def out(t: Tensor, xi: Tensor) -> Tensor:
        params = {n: v.reshape(s) for n, v, s in zip(names, t.split(sizes), shapes, strict=True)}
        return functional_call(model, params, (xi.unsqueeze(0),)).squeeze(0)

    def loss(t: Tensor, xi: Tensor, yi: Tensor) -> Tensor:
        return loss_fn(out(t, xi).unsqueeze(0), yi.unsqueeze(0))

    def hvps(xi: Tensor, yi: Tensor, probes: Tensor) -> Tensor:
        g = grad(lambda t: loss(t, xi, yi))
        return vmap(lambda v: jvp(g, (theta,), (v,))[1])(probes)

    g = vmap(grad(loss), in_dims=(None, 0, 0))(theta, x, y)
    z = vmap(out, in_dims=(None, 0))(theta, x)
    jac = vmap(jacrev(out), in_dims=(None, 0))(theta, x)  # (S, C, P)
    h_out = vmap(hessian(lambda zi, yi: loss_fn(zi.unsqueeze(0), yi.unsqueeze(0))))(z, y)  # (S, C, C)
    result = {
        "exact": _exact_diagonal(model, x, y),
        "ggn": torch.einsum("skp,skl,slp->sp", jac, h_out, jac),
        "grad_squared": g * g,
        "zero": torch.zeros_like(g),
    }
    for m in (1, 50):
        draws = torch.stack([
            torch.stack([sample_output_factor(spec, z[i : i + 1], y[i : i + 1], gen)[0] for _ in range(m)])
            for i in range(z.shape[0])
        ])  # (S, m, C)  # fmt: skip
        v = torch.einsum("smk,skp->smp", draws, jac)
        result[f"ggn_mc_{m}"] = (v * v).mean(1)
        bits = torch.randint(0, 2, (z.shape[0], m, theta.numel()), generator=gen)
        probes = (2 * bits - 1).to(theta.dtype)
        result[f"hutchinson_{m}"] = (probes * vmap(hvps)(x, y, probes)).mean(1)
    return {k: v.detach() for k, v in result.items()}


def _hesscale_family(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """HesScale, HesScaleGN and BL89 per sample (batch size 1), through the training-time hooks."""
    loss_fn = nn.CrossEntropyLoss()
    params = list(model.parameters())
    out = {}
    for method in ("hesscale", "hesscale_gn", "bl89"):
        ext = hesscale.extend(model, loss_fn, method)
        rows = []
        try:
            for i in range(x.shape[0]):
                loss = loss_fn(model(x[i : i + 1]), y[i : i + 1])
                torch.autograd.grad(loss, params)
                rows.append(torch.cat([hesscale.take_diagonal(p, method).reshape(-1) for p in params]))
        finally:
            ext.remove()
        out[method] = torch.stack(rows)
    return out


def run(
    *,
    quick: bool = False,
    activations: Sequence[str] = ACTIVATIONS,
    seeds: int | None = None,
    samples: int | None = None,
    estimators: Sequence[str] = ESTIMATORS,
) -> list[dict]:
    """The study's rows: per activation, estimator and layer, the mean L1 error and its normalisation.

    Args:
        quick: 10 seeds x 10 samples (default: the published 40 x 1000).
        activations: among ``"tanh"``, ``"relu"``, ``"sigmoid"`` (and ``"elu"``).
        seeds: override the number of seeds (0, 1, ... are used).
        samples: override the samples per seed.
        estimators: a subset of :data:`ESTIMATORS` (HesScale is always computed, as the normaliser).

    Returns:
        One dict per (activation, estimator, layer), layer ``1``..``4`` or ``"all"`` (summed over the
        layers): ``l1_error`` (mean over samples and seeds), ``normalized`` (``l1_error`` ÷ HesScale's for
        the same activation and layer), ``spread`` (standard deviation over seeds of the per-seed
        normalised error), ``seeds``, ``samples``.
    """
    n_seeds, n_samples = QUICK if quick else FULL
    n_seeds = n_seeds if seeds is None else seeds
    n_samples = n_samples if samples is None else samples
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ValueError(f"unknown estimators {sorted(unknown)}; choose from {ESTIMATORS}")
    wanted = ["hesscale", *[e for e in estimators if e != "hesscale"]]
    rows = []
    for activation in activations:
        per_seed: dict[str, list[Tensor]] = {e: [] for e in wanted}  # (layers + 1,) mean errors per seed
        for seed in range(n_seeds):
            model = _model(activation, seed)
            gen = torch.Generator().manual_seed(seed)
            x = torch.randn(n_samples, 6, generator=gen, dtype=torch.float64)
            y = torch.randint(0, 10, (n_samples,), generator=gen)
            slices = _layer_slices(model)
            sums = {e: torch.zeros(_LAYERS + 1, dtype=torch.float64) for e in wanted}
            for start in range(0, n_samples, _CHUNK):
                xc, yc = x[start : start + _CHUNK], y[start : start + _CHUNK]
                refs = _references(model, xc, yc, gen)
                refs.update(_hesscale_family(model, xc, yc))
                exact = refs["exact"]
                for e in wanted:
                    err = (refs[e] - exact).abs()
                    per_layer = torch.stack([err[:, s].sum(1) for s in slices], 1)  # (chunk, layers)
                    sums[e] += torch.cat([per_layer, per_layer.sum(1, keepdim=True)], 1).sum(0)
            for e in wanted:
                per_seed[e].append(sums[e] / n_samples)
        base = torch.stack(per_seed["hesscale"])  # (seeds, layers + 1)
        for e in wanted:
            errs = torch.stack(per_seed[e])
            ratio = errs / base
            for k in range(_LAYERS + 1):
                col = ratio[:, k].tolist()
                rows.append({
                    "activation": activation,
                    "estimator": e,
                    "layer": k + 1 if k < _LAYERS else "all",
                    "l1_error": float(errs[:, k].mean()),
                    "normalized": float(errs[:, k].mean() / base[:, k].mean()),
                    "spread": statistics.stdev(col) if len(col) > 1 else 0.0,
                    "seeds": n_seeds,
                    "samples": n_samples,
                })  # fmt: skip
    return rows


_LABELS = {
    "hesscale": "HesScale",
    "hesscale_gn": "HesScaleGN",
    "bl89": "BL89",
    "ggn": "exact GGN diagonal",
    "ggn_mc_1": "GGN-MC, 1 sample",
    "ggn_mc_50": "GGN-MC, 50 samples",
    "hutchinson_1": "Hutchinson, 1 probe",
    "hutchinson_50": "Hutchinson, 50 probes",
    "grad_squared": "g²",
    "zero": "zero (Ĥ = 0)",
}


def markdown(rows: list[dict], figure: str, command: str) -> str:
    """The report fragment: normalised errors (all layers) beside the published ratios, then per layer."""
    activations = list(dict.fromkeys(r["activation"] for r in rows))
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    by = {(r["activation"], r["estimator"], r["layer"]): r for r in rows}
    seeds, samples = rows[0]["seeds"], rows[0]["samples"]
    lines = [
        "# HesScale: accuracy of diagonal curvature estimators",
        "",
        f"`{command}` (`hessopt.bench.studies.hesscale_accuracy`; arXiv:2210.11639's protocol): "
        f"6-16-16-16-10 networks, {seeds} seeds x {samples} single-example cross-entropy evaluations at "
        "initialisation, float64. Mean L1 error of each estimator against the exact Hessian diagonal over "
        "all 826 parameters, divided by HesScale's (HesScale = 1; ± the spread over seeds); in brackets the "
        "ratio of a float64 re-implementation of the published protocol (docs/algorithms/hesscale.md).",
        "",
        "| estimator | " + " | ".join(activations) + " |",
        "|---" * (len(activations) + 1) + "|",
    ]
    for e in estimators:
        cells = []
        for a in activations:
            r = by[(a, e, "all")]
            ref = PUBLISHED.get(a, {}).get(e)
            text = f"{r['normalized']:.3g} ± {r['spread']:.2g}"
            cells.append(text + (f" [{ref:g}]" if ref is not None else ""))
        lines.append(f"| {_LABELS.get(e, e)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per layer (normalised by HesScale's error in the same layer; layer 4 is the output layer):",
        "",
    ]
    lines += [
        "| activation | estimator | layer 1 | layer 2 | layer 3 | layer 4 |",
        "|---|---|---|---|---|---|",
    ]
    for a in activations:
        for e in estimators:
            cells = [f"{by[(a, e, k)]['normalized']:.3g}" for k in range(1, _LAYERS + 1)]
            lines.append(f"| {a} | {_LABELS.get(e, e)} | " + " | ".join(cells) + " |")
    lines += ["", f"![normalised L1 error]({figure})", ""]
    return "\n".join(lines)


def _figure(rows: list[dict], path: Path) -> None:
    """Bar chart: normalised error (all layers, log scale) per estimator, one group per activation."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    activations = list(dict.fromkeys(r["activation"] for r in rows))
    estimators = [e for e in dict.fromkeys(r["estimator"] for r in rows) if e != "hesscale"]
    fig = Figure(figsize=(12, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(activations)
    by = {(r["activation"], r["estimator"]): r for r in rows if r["layer"] == "all"}
    for i, a in enumerate(activations):
        values = [max(by[(a, e)]["normalized"], 1e-3) for e in estimators]
        ax.bar([k + i * width for k in range(len(estimators))], values, width, label=a)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="HesScale = 1")
    ax.set_yscale("log")
    ax.set_xticks([k + width * (len(activations) - 1) / 2 for k in range(len(estimators))])
    ax.set_xticklabels([_LABELS.get(e, e) for e in estimators], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("L1 error / HesScale's")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write(out_dir: str | Path, *, quick: bool = False, command: str = "hessopt bench hesscale") -> dict:
    """Run the study and write ``hesscale_accuracy.json``, its bar chart and the fragment under ``out_dir``.

    Args:
        out_dir: the study folder (created if missing); ``hessopt report`` appends its fragment.
        quick: 10 seeds x 10 samples instead of 40 x 1000.
        command: the command line quoted in the fragment.

    Returns:
        ``{"runtime_s", "files", "rows"}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = run(quick=quick)
    (out / "hesscale_accuracy.json").write_text(json.dumps(rows, indent=1))
    _figure(rows, out / "hesscale_accuracy.png")
    (out / "hesscale_accuracy.md").write_text(markdown(rows, "hesscale_accuracy.png", command))
    files = ["hesscale_accuracy.json", "hesscale_accuracy.png", "hesscale_accuracy.md"]
    return {"runtime_s": time.perf_counter() - t0, "files": files, "rows": rows}
