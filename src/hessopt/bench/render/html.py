"""The report as one self-contained HTML page (PNG figures inlined as data URIs)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from markdown_it import MarkdownIt

__all__ = ["to_html"]

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
    """The report's Markdown as one self-contained HTML page.

    The HTML page of ``markdown_text``, with every image whose ``src`` is a file under ``base_dir``
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
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
