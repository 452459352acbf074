"""Per-cell statistics of the score table: the one pass over the long table every analysis shares.

A cell is one (model, length, task, phase, method, compression ratio); its statistics (number of
samples, mean, standard deviation, mean achieved compression) are all that the Welch test, the
curves, the frontier and the scaling laws need, so the pipeline reads the ~1M-row score table once
(rule ``analysis_cells``) and every later step reads the small cell table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .tables import require_columns

CURVE_KEYS = ["model", "length", "task", "phase", "method"]
CELL_COLUMNS = ["n", "score", "std"]


def normalise_phase(phase: pd.Series) -> pd.Series:
    """Group kv-compression methods with decoding, as the paper does (attention/base.analysis_phase)."""
    return phase.replace({"kv-compression": "decode"})


def cell_means(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, length, task, task_category, phase, method, compression_ratio).

    Columns ``n`` (samples, all seeds pooled), ``score`` (mean), ``std`` (ddof=1; 0 for one sample)
    and, when the score table has them, ``achieved_compression`` (mean of 1/density over samples)
    and ``dense_agreement`` (mean greedy-token agreement with dense, agreement.py).
    """
    require_columns(scores, [*CURVE_KEYS, "compression_ratio", "score"], "the score table")
    keys = [*CURVE_KEYS, "compression_ratio"]
    if "task_category" in scores:
        keys.insert(3, "task_category")
    extra = [c for c in ("achieved_compression", "dense_agreement") if c in scores]
    df = scores[[*keys, "score", *extra]].copy()
    df["phase"] = normalise_phase(df["phase"])
    aggs = {"score": ["count", "mean", "std"], **{c: ["mean"] for c in extra}}
    out = df.groupby(keys, sort=True, observed=True).agg(aggs)
    out.columns = [*CELL_COLUMNS, *extra]
    out["std"] = out["std"].fillna(0.0)
    return out.reset_index()


def as_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The cell table of ``table``: itself when it already is one, else :func:`cell_means` of it."""
    if "n" in table and "sample_id" not in table:
        require_columns(table, [*CURVE_KEYS, "compression_ratio", *CELL_COLUMNS], "the cell table")
        return table.assign(phase=normalise_phase(table["phase"]))
    return cell_means(table)


def pool_cells(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Merge cells that share ``keys`` into one: total n, pooled mean and pooled sample variance.

    Returns columns keys + n, mean, var (ddof=1; 0 where n < 2). Exact: the same as computing
    the statistics over the union of the cells' samples.
    """
    df = cells[[*keys, "n", "score", "std"]].copy()
    df["cells"] = 1
    df["sum"] = df["n"] * df["score"]
    g = df.groupby(keys, sort=True, observed=True)[["cells", "n", "sum"]].sum()
    df = df.join(g["sum"].div(g["n"]).rename("pooled_mean"), on=keys)
    # within-cell plus between-cell sums of squares: stable, and exactly the cell's own for one cell
    df["ss"] = (df["n"] - 1).clip(lower=0) * df["std"] ** 2 + df["n"] * (df["score"] - df["pooled_mean"]) ** 2
    g["ss"] = df.groupby(keys, sort=True, observed=True)["ss"].sum()
    g = g.reset_index()
    single = df.groupby(keys, sort=True, observed=True)[["score", "std"]].first().reset_index(drop=True)
    n = g["n"].to_numpy(float)
    one = g["cells"].to_numpy() == 1
    g["mean"] = np.where(one, single["score"].to_numpy(float), g["sum"].to_numpy(float) / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled_var = g["ss"].to_numpy(float) / (n - 1)
    var = np.where(one, single["std"].to_numpy(float) ** 2, pooled_var)
    g["var"] = np.where(n > 1, var, 0.0)
    return g[[*keys, "n", "mean", "var"]]
