"""RQ2: the maximum compression that a one-tailed Welch t-test cannot tell from dense.

Paper, Section 4.2: for every (model, length, task) and every sparsity level of a method,
a one-tailed Welch t-test compares the per-sample scores of the sparse configuration with those of
the dense model (H1: sparse < dense). The maximum compression is the highest level at which the test
is not significant at ``alpha`` (0.05). Configurations whose mean score is below ``min_score`` (0.05)
are "random" and excluded: they can never be the maximum, and a (model, length, task) whose dense
score is below it has no maximum at all.

The test is vectorised over every cell at once (one groupby, closed-form Welch statistics and the
Student-t CDF), which is what keeps a one-million-row table well under a second; tests check it
against ``scipy.stats.ttest_ind(equal_var=False, alternative="less")`` cell by cell.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .cells import as_cells, normalise_phase, pool_cells
from .tables import DENSE_PHASE

__all__ = ["normalise_phase", "welch_less", "dense_comparison", "max_compression", "max_compression_summary"]

#: One comparison with dense: a method in a phase on one (model, length, task).
GROUP_KEYS = ["model", "length", "task", "phase", "method"]
#: One sparsity level of such a comparison.
LEVEL_KEYS = [*GROUP_KEYS, "compression_ratio"]

# Status of one sparsity level (column ``status`` of :func:`dense_comparison`).
OK = "ok"
BELOW_MIN = "below_min_score"  # sparse mean < min_score: random, excluded (paper 4.2)
DENSE_BELOW_MIN = "dense_below_min_score"  # the baseline itself is random: nothing to preserve
TOO_FEW = "too_few_samples"  # fewer than 2 samples on one side: Welch's t is undefined
NO_DENSE = "no_dense_baseline"  # no dense rows for this (model, length, task)


def welch_less(
    mean_a: np.ndarray,
    var_a: np.ndarray,
    n_a: np.ndarray,
    mean_b: np.ndarray,
    var_b: np.ndarray,
    n_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's t-test of H1: mean(a) < mean(b), elementwise from summary statistics.

    All inputs are 1-D arrays of the same shape [cells]; variances use ddof=1. Returns
    (t, df, p), each [cells]. Matches ``scipy.stats.ttest_ind(a, b, equal_var=False,
    alternative="less")``: where both variances are zero the statistic is -inf / +inf / NaN as the
    means differ one way, the other, or not at all (p = 0 / 1 / NaN); where a side has one sample
    everything is NaN.
    """
    va = var_a / n_a
    vb = var_b / n_b
    se2 = va + vb
    diff = mean_a - mean_b
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / np.sqrt(se2)
        dof = se2**2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    p = stats.t.cdf(t, dof)
    # Zero variance on both sides: the t distribution has no finite dof but the sign of the
    # difference still decides (scipy gives p = 0 for -inf and 1 for +inf).
    zero = (se2 == 0) & (n_a > 1) & (n_b > 1)
    p = np.where(zero & (diff < 0), 0.0, p)
    p = np.where(zero & (diff > 0), 1.0, p)
    few = (n_a < 2) | (n_b < 2)
    t = np.where(few, np.nan, t)
    dof = np.where(few, np.nan, dof)
    p = np.where(few, np.nan, p)
    return t, dof, p


def dense_comparison(scores: pd.DataFrame, alpha: float = 0.05, min_score: float = 0.05) -> pd.DataFrame:
    """Every sparse level against its dense baseline: one row per (model, length, task, phase, method, CR).

    Columns: the level keys, ``n``, ``mean``, ``std`` (sparse), ``dense_n``, ``dense_mean``,
    ``dense_std``, ``t``, ``df``, ``p_value``, ``significant`` (p < alpha), ``preserved`` (the level
    counts as not distinguishable from dense), and ``status`` (``ok`` or why it was excluded).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"analysis.alpha must lie in (0, 1), got {alpha}; set it to e.g. 0.05.")
    cells = as_cells(scores)
    is_dense = cells["phase"] == DENSE_PHASE
    dense = pool_cells(cells[is_dense], ["model", "length", "task"])
    dense = dense.rename(columns={"n": "dense_n", "mean": "dense_mean", "var": "dense_var"})
    sparse = pool_cells(cells[~is_dense], LEVEL_KEYS)
    out = sparse.merge(dense, on=["model", "length", "task"], how="left")
    out["achieved_compression"] = _achieved(cells[~is_dense], out)

    t, dof, p = welch_less(
        out["mean"].to_numpy(float),
        out["var"].to_numpy(float),
        out["n"].to_numpy(float),
        out["dense_mean"].to_numpy(float),
        out["dense_var"].to_numpy(float),
        out["dense_n"].to_numpy(float),
    )
    out["t"], out["df"], out["p_value"] = t, dof, p
    out["significant"] = out["p_value"] < alpha

    status = np.full(len(out), OK, dtype=object)
    few = (out["n"] < 2) | (out["dense_n"] < 2)
    status[(out["mean"] < min_score).to_numpy()] = BELOW_MIN
    status[few.to_numpy()] = TOO_FEW  # a single sample's mean says nothing: untestable comes first
    status[(out["dense_mean"] < min_score).to_numpy()] = DENSE_BELOW_MIN
    status[out["dense_mean"].isna().to_numpy()] = NO_DENSE
    out["status"] = status
    # Not significant includes the NaN p of two identical constant samples: no evidence of a drop.
    out["preserved"] = (out["status"] == OK) & ~out["significant"]
    out["std"] = np.sqrt(out.pop("var"))
    out["dense_std"] = np.sqrt(out.pop("dense_var"))
    cols = [*LEVEL_KEYS, "achieved_compression", "n", "mean", "std", "dense_n", "dense_mean", "dense_std"]
    return out[[*cols, "t", "df", "p_value", "significant", "preserved", "status"]]


def _achieved(cells: pd.DataFrame, levels: pd.DataFrame) -> np.ndarray:
    """Sample-weighted mean achieved compression of each level (NaN when the table has none)."""
    if "achieved_compression" not in cells or cells.empty:
        return np.full(len(levels), np.nan)
    w = cells.assign(weighted=cells["achieved_compression"] * cells["n"])
    g = w.groupby(LEVEL_KEYS, observed=True)[["weighted", "n"]].sum()
    mean = (g["weighted"] / g["n"]).rename("achieved")
    return levels.join(mean, on=LEVEL_KEYS)["achieved"].to_numpy(float)


def _interpolated_boundary(cr: np.ndarray, p: np.ndarray, preserved: np.ndarray, alpha: float) -> float:
    """Where the p-value crosses alpha, linearly between the last preserved level and the next one.

    ``cr`` is sorted ascending. The paper interpolates performance linearly between measured
    compression ratios; here the same idea places the boundary between two measured levels instead
    of snapping it to the lower one. Returns the measured maximum when there is no higher level or
    the next level's p-value is undefined.
    """
    last = np.flatnonzero(preserved)
    if len(last) == 0:
        return 1.0
    k = last[-1]
    if k + 1 >= len(cr) or not np.isfinite(p[k + 1]) or p[k + 1] >= alpha:
        return float(cr[k])
    p_k = p[k] if np.isfinite(p[k]) else 1.0  # identical constant samples: as far from alpha as it gets
    frac = (p_k - alpha) / (p_k - p[k + 1])
    return float(cr[k] + frac * (cr[k + 1] - cr[k]))


def max_compression(comparison: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """The RQ2 table: one row per (model, length, task, phase, method).

    ``max_compression`` is the highest measured compression ratio whose level is preserved (not
    significantly worse than dense, not below the score floor); 1.0 when no level is, NaN when the
    comparison cannot be made at all (``note`` says why). ``max_compression_interp`` places the
    boundary between measured levels by linear interpolation of the p-value (see
    :func:`_interpolated_boundary`); ``max_compression_achieved`` is the compression the method
    really computed at that level (NaN at 1.0 or without density records). ``n_levels`` counts
    the levels tested, ``n_excluded`` those excluded by the score floor or too few samples.
    """
    rows = []
    for key, g in comparison.sort_values(LEVEL_KEYS).groupby(GROUP_KEYS, sort=True, observed=True):
        cr = g["compression_ratio"].to_numpy(float)
        preserved = g["preserved"].to_numpy(bool)
        status = g["status"].to_numpy(object)
        dense_mean = float(g["dense_mean"].iloc[0])
        note = ""
        if (status == NO_DENSE).all():
            value = interp = np.nan
            note = "no dense baseline for this model, length and task"
        elif (status == DENSE_BELOW_MIN).all():
            value = interp = np.nan
            note = f"dense score {dense_mean:.3f} is below the score floor: excluded as random"
        elif (status == TOO_FEW).all():
            value = interp = np.nan
            note = "fewer than 2 samples per cell: Welch's t-test is undefined"
        else:
            value = float(cr[preserved].max()) if preserved.any() else 1.0
            interp = _interpolated_boundary(cr, g["p_value"].to_numpy(float), preserved, alpha)
            if not preserved.any():
                note = "every sparse level is significantly worse than dense or excluded"
        achieved = g["achieved_compression"].to_numpy(float)[cr == value] if np.isfinite(value) else []
        achieved = float(achieved[0]) if len(achieved) else np.nan
        rows.append((*key, dense_mean, len(g), int((status != OK).sum()), value, interp, achieved, note))
    cols = [*GROUP_KEYS, "dense_mean", "n_levels", "n_excluded", "max_compression", "max_compression_interp"]
    return pd.DataFrame(rows, columns=[*cols, "max_compression_achieved", "note"])


def max_compression_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and minimum of the maximum compression across tasks (Figure 3).

    One row per (model, length, phase, method); tasks without a computable maximum are left out
    and counted in ``n_tasks_excluded``. The std is NaN with fewer than two tasks.
    """
    keys = ["model", "length", "phase", "method"]
    valid = table.dropna(subset=["max_compression"])
    agg = valid.groupby(keys, sort=True, observed=True)["max_compression"].agg(
        mean="mean", std="std", min="min", n_tasks="count"
    )
    total = table.groupby(keys, sort=True, observed=True).size().rename("n_tasks_total")
    out = total.to_frame().join(agg, how="left").reset_index()
    out["n_tasks"] = out["n_tasks"].fillna(0).astype(int)
    out["n_tasks_excluded"] = out.pop("n_tasks_total") - out["n_tasks"]
    return out[[*keys, "mean", "std", "min", "n_tasks", "n_tasks_excluded"]]
