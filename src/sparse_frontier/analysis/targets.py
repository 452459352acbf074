"""The analysis's output paths, as plain functions of the config (used by the .smk files and tests).

Kept here rather than in the rule files so that ``snakemake --lint`` stays clean (it flags functions
defined next to rules) and so the target list can be tested without Snakemake.
"""

from __future__ import annotations

from collections.abc import Mapping

TABLE_EXTS = ("parquet", "md", "tex")
FIGURE_EXTS = ("png", "svg", "html")

#: Result tables written as Parquet + Markdown + LaTeX: name -> what it holds.
TABLES = {
    "max_compression": "RQ2 maximum compression per model, length, task, phase and method",
    "max_compression_summary": "RQ2 mean / std / min across tasks (Figure 3)",
}

#: Figures: name -> report category.
FIGURES = {
    "score_vs_compression": "RQ3 methods",
}


def table_paths(name: str) -> dict[str, str]:
    """Named outputs parquet, md, tex of one result table."""
    return {ext: f"results/tables/{name}.{ext}" for ext in TABLE_EXTS}


def figure_paths(name: str) -> dict[str, str]:
    """Named outputs png, svg, html of one figure."""
    return {ext: f"results/figures/{name}.{ext}" for ext in FIGURE_EXTS}


def analysis_targets(config: Mapping) -> list[str]:
    """Every final output of the analysis for ``config``.

    Every analysis runs for any config: what a config cannot support (one model, one length, no
    sparse method) is reported inside the tables, so the target list does not depend on the grid.
    """
    del config  # the list is the same for every grid; the argument keeps the call site stable
    tables = [path for name in TABLES for path in table_paths(name).values()]
    figures = [path for name in FIGURES for path in figure_paths(name).values()]
    return tables + figures
