"""Paper Figure 12 (Appendix D): FLOPS against sequence length per model, prefill and decode.

Solid lines are dense, dashed lines each method the study ran, at its lowest and highest compression
(indexing cost included; the paper's method of a phase the study did not sparsify, named so); the
faint line per model is the linear part alone (embedding, projections, MLP, output layer), and the
dotted vertical line the length where dense attention overtakes it: the move from the linear- to
the quadratic-dominated regime.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from ..analysis.flops import FLOPS_CONVENTIONS
from .style import PANEL_HEIGHT, PANEL_WIDTH, empty_chart, natural_order


def flops_vs_length_chart(
    data: pd.DataFrame, crossover: pd.DataFrame | None = None
) -> alt.FacetChart | alt.Chart:
    """Chart from :func:`sparse_frontier.analysis.flops.flops_by_length` (log-log, one panel per phase).

    crossover: :func:`sparse_frontier.analysis.flops.crossover_table`; each model's crossover length
    is drawn as a dotted vertical line in its colour. The title names the FLOPS convention of the data.
    """
    if data.empty:
        return empty_chart("No model configs: no FLOPS to draw.")
    studied = data["studied"] if "studied" in data else pd.Series(True, index=data.index)
    conventions = [FLOPS_CONVENTIONS.get(c, c) for c in dict.fromkeys(data["flops_convention"])]
    data = data.assign(
        configuration=[
            "dense" if cr == 1 else f"{m} CR {cr:g}" + ("" if ran else " (the paper's; not run)")
            for m, cr, ran in zip(data["method"], data["compression_ratio"], studied, strict=True)
        ]
    )
    linear = data[data["compression_ratio"] == 1].assign(
        configuration="linear part only", flops_total=lambda d: d["flops_linear"]
    )
    cols = ["model", "phase", "length", "configuration", "flops_total"]
    parts = [data[cols], linear[cols]]
    if crossover is not None and len(crossover):
        lo, hi = data["length"].min(), data["length"].max()
        shown = crossover[(crossover["crossover_length"] >= lo) & (crossover["crossover_length"] <= hi)]
        parts.append(
            shown.assign(length=shown["crossover_length"], configuration="crossover", flops_total=np.nan)[
                cols
            ]
        )
    long = pd.concat(parts, ignore_index=True)
    configs = [c for c in dict.fromkeys(long["configuration"]) if c != "crossover"]
    x = alt.X("length:Q", scale=alt.Scale(type="log", base=2), title="sequence length (tokens)")
    y = alt.Y("flops_total:Q", scale=alt.Scale(type="log"), title="FLOPS", axis=alt.Axis(format=".0e"))
    colour = alt.Color("model:N", title="model", sort=natural_order(long["model"]))
    base = alt.Chart().properties(width=PANEL_WIDTH * 2, height=PANEL_HEIGHT * 2)
    lines = (
        base.transform_filter(alt.datum.configuration != "crossover")
        .mark_line(strokeWidth=1.6)
        .encode(
            x=x,
            y=y,
            color=colour,
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
    )
    rules = (
        base.transform_filter(alt.datum.configuration == "crossover")
        .mark_rule(strokeDash=[1, 3], strokeWidth=1.5)
        .encode(
            x=x,
            color=colour,
            tooltip=["model:N", "phase:N", alt.Tooltip("length:Q", format=",.0f", title="crossover length")],
        )
    )
    return (
        alt.layer(lines, rules, data=long)
        .facet(column=alt.Column("phase:N", sort=["prefill", "decode"], title="phase"))
        .resolve_scale(y="independent")
        .properties(title=f"FLOPS against sequence length; {'; '.join(conventions)}")
    )
