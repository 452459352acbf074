"""Paper Figure 12 (Appendix D): FLOPS against sequence length per model, prefill and decode.

Solid lines are dense, dashed lines sparse at the given compressions (indexing cost included); the
thin grey line per model is the linear part alone (embedding, projections, MLP, output layer), so the
length where the total leaves it marks the move from the linear- to the quadratic-dominated regime.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .style import PANEL_HEIGHT, PANEL_WIDTH, empty_chart, natural_order


def flops_vs_length_chart(data: pd.DataFrame) -> alt.FacetChart | alt.Chart:
    """Chart from :func:`sparse_frontier.analysis.flops.flops_by_length` (log-log, one panel per phase)."""
    if data.empty:
        return empty_chart("No model configs: no FLOPS to draw.")
    data = data.assign(
        configuration=[
            "dense" if cr == 1 else f"{m} CR {cr:g}"
            for m, cr in zip(data["method"], data["compression_ratio"], strict=True)
        ]
    )
    linear = data[data["compression_ratio"] == 1].assign(
        configuration="linear part only", flops_total=lambda d: d["flops_linear"]
    )
    long = pd.concat([data, linear], ignore_index=True)[
        ["model", "phase", "length", "configuration", "flops_total"]
    ]
    configs = list(dict.fromkeys(long["configuration"]))
    x = alt.X("length:Q", scale=alt.Scale(type="log", base=2), title="sequence length (tokens)")
    y = alt.Y("flops_total:Q", scale=alt.Scale(type="log"), title="FLOPS", axis=alt.Axis(format=".0e"))
    chart = (
        alt.Chart(long)
        .mark_line(strokeWidth=1.6)
        .encode(
            x=x,
            y=y,
            color=alt.Color("model:N", title="model", sort=natural_order(long["model"])),
            strokeDash=alt.StrokeDash("configuration:N", sort=configs, title="configuration"),
            opacity=alt.condition(
                alt.datum.configuration == "linear part only", alt.value(0.45), alt.value(1.0)
            ),
            tooltip=[
                "model:N",
                "phase:N",
                "configuration:N",
                "length:Q",
                alt.Tooltip("flops_total:Q", format=".3e"),
            ],
        )
        .properties(width=PANEL_WIDTH * 2, height=PANEL_HEIGHT * 2)
        .facet(column=alt.Column("phase:N", sort=["prefill", "decode"], title="phase"))
        .resolve_scale(y="independent")
    )
    return chart
