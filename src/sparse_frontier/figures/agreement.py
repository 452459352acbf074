"""Accuracy and agreement with dense against compression, side by side, one panel per task.

The top row is the task score (as in Figure 4), the bottom row the mean greedy-token agreement of
each method's answers with dense's on the same prompts (agreement.py). Both start at dense
(compression 1: score = dense's, agreement = 1). Where a small model scores near zero, or ten
samples make accuracy coarse, the agreement row still shows how fast each method departs from
what dense attention computes.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from sparse_frontier.analysis.cells import as_cells

from .style import PANEL_HEIGHT, PANEL_WIDTH, empty_chart, method_scale

MEASURES = {"score": "mean score", "dense_agreement": "agreement with dense"}


def agreement_data(cells: pd.DataFrame) -> pd.DataFrame:
    """Long table of both measures per (task, method, compression ratio), averaged over models
    and lengths; every method's line starts from the dense point at compression 1.

    cells: the cell table (analysis/cells.py) with a ``dense_agreement`` column, or the score table.
    Columns: task, method, compression_ratio, measure, value, n.
    """
    cells = as_cells(cells)
    if "dense_agreement" not in cells:
        return pd.DataFrame(columns=["task", "method", "compression_ratio", "measure", "value", "n"])
    means = (
        cells.groupby(["task", "method", "compression_ratio"], observed=True)
        .agg(score=("score", "mean"), dense_agreement=("dense_agreement", "mean"), n=("n", "sum"))
        .reset_index()
    )
    dense = means[means.method == "dense"]
    sparse = means[means.method != "dense"]
    # Each method's curve begins at dense: its own row at compression 1 (dense is CR 1 by definition).
    starts = [dense.assign(method=m) for m in sorted(sparse.method.unique())] or [dense]
    lines = pd.concat([*starts, sparse], ignore_index=True)
    long = lines.melt(
        id_vars=["task", "method", "compression_ratio", "n"],
        value_vars=list(MEASURES),
        var_name="measure",
        value_name="value",
    )
    long["measure"] = long["measure"].map(MEASURES)
    return long[["task", "method", "compression_ratio", "measure", "value", "n"]].sort_values(
        ["measure", "task", "method", "compression_ratio"], ignore_index=True
    )


def agreement_chart(data: pd.DataFrame, title: str | None = None) -> alt.FacetChart | alt.Chart:
    """Faceted chart of :func:`agreement_data`: rows are the two measures, columns the tasks."""
    if data.empty:
        return empty_chart(
            "No agreement with dense to draw:\nthe scores lack dense_agreement (rerun evaluate)."
        )
    colour = alt.Color("method:N", scale=method_scale(list(data["method"].unique())), title="method")
    x = alt.X("compression_ratio:Q", title="compression ratio", scale=alt.Scale(type="log", nice=False))
    y = alt.Y("value:Q", title=None, scale=alt.Scale(domain=[0, 1]))
    tooltip = [
        "method:N",
        "task:N",
        "measure:N",
        alt.Tooltip("compression_ratio:Q", format=".2f"),
        alt.Tooltip("value:Q", format=".3f"),
        "n:Q",
    ]
    base = alt.Chart().properties(width=PANEL_WIDTH, height=PANEL_HEIGHT)
    lines = base.mark_line(strokeWidth=1.8).encode(x=x, y=y, color=colour, tooltip=tooltip)
    points = base.mark_point(filled=True, size=28).encode(x=x, y=y, color=colour, tooltip=tooltip)
    chart = alt.layer(lines, points, data=data).facet(
        row=alt.Row("measure:N", title=None, sort=list(MEASURES.values())),
        column=alt.Column("task:N", title="task"),
    )
    if title:
        chart = chart.properties(title=title)
    return chart.configure_axis(grid=True, gridOpacity=0.4).configure_header(labelFontSize=11)
