"""Paper Figure 2: isoFLOPS, average score across tasks against FLOPS, Pareto frontier marked.

One panel per (phase, length); a point per (model, compression), coloured by model, labelled by its
compression ratio; the frontier is a black step line through the Pareto-optimal points (ringed).
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .style import PANEL_HEIGHT, PANEL_WIDTH, empty_chart, natural_order


def isoflops_chart(points: pd.DataFrame) -> alt.FacetChart | alt.Chart:
    """Chart from :func:`sparse_frontier.analysis.frontier.isoflops_points`."""
    if points.empty or points[["flops", "score"]].isna().all(axis=None):
        return empty_chart("No isoFLOPS points: no dense or sparse cells with FLOPS (see the isoflops log).")
    data = points.dropna(subset=["flops", "score"]).assign(
        cr_label=lambda d: d["compression_ratio"].map(lambda c: f"{c:.3g}x"),
        panel_length=lambda d: d["length"].map(lambda n: f"{n // 1024}K" if n >= 1024 else str(n)),
    )
    order = sorted(data["length"].unique())
    len_sort = [f"{n // 1024}K" if n >= 1024 else str(n) for n in order]
    x = alt.X(
        "flops:Q", scale=alt.Scale(type="log"), title="FLOPS", axis=alt.Axis(format=".0e", labelAngle=-30)
    )
    y = alt.Y("score:Q", title="average score across tasks", scale=alt.Scale(zero=False))
    tooltip = [
        "model:N",
        "method:N",
        "compression_ratio:Q",
        alt.Tooltip("score:Q", format=".3f"),
        alt.Tooltip("flops:Q", format=".3e"),
        "n_tasks:Q",
        "on_frontier:N",
    ]
    base = alt.Chart().properties(width=PANEL_WIDTH * 1.4, height=PANEL_HEIGHT * 1.4)
    # In the HTML, clicking a model in the legend highlights its points in every panel.
    pick = alt.selection_point(fields=["model"], bind="legend")
    pts = (
        base.mark_point(filled=True, size=55)
        .encode(
            x=x,
            y=y,
            color=alt.Color("model:N", title="model", sort=natural_order(data["model"])),
            opacity=alt.condition(pick, alt.value(0.85), alt.value(0.12)),
            tooltip=tooltip,
        )
        .add_params(pick)
    )
    ring = (
        base.transform_filter(alt.datum.on_frontier)
        .mark_point(size=150, color="black", strokeWidth=1.2)
        .encode(x=x, y=y)
    )
    frontier = (
        base.transform_filter(alt.datum.on_frontier)
        .mark_line(interpolate="step-after", color="black", strokeWidth=1.2)
        .encode(x=x, y=y)
    )
    # Labels only on the frontier: 40 labels per panel would hide the points; the tooltip has them all.
    labels = (
        base.transform_filter(alt.datum.on_frontier)
        .mark_text(dx=7, dy=-6, fontSize=9, align="left")
        .encode(x=x, y=y, text="cr_label:N")
    )
    return (
        alt.layer(frontier, pts, ring, labels, data=data)
        .facet(
            row=alt.Row("phase:N", sort=["prefill", "decode"], title="phase"),
            column=alt.Column("panel_length:N", sort=len_sort, title="sequence length"),
        )
        .resolve_scale(x="independent", y="independent")
    )
