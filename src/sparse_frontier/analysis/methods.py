"""RQ3: which method is best at each compression, per task and per task category (paper Section 4.3).

Curves are interpolated onto a common grid of compression ratios (analysis/curves.py) and compared
only on the (model, length, task, CR) points that every method of the phase covers, so a method is
never ranked on an average over configurations another method was not run on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .curves import interpolate_on_grid

#: The paper's two-way grouping (Section 4.3.1 vs 4.3.2) of the three task categories.
CATEGORY_GROUPS = {
    "retrieval": "retrieval (low scope, low dispersion)",
    "high_scope": "high scope or high dispersion",
    "high_dispersion": "high scope or high dispersion",
}


def _common_points(interp: pd.DataFrame) -> pd.DataFrame:
    keys = ["phase", "model", "length", "task", "compression_ratio"]
    n_methods = interp.groupby("phase")["method"].transform("nunique")
    covered = interp.groupby(keys)["method"].transform("nunique") == n_methods
    return interp[covered & (interp["compression_ratio"] > 1)]


def best_methods(means: pd.DataFrame, by: str = "category") -> pd.DataFrame:
    """Per (phase, group, compression ratio): every method's mean score and the best one.

    by: "category" (the paper's retrieval vs high scope/dispersion grouping of ``task_category``)
    or "task". Columns: phase, the group column, compression_ratio, one ``score_<method>`` column per
    method of the phase, best_method (methods tied at the top joined by " = "), best_score, runner_up,
    margin (best minus runner-up; NaN with a single method), n_points (configurations averaged per
    method).
    """
    interp = interpolate_on_grid(means)
    if by == "category":
        if "task_category" not in interp:
            raise ValueError("the score table has no task_category column; it is needed to group tasks.")
        group = "category_group"
        interp = interp.assign(
            category_group=interp["task_category"].map(CATEGORY_GROUPS).fillna(interp["task_category"])
        )
    elif by == "task":
        group = "task"
    else:
        raise ValueError(f"by must be 'category' or 'task', got {by!r}.")
    common = _common_points(interp)
    cols = [
        "phase",
        group,
        "compression_ratio",
        "best_method",
        "best_score",
        "runner_up",
        "margin",
        "n_points",
    ]
    if common.empty:
        return pd.DataFrame(columns=cols)
    agg = common.groupby(["phase", group, "compression_ratio", "method"])["score"].agg(["mean", "count"])
    agg = agg.reset_index()
    rows = []
    for key, g in agg.groupby(["phase", group, "compression_ratio"], sort=True):
        g = g.sort_values("mean", ascending=False)
        row = dict(zip(["phase", group, "compression_ratio"], key, strict=True))
        row.update({f"score_{m}": s for m, s in zip(g["method"], g["mean"], strict=True)})
        # methods tied at the top are all named: no winner is invented among equals
        top = g.loc[np.isclose(g["mean"], g["mean"].iloc[0], rtol=0, atol=1e-12), "method"]
        row["best_method"] = " = ".join(sorted(top))
        row["best_score"] = g["mean"].iloc[0]
        row["runner_up"] = g["method"].iloc[1] if len(g) > 1 else ""
        row["margin"] = g["mean"].iloc[0] - g["mean"].iloc[1] if len(g) > 1 else np.nan
        row["n_points"] = int(g["count"].iloc[0])
        rows.append(row)
    out = pd.DataFrame(rows)
    score_cols = sorted(c for c in out.columns if c.startswith("score_"))
    return out[[*cols[:3], *score_cols, *cols[3:]]]
