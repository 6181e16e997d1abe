"""``hessopt train``: one problem, one method, recorded like a suite run, on one or many processes.

Under ``torchrun --nproc-per-node N`` the training runs with DistributedDataParallel (gloo on the CPU,
NCCL on CUDA): every process takes an equal, contiguous share of each mini-batch, DDP averages the
gradients, and hessopt's optimizers all-reduce what DDP does not (losses for line searches, curvature
diagonals, curvature products), so the N processes take the steps one process takes on the whole batch.
Process 0 alone writes the results store (suite ``"nn-train"``, which the report shows like a suite).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from hessopt.bench.harness.environment import environment
from hessopt.bench.harness.store import ResultStore, RunRecord
from hessopt.bench.methods import SuiteMethod, get_method
from hessopt.bench.nn.suite import RunResult, problem_data, run_config, run_one
from hessopt.bench.nn.suites import SUITE
from hessopt.problems.registry import Budget, get_problem

__all__ = ["TRAIN_SUITE", "parse_config", "resolve_config", "train"]

TRAIN_SUITE = "nn-train"
"""The store suite of ``hessopt train`` runs."""


def parse_config(text: str | None) -> dict[str, Any]:
    """The ``--config`` JSON object as a dict.

    Args:
        text: a JSON object (``'{"lr": 0.01}'``) or None.

    Returns:
        The hyper-parameters it sets.

    Raises:
        ValueError: when it is not a JSON object.
    """
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config must be a JSON object such as '{{\"lr\": 0.01}}': {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--config must be a JSON object such as '{{\"lr\": 0.01}}', got {text!r}")
    return value


def resolve_config(method: SuiteMethod, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The full configuration of a training run: the method's fixed values, then ``overrides``.

    Args:
        method: the method resolved for the NN suite.
        overrides: values for the tuned hyper-parameters (required) and for any fixed one.

    Returns:
        The configuration passed to the method's factory.

    Raises:
        ValueError: when a tuned hyper-parameter has no value (the message shows the suite's grid).
    """
    missing = [k for k in method.tune if k not in overrides]
    if missing:
        grids = "; ".join(f"{k} in {list(method.tune[k])}" for k in missing)
        example = json.dumps({k: method.tune[k][len(method.tune[k]) // 2] for k in missing})
        raise ValueError(
            f"method {method.name!r} tunes {', '.join(missing)} per problem: give a value with --config, "
            f"e.g. --config '{example}' (the suite's grid: {grids})"
        )
    config = method.config({k: overrides[k] for k in method.tune})
    config.update({k: v for k, v in overrides.items() if k not in method.tune})
    return config


@contextlib.contextmanager
def _process_group(device: torch.device) -> Iterator[tuple[int, int, torch.device]]:
    """Join torchrun's process group if this process was started by it; yield (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist = torch.distributed
    if world == 1 or dist.is_initialized():
        yield (dist.get_rank(), dist.get_world_size(), device) if dist.is_initialized() else (0, 1, device)
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size(), device
        dist.barrier()  # no process leaves (and tears the group down) while another still uses it
    finally:
        dist.destroy_process_group()


def train(
    problem: str,
    method: str,
    overrides: Mapping[str, Any],
    *,
    seed: int = 0,
    store: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    budget: Budget | None = None,
    evaluations: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> RunResult:
    """Train one problem with one method and store the run (process 0 only, under torchrun).

    Args:
        problem: a registered NN problem.
        method: a registered method that runs in the NN suite.
        overrides: its tuned hyper-parameters (required) and any fixed one to change.
        seed: initialisation and data-order seed.
        store: the SQLite results file (None: not stored).
        device: ``"cpu"`` or ``"cuda"`` (under torchrun each process takes ``cuda:LOCAL_RANK``).
        budget: the training budget (default: the problem's).
        evaluations: number of evaluation intervals (default: the problem's).
        limit: keep the first ``limit`` samples of each split (tests).
        progress: a progress bar on process 0.
        command: the command line, recorded with the store's invocations.

    Returns:
        The run's result (every process returns it; process 0 stores it).

    Raises:
        ValueError: for an unknown problem or method, a missing tuned value, data that is not installed,
            or a method that cannot train under DistributedDataParallel when there are several processes.
    """
    prob = get_problem(problem)
    reason = prob.unavailable_reason()
    if reason:
        raise ValueError(reason)
    suite_method = get_method(method).in_suite(SUITE)
    missing = suite_method.missing_requirement()
    if missing:
        raise ValueError(missing)
    config = resolve_config(suite_method, overrides)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not suite_method.method.distributed:
        why = suite_method.method.distributed_note
        raise ValueError(f"method {method!r} cannot train under DistributedDataParallel: {why}")
    with _process_group(torch.device(device)) as (rank, world, dev):
        bar = _progress(progress and rank == 0, f"{problem} / {method}")
        with bar:
            task = bar.add_task("train", total=None)
            result = run_one(
                prob,
                suite_method,
                config,
                seed,
                budget=budget,
                evaluations=evaluations,
                limit=limit,
                device=dev,
                distributed=world > 1,
                on_step=lambda done, total: bar.update(task, completed=done, total=total),
            )
        if rank == 0 and store is not None:
            split = problem_data(prob, limit)
            cfg = run_config(
                prob,
                config,
                budget or prob.budget,
                evaluations or prob.evaluations,
                split.num_train,
                limit,
            )
            cfg.update({"processes": world, "device": dev.type})
            with ResultStore(store) as st:
                if command is not None:
                    st.record_invocation(TRAIN_SUITE, command, environment())
                st.add_run(
                    RunRecord(
                        suite=TRAIN_SUITE,
                        problem=problem,
                        method=method,
                        config=cfg,
                        seed=seed,
                        status=result.status,
                        summary={**result.summary, "role": "evaluation"},
                        wall_time=result.wall_time,
                        error=result.error,
                        metrics=result.metrics,
                    )
                )
    return result


def _progress(enabled: bool, description: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, disable=not enabled, transient=False)
