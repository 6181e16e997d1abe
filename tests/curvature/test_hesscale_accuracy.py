"""The HesScale accuracy study (hessopt.bench.studies.hesscale_accuracy): check 14 of
docs/algorithms/hesscale.md, and its references against curvature.estimators.diagonal."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hessopt.bench.studies import hesscale_accuracy as study
from hessopt.curvature.estimators import diagonal


@pytest.fixture(scope="module")
def ratios() -> dict[str, dict[str, float]]:
    rows = study.run(quick=True)  # 10 seeds x 10 samples per activation
    assert {r["seeds"] for r in rows} == {10} and {r["samples"] for r in rows} == {10}
    return {
        act: {r["estimator"]: r["normalized"] for r in rows if r["activation"] == act and r["layer"] == "all"}
        for act in study.ACTIVATIONS
    }


NON_REFERENCE = (
    "hesscale_gn",
    "bl89",
    "ggn_mc_1",
    "ggn_mc_50",
    "hutchinson_1",
    "hutchinson_50",
    "grad_squared",
)


def test_hesscale_is_the_most_accurate_estimator(ratios):  # check 14
    for act in ("tanh", "sigmoid"):
        assert all(ratios[act][e] > 1.0 for e in NON_REFERENCE), (act, ratios[act])
    relu = ratios["relu"]
    assert relu["hesscale_gn"] == pytest.approx(1.0, abs=1e-9)  # identical for piecewise-linear nets
    assert relu["ggn"] < 1e-9  # GGN = H there: only the exact GGN diagonal is better
    assert all(relu[e] > 1.0 for e in NON_REFERENCE if e != "hesscale_gn")


def test_tanh_ratios_match_the_published_protocol(ratios):  # check 14: within ±15 %
    for estimator, published in study.PUBLISHED["tanh"].items():
        assert ratios["tanh"][estimator] == pytest.approx(published, rel=0.15), estimator


def test_noisy_estimators_are_worse_than_zero(ratios):  # check 14
    for act in study.ACTIVATIONS:
        r = ratios[act]
        assert r["hutchinson_1"] > 300, act
        assert r["ggn_mc_1"] > r["zero"] and r["grad_squared"] > r["zero"], act


def test_references_agree_with_the_estimators_api():
    model = study._model("tanh", 3)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (2,), generator=gen)
    refs = study._references(model, x, y, torch.Generator().manual_seed(0))
    refs.update(study._hesscale_family(model, x, y))
    for i in range(2):
        for method in ("exact", "ggn", "grad_squared", "hesscale", "hesscale_gn", "bl89"):
            api = diagonal(model, nn.CrossEntropyLoss(), x[i : i + 1], y[i : i + 1], method)
            flat = torch.cat([v.reshape(-1) for v in api.values()])
            torch.testing.assert_close(refs[method][i], flat, rtol=1e-10, atol=1e-13, msg=method)
    with pytest.raises(ValueError, match="unknown estimators"):
        study.run(seeds=1, samples=1, estimators=("kfac",))
