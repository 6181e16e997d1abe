"""The neural-network suites: runner, DeepOBS-style tuning, the quick and the full suite, stored in SQLite.

Protocol
--------
A *run* is one (problem, optimizer configuration, seed): :func:`run_one` trains the problem's model
(:mod:`hessopt.problems.registry`) from the seed's initialisation with the method
(:mod:`hessopt.bench.methods`) for the problem's budget, on the CPU in float32, with
``torch.get_num_threads()`` threads (one per worker process when ``workers > 1``).

* **Data order**: every epoch is a permutation of the training set drawn from
  ``torch.Generator().manual_seed(DATA_SEED_OFFSET + seed)``; the last incomplete batch is dropped. The
  model is initialised from ``seed``; the global torch RNG (Hutchinson probes of AdaHessian/SophiaH) is
  seeded with ``seed`` inside ``torch.random.fork_rng``, so a run is deterministic and leaves the
  caller's RNG alone.
* **Evaluation**: at ``E + 1`` points, steps ``round(i * total / E)`` for i = 0..E (E = the problem's
  ``evaluations``), the training loss on the first ``train_eval_size`` training samples and the test loss
  (and accuracy for classifiers) on the whole test split, in ``torch.no_grad`` mode.
* **Wall-clock time EXCLUDES evaluation** (and batch slicing): it is the sum over steps of the time from
  the forward pass to the end of ``opt.step`` (``time.perf_counter``), so time-to-target measures the
  optimizer and its gradient/curvature evaluations only. Evaluation time is stored separately.
* **Budget**: ``Budget.total_steps``; with ``Budget.seconds`` the run also stops (and is evaluated) at
  the first step whose cumulative training time passes the cap.
* **Divergence**: a non-finite mini-batch loss (checked after every step) or a non-finite evaluation
  loss ends the run as ``"diverged"``; everything measured before is kept. An exception ends it as
  ``"failed"`` (a later invocation retries it).
* **Time to target**: the first evaluation point whose target metric meets the problem's
  :class:`~hessopt.problems.registry.Target`; its training time, step and epoch.

Tuning (DeepOBS practice, arXiv:1903.05499)
----------------------------------------
Per (problem, method), every point of the method's grid (``SuiteMethod.tune`` in the full suite,
``SuiteMethod.quick_tune`` in the quick one) runs on the *tuning seeds*; the objective of a run is the
smaller-is-better form of the target metric at the end of the run (``1 - test accuracy``, or the test
loss; ``inf`` if diverged), and :func:`hessopt.bench.harness.tuning.tune` picks the point with the smallest
geometric mean over the tuning seeds (ties: smaller lr). The chosen setting then runs on the
*evaluation seeds*, which are disjoint from the tuning seeds (checked by :class:`NNSuite` and again by
``tune``). As in DeepOBS, the selection uses the test split; the evaluation runs differ from the tuning
runs in initialisation and data order only.

Shards, workers, resume
-----------------------
The unit of sharding is the (problem, method) *pair*: ``--shard i/n`` takes the pairs whose position in
the canonical order (problems, then methods, in the suite's order) is i-1 modulo n, with all their
tuning and evaluation runs, so shards never repeat each other's tuning and their stores merge
(:func:`hessopt.bench.harness.store.merge`) into the whole suite. Every run (tuning runs included) is
written to the store when it ends, so an interrupted suite resumes and loses at most the runs in flight; a
re-run skips stored runs (``failed`` ones are retried) and stored tunings. ``workers > 1`` runs runs in
worker processes (forked, one torch thread each; the parent alone writes the store).

What is stored (for the report)
-------------------------------
Suites (``RunRecord.suite``): ``"nn-quick"`` and ``"nn-full"`` hold the evaluation runs;
``"nn-quick-tuning"`` and ``"nn-full-tuning"`` hold the tuning runs (same record format). The tuning
outcome of each (problem, method) is in the store's ``tuning`` table under the evaluation suite's name
(``chosen``, ``objective``, ``trials`` = every grid point with its objective).

``RunRecord.problem``/``method``: registry names. ``RunRecord.seed``: the run seed. ``RunRecord.config``
(run identity)::

    {"hyper": <the method's full configuration>, "batch_size": int, "steps": total steps of the budget,
     "seconds": cap or None, "evaluations": E, "dtype": "float32", "limit": None or samples per split}

``RunRecord.status``: ``"done"``, ``"diverged"`` or ``"failed"``. ``RunRecord.wall_time``: the whole run
(set-up, training and evaluation), seconds. ``RunRecord.summary`` keys:

=====================  ==============================================================================
role                   ``"tuning"`` or ``"evaluation"``
final_train_loss       training loss at the last evaluation point (None if never finite)
final_test_loss        test loss at the last evaluation point
final_test_accuracy    test accuracy at the last evaluation point (None for non-classifiers)
best_test_accuracy     best test accuracy over the evaluation points (None for non-classifiers)
best_test_loss         lowest test loss over the evaluation points
steps                  optimizer steps taken
epochs                 ``steps / steps_per_epoch``
steps_per_epoch        ``num_train // batch_size``
wall_time              training seconds, EXCLUDING evaluation (= the last ``wall_time`` metric)
eval_time              seconds spent in evaluations
target_metric          e.g. ``"test_accuracy"``
target_value           the threshold
time_to_target         training seconds at the first evaluation point meeting the target, else None
steps_to_target        its step, else None
epochs_to_target       its epoch, else None
diverged               bool
diverged_step          step whose loss was non-finite (None unless diverged)
stop                   ``"budget"``, ``"seconds"``, ``"diverged"`` or ``"error"``
grad_evals             forward+backward evaluations (closure calls for closure methods)
curvature_calls        Hessian-vector products (Hutchinson probes), 0 for methods without
step_time_median       median seconds per optimizer step (the per-step cost; ratios to Adam come from it)
step_time_mean         mean seconds per optimizer step
objective              the tuning objective of this run (see Tuning)
num_parameters         trainable parameters
threads                torch intra-op threads during the run
=====================  ==============================================================================

Metrics (``metrics`` table; step-indexed by the optimizer step at which they were measured, step 0 =
before training), one row per name and evaluation point: ``train_loss``, ``test_loss``,
``test_accuracy`` (classifiers only), ``wall_time`` (cumulative training seconds, evaluation excluded),
``epoch`` (``step / steps_per_epoch``), ``grad_evals`` and ``curvature_calls`` (cumulative), and from the
second point on ``batch_loss`` (mean mini-batch loss of the steps since the previous point). Non-finite
values are never written: a diverged run's curves stop at its last finite point.

Suites (:mod:`hessopt.bench.nn.suites`): ``QUICK`` (``hessopt bench nn``; embedded data; 122 runs,
about 160 s of CPU time, so under 3 minutes with 2 workers on 2 cores) and ``FULL`` (``hessopt bench nn
--suite full``; Fashion-MNIST; 252 runs: 6 tuned methods x (7 grid points + 3 seeds)
+ L-BFGS x 3 seeds per problem,
BFGS left out (too many parameters); about 30 core-hours estimated from one-epoch pilots (2c2d dominates),
so shard it over machines with ``--shard i/n`` and :func:`~hessopt.bench.harness.store.merge` the stores).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from hessopt.bench.harness.environment import invocation_environment
from hessopt.bench.harness.scheduling import check_executor, drain, suite_session
from hessopt.bench.harness.store import ResultStore, RunRecord, canonical_json
from hessopt.bench.harness.tuning import TuningOutcome, grid_points, tune
from hessopt.bench.methods import SuiteMethod, get_method
from hessopt.bench.nn.suites import SUITE, NNSuite, get_suite
from hessopt.problems.data import TensorSplit
from hessopt.problems.registry import Budget, Problem, get_problem

__all__ = [
    "DATA_SEED_OFFSET",
    "RunResult",
    "Skip",
    "SuiteOutcome",
    "SuitePair",
    "drive_step",
    "problem_data",
    "plan",
    "run_config",
    "run_one",
    "run_suite",
    "skips",
]

DATA_SEED_OFFSET = 7919
"""The mini-batch order of seed s comes from a generator seeded ``DATA_SEED_OFFSET + s``."""


# --------------------------------------------------------------------------------------------- runs


def run_config(
    problem: Problem,
    hyper: Mapping[str, Any],
    budget: Budget,
    evaluations: int,
    num_train: int,
    limit: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """The stored configuration of a run (part of its identity in the store).

    The device type is part of it when it is not the CPU (runs on a GPU are other runs).
    """
    config = {
        "hyper": dict(hyper),
        "batch_size": problem.batch_size,
        "steps": budget.total_steps(problem.steps_per_epoch(num_train)),
        "seconds": budget.seconds,
        "evaluations": evaluations,
        "dtype": "float32",
        "limit": limit,
    }
    if torch.device(device).type != "cpu":
        config["device"] = torch.device(device).type
    return config


@dataclass
class RunResult:
    """What :func:`run_one` measured.

    What :func:`run_one` measured: status, summary and metric rows as described in the module
    docstring, the whole run's wall time, and the error text of a failed run.
    """

    status: str
    summary: dict[str, Any]
    metrics: list[tuple[int, str, float]]
    wall_time: float
    error: str | None = None


_DATA: dict[tuple[Any, ...], TensorSplit] = {}


def problem_data(problem: Problem, limit: int | None) -> TensorSplit:
    """The problem's float32 data on the CPU, cached per process (forked workers inherit the cache)."""
    key = (problem.data, tuple(sorted(problem.data_kwargs.items())), limit)
    if key not in _DATA:
        _DATA[key] = problem.load_data(limit=limit)
    return _DATA[key]


def _eval_steps(total: int, evaluations: int) -> list[int]:
    e = min(evaluations, total)
    return sorted({round(i * total / e) for i in range(e + 1)})


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _world(distributed: bool, method: SuiteMethod, problem: Problem) -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without ``distributed``)."""
    if not distributed:
        return 0, 1
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("distributed=True needs an initialised torch.distributed process group (torchrun)")
    if not method.method.distributed:
        why = method.method.distributed_note
        raise ValueError(f"method {method.name!r} cannot train under DistributedDataParallel: {why}")
    rank, world = dist.get_rank(), dist.get_world_size()
    if problem.batch_size % world:
        raise ValueError(
            f"problem {problem.name!r} has batch size {problem.batch_size}, which {world} processes cannot "
            "share equally; use a number of processes that divides it"
        )
    return rank, world


def _ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel (the gradients are averaged over the processes)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock step times are true ones (CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(
    problem: Problem | str,
    method: SuiteMethod | str,
    hyper: Mapping[str, Any],
    seed: int,
    *,
    budget: Budget | None = None,
    evaluations: int | None = None,
    limit: int | None = None,
    role: str = "evaluation",
    device: str | torch.device = "cpu",
    distributed: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Train ``problem`` with ``method`` under the full configuration ``hyper`` from ``seed``.

    Args:
        problem: the problem (or its registered name).
        method: the method resolved for the NN suite (or its registered name).
        hyper: the full configuration (:meth:`~hessopt.bench.methods.SuiteMethod.config`).
        seed: initialisation and data-order seed.
        budget: the training budget (default: the problem's).
        evaluations: number of evaluation intervals (default: the problem's).
        limit: keep the first ``limit`` samples of each split (tests).
        role: ``"tuning"`` or ``"evaluation"`` (recorded).
        device: where the model and data live (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        distributed: train with DistributedDataParallel over the default ``torch.distributed`` group
            (initialised by the caller, e.g. under torchrun): every process takes its contiguous share of
            each mini-batch, so the step equals one process's on the whole batch; every process evaluates
            the (identical) model.
        on_step: called as ``on_step(steps_done, total_steps)`` after every step (progress bars).

    Returns:
        The run's status, summary and metric rows. Never raises for what happens during training:
        divergence gives status ``"diverged"``, an exception ``"failed"`` (with the metrics so far).

    Raises:
        ValueError: before training, when the method does not apply (too many parameters, not
            distributed-safe) or the batch does not split evenly over the processes.
    """
    if role not in ("tuning", "evaluation"):
        raise ValueError(f"role must be 'tuning' or 'evaluation', got {role!r}")
    problem = get_problem(problem) if isinstance(problem, str) else problem
    method = get_method(method).in_suite(SUITE) if isinstance(method, str) else method
    device = torch.device(device)
    rank, world = _world(distributed, method, problem)
    t_run = time.perf_counter()
    budget = budget or problem.budget
    n_eval = evaluations or problem.evaluations
    split = problem_data(problem, limit).to(device)
    spe = problem.steps_per_epoch(split.num_train)
    total = budget.total_steps(spe)
    eval_at = set(_eval_steps(total, n_eval))
    x_tr, y_tr = split.x_train, split.y_train
    n_tr_eval = problem.train_eval_size or split.num_train
    x_tr_eval, y_tr_eval = x_tr[:n_tr_eval], y_tr[:n_tr_eval]
    target = problem.target
    num_params = problem.num_parameters()
    if not method.applies_to(num_params):
        raise ValueError(
            f"method {method.name!r} runs only on problems with <= {method.max_params} parameters; "
            f"{problem.name!r} has {num_params}"
        )
    criterion = problem.criterion() if method.method.needs_model else None
    if method.method.needs_model and criterion is None:
        raise ValueError(
            f"method {method.name!r} needs the loss as a function of the model's outputs; problem "
            f"{problem.name!r} computes its loss inside its model"
        )
    period, probes = method.hessian_period(hyper), method.probes(hyper)

    metrics: list[tuple[int, str, float]] = []
    curve: dict[str, list[float]] = {"train_loss": [], "test_loss": [], "test_accuracy": []}
    state = {
        "train_time": 0.0,
        "eval_time": 0.0,
        "grad_evals": 0,
        "curvature_calls": 0,
        "tt": None,  # (time, step) of the first evaluation meeting the target
        "batch_losses": [],
    }
    step_times: list[float] = []

    def put(step: int, name: str, value: float) -> None:
        if math.isfinite(value):
            metrics.append((step, name, float(value)))

    def evaluate(model: torch.nn.Module, step: int) -> bool:
        """Record the metrics at ``step``; False when a loss is not finite."""
        t0 = time.perf_counter()
        tr = problem.evaluate(model, x_tr_eval, y_tr_eval)
        te = problem.evaluate(model, split.x_test, split.y_test)
        state["eval_time"] += time.perf_counter() - t0
        values = {"train_loss": tr["loss"], "test_loss": te["loss"]}
        if problem.classification:
            values["test_accuracy"] = te["accuracy"]
        for name, value in values.items():
            put(step, name, value)
            curve[name].append(value)
        put(step, "wall_time", state["train_time"])
        put(step, "epoch", step / spe)
        put(step, "grad_evals", state["grad_evals"])
        put(step, "curvature_calls", state["curvature_calls"])
        if state["batch_losses"]:
            put(step, "batch_loss", statistics.fmean(state["batch_losses"]))
            state["batch_losses"] = []
        if state["tt"] is None and target.reached(values.get(target.metric, math.nan)):
            state["tt"] = (state["train_time"], step)
        return math.isfinite(tr["loss"]) and math.isfinite(te["loss"])

    steps_done, stop, error, diverged_step = 0, "budget", None, None
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*create_graph=True.*")
        torch.manual_seed(seed)
        model = problem.build_model(seed).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        trained = _ddp(model, device) if world > 1 else model
        gen = torch.Generator().manual_seed(DATA_SEED_OFFSET + seed)
        perm = torch.empty(0, dtype=torch.int64)
        share = problem.batch_size // world
        try:
            opt = method.build(params, hyper, model=trained, loss_fn=criterion)
            for step in range(total + 1):
                if step in eval_at and not evaluate(model, step):
                    stop, diverged_step = "diverged", step
                    break
                if step == total:
                    break
                if budget.seconds is not None and state["train_time"] >= budget.seconds:
                    stop = "seconds"
                    if step not in eval_at and not evaluate(model, step):
                        stop, diverged_step = "diverged", step
                    break
                k = step % spe
                if k == 0:
                    perm = torch.randperm(split.num_train, generator=gen)
                idx = perm[k * problem.batch_size : (k + 1) * problem.batch_size]
                idx = idx[rank * share : (rank + 1) * share]
                xb, yb = x_tr[idx], y_tr[idx]
                _synchronize(device)
                t0 = time.perf_counter()
                loss = drive_step(
                    method, opt, problem, trained, params, xb, yb, step, period, state, criterion
                )
                _synchronize(device)
                dt = time.perf_counter() - t0
                step_times.append(dt)
                state["train_time"] += dt
                steps_done = step + 1
                if period and step % period == 0:
                    state["curvature_calls"] += probes
                value = float(loss)
                if not math.isfinite(value):
                    stop, diverged_step = "diverged", step
                    break
                state["batch_losses"].append(value)
                if on_step is not None:
                    on_step(steps_done, total)
        except Exception as exc:  # noqa: BLE001 - any error during training is recorded as a failed run
            stop, error = "error", f"{type(exc).__name__}: {exc}"

    def last(name: str) -> float | None:
        return _finite_or_none(curve[name][-1]) if curve[name] else None

    finite_acc = [a for a in curve["test_accuracy"] if math.isfinite(a)]
    finite_test = [v for v in curve["test_loss"] if math.isfinite(v)]
    diverged = stop == "diverged"
    final_target = {
        "test_accuracy": last("test_accuracy"),
        "test_loss": last("test_loss"),
        "train_loss": last("train_loss"),
    }[target.metric]
    tt = state["tt"]
    summary: dict[str, Any] = {
        "role": role,
        "final_train_loss": last("train_loss"),
        "final_test_loss": last("test_loss"),
        "final_test_accuracy": last("test_accuracy") if problem.classification else None,
        "best_test_accuracy": (max(finite_acc) if finite_acc else None) if problem.classification else None,
        "best_test_loss": min(finite_test) if finite_test else None,
        "steps": steps_done,
        "epochs": steps_done / spe,
        "steps_per_epoch": spe,
        "wall_time": state["train_time"],
        "eval_time": state["eval_time"],
        "target_metric": target.metric,
        "target_value": target.value,
        "time_to_target": tt[0] if tt else None,
        "steps_to_target": tt[1] if tt else None,
        "epochs_to_target": tt[1] / spe if tt else None,
        "diverged": diverged,
        "diverged_step": diverged_step,
        "stop": stop,
        "grad_evals": state["grad_evals"],
        "curvature_calls": state["curvature_calls"],
        "step_time_median": statistics.median(step_times) if step_times else None,
        "step_time_mean": statistics.fmean(step_times) if step_times else None,
        "objective": math.inf if diverged or final_target is None else target.error(final_target),
        "num_parameters": num_params,
        "threads": torch.get_num_threads(),
    }
    status = "failed" if error else ("diverged" if diverged else "done")
    return RunResult(status, summary, metrics, time.perf_counter() - t_run, error)


def drive_step(
    method: SuiteMethod,
    opt: torch.optim.Optimizer,
    problem: Problem,
    model: torch.nn.Module,
    params: list[torch.Tensor],
    xb: torch.Tensor,
    yb: torch.Tensor,
    step: int,
    period: int,
    state: dict[str, Any],
    criterion: torch.nn.Module | None = None,
) -> torch.Tensor:
    """One optimizer step of ``method`` on a mini-batch, as its drive says (:mod:`hessopt.bench.methods`).

    Args:
        method: the method.
        opt: its optimizer.
        problem: the problem.
        model: the model (the DistributedDataParallel wrapper under DDP).
        params: the trained parameters.
        xb: the batch's inputs.
        yb: the batch's labels.
        step: the step's index (a ``"hessian"`` method gets a double-backward graph every ``period``).
        period: steps between two Hutchinson estimates.
        state: the run's counters: ``grad_evals`` (forward-backward passes) and ``curvature_calls``
            (Hessian-vector or curvature products, for methods that report them).
        criterion: the loss module on the outputs for methods with ``needs_model`` (else the problem's
            loss).

    Returns:
        The batch loss at the start point.
    """

    def batch_loss() -> torch.Tensor:
        if criterion is None:
            return problem.loss_fn(model, xb, yb)
        return criterion(model(xb), problem.targets(xb, yb))

    if method.drive == "batch":
        loss = opt.step(xb, problem.targets(xb, yb))
        report = getattr(opt, "last_step", None) or {}
        state["grad_evals"] += 1 + int(report.get("loss_evaluations", 0))
        state["curvature_calls"] += int(sum(report.get("cg_iterations", ())))
        return loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(loss)
    if method.drive == "closure":

        def closure() -> torch.Tensor:
            state["grad_evals"] += 1
            opt.zero_grad(set_to_none=True)
            value = batch_loss()
            value.backward()
            return value

        loss = opt.step(closure)
        return loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(loss)
    opt.zero_grad(set_to_none=True)
    loss = batch_loss()
    state["grad_evals"] += 1
    if method.drive == "hessian":
        loss.backward(create_graph=step % period == 0)
        opt.step()
        opt.zero_grad(set_to_none=True)  # frees the double-backward graph held by .grad
    else:
        loss.backward()
        opt.step()
    return loss.detach()


# ---------------------------------------------------------------------------------------- the suite


@dataclass(frozen=True)
class _Task:
    """One run for a worker process (names only, so it pickles cheaply)."""

    role: str  # "tuning" or "evaluation"
    problem: str
    method: str
    hyper: dict[str, Any]
    seed: int
    budget: Budget
    evaluations: int
    limit: int | None
    device: str = "cpu"


def _execute(task: _Task) -> RunResult:
    return run_one(
        task.problem,
        task.method,
        task.hyper,
        task.seed,
        budget=task.budget,
        evaluations=task.evaluations,
        limit=task.limit,
        role=task.role,
        device=task.device,
    )


@dataclass
class SuiteOutcome:
    """What one invocation did.

    ``planned``: runs of this shard (tuning + evaluation); ``skipped``: of those, already stored;
    ``held``: of those, claimed by another live process (not run here; ``holders`` says which);
    ``skips``: what of the suite cannot run here (also recorded in the store's notes, except the
    ``"design"`` ones); ``notes``: those and other remarks, as text.
    """

    planned: int = 0
    skipped: int = 0
    executed: int = 0
    written: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    tuned: int = 0
    held: int = 0
    holders: list[str] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_time: float = 0.0


@dataclass
class SuitePair:
    """One (problem, method) pair of a suite.

    One (problem, method) of a suite, with the budget, evaluation count and training-set size it runs
    with (the unit of sharding).
    """

    problem: Problem
    method: SuiteMethod
    budget: Budget
    evaluations: int
    num_train: int


def _tuning_context(suite: NNSuite, pair: SuitePair) -> dict[str, Any]:
    target = pair.problem.target
    return {
        "grid": {k: list(v) for k, v in pair.method.tune.items()},
        "hyper": dict(pair.method.hyper),
        "seeds": list(suite.tuning_seeds),
        "config": run_config(pair.problem, {}, pair.budget, pair.evaluations, pair.num_train, suite.limit),
        "objective": f"final {target.metric} ({'1 - value' if target.maximize else 'value'})",
    }


@dataclass(frozen=True)
class Skip:
    """A part of a suite that cannot run here, and why.

    Attributes:
        kind: ``"data"`` (a problem's data set is missing), ``"package"`` (a method's package is not
            installed) or ``"design"`` (the method does not apply to the problem by design: BFGS's dense
            matrix and its parameter limit, a method that needs the loss on the model's outputs).
        problem: the problem left out ("" for every problem).
        method: the method left out ("" for every method).
        reason: what is missing and the fix.
    """

    kind: str
    problem: str
    method: str
    reason: str

    def __str__(self) -> str:
        return f"skipped {self.reason}"


def skips(suite: NNSuite) -> list[Skip]:
    """What of ``suite`` (all shards) cannot run here: problems without data, methods without package, pairs.

    Loads no data (availability is checked without loading); builds each problem's model once to count
    its parameters.
    """
    out: list[Skip] = []
    for pname in suite.problems:
        reason = get_problem(pname).unavailable_reason()
        if reason:
            out.append(Skip("data", pname, "", reason))
    for mname in suite.methods:
        missing = suite.method(mname).missing_requirement()
        if missing:
            out.append(Skip("package", "", mname, missing))
    absent = {s.problem for s in out} | {s.method for s in out}
    for pname in suite.problems:
        problem = get_problem(pname)
        for mname in suite.methods:
            method = suite.method(mname)
            if pname in absent or mname in absent:
                continue
            if not method.applies_to(problem.num_parameters()):
                why = f"{problem.num_parameters():,} parameters exceed its limit of {method.max_params:,}"
            elif method.method.needs_model and problem.criterion() is None:
                why = "it needs the loss on the model's outputs; this problem computes it inside its model"
            else:
                continue
            out.append(Skip("design", pname, mname, f"{mname} on {pname}: {why}"))
    return out


def plan(suite: NNSuite, shard: tuple[int, int] = (1, 1)) -> tuple[list[SuitePair], list[Skip]]:
    """The pairs of a shard that can run here.

    The (problem, method) pairs of ``shard`` that can run here, and what of the suite is left out
    (:func:`skips`: unavailable data, missing packages, methods that do not apply). Pairs are dealt
    round-robin in canonical order over *all* pairs, so the partition does not depend on what is
    installed.
    """
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and 1 <= index <= count):
        raise ValueError(f"shard must be (i, n) with 1 <= i <= n, got {shard!r}")
    left_out = skips(suite)
    excluded = {(s.problem, s.method) for s in left_out}
    pairs: list[SuitePair] = []
    position = -1
    for pname in suite.problems:
        problem = get_problem(pname)
        for mname in suite.methods:
            position += 1
            if position % count != index - 1 or excluded & {(pname, ""), ("", mname), (pname, mname)}:
                continue
            num_train = problem_data(problem, suite.limit).num_train
            pairs.append(
                SuitePair(
                    problem,
                    suite.method(mname),
                    suite.budget_of(problem),
                    suite.evaluations_of(problem),
                    num_train,
                )
            )
    return pairs, left_out


def _task_config(t: _Task) -> dict[str, Any]:
    """The stored configuration of a task's run."""
    problem = get_problem(t.problem)
    num_train = problem_data(problem, t.limit).num_train
    return run_config(problem, t.hyper, t.budget, t.evaluations, num_train, t.limit, t.device)


def run_suite(
    store: ResultStore,
    suite: NNSuite | str = "quick",
    *,
    shard: tuple[int, int] = (1, 1),
    workers: int = 1,
    progress: bool = True,
    command: str | None = None,
    executor: str = "local",
    address: str | None = None,
    device: str = "cpu",
) -> SuiteOutcome:
    """Run (the missing part of) ``suite``'s shard, storing every run as it ends (see the module docstring).

    Runs are claimed in the store before they are computed (:meth:`ResultStore.claim`), so a second
    invocation of the same suite on the same store skips what this one computes, and vice versa.
    Problems and methods that cannot run here are in the outcome's ``skips`` and in the store's notes.
    Returns what was done.
    """
    suite = get_suite(suite) if isinstance(suite, str) else suite
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    check_executor(executor, address)
    if torch.device(device).type == "cuda" and workers > 1 and executor == "local":
        raise ValueError(
            "--device cuda runs in this process (CUDA does not survive a fork): use --workers 1, or one "
            "invocation per GPU with --shard"
        )
    t_start = time.perf_counter()
    pairs, left_out = plan(suite, shard)
    outcome = SuiteOutcome(skips=left_out, notes=[str(s) for s in left_out])
    if command is not None:
        store.record_invocation(suite.name, command, invocation_environment(workers))
    for skip in left_out:
        if skip.kind != "design":  # the protocol's choices, not something missing here
            store.add_note(suite.name, skip.reason, problem=skip.problem, method=skip.method)
    try:
        _run_pairs(store, suite, pairs, shard, workers, progress, outcome, executor, address, device)
    finally:
        store.release_claims()
    outcome.wall_time = time.perf_counter() - t_start
    return outcome


def _run_pairs(
    store: ResultStore,
    suite: NNSuite,
    pairs: list[SuitePair],
    shard: tuple[int, int],
    workers: int,
    progress: bool,
    outcome: SuiteOutcome,
    executor: str,
    address: str | None,
    device: str,
) -> None:
    """The body of :func:`run_suite`: claim, run and store what is missing of ``pairs``."""
    done = store.done_keys(suite.name)
    done_tuning = store.done_keys(suite.tuning_suite)

    def objectives() -> dict[tuple[str, str, str, int], float]:
        return {
            (r.problem, r.method, canonical_json(r.config), r.seed): r.summary.get("objective", math.inf)
            for r in store.runs(suite.tuning_suite)
            if r.status != "failed"
        }

    stored_objective = objectives()

    def cfg_json(pair: SuitePair, hyper: Mapping[str, Any]) -> str:
        config = run_config(
            pair.problem, hyper, pair.budget, pair.evaluations, pair.num_train, suite.limit, device
        )
        return canonical_json(config)

    def task(pair: SuitePair, role: str, hyper: dict[str, Any], seed: int) -> _Task:
        return _Task(
            role,
            pair.problem.name,
            pair.method.name,
            hyper,
            seed,
            pair.budget,
            pair.evaluations,
            suite.limit,
            device,
        )

    held_pairs: set[tuple[str, str]] = set()

    def claim(tasks: list[_Task]) -> list[_Task]:
        """The tasks claimed for this process; the others are stored or held by another process."""
        if not tasks:
            return []
        keys = [
            (
                suite.tuning_suite if t.role == "tuning" else suite.name,
                t.problem,
                t.method,
                canonical_json(_task_config(t)),
                t.seed,
            )
            for t in tasks
        ]
        result = store.claim(keys)
        outcome.skipped += len(result.stored)
        outcome.held += len(result.held)
        for key, holder in result.held.items():
            held_pairs.add((key[1], key[2]))
            if holder not in outcome.holders:
                outcome.holders.append(holder)
        if any(k[0] == suite.tuning_suite for k in result.stored):
            stored_objective.update(objectives())  # stored by another process since we looked
        mine = set(result.claimed)
        return [t for t, k in zip(tasks, keys, strict=True) if k in mine]

    def eval_tasks(pair: SuitePair, hyper: dict[str, Any]) -> list[_Task]:
        cj = cfg_json(pair, hyper)
        out = []
        for seed in suite.evaluation_seeds:
            if (pair.problem.name, pair.method.name, cj, seed) in done:
                outcome.skipped += 1
            else:
                out.append(task(pair, "evaluation", hyper, seed))
        return claim(out)

    def try_tune(pair: SuitePair) -> dict[str, Any] | None:
        """The chosen configuration once every tuning run is stored (tuning it now if needed)."""
        context = _tuning_context(suite, pair)
        chosen = store.get_tuning(suite.name, pair.problem.name, pair.method.name, context)
        if chosen is not None:
            return pair.method.config(chosen)
        grid = [pair.method.config(p) for p in _grid(pair.method)]
        keys = [
            (pair.problem.name, pair.method.name, cfg_json(pair, h), s)
            for h in grid
            for s in suite.tuning_seeds
        ]
        if not all(k in stored_objective for k in keys):
            return None

        def evaluate(configs: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[list[float]]:
            return [
                [stored_objective[(pair.problem.name, pair.method.name, cfg_json(pair, c), s)] for s in seeds]
                for c in configs
            ]

        result: TuningOutcome = tune(
            pair.method, evaluate, tuning_seeds=suite.tuning_seeds, evaluation_seeds=suite.evaluation_seeds
        )
        store.put_tuning(
            suite.name,
            pair.problem.name,
            pair.method.name,
            context,
            result.chosen,
            result.objective,
            result.trials,
        )
        outcome.tuned += 1
        return pair.method.config(result.chosen)

    # what is left to do: tuning runs first (in pair order), evaluation runs of tuned pairs
    queue: deque[_Task] = deque()
    waiting: dict[tuple[str, str], SuitePair] = {}
    evaluation_tasks: list[_Task] = []
    for pair in pairs:
        outcome.planned += len(suite.evaluation_seeds)
        if not pair.method.tune:
            evaluation_tasks += eval_tasks(pair, pair.method.config())
            continue
        grid = [pair.method.config(p) for p in _grid(pair.method)]
        outcome.planned += len(grid) * len(suite.tuning_seeds)
        chosen = store.get_tuning(
            suite.name, pair.problem.name, pair.method.name, _tuning_context(suite, pair)
        )
        if chosen is not None:  # tuned earlier (or in a merged store): its tuning runs count as stored
            outcome.skipped += len(grid) * len(suite.tuning_seeds)
            evaluation_tasks += eval_tasks(pair, pair.method.config(chosen))
            continue
        tuning_tasks = []
        for hyper in grid:
            cj = cfg_json(pair, hyper)
            for seed in suite.tuning_seeds:
                if (pair.problem.name, pair.method.name, cj, seed) in done_tuning:
                    outcome.skipped += 1
                else:
                    tuning_tasks.append(task(pair, "tuning", hyper, seed))
        queue.extend(claim(tuning_tasks))
        hyper = try_tune(pair)
        if hyper is None:
            waiting[(pair.problem.name, pair.method.name)] = pair
        else:
            evaluation_tasks += eval_tasks(pair, hyper)
    queue.extend(evaluation_tasks)
    remaining = outcome.planned - outcome.skipped - outcome.held

    def handle(t: _Task, result: RunResult) -> list[_Task]:
        pair_key = (t.problem, t.method)
        suite_name = suite.tuning_suite if t.role == "tuning" else suite.name
        pair = waiting.get(pair_key)
        config = _task_config(t)
        record = RunRecord(
            suite=suite_name,
            problem=t.problem,
            method=t.method,
            config=config,
            seed=t.seed,
            status=result.status,
            summary=result.summary,
            wall_time=result.wall_time,
            error=result.error,
            metrics=result.metrics,
        )
        outcome.executed += 1
        outcome.written += store.add_run(record)
        outcome.by_status[result.status] = outcome.by_status.get(result.status, 0) + 1
        if t.role == "tuning" and result.status != "failed":
            stored_objective[(t.problem, t.method, canonical_json(config), t.seed)] = result.summary[
                "objective"
            ]
        if t.role == "tuning" and pair is not None:
            hyper = try_tune(pair)
            if hyper is not None:
                del waiting[pair_key]
                return eval_tasks(pair, hyper)
        return []

    index, count = shard
    session = suite_session(
        workers,
        bool(queue),
        progress=progress,
        description=f"{suite.name} [{index}/{count}]",
        total=remaining,
        executor=executor,
        address=address,
    )
    with session as (pool, bar, bar_id):

        def finished(t: _Task, result: RunResult) -> list[_Task]:
            new = handle(t, result)
            bar.update(bar_id, advance=1, description=f"{t.problem} / {t.method} ({t.role})")
            return new

        drain(queue, _execute, finished, pool)
    # a pair whose tuning runs failed stays untuned (its failed runs are retried next time); one whose
    # tuning runs another process holds is finished by that process
    for pname, mname in waiting:
        if (pname, mname) not in held_pairs:
            outcome.notes.append(
                f"{mname} on {pname}: tuning incomplete (failed tuning runs); re-run to retry"
            )


def _grid(method: SuiteMethod) -> list[dict[str, float]]:
    return grid_points(method)
