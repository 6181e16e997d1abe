"""The ``hessopt`` command: run benchmark suites, merge their stores, write the report.

::

    hessopt bench functions [--quick] [--starts N] [--steps N] [--methods a,b] [--functions f,g]
                            [--store PATH] [--shard i/n] [--workers N] [--noise-std S] [--no-progress]
                            [--executor local|ray] [--address ADDR]
    hessopt bench nn [--suite quick|full] [--problems p,q] [--methods a,b] [--seeds N|s,t]
                     [--tune-seeds N|s,t] [--epochs E] [--steps N] [--store PATH] [--shard i/n]
                     [--workers N] [--no-progress] [--executor local|ray] [--address ADDR]
    hessopt report [--store PATH ...] [--out DIR] [--studies DIR,DIR]   (report.md, PNGs, report.html)
    hessopt merge DST SRC [SRC ...]
    hessopt train PROBLEM --method NAME [--config JSON] [--seed S] [--epochs E] [--steps N]
                  [--device cpu|cuda] [--store PATH]      (also under torchrun --nproc-per-node N)
    hessopt list                      (methods, test functions, neural-network methods and problems)
    hessopt --version                 (also: python -m hessopt ...)

Exit status: 0 on success; 1 when some runs failed (raised an exception; they are stored as
``failed`` and retried by the next invocation), or for an error of the system (a file that cannot be
written, a full disk); 2 for bad arguments, stores that are not usable, data or packages that are
missing; 130 after Ctrl-C and 143 after SIGTERM (finished runs are stored; re-run to resume). Every
error is one line, ``hessopt COMMAND: error: ...``, saying what is wrong and how to fix it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hessopt.bench.functions.suite import SuiteOutcome as FunctionsOutcome
    from hessopt.bench.nn.suite import SuiteOutcome as NNOutcome
    from hessopt.bench.nn.suites import NNSuite

__all__ = ["main", "build_parser"]

DEFAULT_STORE = "results/functions.sqlite"
DEFAULT_OUT = "results"
DEFAULT_NN_STORE = "results/nn.sqlite"
DEFAULT_TRAIN_STORE = "results/train.sqlite"
DEFAULT_STUDIES = "results/ogr_studies"
DEFAULT_STEP_COST = "results/step_cost"
DEFAULT_NN_STEP_TIME = "results/nn_step_time"
DEFAULT_HF_STUDY = "results/hf_study"
DEFAULT_HESSCALE_STUDY = "results/hesscale"
STUDIES = ("lattice", "hessian-tracking", "trajectories", "saddle-escape")


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as 'adam,bfgs'")
    return items


def _number(convert: type, ok: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """An argparse type: ``convert(text)`` when ``ok`` accepts it, else an error naming ``what``."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_nonnegative_float = _number(float, lambda v: 0 <= v < float("inf"), "a finite number >= 0")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a finite number > 0")


def _seeds(text: str) -> tuple[int, ...]:
    """``N`` (seeds 0..N-1; for tuning seeds 10000..10000+N-1, see _bench_nn) or a list ``s,t,...``."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count N or a list such as 0,1,2, got {text!r}"
        ) from None
    if (len(values) == 1 and values[0] < 1) or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected a count N >= 1 or distinct seeds >= 0, got {text!r}")
    return values


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 1/4, got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"shard i/n needs 1 <= i <= n, got {text!r}")
    return i, n


def _version() -> str:
    from hessopt import __version__

    return __version__


def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: a process pool of --workers processes (default); ray: one Ray task per run",
    )
    parser.add_argument(
        "--address",
        help="with --executor ray: the Ray cluster to use (e.g. auto, ray://head:10001); default: a local "
        "Ray instance with --workers CPUs",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hessopt`` command."""
    parser = argparse.ArgumentParser(prog="hessopt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"hessopt {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="run a benchmark suite into a results store")
    suites = bench.add_subparsers(dest="suite", required=True, metavar="SUITE")
    fn = suites.add_parser(
        "functions",
        help="test-function protocol (docs/benchmarks/functions.md): 9 functions x methods x starts",
        description="Run the test-function suite. Full protocol: 200 starts x 2000 steps; --quick: "
        "20 starts x 250 steps. Runs already in the store are skipped, so an interrupted suite resumes.",
    )
    fn.add_argument("--quick", action="store_true", help="20 starts x 250 steps, 5 tuning starts")
    fn.add_argument("--starts", type=_positive_int, help="starts per function and method (seeds 42 + i)")
    fn.add_argument("--steps", type=_positive_int, help="iterations per run")
    fn.add_argument("--tune-starts", type=_positive_int, help="tuning starts (seeds 10000 + i)")
    fn.add_argument(
        "--noise-std",
        type=_nonnegative_float,
        default=0.0,
        help="Gaussian gradient noise per coordinate (default 0: exact gradients)",
    )
    fn.add_argument(
        "--methods", type=_csv, help="comma-separated method names (default: all; see `hessopt list`)"
    )
    fn.add_argument(
        "--functions", type=_csv, help="comma-separated function names (default: the protocol's nine)"
    )
    fn.add_argument("--store", default=DEFAULT_STORE, help=f"SQLite results file (default {DEFAULT_STORE})")
    fn.add_argument(
        "--shard", type=_shard, default=(1, 1), help="run only shard i of n (e.g. 2/4); merge later"
    )
    fn.add_argument(
        "--workers",
        type=_positive_int,
        default=min(2, os.cpu_count() or 1),
        help="processes for per-start methods (default: min(2, CPU count))",
    )
    _add_executor_options(fn)
    fn.add_argument("--no-progress", action="store_true", help="no progress bar")

    hs = suites.add_parser(
        "hesscale",
        help="HesScale accuracy study: every diagonal estimator's error against the exact diagonal",
        description="Run the HesScale accuracy study (hessopt.bench.studies.hesscale_accuracy): "
        "6-16-16-16-10 tanh, ReLU and sigmoid networks, the L1 error of every diagonal estimator "
        "normalised by HesScale's; "
        "writes a Markdown fragment, JSON and a bar chart into --out. The cost study is "
        "`python benchmarks/hesscale_cost.py`.",
    )
    hs.add_argument("--quick", action="store_true", help="10 seeds x 10 samples (default 40 x 1000)")
    hs.add_argument(
        "--out", default=DEFAULT_HESSCALE_STUDY, help=f"output directory (default {DEFAULT_HESSCALE_STUDY})"
    )

    hf = suites.add_parser(
        "hf",
        help="Hessian-free studies: BDHF vs HF at curvature fractions 1, 1/4, 1/8, vs tuned Adam",
        description="Run the Hessian-free study (hessopt.bench.studies.hessian_free): the deep autoencoder, "
        "the 3-layer LSTM on 7x7 pooled images, a small ResNet (Fashion-MNIST when installed, else MNIST-5k) "
        "and the digits autoencoder; writes a Markdown fragment, JSON and PNGs into --out.",
    )
    hf.add_argument("--quick", action="store_true", help="small models and budgets, one seed (make bench)")
    hf.add_argument("--experiments", type=_csv, help="comma-separated subset (default: all four)")
    hf.add_argument("--seeds", type=_seeds, help="a count N (seeds 0..N-1) or a list (default: 3; quick 1)")
    hf.add_argument("--out", default=DEFAULT_HF_STUDY, help=f"output directory (default {DEFAULT_HF_STUDY})")

    studies = suites.add_parser(
        "ogr-studies",
        help="OGR studies: Duda's noisy lattice protocol, Hessian tracking, 2-D trajectories, saddle escape",
        description="Run the OGR studies, each writing a Markdown fragment, JSON and PNGs into --out; "
        "`hessopt report` includes them.",
    )
    studies.add_argument("--quick", action="store_true", help="fewer noise seeds and steps")
    studies.add_argument(
        "--only", type=_csv, help=f"comma-separated subset of {', '.join(STUDIES)} (default: all)"
    )
    studies.add_argument(
        "--out", default=DEFAULT_STUDIES, help=f"output directory (default {DEFAULT_STUDIES})"
    )
    studies.add_argument(
        "--workers", type=_positive_int, default=1, help="processes for the lattice study (default 1)"
    )

    nn = suites.add_parser(
        "nn",
        help="neural-network suite: problems x optimizers x seeds, tuned on separate seeds",
        description="Run a neural-network suite (hessopt.bench.nn.suite): quick = embedded data "
        "(quadratic_deep, digits, MNIST-1D, MNIST-5k), full = Fashion-MNIST. Each (problem, method) is "
        "tuned on a log grid of learning rates on the tuning seeds, then run on the evaluation seeds. "
        "Runs already in the store are skipped, so an interrupted suite resumes.",
    )
    nn.add_argument(
        "--suite",
        dest="nn_suite",
        choices=("quick", "full"),
        default="quick",
        help="which suite (default quick)",
    )
    nn.add_argument("--problems", type=_csv, help="comma-separated subset of the suite's problems")
    nn.add_argument("--methods", type=_csv, help="comma-separated subset of the suite's methods")
    nn.add_argument(
        "--seeds", type=_seeds, help="evaluation seeds: a count N (seeds 0..N-1) or a list (default: suite's)"
    )
    nn.add_argument(
        "--tune-seeds",
        type=_seeds,
        help="tuning seeds: a count N (seeds 10000..10000+N-1) or a list (default: suite's)",
    )
    nn.add_argument("--epochs", type=_positive_float, help="override every problem's budget: epochs")
    nn.add_argument("--steps", type=_positive_int, help="override every problem's budget: steps")
    nn.add_argument(
        "--store", default=DEFAULT_NN_STORE, help=f"SQLite results file (default {DEFAULT_NN_STORE})"
    )
    nn.add_argument("--shard", type=_shard, default=(1, 1), help="run only shard i of n (e.g. 2/4)")
    nn.add_argument(
        "--workers",
        type=_positive_int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes, one torch thread each (default: min(2, CPU count))",
    )
    _add_executor_options(nn)
    nn.add_argument("--device", default="cpu", help="cpu (default) or cuda: where every run trains")
    nn.add_argument("--no-progress", action="store_true", help="no progress bar")

    rep = sub.add_parser("report", help="write report.md and figures from a results store")
    rep.add_argument(
        "--store",
        action="append",
        help="a SQLite results file; repeat for several (default: those of "
        f"{DEFAULT_STORE} and {DEFAULT_NN_STORE} that exist)",
    )
    rep.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    rep.add_argument(
        "--studies",
        type=_csv,
        default=[
            DEFAULT_STUDIES,
            DEFAULT_HESSCALE_STUDY,
            DEFAULT_HF_STUDY,
            DEFAULT_STEP_COST,
            DEFAULT_NN_STEP_TIME,
        ],
        help="comma-separated folders whose study fragments (*.md) are appended when present (default "
        f"{DEFAULT_STUDIES},{DEFAULT_HESSCALE_STUDY},{DEFAULT_HF_STUDY},{DEFAULT_STEP_COST},"
        f"{DEFAULT_NN_STEP_TIME})",
    )

    merge = sub.add_parser("merge", help="merge results stores (e.g. shards) into DST, deduplicating runs")
    merge.add_argument("dst", help="destination store (created if missing)")
    merge.add_argument("srcs", nargs="+", metavar="SRC", help="source stores")

    tr = sub.add_parser(
        "train",
        help="train one problem with one method, recorded like a suite run (torchrun: data-parallel)",
        description="Train one neural-network problem with one registered method and store the run "
        "(suite nn-train). Under `torchrun --nproc-per-node N -m hessopt train ...` the N processes train "
        "with DistributedDataParallel (gloo on the CPU, NCCL on CUDA), each on its share of every batch.",
    )
    tr.add_argument("problem", help="a registered problem (see `hessopt list`)")
    tr.add_argument("--method", required=True, help="a method of the NN suite (see `hessopt list`)")
    tr.add_argument(
        "--config",
        help="JSON object of hyper-parameters: the tuned ones are required, e.g. '{\"lr\": 0.01}'",
    )
    tr.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed (default 0)")
    tr.add_argument("--epochs", type=_positive_float, help="override the problem's budget: epochs")
    tr.add_argument("--steps", type=_positive_int, help="override the problem's budget: steps")
    tr.add_argument("--device", default="cpu", help="cpu (default) or cuda (torchrun: cuda:LOCAL_RANK)")
    tr.add_argument(
        "--store", default=DEFAULT_TRAIN_STORE, help=f"SQLite results file (default {DEFAULT_TRAIN_STORE})"
    )
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    sub.add_parser("list", help="list the registered methods and test functions")
    return parser


def _warn(message: str) -> None:
    print(f"hessopt: warning: {message}", file=sys.stderr)


def _check_workers(workers: int) -> None:
    """Warn when more workers than CPUs are asked for (the invocation records it too)."""
    cpus = os.cpu_count() or 1
    if workers > cpus:
        _warn(
            f"--workers {workers} exceeds the {cpus} CPUs of this machine: the runs compete for cores, "
            "so their timings are slower (the store's invocation records it)"
        )


def _finish(
    label: str,
    outcome: FunctionsOutcome | NNOutcome,
    t0: float,
    store: str,
) -> int:
    """Print an invocation's summary (and what another process holds); return the exit status."""
    if outcome.held:
        print(
            f"hessopt: {outcome.held} runs left to another process that claimed them "
            f"({'; '.join(outcome.holders)}); re-run the same command after it ends to complete what remains",
            file=sys.stderr,
        )
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(outcome.by_status.items())) or "none"
    print(
        f"hessopt: {label}{outcome.executed} runs in {time.perf_counter() - t0:.1f} s ({statuses}); "
        f"{outcome.skipped} of {outcome.planned} already stored; {outcome.tuned} tunings; store {store}"
    )
    failed = outcome.by_status.get("failed", 0)
    if failed:
        print(
            f"hessopt: {failed} runs failed (see the report); they are retried by the next invocation",
            file=sys.stderr,
        )
        return 1
    return 0


def _bench_functions(args: argparse.Namespace, command: str) -> int:
    from hessopt.bench.functions import protocol as fp
    from hessopt.bench.functions import suite as fs
    from hessopt.bench.harness.store import ResultStore

    # every name is checked before the store is opened (and perhaps created)
    fp.resolve_functions(args.functions)
    fs.resolve_methods(args.methods)
    _check_workers(args.workers)
    base = fp.QUICK if args.quick else fp.FULL
    protocol = fp.Protocol(
        starts=args.starts or base.starts,
        steps=args.steps or base.steps,
        noise_std=args.noise_std,
        tune_starts=args.tune_starts or base.tune_starts,
    )
    t0 = time.perf_counter()
    with ResultStore(args.store) as store:
        outcome = fs.run_suite(
            store,
            functions=args.functions,
            methods=args.methods,
            protocol=protocol,
            shard=args.shard,
            workers=args.workers,
            progress=not args.no_progress,
            command=command,
            executor=args.executor,
            address=args.address,
        )
    return _finish("", outcome, t0, args.store)


def _nn_suite(args: argparse.Namespace) -> tuple[NNSuite, list]:
    """The suite the arguments ask for, every name checked, and refused when a part asked for cannot run.

    Parts of the default suite that cannot run here (missing data or packages) are warned about;
    problems or methods named with ``--problems``/``--methods`` must run, and so must something.
    """
    import dataclasses

    from hessopt.bench.nn import suite as nn_suite
    from hessopt.bench.nn.suites import get_suite
    from hessopt.problems.registry import Budget

    suite = get_suite(args.nn_suite)
    changes: dict = {}
    if args.problems:
        changes["problems"] = tuple(args.problems)
    if args.methods:
        changes["methods"] = tuple(args.methods)
    if args.seeds:
        changes["evaluation_seeds"] = tuple(range(args.seeds[0])) if len(args.seeds) == 1 else args.seeds
    if args.tune_seeds:
        t = args.tune_seeds
        changes["tuning_seeds"] = tuple(range(10_000, 10_000 + t[0])) if len(t) == 1 else t
    if args.epochs or args.steps:
        changes["budget"] = Budget(epochs=args.epochs, steps=args.steps)
    suite = dataclasses.replace(suite, **changes)
    left_out = nn_suite.skips(suite)
    for skip in left_out:
        if skip.kind == "data" and args.problems:
            raise ValueError(f"{skip.reason} (asked for with --problems)")
        if skip.kind == "package" and args.methods:
            raise ValueError(f"{skip.reason} (asked for with --methods)")
    excluded = {(s.problem, s.method) for s in left_out}
    runnable = [
        (p, m) for p in suite.problems for m in suite.methods if not excluded & {(p, ""), ("", m), (p, m)}
    ]
    if not runnable:
        reasons = "; ".join(s.reason for s in left_out)
        raise ValueError(f"nothing of suite {suite.name!r} can run here: {reasons}")
    return suite, left_out


def _bench_nn(args: argparse.Namespace, command: str) -> int:
    from hessopt.bench.harness.store import ResultStore
    from hessopt.bench.nn import suite as nn_suite

    suite, left_out = _nn_suite(args)  # before the store is opened (and perhaps created)
    if args.device.startswith("cuda") and not torch_cuda_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    _check_workers(args.workers)
    t0 = time.perf_counter()
    with ResultStore(args.store) as store:
        for skip in left_out:  # once the store is known to be usable
            if skip.kind == "design":
                print(f"hessopt: {skip}", file=sys.stderr)
            else:
                _warn(f"{skip} (the report lists it)")
        outcome = nn_suite.run_suite(
            store,
            suite,
            shard=args.shard,
            workers=args.workers,
            progress=not args.no_progress,
            command=command,
            executor=args.executor,
            address=args.address,
            device=args.device,
        )
    for note in outcome.notes[len(outcome.skips) :]:
        print(f"hessopt: {note}", file=sys.stderr)
    return _finish(f"{suite.name}: ", outcome, t0, args.store)


def _output_folder(path: str, option: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option} {path} is a file; pass a folder (it is created if missing)")


def _bench_studies(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hessopt.bench.studies import hessian_tracking, lattice, saddle_escape, trajectories

    chosen = args.only or list(STUDIES)
    unknown = sorted(set(chosen) - set(STUDIES))
    if unknown:
        raise ValueError(f"unknown studies {unknown}; choose from {', '.join(STUDIES)}")
    _output_folder(args.out, "--out")
    _check_workers(args.workers)
    out = Path(args.out)
    for name in chosen:
        t0 = time.perf_counter()
        if name == "lattice":
            lattice.run(out, quick=args.quick, workers=args.workers)
        elif name == "hessian-tracking":
            hessian_tracking.run(out, quick=args.quick)
        elif name == "saddle-escape":
            saddle_escape.run(out, quick=args.quick)
        else:
            trajectories.run(out, quick=args.quick)
        print(f"hessopt: study {name} written to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _bench_hesscale(args: argparse.Namespace, command: str) -> int:
    from hessopt.bench.studies import hesscale_accuracy

    _output_folder(args.out, "--out")
    t0 = time.perf_counter()
    hesscale_accuracy.write(args.out, quick=args.quick, command=command)
    print(f"hessopt: HesScale accuracy study written to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _bench_hf(args: argparse.Namespace, command: str) -> int:
    from hessopt.bench.studies import hessian_free

    seeds = None
    if args.seeds:
        seeds = tuple(range(args.seeds[0])) if len(args.seeds) == 1 else tuple(args.seeds)
    config = hessian_free.Config(
        size="quick" if args.quick else "full",
        experiments=tuple(args.experiments or hessian_free.EXPERIMENTS),
        seeds=seeds,
    )
    _output_folder(args.out, "--out")
    t0 = time.perf_counter()
    hessian_free.write(config, args.out, command=command)
    print(f"hessopt: Hessian-free study written to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _report(args: argparse.Namespace, command: str) -> int:
    from hessopt.bench.report import write_report

    t0 = time.perf_counter()
    stores = args.store
    if stores is None:
        stores = [s for s in (DEFAULT_STORE, DEFAULT_NN_STORE, DEFAULT_TRAIN_STORE) if os.path.isfile(s)]
        if not stores:
            raise ValueError(
                f"neither {DEFAULT_STORE} nor {DEFAULT_NN_STORE} exists: run `hessopt bench functions` or "
                "`hessopt bench nn` first, or pass --store PATH"
            )
    _output_folder(args.out, "--out")
    path = write_report(stores, args.out, command=command, studies=args.studies)
    print(f"hessopt: wrote {path} in {time.perf_counter() - t0:.1f} s")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from hessopt.bench.harness.store import merge

    written = merge(args.dst, *args.srcs)
    print(f"hessopt: merged {len(args.srcs)} stores into {args.dst}: {written} new runs")
    return 0


def _list() -> int:
    from hessopt.bench.methods import SUITES, all_methods
    from hessopt.problems.functions import FUNCTION_NAMES, get_function, protocol_functions
    from hessopt.problems.registry import all_problems

    print("methods (the suites each runs in; [tunes ...] in its full grid):")
    for m in all_methods():
        suites = ", ".join(s for s in SUITES if s in m.suites) or "-"
        tuned = sorted({k for setting in m.suites.values() for k in setting.tune})
        extras = f" [tunes {', '.join(tuned)}]" if tuned else ""
        extras += " [batched]" if m.coupling == "element" else ""
        extras += " [not installed]" if m.missing_requirement() else ""
        print(f"  {m.name:<14} {m.drive:<9} suites: {suites}{extras}\n      {m.summary}")
    protocol = {f.name for f in protocol_functions()}
    print("functions (* = in the protocol; n-D ones at 10-D):")
    for name in FUNCTION_NAMES:
        f = get_function(name)
        mark = "*" if name in protocol else " "
        print(f"  {mark} {name:<17} dim {f.dim:<3} box [{f.lower:g}, {f.upper:g}]  f_min {f.f_min:.6g}")
    print("neural-network problems:")
    for p in all_problems():
        target = f"{p.target.metric} {'>=' if p.target.maximize else '<='} {p.target.value:g}"
        print(f"  {p.name:<19} batch {p.batch_size:<4} target {target}\n      {p.summary}")
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C (runs stored, workers stopped)."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`_Terminated` (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


_BENCH_EXTRA = {"scipy": "scipy", "matplotlib": "matplotlib", "rich": "rich", "markdown_it": "markdown-it-py"}


def _missing_package(exc: ModuleNotFoundError) -> str:
    name = (exc.name or str(exc)).split(".")[0]
    if name in _BENCH_EXTRA:
        return (
            f"the package {_BENCH_EXTRA[name]!r} is not installed; the benchmark harness needs the bench "
            "extra: pip install 'hessopt[bench]'"
        )
    return f"the Python package {name!r} is not installed; install it (pip install {name}) and re-run"


def _train(args: argparse.Namespace, command: str) -> int:
    from hessopt.bench.nn.train import parse_config, train
    from hessopt.problems.registry import Budget

    if args.device.startswith("cuda") and not torch_cuda_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    budget = Budget(epochs=args.epochs, steps=args.steps) if args.epochs or args.steps else None
    result = train(
        args.problem,
        args.method,
        parse_config(args.config),
        seed=args.seed,
        store=args.store,
        device=args.device,
        budget=budget,
        progress=not args.no_progress,
        command=command,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        s = result.summary
        acc = s.get("final_test_accuracy")
        print(
            f"hessopt train: {args.problem} / {args.method}: {result.status}, {s['steps']} steps in "
            f"{s['wall_time']:.1f} s, train loss {s['final_train_loss']}, test loss {s['final_test_loss']}"
            + (f", test accuracy {acc}" if acc is not None else "")
            + f"; stored in {args.store}"
        )
        if result.error:
            print(f"hessopt train: the run failed: {result.error}", file=sys.stderr)
    return 1 if result.status == "failed" else 0


def torch_cuda_available() -> bool:
    """Whether torch sees a CUDA device (imported lazily: ``hessopt list`` stays fast)."""
    import torch

    return torch.cuda.is_available()


def _run(args: argparse.Namespace, command: str) -> int:
    if args.command == "bench":
        if args.suite == "ogr-studies":
            return _bench_studies(args)
        if args.suite == "hf":
            return _bench_hf(args, command)
        if args.suite == "hesscale":
            return _bench_hesscale(args, command)
        if args.suite == "nn":
            return _bench_nn(args, command)
        return _bench_functions(args, command)
    if args.command == "report":
        return _report(args, command)
    if args.command == "merge":
        return _merge(args)
    if args.command == "train":
        return _train(args, command)
    return _list()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hessopt`` console script; returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status (see the module docstring). Every error a user can cause is printed as one
        line on stderr, never as a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = shlex.join(["hessopt", *argv])
    prefix = f"hessopt {args.command}: error:"
    try:
        with _sigterm_as_interrupt():
            return _run(args, command)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        print(
            f"hessopt: {what}; finished runs are stored, re-run the same command to resume",
            file=sys.stderr,
        )
        return 143 if isinstance(exc, _Terminated) else 130
    except ModuleNotFoundError as exc:
        print(f"{prefix} {_missing_package(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad names, unusable stores (StoreError), missing data
        print(f"{prefix} {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"{prefix} the results store failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{prefix} {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
