"""Shared look of the figures: method colours and panel sizes, so every figure reads the same."""

from __future__ import annotations

import re

import altair as alt
import pandas as pd

#: Fixed colours per method (paper Figure 4 names), so a method keeps its colour across figures.
METHOD_COLOURS = {
    "dense": "#4d4d4d",
    "vertical_slash": "#1f77b4",
    "flexprefill": "#17becf",
    "block_sparse": "#2ca02c",
    "snapkv": "#d62728",
    "ada_snapkv": "#ff7f0e",
    "quest": "#9467bd",
}
_EXTRA = ["#8c564b", "#e377c2", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a"]


def method_scale(methods: list[str]) -> alt.Scale:
    """A colour scale with the fixed colour of every known method and distinct ones for the rest."""
    domain = sorted(set(methods), key=lambda m: (m != "dense", m))
    extra = iter(_EXTRA * (len(domain) // len(_EXTRA) + 1))
    return alt.Scale(domain=domain, range=[METHOD_COLOURS.get(m) or next(extra) for m in domain])


PANEL_WIDTH = 160
PANEL_HEIGHT = 130


def natural_order(names) -> list[str]:
    """Names sorted with their numbers compared as numbers ("qwen-7b" before "qwen-14b")."""

    def key(name: str):
        return [
            (0, float(t), "") if t.replace(".", "", 1).isdigit() else (1, 0.0, t)
            for t in re.findall(r"\d+(?:\.\d+)?|\D+", str(name))
        ]

    return sorted(dict.fromkeys(map(str, names)), key=key)


def empty_chart(message: str) -> alt.Chart:
    """A small chart that says why there is nothing to draw (written instead of a blank image)."""
    data = pd.DataFrame({"text": [message]})
    return (
        alt.Chart(data)
        .mark_text(fontSize=13, align="center", lineBreak="\n")
        .encode(text="text:N")
        .properties(width=420, height=80)
    )
