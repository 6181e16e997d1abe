"""The test-function suite: the protocol of the 2025 BFGS/OGR comparison, run and stored.

For every function (default: :func:`~hessopt.problems.functions.protocol_functions`, the nine of the
protocol), every method of :mod:`hessopt.bench.methods` and every start ``i`` (uniform in the box,
seed ``42 + i``), one run is ``steps`` iterations in float64 on the CPU with exact gradients
(``noise_std > 0`` adds N(0, noise_std^2) per coordinate to every gradient the method sees, Duda's
noisy variant, drawn from a generator of the start's own, seeded ``NOISE_SEED_OFFSET + seed``; the
recorded f is exact). Step-size methods are first tuned per function on separate seeds
(:mod:`hessopt.bench.harness.tuning`, :func:`tune_on_function`). Rules:

* **clamping**: after every step θ is clamped to the box. Closure methods (line searches, L-BFGS)
  are clamped after their whole step, so their trial points may leave the box during a line search,
  and a clamp that bites makes the next secant pair (s, y) disagree with the step the optimizer
  took (as in the 2025 benchmark code). ``scipy-bfgs`` runs **unclamped**: scipy's BFGS has no box.
* **metric**: f is evaluated at θ_0 and after every step (i.e. before each step, plus once after the
  last one); the run's value at a budget c is the best ``f - f_min`` among θ_0..θ_c. One run of
  ``steps`` iterations thus gives every checkpoint c ∈ {50, 250, 2000} ∩ [1, steps] (and ``steps``).
  This favours methods that visit low values transiently (docs/benchmarks/functions.md).
* **stopping**: a run stops early when ‖∇f(θ_k)‖_2 < ``gtol`` = 1e-8 (exact gradients only: with
  noise no run stops early); later checkpoints keep the best value reached. A closure method also
  stops ("stalled") when θ has not changed, bit for bit, in ``stall_steps`` = 5 consecutive steps
  (exact gradients only): hessopt's BFGS, for one, leaves θ in place and restarts from H = I when its
  line search finds no lower point, and with a deterministic closure it then repeats that failed
  search at every step (25 evaluations each) without moving again. The best value cannot change
  while θ stands still, so only the evaluation count and the wall time are affected; scipy's BFGS
  ends the same situation itself ("precision loss").
* **divergence**: a non-finite f or gradient ends the run as ``diverged`` with the best value so far
  (never dropped); an exception ends it as ``failed`` (retried by the next invocation).
* **recorded** per run: best ``f - f_min`` at the checkpoints and at log-spaced steps (curve),
  final f, gradient norm, steps taken, number of (f, ∇f) evaluations the method consumed (gradient
  methods: one per step; closure methods: closure calls, each ``step()`` included; scipy: calls of
  ``fun``), why it stopped, and wall time.

The protocol's own evaluation at θ_k is memoised, so a closure method's first closure call of a step
(at θ_k) reuses it; it is counted as the method's evaluation, not charged twice.

Speed: per-step Python overhead dominates (one autograd evaluation of a 10-D function costs ~0.1-0.4
ms). Elementwise first-order methods (``SuiteMethod.batchable``: Adam, SGD with momentum) therefore run all
starts of a function as the rows of one ``(n, dim)`` parameter; rows are independent (the update is
coordinate-wise and ``value_and_grad`` differentiates ``f(x).sum()``), so a row that has stopped
is simply no longer observed (stepping it on is cheaper than slicing it out and cannot affect the
others), and per-row generators make the noise independent of the batch. Their stored wall time is the batch's
time divided by its rows (``summary["batch"]`` says how many). Per-start methods may run in worker
processes (``workers``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize
import torch

from hessopt.bench.functions.protocol import FULL, SUITE, Protocol, problem_id, resolve_functions
from hessopt.bench.harness.environment import invocation_environment
from hessopt.bench.harness.scheduling import check_executor, drain, suite_session
from hessopt.bench.harness.store import ResultStore, RunRecord, canonical_json
from hessopt.bench.harness.tuning import TuningOutcome, tune
from hessopt.bench.methods import SuiteMethod, get_method, methods_in
from hessopt.problems.functions import BenchmarkFunction

__all__ = [
    "StartResult",
    "SuiteOutcome",
    "run_config",
    "run_grid",
    "run_starts",
    "resolve_methods",
    "run_suite",
    "tune_on_function",
]

NOISE_SEED_OFFSET = 1_000_000
"""The gradient noise of the start with seed s comes from a generator seeded ``NOISE_SEED_OFFSET + s``."""
CHUNK = 8
"""Starts per task of a per-start method (the unit of work sent to a worker process)."""

_RUNNING, _BUDGET, _GTOL, _NONFINITE, _ERROR, _EXTERNAL, _STALLED = range(7)
_STOP_NAMES = {
    _BUDGET: "budget",
    _GTOL: "gtol",
    _NONFINITE: "nonfinite",
    _ERROR: "error",
    _EXTERNAL: "scipy",
    _STALLED: "stalled",
}
_STATUS = {
    _BUDGET: "done",
    _GTOL: "done",
    _EXTERNAL: "done",
    _STALLED: "done",
    _NONFINITE: "diverged",
    _ERROR: "failed",
}


def run_config(
    fn: BenchmarkFunction, method: SuiteMethod, hyper: dict[str, Any], protocol: Protocol
) -> dict[str, Any]:
    """The stored configuration of a run (part of its identity in the store)."""
    return {
        "dim": fn.dim,
        "steps": protocol.steps,
        "noise_std": float(protocol.noise_std),
        "gtol": float(protocol.gtol),
        "stall_steps": protocol.stall_steps if protocol.use_gtol and method.drive == "closure" else 0,
        "dtype": "float64",
        "box": "unclamped" if method.drive == "scipy" else "clamp",
        "hyper": hyper,
    }


@dataclass
class StartResult:
    """Outcome of one start: ``curve`` maps each of ``Protocol.record_steps`` to the best f - f_min."""

    seed: int
    status: str
    stop: str
    curve: dict[int, float]
    final_f: float
    grad_norm: float
    steps_taken: int
    n_evals: int
    wall_time: float
    batch: int = 1
    error: str | None = None
    message: str | None = None

    def summary(self, protocol: Protocol) -> dict[str, Any]:
        """The run summary of every start, for the store."""
        out: dict[str, Any] = {
            "best_f": {str(c): self.curve[c] for c in protocol.checkpoints},
            "final_f": self.final_f,
            "grad_norm": self.grad_norm,
            "steps_taken": self.steps_taken,
            "n_evals": self.n_evals,
            "stop": self.stop,
            "batch": self.batch,
        }
        if self.message:
            out["message"] = self.message
        return out

    def record(
        self, fn: BenchmarkFunction, method: str, config: dict[str, Any], protocol: Protocol
    ) -> RunRecord:
        """Record one evaluation of every row at step ``k``."""
        return RunRecord(
            suite=SUITE,
            problem=problem_id(fn),
            method=method,
            config=config,
            seed=self.seed,
            status=self.status,
            summary=self.summary(protocol),
            wall_time=self.wall_time,
            error=self.error,
            metrics=[(s, "best_f", v) for s, v in sorted(self.curve.items())],
        )


class _Tracker:
    """Best-so-far bookkeeping for n runs in lockstep (n = 1 for per-start methods).

    Plain Python floats: for one run a tensor per quantity would cost more than the step itself.
    """

    def __init__(self, n: int, protocol: Protocol, *, stall_steps: int = 0) -> None:
        self.protocol = protocol
        self.best = [math.inf] * n
        self.final = [math.nan] * n
        self.gnorm = [math.nan] * n
        self.steps_taken = [0] * n
        self.code = [_RUNNING] * n
        self.still = [0] * n
        self.active = list(range(n))
        self.stall_steps = stall_steps
        self.gtol = protocol.gtol if protocol.use_gtol else -math.inf
        self.record_set = frozenset(protocol.record_steps)
        self.curve: dict[int, list[float]] = {}
        self.message: str | None = None
        self.error: str | None = None

    def observe(self, k: int, fdiff: Sequence[float], gnorm: Sequence[float]) -> bool:
        """Account for f(θ_k) - f_min and ‖g(θ_k)‖ of every row; True while some row goes on."""
        last = k >= self.protocol.steps
        for i in self.active:
            f, gn = fdiff[i], gnorm[i]
            self.final[i], self.gnorm[i], self.steps_taken[i] = f, gn, k
            if not (math.isfinite(f) and math.isfinite(gn)):
                self.code[i] = _NONFINITE
                continue
            if f < self.best[i]:
                self.best[i] = f
            if gn < self.gtol:
                self.code[i] = _GTOL
            elif self.stall_steps and self.still[i] >= self.stall_steps:
                self.code[i] = _STALLED
            elif last:
                self.code[i] = _BUDGET
        self.active = [i for i in self.active if self.code[i] == _RUNNING]
        if k in self.record_set:
            self.curve[k] = list(self.best)
        return bool(self.active)

    def moved(self, i: int, changed: bool) -> None:
        """Count the consecutive steps in which row i's θ did not change."""
        self.still[i] = 0 if changed else self.still[i] + 1

    def stop_all(self, code: int, *, error: str | None = None, message: str | None = None) -> None:
        for i in self.active:
            self.code[i] = code
        self.active = []
        self.error, self.message = error, message

    def results(
        self, seeds: Sequence[int], n_evals: Sequence[int], wall: float, batch: int
    ) -> list[StartResult]:
        steps = self.protocol.record_steps
        out = []
        for i, seed in enumerate(seeds):
            code = self.code[i]
            out.append(
                StartResult(
                    seed=int(seed),
                    status=_STATUS[code],
                    stop=_STOP_NAMES[code],
                    curve={s: (self.curve[s][i] if s in self.curve else self.best[i]) for s in steps},
                    final_f=self.final[i],
                    grad_norm=self.gnorm[i],
                    steps_taken=self.steps_taken[i],
                    n_evals=int(n_evals[i]),
                    wall_time=wall,
                    batch=batch,
                    error=self.error if code == _ERROR else None,
                    message=self.message if code == _EXTERNAL else None,
                )
            )
        return out


def _starts(fn: BenchmarkFunction, seeds: Sequence[int]) -> torch.Tensor:
    """Start of each seed (start i of ``sample_starts(n, seed0=s0)`` is the start of seed s0 + i)."""
    return torch.cat([fn.sample_starts(1, seed0=int(s), dtype=torch.float64) for s in seeds])


def _noise_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(NOISE_SEED_OFFSET + int(s)) for s in seeds]


def _run_batched(
    fn: BenchmarkFunction,
    method: SuiteMethod,
    hypers: Sequence[dict[str, Any]],
    seeds: Sequence[int],
    protocol: Protocol,
) -> list[list[StartResult]]:
    """All seeds, under each of ``hypers``, as the rows of one elementwise gradient method's step.

    Configuration j gets its own (n, dim) tensor in its own parameter group (the configurations may
    differ only in the method's tuned, per-group hyper-parameters such as ``lr``); one evaluation of
    the concatenated (len(hypers) * n, dim) points serves all of them. Returns one list per configuration.
    """
    base = {k: v for k, v in hypers[0].items() if k not in method.tune}
    for h in hypers:
        if {k: v for k, v in h.items() if k not in method.tune} != base:
            raise ValueError(
                f"batched configurations of {method.name!r} may differ only in {sorted(method.tune)}"
            )
    n, n_cfg, std = len(seeds), len(hypers), protocol.noise_std
    rows = n * n_cfg
    gens = [gen for _ in hypers for gen in _noise_generators(seeds)] if std > 0 else []  # one per row
    x0 = _starts(fn, seeds)
    xs = [x0.clone() for _ in hypers]
    groups = [{"params": [x], **{k: h[k] for k in method.tune}} for x, h in zip(xs, hypers, strict=True)]
    opt = method.build(groups, hypers[0])
    tr = _Tracker(rows, protocol)
    t0 = time.perf_counter()
    try:
        for k in range(protocol.steps + 1):
            x_all = torch.cat(xs) if n_cfg > 1 else xs[0]
            f, g = fn.value_and_grad(x_all)
            if not tr.observe(k, (f - fn.f_min).tolist(), torch.linalg.vector_norm(g, dim=-1).tolist()):
                break
            if std > 0:
                for i in tr.active:
                    g[i] += std * torch.randn(fn.dim, generator=gens[i], dtype=g.dtype)
            for j, x in enumerate(xs):
                x.grad = g[j * n : (j + 1) * n]
            opt.step()
            with torch.no_grad():
                for x in xs:
                    x.copy_(fn.clamp(x))
    except Exception as exc:  # noqa: BLE001 - any optimizer error is recorded as a failed run
        tr.stop_all(_ERROR, error=f"{type(exc).__name__}: {exc}")
    wall = (time.perf_counter() - t0) / rows
    results = tr.results(list(seeds) * n_cfg, tr.steps_taken, wall, batch=rows)
    return [results[j * n : (j + 1) * n] for j in range(n_cfg)]


class _Memo:
    """(f, ∇f) at the last few points, so the protocol's and the method's evaluations share work."""

    def __init__(self, fn: BenchmarkFunction) -> None:
        self.fn = fn
        self.entries: deque[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = deque(maxlen=4)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for xs, f, g in self.entries:
            if torch.equal(xs, x):
                return f, g
        f, g = self.fn.value_and_grad(x)
        self.entries.append((x.detach().clone(), f, g))
        return f, g


def _run_closure(
    fn: BenchmarkFunction, method: SuiteMethod, hyper: dict[str, Any], seed: int, protocol: Protocol
) -> StartResult:
    """One start of a closure method (one ``step(closure)`` per iteration, clamped after it)."""
    std = protocol.noise_std
    gen = _noise_generators([seed])[0] if std > 0 else None
    x = _starts(fn, [seed])[0]
    memo = _Memo(fn)
    evals = 0

    def closure() -> torch.Tensor:
        nonlocal evals
        evals += 1
        f, g = memo(x)
        if gen is not None:
            g = g + std * torch.randn(g.shape, generator=gen, dtype=g.dtype)
        x.grad = g.clone()
        return f

    tr = _Tracker(1, protocol, stall_steps=protocol.stall_steps if protocol.use_gtol else 0)
    t0 = time.perf_counter()
    try:
        opt = method.build([x], hyper)
        for k in range(protocol.steps + 1):
            f, g = memo(x)
            if not tr.observe(k, [float(f) - fn.f_min], [float(torch.linalg.vector_norm(g))]):
                break
            before = x.detach().clone()
            opt.step(closure)
            with torch.no_grad():
                x.copy_(fn.clamp(x))
            tr.moved(0, not torch.equal(x, before))
    except Exception as exc:  # noqa: BLE001
        tr.stop_all(_ERROR, error=f"{type(exc).__name__}: {exc}")
    return tr.results([seed], [evals], time.perf_counter() - t0, batch=1)[0]


def _run_scipy(fn: BenchmarkFunction, hyper: dict[str, Any], seed: int, protocol: Protocol) -> StartResult:
    """One start of scipy's BFGS (unclamped; maxiter = steps; gtol in the 2-norm)."""
    std = protocol.noise_std
    gen = _noise_generators([seed])[0] if std > 0 else None
    x0 = _starts(fn, [seed])[0].numpy().copy()
    memo = _Memo(fn)
    evals = 0
    k = 0

    def exact(z: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return memo(torch.from_numpy(np.array(z, dtype=np.float64)))

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evals
        evals += 1
        f, g = exact(z)
        if gen is not None:
            g = g + std * torch.randn(g.shape, generator=gen, dtype=g.dtype)
        return float(f), g.numpy().copy()

    tr = _Tracker(1, protocol)

    def observe(z: np.ndarray) -> bool:
        f, g = exact(z)
        return tr.observe(k, [float(f) - fn.f_min], [float(torch.linalg.vector_norm(g))])

    def callback(xk: np.ndarray) -> None:
        nonlocal k
        k += 1
        if not observe(xk):
            raise StopIteration

    t0 = time.perf_counter()
    try:
        if observe(x0):
            options = {
                "maxiter": protocol.steps,
                "gtol": protocol.gtol if protocol.use_gtol else 0.0,
                "norm": 2,
                **hyper,
            }
            try:
                res = scipy.optimize.minimize(
                    fun, x0, jac=True, method="BFGS", callback=callback, options=options
                )
                message = str(res.message)
            except StopIteration:  # scipy < 1.11 lets the callback's StopIteration through
                message = "stopped by the protocol"
            tr.stop_all(_EXTERNAL, message=message)
    except Exception as exc:  # noqa: BLE001
        tr.stop_all(_ERROR, error=f"{type(exc).__name__}: {exc}")
    return tr.results([seed], [evals], time.perf_counter() - t0, batch=1)[0]


def run_starts(
    fn: BenchmarkFunction,
    method: SuiteMethod | str,
    hyper: dict[str, Any],
    seeds: Sequence[int],
    protocol: Protocol,
) -> list[StartResult]:
    """Run ``method`` with hyper-parameters ``hyper`` from the starts of ``seeds`` on ``fn``.

    Batchable methods run all seeds as one batch, the others one seed after another.
    """
    return run_grid(fn, method, [hyper], seeds, protocol)[0]


def run_grid(
    fn: BenchmarkFunction,
    method: SuiteMethod | str,
    hypers: Sequence[dict[str, Any]],
    seeds: Sequence[int],
    protocol: Protocol,
) -> list[list[StartResult]]:
    """:func:`run_starts` for several configurations; batchable methods run them all in one batch."""
    method = get_method(method).in_suite(SUITE) if isinstance(method, str) else method
    seeds = [int(s) for s in seeds]
    if not seeds or not hypers:
        return [[] for _ in hypers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow in diverging runs: recorded, not printed
        if method.batchable:
            return _run_batched(fn, method, hypers, seeds, protocol)
        if method.drive == "scipy":
            return [[_run_scipy(fn, h, s, protocol) for s in seeds] for h in hypers]
        return [[_run_closure(fn, method, h, s, protocol) for s in seeds] for h in hypers]


def _tuning_context(fn: BenchmarkFunction, method: SuiteMethod, protocol: Protocol) -> dict[str, Any]:
    return {
        "dim": fn.dim,
        "steps": protocol.steps,
        "noise_std": float(protocol.noise_std),
        "gtol": float(protocol.gtol),
        "stall_steps": protocol.stall_steps,
        "seeds": [protocol.tune_seed0, protocol.tune_starts],
        "hyper": dict(method.hyper),
        "grid": {k: list(v) for k, v in method.tune.items()},
        "objective": f"geometric mean of best f - f_min within {protocol.steps} steps",
    }


def tune_on_function(fn: BenchmarkFunction, method: SuiteMethod | str, protocol: Protocol) -> TuningOutcome:
    """Tune ``method``'s step size(s) on ``fn`` over the protocol's tuning seeds."""
    method = get_method(method).in_suite(SUITE) if isinstance(method, str) else method

    def evaluate(configs: Sequence[dict[str, Any]], seeds: Sequence[int]) -> list[list[float]]:
        return [
            [r.curve[protocol.steps] for r in rs] for rs in run_grid(fn, method, configs, seeds, protocol)
        ]

    return tune(
        method, evaluate, tuning_seeds=protocol.tuning_seeds, evaluation_seeds=protocol.evaluation_seeds
    )


# -- the suite ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    """A unit of work for a worker process (pickled: the function object, the method by name)."""

    kind: str  # "tune" or "eval"
    fn: BenchmarkFunction
    method: str
    protocol: Protocol
    hyper: dict[str, Any] | None = None
    seeds: tuple[int, ...] = ()


def _execute(task: _Task) -> TuningOutcome | list[StartResult]:
    if task.kind == "tune":
        return tune_on_function(task.fn, task.method, task.protocol)
    assert task.hyper is not None
    return run_starts(task.fn, task.method, task.hyper, task.seeds, task.protocol)


@dataclass
class SuiteOutcome:
    """What one invocation did.

    Runs in its shard (``planned``), already stored (``skipped``), claimed by another live process
    and so left to it (``held``, with ``holders`` saying which), run now (``executed``), by status,
    tunings done, wall time.
    """

    planned: int = 0
    skipped: int = 0
    executed: int = 0
    written: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    tuned: int = 0
    held: int = 0
    holders: list[str] = field(default_factory=list)
    wall_time: float = 0.0


def resolve_methods(methods: Iterable[str] | None) -> list[SuiteMethod]:
    """The suite's methods by name (None: every method registered for the suite), each name checked."""
    names = [m.name for m in methods_in(SUITE)] if methods is None else list(methods)
    if not names:
        raise ValueError("methods must name at least one method")
    if len(set(names)) != len(names):
        raise ValueError(f"methods lists a method twice: {names}")
    return [get_method(n).in_suite(SUITE) for n in names]


def run_suite(
    store: ResultStore,
    *,
    functions: Iterable[str | BenchmarkFunction] | None = None,
    methods: Iterable[str] | None = None,
    protocol: Protocol = FULL,
    shard: tuple[int, int] = (1, 1),
    workers: int = 1,
    progress: bool = True,
    command: str | None = None,
    executor: str = "local",
    address: str | None = None,
) -> SuiteOutcome:
    """Run (the missing part of) the suite and store each run as it ends.

    ``shard = (i, n)``, 1 <= i <= n: this invocation runs the runs whose position in the canonical
    order (function, method, start) is i-1 modulo n; shards' stores combine with
    :func:`~hessopt.bench.harness.store.merge`.
    Tuning (step-size methods) runs in every shard that needs it; it is deterministic, so shards agree.
    ``workers > 1`` runs tasks (tunings, chunks of starts) in that many worker processes (forked where
    the platform allows, each with one torch thread), ``executor="ray"`` as Ray tasks (on the cluster at
    ``address``, or a local instance); the parent alone writes the store.
    ``command`` is recorded for the report. Runs and tunings are claimed in the store before they are
    computed (:meth:`ResultStore.claim`), so a second invocation on the same store skips what this one
    computes.
    """
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and 1 <= index <= count):
        raise ValueError(f"shard must be (i, n) with 1 <= i <= n, got {shard!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    check_executor(executor, address)
    fns = resolve_functions(functions)
    meths = resolve_methods(methods)
    t_start = time.perf_counter()
    if command is not None:
        store.record_invocation(SUITE, command, invocation_environment(workers))

    # The shard's seeds of every (function, method), in canonical order.
    mine: dict[tuple[int, int], list[int]] = {}
    position = 0
    for fi in range(len(fns)):
        for mi in range(len(meths)):
            for seed in protocol.evaluation_seeds:
                if position % count == index - 1:
                    mine.setdefault((fi, mi), []).append(seed)
                position += 1
    outcome = SuiteOutcome(planned=sum(len(s) for s in mine.values()))
    try:
        _run_shard(store, fns, meths, protocol, shard, mine, workers, progress, outcome, executor, address)
    finally:
        store.release_claims()
    outcome.wall_time = time.perf_counter() - t_start
    return outcome


def _run_shard(
    store: ResultStore,
    fns: list[BenchmarkFunction],
    meths: list[SuiteMethod],
    protocol: Protocol,
    shard: tuple[int, int],
    mine: dict[tuple[int, int], list[int]],
    workers: int,
    progress: bool,
    outcome: SuiteOutcome,
    executor: str,
    address: str | None,
) -> None:
    """The body of :func:`run_suite`: claim, run and store the shard's missing runs (``mine``)."""
    index, count = shard
    done = store.done_keys(SUITE)

    def note_holders(holders: Iterable[str]) -> None:
        outcome.holders.extend(h for h in dict.fromkeys(holders) if h not in outcome.holders)

    def claim_tuning(fi: int, mi: int) -> bool:
        """Whether this process may tune (function, method); else another process is tuning it."""
        fn, method = fns[fi], meths[mi]
        context = canonical_json(_tuning_context(fn, method, protocol))
        result = store.claim([(f"{SUITE}-tuning", problem_id(fn), method.name, context, 0)])
        if result.held:  # the pair's runs wait for that tuning: the other process runs them
            outcome.held += len(mine[(fi, mi)])
            note_holders(result.held.values())
        return not result.held

    def eval_tasks(fi: int, mi: int, hyper: dict[str, Any]) -> list[_Task]:
        fn, method = fns[fi], meths[mi]
        cj = canonical_json(run_config(fn, method, hyper, protocol))
        todo = [s for s in mine[(fi, mi)] if (problem_id(fn), method.name, cj, s) not in done]
        outcome.skipped += len(mine[(fi, mi)]) - len(todo)
        if todo:
            result = store.claim([(SUITE, problem_id(fn), method.name, cj, s) for s in todo])
            outcome.held += len(result.held)
            note_holders(result.held.values())
            outcome.skipped += len(result.stored)
            claimed = {k[4] for k in result.claimed}
            todo = [s for s in todo if s in claimed]
        size = len(todo) if method.batchable else CHUNK
        return [
            _Task("eval", fn, method.name, protocol, hyper, tuple(todo[j : j + size]))
            for j in range(0, len(todo), max(size, 1))
        ]

    tasks: list[_Task] = []
    pending_runs = 0
    for (fi, mi), seeds in mine.items():
        fn, method = fns[fi], meths[mi]
        if method.tune:
            chosen = store.get_tuning(
                SUITE, problem_id(fn), method.name, _tuning_context(fn, method, protocol)
            )
            if chosen is None:
                if claim_tuning(fi, mi):
                    tasks.append(_Task("tune", fn, method.name, protocol))
                    pending_runs += len(seeds)
                continue
            hyper = method.config(chosen)
        else:
            hyper = method.config()
        new = eval_tasks(fi, mi, hyper)
        tasks.extend(new)
        pending_runs += sum(len(t.seeds) for t in new)

    key_of = {(problem_id(fns[fi]), meths[mi].name): (fi, mi) for fi, mi in mine}

    # tuning first, so that tuned methods' runs can join the queue as early as possible
    queue = deque(sorted(tasks, key=lambda t: t.kind != "tune"))
    session = suite_session(
        workers,
        bool(queue),
        progress=progress,
        description=f"{SUITE} [{index}/{count}]",
        total=pending_runs,
        executor=executor,
        address=address,
    )
    with session as (pool, bar, runs_bar):

        def handle(task: _Task, result: TuningOutcome | list[StartResult]) -> list[_Task]:
            fi, mi = key_of[(problem_id(task.fn), task.method)]
            fn, method = fns[fi], meths[mi]
            if task.kind == "tune":
                assert isinstance(result, TuningOutcome)
                store.put_tuning(
                    SUITE,
                    problem_id(fn),
                    method.name,
                    _tuning_context(fn, method, protocol),
                    result.chosen,
                    result.objective,
                    result.trials,
                )
                outcome.tuned += 1
                new = eval_tasks(fi, mi, method.config(result.chosen))
                # runs already stored under the tuned configuration leave the bar
                stored = len(mine[(fi, mi)]) - sum(len(t.seeds) for t in new)
                bar.update(runs_bar, total=bar.tasks[runs_bar].total - stored)
                return new
            assert isinstance(result, list)
            config = run_config(fn, method, task.hyper or {}, protocol)
            for r in result:
                outcome.executed += 1
                outcome.written += store.add_run(r.record(fn, method.name, config, protocol))
                outcome.by_status[r.status] = outcome.by_status.get(r.status, 0) + 1
            bar.update(runs_bar, advance=len(result), description=f"{fn.name} / {method.name}")
            return []

        drain(queue, _execute, handle, pool)
