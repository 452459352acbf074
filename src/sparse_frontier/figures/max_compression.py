"""Paper Figure 3: maximum compression not significantly worse than dense, across tasks.

Bars are the mean over tasks, whiskers one standard deviation, black ticks the minimum task; one
panel per (phase, method), lengths on the x axis, models side by side.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .style import PANEL_HEIGHT, PANEL_WIDTH, empty_chart, natural_order


def max_compression_chart(summary: pd.DataFrame) -> alt.FacetChart | alt.Chart:
    """Chart from :func:`sparse_frontier.analysis.significance.max_compression_summary`."""
    if summary.empty or summary["mean"].isna().all():
        return empty_chart(
            "No maximum compression could be computed\n(see the notes in results/tables/max_compression.md)."
        )
    data = summary.dropna(subset=["mean"]).assign(
        panel=lambda d: d["phase"] + " · " + d["method"],
        lo=lambda d: d["mean"] - d["std"].fillna(0),
        hi=lambda d: d["mean"] + d["std"].fillna(0),
        length_label=lambda d: d["length"].map(lambda n: f"{n // 1024}K" if n >= 1024 else str(n)),
    )
    len_sort = [f"{n // 1024}K" if n >= 1024 else str(n) for n in sorted(data["length"].unique())]
    x = alt.X("length_label:N", sort=len_sort, title="sequence length")
    offset = alt.XOffset("model:N", sort=natural_order(data["model"]))
    tooltip = [
        "model:N",
        "method:N",
        "length:Q",
        alt.Tooltip("mean:Q", format=".2f"),
        alt.Tooltip("std:Q", format=".2f"),
        "min:Q",
        "n_tasks:Q",
        "n_tasks_excluded:Q",
    ]
    base = (
        alt.Chart().encode(x=x, xOffset=offset).properties(width=PANEL_WIDTH * 1.3, height=PANEL_HEIGHT * 1.3)
    )
    bars = base.mark_bar(opacity=0.8).encode(
        y=alt.Y("mean:Q", title="max. compression (mean over tasks)"),
        color=alt.Color("model:N", title="model", sort=natural_order(data["model"])),
        tooltip=tooltip,
    )
    whiskers = base.mark_rule(color="#333").encode(y="lo:Q", y2="hi:Q")
    minimum = base.mark_tick(color="black", thickness=2, size=10).encode(y="min:Q", tooltip=tooltip)
    return alt.layer(bars, whiskers, minimum, data=data).facet(
        facet=alt.Facet("panel:N", title=None), columns=3
    )
