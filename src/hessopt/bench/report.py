"""``hessopt report``: results stores turned into ``report.md`` plus PNG figures and ``report.html``.

For the test-function suite (:mod:`hessopt.bench.functions.suite`) the report has, per protocol
found in the store (runs of equal ``steps`` and ``noise_std``), and per step budget (checkpoint):

* a figure of the per-start best ``f - f_min`` sorted over starts, one panel per function and one
  curve per method (as the 2025 BFGS/OGR comparison plots them);
* a table of the success fraction (best ``f - f_min`` < :data:`SUCCESS_TOL` = 1e-8) and a table of the
  geometric mean of best ``f - f_min`` (values floored at 1e-300 so the logarithm stays finite),
  method x function. Diverged runs count with the best value they reached; failed runs (exceptions)
  are left out and listed;

then the median best-so-far curves, hessopt's BFGS beside scipy's, the tuned step sizes, evaluation
counts and wall times. Each neural-network suite in a store gets the section of
:mod:`hessopt.bench.nn.report` (time to target with ratios to Adam, performance profile, curves against
steps and wall-clock time, final metrics, step cost, tuning). Study fragments follow, then the
environment and commands that produced the stores. ``report.html`` is the same report as one page
with its figures inlined (:func:`hessopt.bench.render.markdown.to_html`).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hessopt.bench.functions.protocol import SUITE
from hessopt.bench.functions.report import functions_section
from hessopt.bench.harness.environment import environment
from hessopt.bench.harness.store import ResultStore
from hessopt.bench.nn.report import nn_section, nn_suite_names
from hessopt.bench.render.html import to_html
from hessopt.bench.render.markdown import environment_lines

__all__ = ["write_report"]

def _studies_section(out: Path, lines: list[str], studies: Sequence[str | Path]) -> None:
    """Append the study fragments to the report.

    Append the Markdown fragments (``*.md``) found in each study folder, with image links rewritten
    relative to the report. Folders that do not exist are skipped (the study was not run).
    """
    for folder in (Path(s) for s in studies):
        if not folder.is_dir():
            continue
        rel = Path(os.path.relpath(folder.resolve(), out.resolve()))
        for fragment in sorted(folder.glob("*.md")):
            text = fragment.read_text(encoding="utf-8")
            link = (rel / "\\1").as_posix()
            text = re.sub(r"\]\(([^)/:]+\.png)\)", f"]({link})", text)
            levels = [len(h) for h in re.findall(r"^(#+) ", text, flags=re.MULTILINE)]
            shift = 2 - min(levels, default=2)  # the fragment's top heading becomes a report section
            text = re.sub(
                r"^(#+) ", lambda h, k=shift: "#" * max(1, len(h.group(1)) + k) + " ", text, flags=re.M
            )
            lines += [text.rstrip(), "", f"(from `{fragment.as_posix()}`)", ""]


def write_report(
    stores: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | Path,
    *,
    command: str | None = None,
    studies: Sequence[str | Path] = (),
) -> Path:
    """Write the benchmark report from one or several results stores.

    Write ``out_dir/report.md``, its PNG figures and ``out_dir/report.html`` (the same report as one
    self-contained page) from one or several results stores.

    Each store contributes the sections of the suites it holds: the test-function suite
    (:mod:`hessopt.bench.functions.suite`) and the NN suites (:mod:`hessopt.bench.nn.report`).
    Returns the path of ``report.md``. ``command`` is the provenance line (the CLI passes its argv).
    ``studies``: folders of study fragments (``hessopt bench ogr-studies``, ``benchmarks/step_cost.py``)
    appended after the suites when present.
    """
    paths = [Path(stores)] if isinstance(stores, (str, os.PathLike)) else [Path(s) for s in stores]
    if not paths:
        raise ValueError("write_report needs at least one results store")
    for path in paths:
        if not path.is_file():
            raise ValueError(
                f"no results store at {path}; run `hessopt bench functions` or `hessopt bench nn` first, "
                "or pass --store"
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [
        "# hessopt benchmark report",
        "",
        f"Generated {date} by `{command or 'hessopt.bench.report.write_report'}` from "
        f"{', '.join(f'`{p}`' for p in paths)}.",
        "",
    ]
    invocations: list[dict[str, Any]] = []
    for path in paths:
        with ResultStore(path) as store:
            invocations += store.invocations()
    if invocations:
        lines += ["Commands that wrote the stores:", ""]
        lines += [
            f"- `{inv['command']}` ({inv['started_at']}, {inv['environment'].get('hostname', '?')})"
            for inv in invocations
        ]
        lines.append("")
    for path in paths:
        with ResultStore(path) as store:
            nn_suites = nn_suite_names(store)
            if store.count(SUITE):
                functions_section(store, out, lines)
            elif not nn_suites:
                lines += [
                    f"No runs in `{path}`: run `hessopt bench functions` or `hessopt bench nn` first.",
                    "",
                ]
            for suite in nn_suites:
                nn_section(store, out, lines, suite)
    _studies_section(out, lines, studies)
    lines += ["## Environment", ""]
    lines += environment_lines(invocations, environment())
    text = "\n".join(lines)
    report = out / "report.md"
    report.write_text(text, encoding="utf-8")
    (out / "report.html").write_text(to_html(text, out), encoding="utf-8")
    return report
