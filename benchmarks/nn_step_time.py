"""Per-step training time of every NN-suite optimizer on one problem, as a ratio to Adam's, same process.

A *step* is what :func:`hessopt.bench.nn.suite.drive_step` times inside the suites: forward, backward
(double backward on the steps where AdaHessian/SophiaH take a Hutchinson estimate), curvature work and
``optimizer.step()`` (closure methods: every closure call of their line search). Each optimizer trains its
own copy of the problem's model (same initialisation, seed 0) on the same mini-batches, and the
optimizers take their steps in interleaved rounds (one step of each per round), so machine load falls on
all of them alike. Reported per optimizer: the median over the timed rounds, its ratio to Adam's median
(``torch.optim.Adam`` at its defaults) and to the fastest Adam on this machine (the best of its
``foreach=True`` and ``fused=True`` forms, timed in the same rounds), the interquartile range, and
gradient evaluations per step. Learning rates: the middle point of each
method's full tuning grid (step cost barely depends on it; L-BFGS's line search is the exception, hence
the grads/step column). Threads: ``--threads`` (default 1, as the suites' worker processes use).

Run: ``python benchmarks/nn_step_time.py`` (fmnist_mlp, the issue's 784-256-256-10 tanh MLP at batch 128;
needs Fashion-MNIST: ``make data``), about two minutes on one core; ``--problem digits_mlp --quick`` for a
smoke run on embedded data. Writes ``nn_step_time.md`` and ``nn_step_time.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from hessopt.bench.methods import get_method, methods_in
from hessopt.bench.nn.suite import DATA_SEED_OFFSET, drive_step
from hessopt.problems.registry import get_problem


def measure(problem_name: str, methods: list[str], rounds: int, warmup: int) -> dict:
    """Median seconds per step of each method (interleaved rounds) and its statistics."""
    problem = get_problem(problem_name)
    reason = problem.unavailable_reason()
    if reason:
        raise SystemExit(f"nn_step_time: {reason}")
    split = problem.load_data()
    gen = torch.Generator().manual_seed(DATA_SEED_OFFSET)
    perm = torch.randperm(split.num_train, generator=gen)
    b = problem.batch_size
    n_batches = split.num_train // b
    runners = {}
    adam = get_method("adam").in_suite("nn")
    adam_config = adam.config({k: grid[len(grid) // 2] for k, grid in adam.tune.items()})
    fast_adams = {f"adam({form}=True)": {**adam_config, form: True} for form in ("foreach", "fused")}
    for name in [*methods, *fast_adams]:
        method = adam if name in fast_adams else get_method(name).in_suite("nn")
        criterion = problem.criterion() if method.method.needs_model else None
        if (
            method.missing_requirement()
            or not method.applies_to(problem.num_parameters())
            or (method.method.needs_model and criterion is None)
        ):
            continue
        config = fast_adams.get(name) or method.config(
            {k: grid[len(grid) // 2] for k, grid in method.tune.items()}
        )
        torch.manual_seed(0)
        model = problem.build_model(0)
        params = [p for p in model.parameters() if p.requires_grad]
        runners[name] = {
            "method": method,
            "config": config,
            "model": model,
            "params": params,
            "criterion": criterion,
            "opt": method.build(params, config, model=model, loss_fn=criterion),
            "period": method.hessian_period(config),
            "state": {"grad_evals": 0, "curvature_calls": 0},
            "times": [],
            "grads": 0,
        }
    if "adam" not in runners:
        raise SystemExit("nn_step_time: Adam (the baseline) must be among the methods")
    for r in range(warmup + rounds):
        k = r % n_batches
        idx = perm[k * b : (k + 1) * b]
        xb, yb = split.x_train[idx], split.y_train[idx]
        for run in runners.values():
            before = run["state"]["grad_evals"]
            t0 = time.perf_counter()
            drive_step(
                run["method"], run["opt"], problem, run["model"], run["params"], xb, yb, r, run["period"],
                run["state"], run["criterion"],
            )  # fmt: skip
            dt = time.perf_counter() - t0
            if r >= warmup:
                run["times"].append(dt)
                run["grads"] += run["state"]["grad_evals"] - before
    base = statistics.median(runners["adam"]["times"])
    fastest = min(statistics.median(runners[n]["times"]) for n in ("adam", *fast_adams) if n in runners)
    out = {}
    for name, run in runners.items():
        ts = run["times"]
        q1, _, q3 = statistics.quantiles(ts, n=4)
        med = statistics.median(ts)
        out[name] = {
            "median_ms": 1e3 * med,
            "iqr_ms": [1e3 * q1, 1e3 * q3],
            "ratio_to_adam": med / base,
            "ratio_to_fastest_adam": med / fastest,
            "grads_per_step": run["grads"] / len(ts),
            "config": run["config"],
        }
    return {"problem": problem_name, "parameters": problem.num_parameters(), "batch": b, "methods": out}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="fmnist_mlp", help="a registered NN problem (default fmnist_mlp)")
    ap.add_argument("--methods", help="comma-separated methods (default: every registered one that applies)")
    ap.add_argument("--rounds", type=int, default=200, help="timed interleaved rounds (default 200)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed rounds first (default 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--out", default="results/nn_step_time", help="output folder")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 rounds, 3 warm-up")
    args = ap.parse_args(argv)
    if args.rounds < 4 or args.warmup < 0 or args.threads < 1:
        ap.error("--rounds must be >= 4, --warmup >= 0, --threads >= 1")
    rounds, warmup = (20, 3) if args.quick else (args.rounds, args.warmup)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*create_graph=True.*")  # AdaHessian/SophiaH, handled
    methods = args.methods.split(",") if args.methods else [m.name for m in methods_in("nn")]
    t0 = time.perf_counter()
    res = measure(args.problem, methods, rounds, warmup)
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    command = (
        "python benchmarks/nn_step_time.py"
        + (f" --problem {args.problem}" if args.problem != "fmnist_mlp" else "")
        + (" --quick" if args.quick else "")
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nn_step_time.json").write_text(json.dumps({"env": env, "command": command, **res}, indent=2))
    lines = [
        f"# Per-step training time on {res['problem']}",
        "",
        f"Command: `{command}`; {rounds} interleaved rounds after {warmup} warm-up; {env}. "
        f"{res['parameters']:,} parameters, batch {res['batch']}, float32, CPU. A step = forward, backward, "
        "curvature and update (closure methods: all their evaluations).",
        "",
        "| optimizer | median ms/step | IQR ms | / Adam | / fastest Adam | grads/step |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in res["methods"].items():
        lo, hi = m["iqr_ms"]
        lines.append(
            f"| {name} | {m['median_ms']:.3f} | {lo:.3f}-{hi:.3f} | {m['ratio_to_adam']:.2f} | "
            f"{m['ratio_to_fastest_adam']:.2f} | {m['grads_per_step']:.2f} |"
        )
    (out / "nn_step_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
