"""Writing an altair chart as PNG, SVG and a self-contained interactive HTML, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import altair as alt

from sparse_frontier.analysis.tables import atomic_write

FORMATS = ("png", "svg", "html")


def save_chart(chart: alt.TopLevelMixin, path: str | os.PathLike, scale_factor: float = 2.0) -> None:
    """Write ``chart`` to ``path``; the format follows the suffix (.png, .svg or .html).

    HTML inlines the Vega libraries (vl-convert), so the interactive figure opens offline.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"cannot write a figure as {path.name}: use one of .png, .svg, .html.")

    def write(tmp: str) -> None:
        if fmt == "png":
            chart.save(tmp, format="png", scale_factor=scale_factor)
        elif fmt == "svg":
            chart.save(tmp, format="svg")
        else:
            chart.save(tmp, format="html", inline=True)

    atomic_write(path, write)


def save_all(chart: alt.TopLevelMixin, paths: dict[str, str | os.PathLike] | list) -> None:
    """Write ``chart`` to each path (e.g. Snakemake's named outputs png, svg, html)."""
    for path in paths.values() if isinstance(paths, dict) else paths:
        save_chart(chart, path)
