"""`hessopt bench hesscale`: the accuracy study's fragment, table and bar chart."""

from __future__ import annotations

from hessopt.bench.studies import hesscale_accuracy as ha
from hessopt.cli import main


def test_bench_hesscale_writes_a_fragment(tmp_path, monkeypatch):
    rows = ha.run(seeds=1, samples=2, activations=("tanh",))
    monkeypatch.setattr(ha, "run", lambda quick=False: rows)
    assert main(["bench", "hesscale", "--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "hesscale_accuracy.md").read_text()
    assert "| estimator | tanh |" in text and "| HesScale | 1 ± 0 |" in text
    assert "[836]" in text  # the published Hutchinson ratio beside ours
    assert (tmp_path / "hesscale_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    exact = {r["estimator"]: r for r in rows if r["layer"] == 4}
    assert exact["hesscale"]["l1_error"] < 1e-12  # the last layer is exact (check 2 of the note)
