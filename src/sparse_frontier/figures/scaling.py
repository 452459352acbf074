"""Scaling-law validation (paper Section 4.4): predicted against true accuracy on held-out points.

One panel per (phase, held-out axis); a point per held-out cell, coloured by task; the diagonal is
a perfect prediction.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .style import PANEL_WIDTH, empty_chart

AXIS_TITLES = {
    "model_size": "largest model held out",
    "sequence_length": "longest length held out",
    "compression_ratio": "highest compression held out",
}


def scaling_predictions_chart(predictions: pd.DataFrame) -> alt.FacetChart | alt.Chart:
    """Chart from ``ScalingResults.predictions`` (columns phase, held_out, task, score, predicted)."""
    if predictions.empty or "predicted" not in predictions or predictions["predicted"].isna().all():
        return empty_chart(
            "No held-out predictions: no axis had two values to hold one out\n(see the scaling log)."
        )
    data = predictions.dropna(subset=["predicted"]).assign(
        panel=lambda d: d["held_out"].map(AXIS_TITLES).fillna(d["held_out"])
    )
    diag = pd.DataFrame({"v": [0.0, 1.0]})
    axis = alt.Scale(domain=[0, 1])
    tooltip = [
        "task:N",
        "model:N",
        "length:Q",
        "compression_ratio:Q",
        alt.Tooltip("score:Q", format=".3f"),
        alt.Tooltip("predicted:Q", format=".3f"),
    ]
    points = (
        alt.Chart()
        .mark_point(filled=True, size=30, opacity=0.7)
        .encode(
            x=alt.X("score:Q", scale=axis, title="true accuracy"),
            y=alt.Y("predicted:Q", scale=axis, title="predicted accuracy"),
            color=alt.Color("task:N", title="task"),
            tooltip=tooltip,
        )
    )
    line = alt.Chart(diag).mark_line(color="grey", strokeDash=[4, 3]).encode(x="v:Q", y="v:Q")
    return (
        alt.layer(points, line, data=data)
        .properties(width=PANEL_WIDTH * 1.2, height=PANEL_WIDTH * 1.2)
        .facet(
            row=alt.Row("phase:N", sort=["prefill", "decode"], title="phase"),
            column=alt.Column("panel:N", sort=list(AXIS_TITLES.values()), title=None),
        )
    )
