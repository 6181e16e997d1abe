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

Several stores make one report over their union: they are opened read-only (nothing is written into
them or beside them), copied into a temporary store (runs deduplicated by identity, as
:func:`hessopt.bench.harness.store.merge` does), and the report is written from that, so every suite
has one section, pooled over the stores. The report lists each input store, and at its top the parts
of the suites that the commands that wrote them skipped (missing data or packages) and that no store
has runs of.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hessopt.bench.functions.protocol import SUITE
from hessopt.bench.functions.report import functions_section
from hessopt.bench.harness.environment import environment
from hessopt.bench.harness.store import ResultStore, same_file
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


def _distinct(paths: Sequence[Path]) -> list[tuple[Path, int]]:
    """Each store once (the same file under two names, hard links included), with how often it was given."""
    out: list[tuple[Path, int]] = []
    for path in paths:
        for i, (seen, n) in enumerate(out):
            if path == seen or same_file(path, seen):
                out[i] = (seen, n + 1)
                break
        else:
            out.append((path, 1))
    return out


def _not_run_lines(store: ResultStore) -> list[str]:
    """The skips the suites recorded (missing data or packages) of which the store has no runs."""
    rows = []
    for note in store.notes():
        problem, method = note["problem"] or None, note["method"] or None
        if store.runs(note["suite"], problem=problem, method=method):
            continue  # run after all: by a later invocation, or on another machine
        rows.append(
            f"- `{note['suite']}`: {note['message']} (noted {note['created_at']}, {note['hostname']})"
        )
    if not rows:
        return []
    return [
        "**Not run**: the commands that wrote the stores skipped these parts of their suites "
        "(the tables below leave them out); the fix is in each line.",
        "",
        *rows,
        "",
    ]


def write_report(
    stores: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | Path,
    *,
    command: str | None = None,
    studies: Sequence[str | Path] = (),
) -> Path:
    """Write the benchmark report from one or several results stores.

    Write ``out_dir/report.md``, its PNG figures and ``out_dir/report.html`` (the same report as one
    self-contained page) from the union of the stores (see the module docstring): each suite found
    (the test-function suite, :mod:`hessopt.bench.functions.suite`; the NN suites,
    :mod:`hessopt.bench.nn.report`) gets one section over the runs of every store.

    Args:
        stores: one store or several; each is opened read-only, and one given twice counts once.
        out_dir: the report's folder (created if missing).
        command: the provenance line (the CLI passes its argv).
        studies: folders of study fragments (``hessopt bench ogr-studies``, ``benchmarks/step_cost.py``)
            appended after the suites when present.

    Returns:
        The path of ``report.md``.

    Raises:
        StoreError: a store is missing or not a usable hessopt store (checked before anything is
            written).
        ValueError: no store given, or ``out_dir`` is a file.
    """
    paths = [Path(stores)] if isinstance(stores, (str, os.PathLike)) else [Path(s) for s in stores]
    if not paths:
        raise ValueError("write_report needs at least one results store")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the report folder {out} is a file; pass a folder (created if missing)")
    distinct = _distinct(paths)
    with contextlib.ExitStack() as stack:
        inputs = [stack.enter_context(ResultStore(p, readonly=True)) for p, _ in distinct]
        union = stack.enter_context(
            ResultStore(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "union.sqlite")
        )
        store_lines = []
        for (path, given), inp in zip(distinct, inputs, strict=True):
            union.add_store(inp)
            suites = ", ".join(inp.suites()) or "no runs"
            again = f"; given {given} times, read once" if given > 1 else ""
            store_lines.append(f"- `{path}`: {inp.count()} runs ({suites}{again})")
        return _write(union, out, store_lines, command, studies)


def _write(
    store: ResultStore,
    out: Path,
    store_lines: list[str],
    command: str | None,
    studies: Sequence[str | Path],
) -> Path:
    """Write the report of ``store`` (the union of the inputs, listed in ``store_lines``) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [
        "# hessopt benchmark report",
        "",
        f"Generated {date} by `{command or 'hessopt.bench.report.write_report'}` from "
        f"{'these stores' if len(store_lines) > 1 else 'the store'} (one report over all their runs):",
        "",
        *store_lines,
        "",
    ]
    hosts = sorted({r.hostname for r in store.runs()})
    if len(hosts) > 1:
        lines += [
            f"The runs come from {len(hosts)} machines ({', '.join(hosts)}): wall-clock times and their "
            "ratios compare runs of different machines; steps and evaluations do not depend on it.",
            "",
        ]
    lines += _not_run_lines(store)
    invocations = store.invocations()
    if invocations:
        lines += ["Commands that wrote the stores:", ""]
        for inv in invocations:
            env = inv["environment"]
            warning = f"; warning: {env['warning']}" if env.get("warning") else ""
            lines.append(f"- `{inv['command']}` ({inv['started_at']}, {env.get('hostname', '?')}{warning})")
        lines.append("")
    nn_suites = nn_suite_names(store)
    if store.count(SUITE):
        functions_section(store, out, lines)
    for suite in nn_suites:
        nn_section(store, out, lines, suite)
    if not store.count(SUITE) and not nn_suites:
        lines += ["No runs in the stores: run `hessopt bench functions` or `hessopt bench nn` first.", ""]
    _studies_section(out, lines, studies)
    lines += ["## Environment", ""]
    lines += environment_lines(invocations, environment())
    text = "\n".join(lines)
    report = out / "report.md"
    report.write_text(text, encoding="utf-8")
    (out / "report.html").write_text(to_html(text, out), encoding="utf-8")
    return report
