"""Shared look of the figures: method colours and panel sizes, so every figure reads the same."""

from __future__ import annotations

import altair as alt

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
