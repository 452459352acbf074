"""Score-against-compression curves: cell means, and linear interpolation onto a common grid.

Paper, Section 3 / Appendix A.1: every method is run at fixed compression ratios (1.5 ... 20) and
performance at intermediate ratios is interpolated linearly. Interpolating each (model, length,
task, phase, method) curve onto one grid before averaging keeps an average over models or lengths
from mixing different sets of measured ratios, and lets methods measured at different ratios be
compared at the same compression (RQ3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .cells import CURVE_KEYS, as_cells, cell_means
from .tables import DENSE_PHASE

__all__ = ["CURVE_KEYS", "cell_means", "interpolate_curve", "interpolate_on_grid", "average_curves"]


def interpolate_curve(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of y(x) at ``grid``; NaN outside [min x, max x] (no extrapolation).

    x: [k] measured compression ratios (any order, no duplicates); y: [k] scores; grid: [m].
    """
    order = np.argsort(x)
    xs, ys = np.asarray(x, float)[order], np.asarray(y, float)[order]
    out = np.interp(grid, xs, ys)
    out[(grid < xs[0]) | (grid > xs[-1])] = np.nan
    return out


def with_dense_anchor(means: pd.DataFrame) -> pd.DataFrame:
    """Copy each dense mean into every sparse (phase, method) curve of its (model, length, task) at CR 1.

    Compression 1 is dense by definition, so each sparse curve starts at the dense score; a method
    that was itself run at ratio 1 keeps its own measurement there.
    """
    is_dense = means["phase"] == DENSE_PHASE
    dense, sparse = means[is_dense], means[~is_dense]
    if dense.empty or sparse.empty:
        return sparse.copy()
    curves = sparse[["model", "length", "task", "phase", "method"]].drop_duplicates()
    anchor = curves.merge(dense.drop(columns=["phase", "method"]), on=["model", "length", "task"])
    anchor["compression_ratio"] = 1.0
    have = sparse.loc[sparse["compression_ratio"] == 1.0, CURVE_KEYS]
    anchor = anchor.merge(have, on=CURVE_KEYS, how="left", indicator=True)
    anchor = anchor[anchor.pop("_merge") == "left_only"]
    return pd.concat([sparse, anchor[sparse.columns]], ignore_index=True)


def interpolate_on_grid(means: pd.DataFrame, grid: np.ndarray | None = None) -> pd.DataFrame:
    """Every sparse curve (dense-anchored at CR 1) interpolated onto ``grid`` (default: all measured CRs).

    Returns one row per (curve, grid point) inside the curve's measured range, with columns
    ``CURVE_KEYS`` (+ ``task_category`` when present), ``compression_ratio``, ``score`` and
    ``interpolated`` (False where the grid point was measured).
    """
    anchored = with_dense_anchor(as_cells(means))
    keys = [*CURVE_KEYS, *(["task_category"] if "task_category" in anchored else [])]
    cols = [*keys, "compression_ratio", "score", "interpolated"]
    if anchored.empty:
        return pd.DataFrame(columns=cols)
    if grid is None:
        grid = np.unique(anchored["compression_ratio"].to_numpy(float))
    grid = np.asarray(grid, float)
    # All curves at once: number the curves, sort by (curve, x) and give each curve its own stretch
    # of one number line, so a single searchsorted finds every grid point's bracketing knots.
    anchored = anchored.sort_values([*keys, "compression_ratio"]).reset_index(drop=True)
    curve_id = anchored.groupby(keys, sort=False, observed=True).ngroup().to_numpy()
    x = anchored["compression_ratio"].to_numpy(float)
    y = anchored["score"].to_numpy(float)
    span = max(float(x.max()), float(grid.max())) + 1.0
    line = curve_id * span + x  # ascending
    curves = anchored.loc[np.r_[0, np.flatnonzero(np.diff(curve_id)) + 1], keys].reset_index(drop=True)
    n_curves = len(curves)
    q_curve = np.repeat(np.arange(n_curves), len(grid))
    q_x = np.tile(grid, n_curves)
    left = np.searchsorted(line, q_curve * span + q_x, side="right") - 1
    left_ok = (left >= 0) & (curve_id[np.maximum(left, 0)] == q_curve)
    left = np.maximum(left, 0)
    right = np.minimum(left + 1, len(x) - 1)
    exact = left_ok & (x[left] == q_x)
    right_ok = left_ok & (right > left) & (curve_id[right] == q_curve)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = (q_x - x[left]) / (x[right] - x[left])
    value = np.where(exact, y[left], np.where(right_ok, y[left] + w * (y[right] - y[left]), np.nan))
    keep = ~np.isnan(value)
    out = curves.iloc[q_curve[keep]].reset_index(drop=True)
    out["compression_ratio"] = q_x[keep]
    out["score"] = value[keep]
    out["interpolated"] = ~exact[keep]
    return out[cols]


def average_curves(means: pd.DataFrame, over: tuple[str, ...] = ("model", "length")) -> pd.DataFrame:
    """Mean of the interpolated curves over ``over`` (Figure 4 averages over models and lengths).

    Only grid points that every averaged curve covers are kept, so an average never silently drops a
    model that was not measured at that compression. ``n_curves`` says how many were averaged.
    """
    interp = interpolate_on_grid(means)
    keys = [k for k in [*CURVE_KEYS, "task_category"] if k in interp and k not in over]
    if interp.empty:
        return pd.DataFrame(columns=[*keys, "compression_ratio", "score", "n_curves"])
    n_total = interp[[*keys, *over]].drop_duplicates().groupby(keys, observed=True).size()
    agg = interp.groupby([*keys, "compression_ratio"], observed=True)["score"].agg(["mean", "count"])
    agg = agg.reset_index().rename(columns={"mean": "score", "count": "n_curves"})
    agg = agg.merge(n_total.rename("n_total").reset_index(), on=keys)
    agg = agg[agg["n_curves"] == agg.pop("n_total")]
    return agg.reset_index(drop=True)


def dense_reference(means: pd.DataFrame, over: tuple[str, ...] = ("model", "length")) -> pd.DataFrame:
    """Dense mean score per task (averaged over ``over``), the reference line of Figure 4."""
    dense = means[means["phase"] == DENSE_PHASE]
    keys = [k for k in ["task", "task_category"] if k in dense]
    return dense.groupby(keys, observed=True)["score"].mean().reset_index()
