"""The README's Python examples run as written, in order, in one namespace (as a reader would paste them)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run_and_train():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4, "the README lost its usage examples"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    # the last example's dense methods must have made progress on their problem
    w, closure = namespace["w"], namespace["closure"]
    start = torch.zeros_like(w, requires_grad=True)
    A = namespace["A"]
    start_loss = (A @ start - 1).pow(2).sum()
    assert closure().item() < 0.1 * start_loss.item()
    assert namespace["H"].shape == (10, 10)
