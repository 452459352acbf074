"""The analysis's output paths, as plain functions of the config (used by the .smk files and tests).

Kept here rather than in the rule files so that ``snakemake --lint`` stays clean (it flags functions
defined next to rules) and so the target list can be tested without Snakemake. Named outputs are
``<table>_<ext>`` for tables and ``png``/``svg``/``html`` for figures.
"""

from __future__ import annotations

from collections.abc import Mapping

TABLE_EXTS = ("parquet", "md", "tex")
FIGURE_EXTS = ("png", "svg", "html")

#: Result tables written as Parquet + Markdown + LaTeX: name -> caption.
TABLES = {
    "flops": "FLOPS per model, phase, method, length and compression (Appendix D), by component.",
    "flops_crossover": "Length where dense attention FLOPS overtake the linear part, per model and phase.",
    "isoflops": "isoFLOPS points: mean score over tasks vs FLOPS, Pareto frontier marked (RQ1, Figure 2).",
    "max_compression": "Maximum compression not significantly worse than dense, one-tailed Welch (RQ2).",
    "max_compression_summary": "Maximum compression across tasks: mean, std and minimum (RQ2, Figure 3).",
    "methods_by_category": "Best method per phase, task category and compression ratio (RQ3).",
    "methods_by_task": "Best method per phase, task and compression ratio (RQ3, Figure 4).",
    "scaling_fits": "Scaling-law fits, one per held-out axis: R^2 and parameters (RQ4, Table 3).",
    "scaling_spearman": "Spearman rho of true vs predicted held-out accuracy, * p < alpha (RQ4, Table 4).",
    "scaling_mae": "Mean absolute error of predicted held-out accuracy (RQ4, Table 7).",
}

#: Tables written as Parquet only (inputs of figures or for further analysis): name -> caption.
DATA_TABLES = {
    "cells": "Per-cell statistics of the score table (n, mean, std, achieved compression).",
    "dense_comparison": "Every sparse level's Welch test against dense.",
    "flops_by_length": "FLOPS against length per model and phase (Figure 12 data).",
    "scaling_predictions": "Held-out points with true and predicted accuracy.",
}

#: Figures: name -> report category.
FIGURES = {
    "flops_vs_length": "Appendix D FLOPS",
    "isoflops": "RQ1 isoFLOPS",
    "max_compression": "RQ2 maximum compression",
    "score_vs_compression": "RQ3 methods",
    "agreement_vs_compression": "RQ3 methods",
    "scaling_predictions": "RQ4 scaling laws",
}


#: The study's results in one page, printed at the end of a run.
SUMMARY = "results/summary.md"

#: Pages of the Snakemake report beside the figures: name -> path.
REPORT_PAGES = {"tables": "results/report/tables.html", "predictions": "results/report/predictions.html"}


def table_paths(name: str) -> dict[str, str]:
    """Named outputs ``<name>_<ext>`` of one table (Parquet only for a data table)."""
    exts = ("parquet",) if name in DATA_TABLES else TABLE_EXTS
    return {f"{name}_{ext}": f"results/tables/{name}.{ext}" for ext in exts}


def figure_paths(name: str) -> dict[str, str]:
    """Named outputs png, svg, html of one figure."""
    return {ext: f"results/figures/{name}.{ext}" for ext in FIGURE_EXTS}


def analysis_targets(config: Mapping) -> list[str]:
    """Every final output of the analysis for ``config``.

    Every analysis runs for any config: what a grid cannot support (one model, one length, no sparse
    method) is reported inside the tables and logs, so the list does not depend on the grid.
    """
    del config  # the same list for every grid; the argument keeps the call site stable
    tables = [path for name in TABLES for path in table_paths(name).values()]
    figures = [path for name in FIGURES for path in figure_paths(name).values()]
    return [*tables, *figures, SUMMARY]
