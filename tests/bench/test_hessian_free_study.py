"""Smoke test of the HF/BDHF study runner (hessopt.bench.studies.hessian_free): plain records, summary."""

from __future__ import annotations

import json

import pytest

from hessopt.bench.studies.hessian_free import Config, run, summarize


def test_tiny_study_returns_plain_records_and_a_summary() -> None:
    config = Config(
        size="quick",
        experiments=("digits_autoencoder",),
        seeds=(0,),
        curvature_fractions=(0.25,),
        hf_steps=2,
        adam_steps=4,
        adam_lrs=(1e-2,),
    )
    records = run(config)
    json.dumps(records)  # plain data only
    assert [(r["method"], r["curvature_fraction"], r["lr"]) for r in records] == [
        ("bdhf", 0.25, None),
        ("hf", 0.25, None),
        ("adam", None, 1e-2),
    ]
    bdhf = records[0]
    assert bdhf["blocks"] == 6 and records[1]["blocks"] == 1 and bdhf["parameters"] == 5_544
    assert [row["step"] for row in bdhf["steps"]] == [0, 1, 2]
    assert len(bdhf["steps"][1]["cg_iterations"]) == 6 and "damping" in bdhf["steps"][1]
    assert "train_loss" in bdhf["steps"][0] and "test_loss" in bdhf["steps"][-1]
    assert bdhf["steps"][-1]["wall_s"] > 0 and bdhf["steps"][-1]["fpe"] > 0
    rows = summarize(records)
    assert [r["method"] for r in rows] == ["adam", "bdhf", "hf"]
    assert rows[0]["target"] == pytest.approx(rows[0]["final_train_loss"])


def test_config_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="experiments"):
        Config(experiments=("cifar",))
    with pytest.raises(ValueError, match="size"):
        Config(size="medium")
    with pytest.raises(ValueError, match="methods"):
        Config(methods=("sgd",))


def test_write_makes_a_fragment_with_its_figures(tmp_path) -> None:
    from hessopt.bench.studies.hessian_free import write

    config = Config(
        size="quick",
        experiments=("digits_autoencoder",),
        seeds=(0,),
        curvature_fractions=(0.25,),
        hf_steps=2,
        adam_steps=4,
        adam_lrs=(1e-2,),
    )
    out = write(config, tmp_path, command="hessopt bench hf --quick")
    text = (tmp_path / "hessian_free.md").read_text()
    assert "`hessopt bench hf --quick`" in text and "| digits_autoencoder | 64 | hf c 0.25 |" in text
    assert "- digits_autoencoder (batch 64), bdhf c 0.25:" in text
    for name in out["files"]:
        assert (tmp_path / name).is_file()
    assert "![hf_digits_autoencoder_b64.png](hf_digits_autoencoder_b64.png)" in text
