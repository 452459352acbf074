"""RQ1: the isoFLOPS frontier (paper Section 4.1, Figure 2), and the choice of method per phase.

For each sequence length and phase, every (model size, compression) configuration of the phase's
method becomes one point: x = FLOPS of that configuration (analysis/flops.py, indexing included),
y = its score averaged across tasks. A point is on the Pareto frontier when no other point reaches
at least its score for at most its FLOPS (and is strictly better in one of the two).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .curves import interpolate_on_grid
from .tables import DENSE_PHASE

SPARSE_PHASES = ("prefill", "decode")


def pareto_frontier(flops: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mask [n] of the points no other point dominates (fewer-or-equal FLOPS, higher-or-equal score).

    Sort by FLOPS ascending (ties: best score first) and keep each point that beats every score seen
    so far; exact duplicates of a frontier point are both kept. NaN points are never on the frontier.
    """
    flops = np.asarray(flops, float)
    score = np.asarray(score, float)
    on = np.zeros(len(flops), dtype=bool)
    valid = ~(np.isnan(flops) | np.isnan(score))
    idx = np.flatnonzero(valid)
    order = idx[np.lexsort((-score[idx], flops[idx]))]
    best = -np.inf
    best_flops = np.nan
    for i in order:
        if score[i] > best:
            on[i] = True
            best, best_flops = score[i], flops[i]
        elif score[i] == best and flops[i] == best_flops:
            on[i] = True
    return on


def best_method_per_phase(means: pd.DataFrame) -> dict[str, str]:
    """The method with the highest mean score in each sparse phase (the paper picks Vertical-Slash and Quest
    this way, Section 4.3), compared only on the (model, length, task, CR) points every method of
    the phase covers after interpolation, so no method wins by being measured where it is easy.
    """
    interp = interpolate_on_grid(means)
    chosen = {}
    for phase, g in interp.groupby("phase"):
        keys = ["model", "length", "task", "compression_ratio"]
        n_methods = g["method"].nunique()
        covered = g.groupby(keys)["method"].transform("nunique") == n_methods
        common = g[covered & (g["compression_ratio"] > 1)]
        pool = common if not common.empty else g
        chosen[phase] = str(pool.groupby("method")["score"].mean().idxmax())
    return chosen


def resolve_phase_methods(
    means: pd.DataFrame, configured: dict[str, str] | None
) -> tuple[dict[str, str], list[str]]:
    """The method to analyse per phase: the configured one when it has data, else the best one.

    Returns (phase -> method, notes about choices that could not follow the config).
    """
    best = best_method_per_phase(means)
    configured = configured or {}
    chosen, notes = {}, []
    for phase in SPARSE_PHASES:
        have = set(means.loc[means["phase"] == phase, "method"])
        want = configured.get(phase)
        if want and want in have:
            chosen[phase] = want
        elif phase in best:
            chosen[phase] = best[phase]
            if want:
                notes.append(f"{phase}: configured method {want!r} has no scores; using {best[phase]!r}")
        elif want or have:
            notes.append(f"{phase}: no sparse scores in this phase")
    return chosen, notes


def isoflops_points(means: pd.DataFrame, flops: pd.DataFrame, methods: dict[str, str]) -> pd.DataFrame:
    """One row per (length, phase, model, CR) point of Figure 2, with its FLOPS and frontier flag.

    means: the cell table (:func:`cells.cell_means`); flops: :func:`flops.flops_table` output; methods: phase
    -> method. Dense (CR 1) points of every model are part of both phases. The score is the mean
    over tasks, using only tasks measured for every point of the panel (``n_tasks`` says how many),
    so a missing cell does not move one point. ``on_frontier`` marks the Pareto frontier per panel.
    """
    parts = []
    for phase, method in methods.items():
        sel = means[
            ((means["phase"] == phase) & (means["method"] == method)) | (means["phase"] == DENSE_PHASE)
        ]
        sel = sel.assign(phase=phase, method=np.where(sel["phase"] == DENSE_PHASE, "dense", method))
        parts.append(sel)
    if not parts:
        return pd.DataFrame(
            columns=[
                "length",
                "phase",
                "model",
                "method",
                "compression_ratio",
                "score",
                "n_tasks",
                "flops",
                "on_frontier",
            ]
        )
    sel = pd.concat(parts, ignore_index=True)
    point = ["length", "phase", "model", "method", "compression_ratio"]
    n_points = sel[point].drop_duplicates().groupby(["length", "phase"]).size()
    per_task = sel.groupby(["length", "phase", "task"]).size()
    # tasks present at every point of the panel (cells are unique per point and task)
    full = per_task.reset_index(name="n").merge(
        n_points.rename("n_points").reset_index(), on=["length", "phase"]
    )
    full = full[full["n"] == full["n_points"]][["length", "phase", "task"]]
    sel = sel.merge(full, on=["length", "phase", "task"])
    pts = sel.groupby(point, observed=True)["score"].agg(score="mean", n_tasks="count").reset_index()
    f = flops[["model", "phase", "method", "length", "compression_ratio", "flops_total"]]
    pts = pts.merge(
        f.rename(columns={"flops_total": "flops"}),
        on=["model", "phase", "method", "length", "compression_ratio"],
        how="left",
    )
    pts["on_frontier"] = False
    for _, g in pts.groupby(["length", "phase"]):
        pts.loc[g.index, "on_frontier"] = pareto_frontier(g["flops"].to_numpy(), g["score"].to_numpy())
    return pts.sort_values(["phase", "length", "flops"]).reset_index(drop=True)
