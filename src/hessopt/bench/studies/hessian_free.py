"""Study: block-diagonal Hessian-free (BDHF) vs Hessian-free (HF) vs tuned Adam.

The experiments of Zhang, Xiong, Bradbury & Socher (2017, arXiv:1712.07296; Fig. 3) at CPU scale, plus the
small autoencoder bar of hessopt's issue tracker:

============================  ======================================================  =====================
experiment                    model and loss                                          data
============================  ======================================================  =====================
``autoencoder``               784-1000-500-250-30 and mirror, logistic units, BCE on   Fashion-MNIST, else
                              logits vs the pixels (Hinton & Salakhutdinov 2006)        MNIST-5k
``lstm``                      3-layer LSTM over 7 x 7 average-pooled images (7 steps   as above
                              of 7 features), linear head on the last hidden state, CE
``resnet``                    :func:`~hessopt.problems.models.resnet_small` (three     as above
                              residual stages with BatchNorm), CE
``digits_autoencoder``        64-32-16-8 and mirror, logistic units, linear output,    scikit-learn digits
                              MSE; batch 64, 600 Adam steps
============================  ======================================================  =====================

For every experiment, gradient-batch size and seed: BDHF (``blocks="layers"``) and HF (``blocks="single"``)
at each curvature fraction (default 1, 1/4, 1/8 of the *same* gradient batch: the batches are drawn from
one seeded generator per seed and batch size), with every other argument at its default; and Adam at each
learning rate of a small log grid. Each run records, per outer step, the batch loss, cumulative wall-clock
of the optimizer steps (evaluations excluded), the same time in forward-pass equivalents (wall-clock
divided by the median time of one forward pass on a gradient batch, measured at the start of the run),
and for HF/BDHF the damping ``lambda``, the reduction ratio, the step length, CG iterations per block and
whether the step was accepted; every ``eval_every`` steps the loss on a fixed training subset and the test
loss (and accuracy for classifiers).

:func:`run` returns plain data (lists and dicts of numbers and strings) for the benchmark's store and report;
:func:`summarize` reduces it to one row per configuration (final losses; time to reach the best Adam
run's final training loss). ``Config(size="quick")`` is the ``make bench`` version (35 s to 2 minutes on two
cores); ``Config()`` the full protocol (hours on a CPU).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hessopt.bench.methods import get_method
from hessopt.problems import data as data_mod
from hessopt.problems import models

__all__ = ["EXPERIMENTS", "Config", "run", "summarize"]

EXPERIMENTS = ("autoencoder", "lstm", "resnet", "digits_autoencoder")
SIZES = ("full", "quick")


@dataclass(frozen=True)
class _Protocol:
    """One experiment at one size: model factory, loss, data and budgets."""

    build: Callable[[int], nn.Module]
    loss: str  # "bce_reconstruction", "mse_reconstruction" or "cross_entropy"
    datasets: tuple[str, ...]  # preference order
    images: bool  # inputs as (N, 1, H, W) rather than flat
    batch_sizes: tuple[int, ...]
    hf_steps: int
    adam_steps: int
    adam_lrs: tuple[float, ...]
    train_limit: int | None
    eval_size: int
    eval_every: int


_IMAGES = ("fashion_mnist", "mnist5k")
_PROTOCOLS: dict[tuple[str, str], _Protocol] = {
    ("autoencoder", "full"): _Protocol(
        lambda seed: models.autoencoder(seed=seed),
        "bce_reconstruction",
        _IMAGES,
        False,
        (256, 1024),
        100,
        1000,
        (1e-4, 3e-4, 1e-3, 3e-3),
        None,
        2000,
        10,
    ),
    ("autoencoder", "quick"): _Protocol(
        lambda seed: models.autoencoder((784, 128, 32), seed=seed),
        "bce_reconstruction",
        _IMAGES,
        False,
        (256,),
        8,
        40,
        (1e-3, 1e-2),
        2048,
        512,
        4,
    ),
    ("lstm", "full"): _Protocol(
        lambda seed: models.lstm_classifier(hidden_size=128, seed=seed),
        "cross_entropy",
        _IMAGES,
        False,
        (256, 1024),
        100,
        1000,
        (3e-4, 1e-3, 3e-3, 1e-2),
        None,
        2000,
        10,
    ),
    ("lstm", "quick"): _Protocol(
        lambda seed: models.lstm_classifier(hidden_size=16, seed=seed),
        "cross_entropy",
        _IMAGES,
        False,
        (256,),
        6,
        30,
        (3e-3, 1e-2),
        2048,
        512,
        3,
    ),
    ("resnet", "full"): _Protocol(
        lambda seed: models.resnet_small(seed=seed),
        "cross_entropy",
        _IMAGES,
        True,
        (256, 1024),
        60,
        600,
        (3e-4, 1e-3, 3e-3, 1e-2),
        None,
        2000,
        10,
    ),
    ("resnet", "quick"): _Protocol(
        lambda seed: models.resnet_small(widths=(4, 8, 8), seed=seed),
        "cross_entropy",
        _IMAGES,
        True,
        (64,),
        3,
        15,
        (3e-3, 1e-2),
        1024,
        256,
        3,
    ),
    ("digits_autoencoder", "full"): _Protocol(
        lambda seed: models.autoencoder((64, 32, 16, 8), seed=seed),
        "mse_reconstruction",
        ("digits",),
        False,
        (64,),
        300,
        600,
        (1e-3, 3e-3, 1e-2, 3e-2),
        None,
        1437,
        20,
    ),
    ("digits_autoencoder", "quick"): _Protocol(
        lambda seed: models.autoencoder((64, 32, 16, 8), seed=seed),
        "mse_reconstruction",
        ("digits",),
        False,
        (64,),
        40,
        120,
        (1e-2, 3e-2),
        None,
        1437,
        10,
    ),
}


@dataclass(frozen=True)
class Config:
    """What :func:`run` runs.

    Attributes:
        size: ``"full"`` (the documented protocol) or ``"quick"`` (small models and budgets, ``make bench``).
        experiments: names from :data:`EXPERIMENTS`.
        seeds: model-initialisation and batch-order seeds; None: (0, 1, 2) for the full protocol, (0,) for
            the quick one.
        curvature_fractions: curvature fractions of BDHF and HF.
        methods: any of ``"bdhf"``, ``"hf"``, ``"adam"`` (registry names of :mod:`hessopt.bench.methods`).
        batch_sizes: gradient-batch sizes; None uses each experiment's own (two sizes in the full protocol).
        hf_steps: outer steps of BDHF/HF; None uses each experiment's.
        adam_steps: Adam steps; None uses each experiment's.
        adam_lrs: Adam's learning-rate grid; None uses each experiment's.
        threads: torch intra-op threads while running.
        options: extra keyword arguments of BDHF and HF (e.g. ``{"damping": 45.0}``).
    """

    size: str = "full"
    experiments: tuple[str, ...] = ("autoencoder", "lstm", "resnet", "digits_autoencoder")
    seeds: tuple[int, ...] | None = None
    curvature_fractions: tuple[float, ...] = (1.0, 0.25, 0.125)
    methods: tuple[str, ...] = ("bdhf", "hf", "adam")
    batch_sizes: tuple[int, ...] | None = None
    hf_steps: int | None = None
    adam_steps: int | None = None
    adam_lrs: tuple[float, ...] | None = None
    threads: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the names."""
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")
        unknown = set(self.experiments) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"unknown experiments {sorted(unknown)}; choose from {EXPERIMENTS}")
        bad = set(self.methods) - {"bdhf", "hf", "adam"}
        if bad:
            raise ValueError(f"unknown methods {sorted(bad)}; choose from 'bdhf', 'hf', 'adam'")


def _data(protocol: _Protocol) -> tuple[data_mod.TensorSplit, str]:
    for name in protocol.datasets:
        if data_mod.is_available(name):
            split = data_mod.load(name, flatten=not protocol.images, limit=protocol.train_limit)
            return split, name
    raise data_mod.DatasetNotFoundError(f"none of the data sets {protocol.datasets} is available")


def _loss_fn(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return {
        "bce_reconstruction": nn.BCEWithLogitsLoss(),
        "mse_reconstruction": nn.MSELoss(),
        "cross_entropy": nn.CrossEntropyLoss(),
    }[kind]


def _targets(kind: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x.flatten(1) if kind != "cross_entropy" else y


@torch.no_grad()
def _evaluate(model, loss_fn, kind, split, eval_size) -> dict[str, float]:
    out: dict[str, float] = {}
    for prefix, x, y in (("train", split.x_train, split.y_train), ("test", split.x_test, split.y_test)):
        x, y = x[:eval_size], y[:eval_size]
        z = model(x)
        out[f"{prefix}_loss"] = float(loss_fn(z, _targets(kind, x, y)))
        if kind == "cross_entropy":
            out[f"{prefix}_accuracy"] = float((z.argmax(1) == y).float().mean())
    return out


def _forward_seconds(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _one_run(
    experiment: str,
    protocol: _Protocol,
    split: data_mod.TensorSplit,
    dataset: str,
    method: str,
    setting: float,
    batch_size: int,
    seed: int,
    steps: int,
    evaluations: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    model = protocol.build(seed)
    loss_fn = _loss_fn(protocol.loss)
    registered = get_method(method)  # "bdhf", "hf", "adam": the registry's, with this study's settings
    settings = {"lr": setting} if method == "adam" else {"curvature_fraction": setting, **options}
    opt = registered.build(
        list(model.parameters()), {**registered.hyper, **settings}, model=model, loss_fn=loss_fn
    )
    gen = torch.Generator().manual_seed(seed)
    n = split.x_train.shape[0]
    first = torch.randint(0, n, (batch_size,), generator=torch.Generator().manual_seed(seed))
    forward_s = _forward_seconds(model, split.x_train[first])
    eval_every = max(1, steps // evaluations)
    records, wall = [], 0.0
    for step in range(steps + 1):
        row: dict[str, Any] = {"step": step, "wall_s": wall, "fpe": wall / forward_s}
        if step % eval_every == 0 or step == steps:
            row.update(_evaluate(model, loss_fn, protocol.loss, split, protocol.eval_size))
        if step == steps:
            records.append(row)
            break
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        x, y = split.x_train[idx], split.y_train[idx]
        targets = _targets(protocol.loss, x, y)
        t0 = time.perf_counter()
        if method == "adam":
            opt.zero_grad()
            loss = loss_fn(model(x), targets)
            loss.backward()
            opt.step()
        else:
            loss = opt.step(x, targets)
        wall += time.perf_counter() - t0
        row["loss"] = float(loss.detach())
        if method != "adam":
            last = opt.last_step
            row.update(
                damping=last.get("damping"),
                rho=last.get("rho"),
                alpha=last.get("alpha"),
                cg_iterations=last.get("cg_iterations"),
                accepted=last.get("accepted"),
            )
        records.append(row)
    return {
        "experiment": experiment,
        "dataset": dataset,
        "method": method,
        "curvature_fraction": None if method == "adam" else setting,
        "lr": setting if method == "adam" else None,
        "batch_size": batch_size,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "blocks": None if method == "adam" else len(opt.block_sizes()),
        "forward_s": forward_s,
        "steps": records,
    }


def run(config: Config, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run the study; returns one record per (experiment, method, setting, batch size, seed).

    Args:
        config: the :class:`Config`.
        progress: called with a one-line description before each run (e.g. ``print``).

    Returns:
        A list of run records (plain data; see the module docstring for the fields).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    records = []
    try:
        for experiment in config.experiments:
            protocol = _PROTOCOLS[(experiment, config.size)]
            split, dataset = _data(protocol)
            batch_sizes = config.batch_sizes or protocol.batch_sizes
            for batch_size in batch_sizes:
                for seed in config.seeds or ((0, 1, 2) if config.size == "full" else (0,)):
                    plan = []
                    for method in ("bdhf", "hf"):
                        if method in config.methods:
                            plan += [
                                (method, f, config.hf_steps or protocol.hf_steps)
                                for f in config.curvature_fractions
                            ]
                    if "adam" in config.methods:
                        lrs = config.adam_lrs or protocol.adam_lrs
                        plan += [("adam", lr, config.adam_steps or protocol.adam_steps) for lr in lrs]
                    evaluations = max(1, (config.hf_steps or protocol.hf_steps) // protocol.eval_every)
                    for method, setting, steps in plan:
                        if progress is not None:
                            progress(f"{experiment} {method} {setting} batch {batch_size} seed {seed}")
                        records.append(
                            _one_run(
                                experiment,
                                protocol,
                                split,
                                dataset,
                                method,
                                setting,
                                batch_size,
                                seed,
                                steps,
                                evaluations,
                                dict(config.options),
                            )
                        )
    finally:
        torch.set_num_threads(threads)
    return records


def _final(record: dict[str, Any], key: str) -> float:
    return record["steps"][-1][key]


def _time_to(record: dict[str, Any], target: float) -> float | None:
    for row in record["steps"]:
        if row.get("train_loss", math.inf) <= target:
            return row["wall_s"]
    return None


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (experiment, batch size, method, setting), means over seeds.

    Adam's best learning rate is the one with the lowest mean final training loss; its mean final training
    loss is the target. Each row holds the mean final training/test loss, the mean wall-clock, and the
    mean wall-clock to first reach the target (over the seeds that reached it, with their count).

    Args:
        records: the output of :func:`run`.

    Returns:
        Rows as dicts, Adam rows first within each (experiment, batch size).
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        setting = r["lr"] if r["method"] == "adam" else r["curvature_fraction"]
        groups.setdefault((r["experiment"], r["batch_size"], r["method"], setting), []).append(r)
    rows = []
    for experiment, batch_size in sorted({(k[0], k[1]) for k in groups}):
        adam = {k: v for k, v in groups.items() if k[:3] == (experiment, batch_size, "adam")}
        target = None
        if adam:
            best = min(adam.values(), key=lambda rs: statistics.mean(_final(r, "train_loss") for r in rs))
            target = statistics.mean(_final(r, "train_loss") for r in best)
        keys = sorted(
            (k for k in groups if k[:2] == (experiment, batch_size)),
            key=lambda k: (k[2] != "adam", k[2], k[3]),
        )
        for key in keys:
            rs = groups[key]
            reached = [t for t in (_time_to(r, target) for r in rs) if t is not None] if target else []
            rows.append(
                {
                    "experiment": experiment,
                    "batch_size": batch_size,
                    "method": key[2],
                    "setting": key[3],
                    "seeds": len(rs),
                    "final_train_loss": statistics.mean(_final(r, "train_loss") for r in rs),
                    "final_test_loss": statistics.mean(_final(r, "test_loss") for r in rs),
                    "wall_s": statistics.mean(_final(r, "wall_s") for r in rs),
                    "steps": rs[0]["steps"][-1]["step"],
                    "target": target,
                    "reached": len(reached),
                    "time_to_target_s": statistics.mean(reached) if reached else None,
                }
            )
    return rows


def _setting(record: dict[str, Any]) -> str:
    if record["method"] == "adam":
        return f"adam lr {record['lr']:g}"
    return f"{record['method']} c {record['curvature_fraction']:g}"


def _figures(records: list[dict[str, Any]], out: Path) -> list[str]:
    """Figures per experiment and batch size (first seed of every configuration).

    Training loss against outer steps, forward-pass equivalents and wall-clock; the damping trajectory.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = []
    for experiment, batch in sorted({(r["experiment"], r["batch_size"]) for r in records}):
        runs = [r for r in records if (r["experiment"], r["batch_size"]) == (experiment, batch)]
        first_seed = min(r["seed"] for r in runs)
        runs = [r for r in runs if r["seed"] == first_seed]
        fig = Figure(figsize=(16, 3.6))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 4)
        for r in runs:
            rows = [row for row in r["steps"] if "train_loss" in row]
            label = _setting(r)
            for ax, x in zip(axes[:3], ("step", "fpe", "wall_s"), strict=True):
                ax.plot([row[x] for row in rows], [row["train_loss"] for row in rows], label=label)
            damping = [(row["step"], row["damping"]) for row in r["steps"] if row.get("damping") is not None]
            if damping:
                axes[3].plot(*zip(*damping, strict=True), label=label)
        for ax, xlabel in zip(
            axes, ("outer step", "forward-pass equivalents", "seconds", "outer step"), strict=True
        ):
            ax.set_xlabel(xlabel)
            ax.set_yscale("log")
        axes[0].set_ylabel("training loss")
        axes[3].set_ylabel("damping λ")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{experiment}, gradient batch {batch} (seed {first_seed})")
        fig.tight_layout()
        name = f"hf_{experiment}_b{batch}.png"
        fig.savefig(out / name, dpi=90)
        names.append(name)
    return names


def markdown(records: list[dict[str, Any]], figures: list[str], command: str) -> str:
    """The report fragment: the :func:`summarize` table, CG iterations per block, and the figures."""
    lines = [
        "# Hessian-free and block-diagonal Hessian-free",
        "",
        f"`{command}` (`hessopt.bench.studies.hessian_free`): BDHF (one block per layer) and HF (one block) "
        "at curvature fractions c of the same gradient batch, against Adam at each learning rate of a small "
        "grid. Target: the best Adam configuration's mean final training loss; time to target: mean "
        "wall-clock of the seeds that reached it [reached/seeds].",
        "",
        "| experiment | batch | method | steps | final train loss | final test loss | seconds | time to "
        "target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summarize(records):
        setting = f"lr {row['setting']:g}" if row["method"] == "adam" else f"c {row['setting']:g}"
        ttt = (
            "-"
            if row["target"] is None
            else (
                f"{row['time_to_target_s']:.2f} s [{row['reached']}/{row['seeds']}]"
                if row["reached"]
                else f"not reached [0/{row['seeds']}]"
            )
        )
        lines.append(
            f"| {row['experiment']} | {row['batch_size']} | {row['method']} {setting} | {row['steps']} | "
            f"{row['final_train_loss']:.4g} | {row['final_test_loss']:.4g} | {row['wall_s']:.1f} | {ttt} |"
        )
    lines += ["", "CG iterations per block per outer step (median over steps and seeds):", ""]
    for r in records:
        if r["method"] == "adam" or r["seed"] != min(x["seed"] for x in records):
            continue
        per_block = [row["cg_iterations"] for row in r["steps"] if row.get("cg_iterations")]
        if per_block:
            medians = [statistics.median(col) for col in zip(*per_block, strict=True)]
            lines.append(
                f"- {r['experiment']} (batch {r['batch_size']}), {_setting(r)}: "
                + ", ".join(f"{m:g}" for m in medians)
            )
    lines.append("")
    lines += [f"![{name}]({name})" for name in figures]
    return "\n".join([*lines, ""])


def write(config: Config, out_dir: str | Path, *, command: str = "hessopt bench hf") -> dict[str, Any]:
    """Run the study and write ``hessian_free.json``, its figures and the fragment ``hessian_free.md``.

    Args:
        config: what to run.
        out_dir: the study folder (created if missing); ``hessopt report`` appends its fragment.
        command: the command line quoted in the fragment.

    Returns:
        ``{"runtime_s", "files", "summary"}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records = run(config, progress=lambda text: print(f"hessopt: {text}", flush=True))
    (out / "hessian_free.json").write_text(json.dumps(records))
    figures = _figures(records, out)
    (out / "hessian_free.md").write_text(markdown(records, figures, command))
    files = ["hessian_free.json", "hessian_free.md", *figures]
    return {"runtime_s": time.perf_counter() - t0, "files": files, "summary": summarize(records)}
