"""One function per analysis step: score table (and settings) in, named result tables and notes out.

The Snakemake scripts call these and write what they return; the benchmark calls them in sequence
on a paper-sized synthetic table. Every step returns ``notes``: sentences about what it could not
compute on this data (one model, one length, a task at zero ...), which the scripts log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .cells import as_cells, cell_means
from .flops import ModelShape, crossover_table, flops_curves, flops_table, studied_curves
from .frontier import isoflops_points, resolve_phase_methods
from .methods import best_methods
from .scaling import metric_matrix, scaling_data, scaling_laws
from .significance import dense_comparison, max_compression, max_compression_summary
from .tables import write_table
from .targets import DATA_TABLES, TABLES

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """Named tables of one analysis step, plus what it could not compute."""

    tables: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)
    display: dict[str, pd.DataFrame] = field(default_factory=dict)


def cells_step(scores: pd.DataFrame) -> StepResult:
    """The per-cell statistics every later step reads (one pass over the long score table)."""
    cells = cell_means(scores)
    notes = []
    few = cells[cells["n"] < 2]
    if len(few):
        notes.append(f"{len(few)} cell(s) have a single sample: no significance test is possible for them")
    return StepResult({"cells": cells}, notes)


def figure12_lengths(lengths: list[int]) -> np.ndarray:
    """Powers of two from 1K up to 256K or the longest studied length, plus the studied lengths."""
    top = max([262144, *lengths])
    grid = 2 ** np.arange(10, int(np.ceil(np.log2(top))) + 1)
    return np.unique(np.concatenate([grid, np.asarray(lengths, dtype=np.int64)]))


def flops_step(
    scores: pd.DataFrame, shapes: Mapping[str, ModelShape], convention: str = "paper"
) -> StepResult:
    """FLOPS of every studied cell (table) and FLOPS against length per model (Figure 12 data: the
    studied methods, or the paper's in a phase the study did not sparsify).

    convention: how attention pairs are counted, "paper" (L^2) or "causal" (analysis.flops).
    """
    cells = as_cells(scores)[["model", "phase", "method", "length", "compression_ratio"]].drop_duplicates()
    table = flops_table(shapes, cells, convention=convention)
    studied = sorted(int(n) for n in cells["length"].unique())
    by_length = flops_curves(shapes, figure12_lengths(studied), studied_curves(cells), convention=convention)
    crossover = crossover_table(shapes, convention=convention)
    return StepResult({"flops": table, "flops_by_length": by_length, "flops_crossover": crossover})


def isoflops_step(
    scores: pd.DataFrame, flops: pd.DataFrame, phase_methods: Mapping[str, str] | None
) -> StepResult:
    """RQ1 points and Pareto frontier per (length, phase)."""
    means = as_cells(scores)
    methods, notes = resolve_phase_methods(means, dict(phase_methods or {}))
    points = isoflops_points(means, flops, methods)
    for (length, phase), g in points.groupby(["length", "phase"]):
        if g["model"].nunique() < 2:
            notes.append(
                f"{phase}, length {length}: one model only, the frontier compares compressions of it alone"
            )
        if g["flops"].isna().any():
            notes.append(f"{phase}, length {length}: points without FLOPS (no model config) are left out")
    if points.empty:
        notes.append("no dense or sparse cells: no isoFLOPS points")
    return StepResult({"isoflops": points}, notes)


def max_compression_step(scores: pd.DataFrame, alpha: float = 0.05, min_score: float = 0.05) -> StepResult:
    """RQ2: every level's test, the maximum compression per comparison, and its summary across tasks."""
    comparison = dense_comparison(scores, alpha=alpha, min_score=min_score)
    table = max_compression(comparison, alpha=alpha)
    notes = [
        f"{n} comparison(s): {note}"
        for note, n in table.loc[table["note"] != "", "note"].value_counts().items()
    ]
    if table.empty:
        notes.append("no sparse cells: no maximum compression to compute")
    return StepResult(
        {
            "dense_comparison": comparison,
            "max_compression": table,
            "max_compression_summary": max_compression_summary(table),
        },
        notes,
    )


def methods_step(scores: pd.DataFrame) -> StepResult:
    """RQ3: the best method per compression, per task category and per task."""
    means = as_cells(scores)
    by_category = best_methods(means, by="category")
    by_task = best_methods(means, by="task")
    notes = []
    for phase, g in means[means["phase"] != "dense"].groupby("phase"):
        if g["method"].nunique() < 2:
            notes.append(f"{phase}: one method only, nothing to compare it with")
    if by_category.empty:
        notes.append("no sparse cells shared by the methods of a phase: no method comparison")
    return StepResult({"methods_by_category": by_category, "methods_by_task": by_task}, notes)


def scaling_step(
    scores: pd.DataFrame,
    params_b: Mapping[str, float],
    phase_methods: Mapping[str, str] | None = None,
    huber_delta: float = 1e-3,
    logit_clip: float = 0.01,
    alpha: float = 0.05,
) -> StepResult:
    """RQ4: three hold-out fits per phase; Tables 3, 4 and 7 and the held-out predictions."""
    means = as_cells(scores)
    methods, notes = resolve_phase_methods(means, dict(phase_methods or {}))
    data = scaling_data(means, dict(params_b), methods, clip=logit_clip)
    results = scaling_laws(data, delta=huber_delta, alpha=alpha)
    notes += results.notes
    per_task = results.per_task
    notes += (
        [f"{r.phase}, {r.held_out}, {r.task}: {r.note}" for r in per_task.itertuples() if r.note]
        if len(per_task)
        else ["no held-out points: no per-task metrics"]
    )
    keep = ["phase", "held_out", "task", "n_test"]
    spearman = (
        per_task[[*keep, "spearman_rho", "p_value", "significant", "note"]] if len(per_task) else per_task
    )
    mae = per_task[[*keep, "mae"]] if len(per_task) else per_task
    return StepResult(
        {
            "scaling_fits": results.fits,
            "scaling_spearman": spearman,
            "scaling_mae": mae,
            "scaling_predictions": results.predictions,
        },
        notes,
        display={
            "scaling_spearman": metric_matrix(per_task, "spearman_rho", star=True),
            "scaling_mae": metric_matrix(per_task, "mae"),
        },
    )


def write_step(result: StepResult, outputs) -> None:
    """Write each table of ``result`` to the named outputs ``<table>_<ext>``; log its notes."""
    for note in result.notes:
        log.warning("not computed: %s", note)
    for name, df in result.tables.items():
        paths = {ext: getattr(outputs, f"{name}_{ext}", None) for ext in ("parquet", "md", "tex")}
        if paths["parquet"] is None:
            raise ValueError(f"the rule declares no output {name}_parquet for table {name}.")
        caption = TABLES.get(name) or DATA_TABLES.get(name)
        write_table(
            df, paths["parquet"], paths["md"], paths["tex"], caption=caption, display=result.display.get(name)
        )
