"""Figure 4 of the paper: score against compression, one panel per task, one line per method.

Rows are phases (prefill, decode), columns are tasks; each sparse method is a line over its
compression ratios (averaged over models and lengths after interpolation onto a common grid,
analysis/curves.py), and the dense score of the task is a dashed horizontal reference.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from sparse_frontier.analysis.cells import as_cells
from sparse_frontier.analysis.curves import average_curves, dense_reference
from sparse_frontier.analysis.tables import DENSE_PHASE

from .style import PANEL_HEIGHT, PANEL_WIDTH, empty_chart, method_scale


def score_vs_compression_data(scores: pd.DataFrame) -> pd.DataFrame:
    """The long table the chart draws: sparse curves plus one dense row per (phase, task).

    scores: the score table or its cell table (analysis/cells.py).
    Columns: phase, task, method, compression_ratio, score, kind ("sparse" | "dense").
    """
    means = as_cells(scores)
    curves = average_curves(means)
    curves = curves.assign(kind="sparse")[["phase", "task", "method", "compression_ratio", "score", "kind"]]
    dense = dense_reference(means)
    phases = sorted(curves["phase"].unique()) or [DENSE_PHASE]
    ref = pd.concat([dense.assign(phase=p) for p in phases], ignore_index=True)
    ref = ref.assign(method="dense", compression_ratio=1.0, kind="dense")[curves.columns]
    return pd.concat([curves, ref], ignore_index=True)


def score_vs_compression_chart(data: pd.DataFrame, title: str | None = None) -> alt.FacetChart | alt.Chart:
    """Layered, faceted chart from :func:`score_vs_compression_data` (rows: phase, columns: task)."""
    if data.empty:
        return empty_chart("No scores to draw.")
    colour = alt.Color("method:N", scale=method_scale(list(data["method"].unique())), title="method")
    x = alt.X(
        "compression_ratio:Q",
        title="compression ratio",
        scale=alt.Scale(zero=False, nice=False, domainMin=1),
    )
    y = alt.Y("score:Q", title="mean score", scale=alt.Scale(domain=[0, 1]))
    tooltip = [
        "method:N",
        "task:N",
        "phase:N",
        alt.Tooltip("compression_ratio:Q", format=".2f"),
        alt.Tooltip("score:Q", format=".3f"),
    ]
    # In the HTML, clicking a method in the legend highlights it in every panel.
    pick = alt.selection_point(fields=["method"], bind="legend")
    fade = alt.condition(pick, alt.value(1.0), alt.value(0.15))
    base = alt.Chart().properties(width=PANEL_WIDTH, height=PANEL_HEIGHT)
    sparse = base.transform_filter(alt.datum.kind == "sparse")
    lines = (
        sparse.mark_line(strokeWidth=1.8)
        .encode(x=x, y=y, color=colour, opacity=fade, tooltip=tooltip)
        .add_params(pick)
    )
    points = sparse.mark_point(filled=True, size=28).encode(
        x=x, y=y, color=colour, opacity=fade, tooltip=tooltip
    )
    dense = (
        base.transform_filter(alt.datum.kind == "dense")
        .mark_rule(strokeDash=[5, 3], strokeWidth=1.5)
        .encode(y=y, color=colour, tooltip=tooltip)
    )
    chart = alt.layer(lines, points, dense, data=data).facet(
        row=alt.Row("phase:N", title="phase", sort=["prefill", "decode", "dense"]),
        column=alt.Column("task:N", title="task"),
    )
    chart = chart.resolve_scale(x="independent")
    if title:
        chart = chart.properties(title=title)
    return chart.configure_axis(grid=True, gridOpacity=0.4).configure_header(labelFontSize=11)
