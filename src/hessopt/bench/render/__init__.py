"""Rendering: Markdown tables, plots and the self-contained HTML page."""
