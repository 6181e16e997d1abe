"""benchmarks/nn_step_time.py runs on embedded data and writes consistent ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "nn_step_time.py"


def test_nn_step_time_smoke(tmp_path):
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--problem",
        "digits_mlp",
        "--quick",
        "--methods",
        "adam,momentum,lbfgs,hf",
    ]
    done = subprocess.run([*cmd, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    res = json.loads((tmp_path / "nn_step_time.json").read_text())
    methods = res["methods"]
    names = ["adam", "momentum", "lbfgs", "hf", "adam(foreach=True)", "adam(fused=True)"]
    assert list(methods) == names and res["parameters"] == 2410
    assert methods["adam"]["ratio_to_adam"] == 1.0 and methods["adam"]["grads_per_step"] == 1.0
    for m in methods.values():
        lo, hi = m["iqr_ms"]
        assert lo <= m["median_ms"] <= hi
        assert m["ratio_to_adam"] == pytest.approx(m["median_ms"] / methods["adam"]["median_ms"], rel=1e-12)
    fastest = min(methods[n]["median_ms"] for n in ("adam", "adam(foreach=True)", "adam(fused=True)"))
    for m in methods.values():
        assert m["ratio_to_fastest_adam"] == pytest.approx(m["median_ms"] / fastest, rel=1e-12)
    assert methods["lbfgs"]["grads_per_step"] >= 1.0  # its line search may evaluate more than once
    assert "| momentum |" in (tmp_path / "nn_step_time.md").read_text()
    bad = subprocess.run(
        [*cmd, "--methods", "momentum", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "Adam (the baseline) must be among the methods" in bad.stderr
