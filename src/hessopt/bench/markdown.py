"""Markdown building blocks of the report, and the self-contained HTML page made from it.

* :func:`fmt`, :func:`table`, :func:`order`: number formatting, pipe tables, name ordering shared by the
  report sections (:mod:`hessopt.bench.report`, :mod:`hessopt.bench.nn_report`).
* :func:`environment_lines`: the table of environments (torch version, threads, CPU) of the commands
  that wrote a store, plus the report's own.
* :func:`to_html`: the report's Markdown rendered by ``markdown-it-py`` (CommonMark plus tables), every
  local PNG it links inlined as a ``data:`` URI, so the page is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from hessopt.bench.store import environment

__all__ = ["environment_lines", "fmt", "order", "table", "to_html"]


def fmt(value: float | None, spec: str = ".2e") -> str:
    """``value`` formatted with ``spec``; ``None``/NaN -> ``"nan"``, infinities -> ``"inf"``/``"-inf"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown pipe table (lines, ending with a blank line)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def order(found: Iterable[str], preferred: Sequence[str]) -> list[str]:
    """The names of ``found`` in ``preferred``'s order, then the others sorted."""
    found = set(found)
    return [p for p in preferred if p in found] + sorted(found - set(preferred))


_ENV_KEYS = (
    "hostname",
    "torch",
    "torch_threads",
    "workers",
    "worker_threads",
    "cpu",
    "cpu_count",
    "python",
    "platform",
)


def environment_lines(invocations: Sequence[dict[str, Any]]) -> list[str]:
    """A table of the environment of each invocation, then of the process writing the report."""
    rows = []
    for inv in invocations:
        env = inv["environment"]
        rows.append([inv["started_at"], inv.get("suite", "-"), *(str(env.get(k, "-")) for k in _ENV_KEYS)])
    now = environment()
    rows.append(["(this report)", "-", *(str(now.get(k, "-")) for k in _ENV_KEYS)])
    return table(["date (UTC)", "suite", *_ENV_KEYS], rows)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def to_html(markdown_text: str, base_dir: str | Path, *, title: str = "hessopt benchmark report") -> str:
    """The HTML page of ``markdown_text``, with every image whose ``src`` is a file under ``base_dir``
    (relative paths, as the report writes them) embedded as a base64 ``data:`` URI.

    Raises ValueError naming the image when a linked local PNG is missing (the page would be broken).
    """
    base = Path(base_dir)
    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(markdown_text)
    for token in tokens:
        for child in token.children or ():
            if child.type != "image":
                continue
            src = str(child.attrs.get("src", ""))
            if ":" in src or src.startswith("/"):
                continue  # a URL or an absolute path: left as it is
            path = base / src
            if not path.is_file():
                raise ValueError(f"the report links the image {src!r}, which is not in {base}")
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            mime = "image/png" if path.suffix.lower() == ".png" else "application/octet-stream"
            child.attrs["src"] = f"data:{mime};base64,{data}"
    body = md.renderer.render(tokens, md.options, {})
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
