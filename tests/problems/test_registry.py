"""Problem registry (hessopt.problems.registry): every model on its data, the noisy quadratic's closed
forms, budgets, targets, metrics and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hessopt.problems import registry
from hessopt.problems.registry import Budget, Problem, Target


@pytest.mark.parametrize("name", registry.problem_names())
def test_every_problem_runs_its_model_on_a_batch_of_its_data(name):
    problem = registry.get_problem(name)
    if not problem.is_available():
        pytest.skip(problem.unavailable_reason())
    split = problem.load_data(limit=2 * problem.batch_size)
    assert split.num_train == 2 * problem.batch_size and problem.steps_per_epoch(split.num_train) == 2
    model = problem.build_model(seed=0)
    assert sum(p.numel() for p in model.parameters()) == problem.num_parameters()
    xb, yb = split.x_train[: problem.batch_size], split.y_train[: problem.batch_size]
    loss = problem.loss_fn(model, xb, yb)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    metrics = problem.evaluate(model, split.x_test[:64], split.y_test[:64], chunk=25)
    assert math.isfinite(metrics["loss"])
    if problem.classification:
        assert 0.0 <= metrics["accuracy"] <= 1.0
    else:
        assert "accuracy" not in metrics


def test_registered_sizes_match_their_descriptions():
    counts = {p.name: p.num_parameters() for p in registry.all_problems()}
    assert counts["quadratic_deep"] == 100
    assert counts["digits_mlp"] == 65 * 32 + 33 * 10
    assert counts["mnist1d_mlp"] == 41 * 100 + 101 * 100 + 101 * 10
    assert counts["fmnist_mlp"] == 785 * 256 + 257 * 256 + 257 * 10
    assert counts["fmnist_2c2d"] == 3_274_634
    assert counts["fmnist_autoencoder"] == 2_837_314
    assert registry.get_problem("fmnist_mlp").batch_size == 128


def test_quadratic_deep_spectrum_and_data():
    q = registry.deep_quadratic_hessian()
    assert q.dtype == torch.float64 and torch.equal(q, q.T)
    eig = torch.linalg.eigvalsh(q)
    assert ((eig[:90] > 0) & (eig[:90] < 1)).all() and ((eig[90:] > 30) & (eig[90:] < 60)).all()
    split = registry.quadratic_data(dtype=torch.float64)
    assert split.x_train.shape == split.x_test.shape == (1000, 100)
    assert abs(float(split.x_train.std()) - 0.6) < 0.01 and abs(float(split.x_train.mean())) < 0.01
    assert not torch.equal(split.x_train, split.x_test)
    model = registry.get_problem("quadratic_deep").build_model(seed=3, dtype=torch.float64)
    assert torch.equal(model.theta, torch.ones(100, dtype=torch.float64))  # DeepOBS start, seed-free


def test_quadratic_deep_loss_matches_its_closed_form():
    problem = registry.get_problem("quadratic_deep")
    split = problem.load_data(dtype=torch.float64)
    model = problem.build_model(dtype=torch.float64)
    q = registry.deep_quadratic_hessian().numpy()
    rng = np.random.default_rng(0)
    theta = rng.normal(size=100)
    with torch.no_grad():
        model.theta.copy_(torch.from_numpy(theta))
    x = split.x_train.numpy()
    # reference: the definition, sample by sample, in numpy
    d = theta - x
    reference = float(np.mean(0.5 * np.einsum("ni,ij,nj->n", d, q, d)))
    batch = problem.loss_fn(model, split.x_train, split.y_train)
    assert float(batch.detach()) == pytest.approx(reference, rel=1e-12)
    closed = registry.quadratic_dataset_loss(torch.from_numpy(theta), split.x_train, torch.from_numpy(q))
    assert float(closed) == pytest.approx(reference, rel=1e-12)
    assert problem.evaluate(model, split.x_train, split.y_train, chunk=300)["loss"] == pytest.approx(
        reference, rel=1e-12
    )
    # gradient of the mean loss: Q (theta - mean x)
    batch.backward()
    np.testing.assert_allclose(model.theta.grad.numpy(), q @ (theta - x.mean(0)), rtol=1e-10, atol=1e-12)
    # target: 1.01 x the test loss at the training minimiser (which beats the start theta = 1)
    best = registry.quadratic_dataset_loss(split.x_train.mean(0), split.x_test, torch.from_numpy(q))
    assert problem.target.metric == "test_loss"
    assert problem.target.value == pytest.approx(1.01 * float(best), rel=1e-5)
    start = registry.quadratic_dataset_loss(
        torch.ones(100, dtype=torch.float64), split.x_test, torch.from_numpy(q)
    )
    assert float(start) > problem.target.value


def test_evaluate_matches_direct_cross_entropy_and_accuracy():
    problem = registry.get_problem("digits_mlp")
    if not problem.is_available():
        pytest.skip(problem.unavailable_reason())
    split = problem.load_data(limit=100, dtype=torch.float64)
    model = problem.build_model(seed=1, dtype=torch.float64)
    with torch.no_grad():
        logits = model(split.x_test)
    expected_loss = float(F.cross_entropy(logits, split.y_test))
    expected_acc = float((logits.argmax(1) == split.y_test).double().mean())
    got = problem.evaluate(model, split.x_test, split.y_test, chunk=7)
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-12)
    assert got["accuracy"] == pytest.approx(expected_acc, abs=1e-15)


def test_autoencoder_loss_is_per_pixel_mean_bce():
    problem = registry.get_problem("fmnist_autoencoder")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 784)).double()
    x = torch.rand(5, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(5, dtype=torch.int64)
    out = model(x)
    manual = -(x * torch.log(torch.sigmoid(out)) + (1 - x) * torch.log(1 - torch.sigmoid(out))).mean()
    assert float(problem.loss_fn(model, x, y).detach()) == pytest.approx(float(manual.detach()), rel=1e-10)


def test_budget_and_target():
    assert Budget(epochs=2).total_steps(45) == 90
    assert Budget(epochs=0.5).total_steps(7) == 4
    assert Budget(epochs=10, steps=30).total_steps(7) == 30
    assert Budget(steps=5, seconds=1.0).total_steps(100) == 5
    for bad in (dict(), dict(seconds=3.0), dict(epochs=0), dict(steps=0), dict(steps=2, seconds=0)):
        with pytest.raises(ValueError):
            Budget(**bad)
    acc, loss = Target("test_accuracy", 0.9), Target("test_loss", 0.3)
    assert acc.reached(0.9) and not acc.reached(0.89) and not acc.reached(math.nan)
    assert loss.reached(0.3) and not loss.reached(0.31) and not loss.reached(math.inf)
    assert (
        acc.error(0.75) == pytest.approx(0.25) and loss.error(0.4) == 0.4 and loss.error(math.nan) == math.inf
    )
    with pytest.raises(ValueError, match="target metric"):
        Target("accuracy", 0.9)


def test_registry_lookup_and_validation():
    with pytest.raises(ValueError, match="known problems: quadratic_deep"):
        registry.get_problem("cifar10_3c3d")
    p = registry.get_problem("digits_mlp")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_problem(p)
    base = dict(
        name="x",
        summary="",
        data="digits",
        model="mlp",
        loss="cross_entropy",
        batch_size=8,
        budget=Budget(steps=1),
        target=Target("test_accuracy", 0.5),
    )
    with pytest.raises(ValueError, match="loss must be one of"):
        Problem(**{**base, "loss": "mse"})
    with pytest.raises(ValueError, match="unknown data set"):
        Problem(**{**base, "data": "cifar10"})
    with pytest.raises(ValueError, match="accuracy target needs a classifier"):
        Problem(**{**base, "model": "autoencoder", "loss": "bce_reconstruction"})
    with pytest.raises(ValueError, match="batch_size"):
        Problem(**{**base, "batch_size": 0})
    with pytest.raises(ValueError, match="fewer than one batch"):
        p.steps_per_epoch(p.batch_size - 1)
