"""The saddle-escape study: the starting points are saddles, the optimizers come from the registry, the
fragment reports every optimizer."""

from __future__ import annotations

import torch

from hessopt.bench.studies import saddle_escape as se


def _gradient_and_loss(model, x, y):
    loss = 0.5 * ((model(x) - y) ** 2).mean()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads])


def test_the_starts_are_perturbed_saddles():
    for name, build in se.PROBLEMS.items():
        model, x, y = build(0)
        loss, grad = _gradient_and_loss(model, x, y)
        assert grad.norm() < 1e-2 * (1 + loss), name  # nearly critical
        assert loss > 1e-3, name  # and not a minimum: it can be halved
    # the deep linear net at W = 0 exactly: zero gradient
    model, x, y = se.PROBLEMS["deep_linear"](0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert _gradient_and_loss(model, x, y)[1].abs().max() == 0


def test_quick_study_writes_every_optimizer(tmp_path):
    out = se.run(tmp_path, quick=True)
    text = (tmp_path / "saddle_escape.md").read_text()
    for label in se.OPTIMIZERS:
        assert f"| {label} |" in text
    by = {(r["problem"], r["optimizer"]): r for r in out["rows"] if r["seed"] == 0}
    # hessopt's optimizers leave the deep linear saddle well within the quick budget
    for label in ("DiagOGR()", "SubspaceOGR()"):
        assert by[("deep_linear", label)]["iterations"] is not None
        assert by[("deep_linear", label)]["loss_end"] <= 0.5 * by[("deep_linear", label)]["loss_start"]
