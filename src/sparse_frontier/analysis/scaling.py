"""RQ4: scaling laws for sparse attention (paper Section 4.4 and Appendix C).

    logit(acc) = a·log N + b·log L + c·log CR + d_task + e

N is the parameter count in billions, L the sequence length in tokens, CR the compression ratio
(1 for dense), all logs natural; accuracy is a cell's mean score, clipped to [clip, 1 - clip]
before the logit so 0 and 1 stay finite. d_task is zero for the first task in sorted order (the
reference), so e is its intercept and the parameters are identifiable.

Fitting (Appendix C.2): L-BFGS (scipy's L-BFGS-B with the analytic gradient) on the mean Huber
loss of the logit residuals, started from the least-squares solution. Three fits per phase, each
holding out the points with the largest value of one axis (model size, sequence length, compression
ratio): R^2 of the fit in logit space (Table 3), and on the held-out points per task the Spearman
rho between true and predicted accuracy with its significance (Table 4) and the mean absolute error
in accuracy space (Table 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .tables import DENSE_PHASE

#: Held-out axis -> the column whose maximum is held out.
AXES = {"model_size": "params_b", "sequence_length": "length", "compression_ratio": "compression_ratio"}
NUMERIC = {"a": "log_n", "b": "log_l", "c": "log_cr"}


def logit(p: np.ndarray, clip: float) -> np.ndarray:
    """logit of p clipped to [clip, 1 - clip] (clip in (0, 0.5))."""
    p = np.clip(np.asarray(p, float), clip, 1 - clip)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, float)))


def huber(residual: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss per residual and its derivative: r^2/2 for |r| <= delta, else delta (|r| - delta/2)."""
    a = np.abs(residual)
    quad = a <= delta
    loss = np.where(quad, 0.5 * residual**2, delta * (a - 0.5 * delta))
    grad = np.where(quad, residual, delta * np.sign(residual))
    return loss, grad


def scaling_data(
    means: pd.DataFrame, params_b: dict[str, float], methods: dict[str, str], clip: float = 0.01
) -> pd.DataFrame:
    """The points a phase's law is fitted on: its method's cells plus the dense cells (CR 1).

    means: :func:`curves.cell_means`; params_b: model -> billions of parameters; methods: phase ->
    method. Columns: phase, model, params_b, length, compression_ratio, task, score, y (the clipped
    logit), log_n, log_l, log_cr.
    """
    missing = sorted(set(means["model"]) - set(params_b))
    if missing:
        raise ValueError(
            f"models {', '.join(missing)} have no params_b in the config; add models.<name>.params_b."
        )
    parts = []
    for phase, method in methods.items():
        sel = means[
            ((means["phase"] == phase) & (means["method"] == method)) | (means["phase"] == DENSE_PHASE)
        ]
        parts.append(sel.assign(phase=phase))
    cols = [
        "phase",
        "model",
        "params_b",
        "length",
        "compression_ratio",
        "task",
        "score",
        "y",
        "log_n",
        "log_l",
        "log_cr",
    ]
    if not parts:
        return pd.DataFrame(columns=cols)
    df = pd.concat(parts, ignore_index=True)
    df["params_b"] = df["model"].map(params_b).astype(float)
    df["y"] = logit(df["score"], clip)
    df["log_n"] = np.log(df["params_b"])
    df["log_l"] = np.log(df["length"].astype(float))
    df["log_cr"] = np.log(df["compression_ratio"].astype(float))
    return df[cols].reset_index(drop=True)


@dataclass
class ScalingFit:
    """A fitted law: coefficients by name (a, b, c, e, d_<task>), with the predictors it could not fit."""

    coef: dict[str, float]
    tasks: list[str]
    dropped: list[str] = field(default_factory=list)
    converged: bool = True
    loss: float = float("nan")

    def predict_logit(self, df: pd.DataFrame) -> np.ndarray:
        z = np.full(len(df), self.coef["e"])
        for name, col in NUMERIC.items():
            if name in self.coef and np.isfinite(self.coef[name]):
                z = z + self.coef[name] * df[col].to_numpy(float)
        d = df["task"].map({t: self.coef.get(f"d_{t}", np.nan) for t in self.tasks})
        return z + d.to_numpy(float)  # NaN for a task the fit never saw

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return sigmoid(self.predict_logit(df))


def fit_scaling_law(train: pd.DataFrame, delta: float = 1e-3, max_iter: int = 2000) -> ScalingFit:
    """Fit the law on ``train`` (rows of :func:`scaling_data`) with L-BFGS on the mean Huber loss.

    A numeric predictor that is constant in ``train`` (one model size, one length, only dense) cannot
    be separated from the intercept: it is dropped, its coefficient reported as NaN and listed in
    ``dropped``. Raises ValueError on an empty training set.
    """
    if train.empty:
        raise ValueError("no training points for the scaling law.")
    tasks = sorted(train["task"].unique())
    names, columns, dropped = [], [], []
    for name, col in NUMERIC.items():
        x = train[col].to_numpy(float)
        if np.ptp(x) > 0:
            names.append(name)
            columns.append(x)
        else:
            dropped.append(name)
    names.append("e")
    columns.append(np.ones(len(train)))
    for t in tasks[1:]:
        names.append(f"d_{t}")
        columns.append((train["task"] == t).to_numpy(float))
    X = np.column_stack(columns)  # [n_points, n_params]
    y = train["y"].to_numpy(float)
    theta0 = np.linalg.lstsq(X, y, rcond=None)[0]
    n = len(y)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        loss, g = huber(X @ theta - y, delta)
        return float(loss.sum() / n), X.T @ g / n

    res = optimize.minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": 1e-10, "ftol": 1e-14},
    )
    coef = dict(zip(names, map(float, res.x), strict=True))
    coef.update({name: float("nan") for name in dropped})
    coef[f"d_{tasks[0]}"] = 0.0
    return ScalingFit(
        coef=coef, tasks=tasks, dropped=dropped, converged=bool(res.success), loss=float(res.fun)
    )


def r_squared(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - SS_res / SS_tot; NaN when y has no variance or fewer than two points."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    ss_tot = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    if len(y) < 2 or ss_tot == 0:
        return float("nan")
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot


@dataclass
class ScalingResults:
    """The RQ4 outputs: fits (Table 3), per-task Spearman and MAE (Tables 4, 7), held-out predictions."""

    fits: pd.DataFrame
    per_task: pd.DataFrame
    predictions: pd.DataFrame
    notes: list[str]


def holdout_split(data: pd.DataFrame, axis: str) -> tuple[pd.DataFrame, pd.DataFrame, float | None, str]:
    """Train/test split holding out the largest value of ``axis``; test empty and a reason when impossible."""
    col = AXES[axis]
    values = data[col] if axis != "compression_ratio" else data.loc[data["compression_ratio"] > 1, col]
    uniq = np.unique(values.to_numpy(float))
    if len(uniq) < 2:
        what = {
            "model_size": "model size",
            "sequence_length": "length",
            "compression_ratio": "sparse compression",
        }
        return data, data.iloc[:0], None, f"only {len(uniq)} {what[axis]} value(s): nothing to hold out"
    top = float(uniq[-1])
    test = data[col].to_numpy(float) == top
    return data[~test], data[test], top, ""


def scaling_laws(
    data: pd.DataFrame, delta: float = 1e-3, alpha: float = 0.05, min_test_points: int = 3
) -> ScalingResults:
    """The three hold-out fits per phase, with their metrics (module docstring).

    Per-task Spearman rho is NaN (and noted) with fewer than ``min_test_points`` held-out points or
    constant true or predicted values; ``significant`` is p < alpha.
    """
    fits, per_task, preds, notes = [], [], [], []
    for phase, pdata in data.groupby("phase", sort=True):
        for axis in AXES:
            train, test, top, why = holdout_split(pdata, axis)
            row = {
                "phase": phase,
                "held_out": axis,
                "held_out_value": top,
                "n_train": len(train),
                "n_test": len(test),
            }
            if why:
                notes.append(f"{phase}, {axis}: {why}")
                fits.append({**row, "note": why})
                continue
            fit = fit_scaling_law(train, delta)
            pred_train = fit.predict_logit(train)
            pred_test = fit.predict_logit(test)
            note = f"constant in training, not fitted: {', '.join(fit.dropped)}" if fit.dropped else ""
            if not fit.converged:
                note = (note + "; " if note else "") + "L-BFGS did not report convergence"
            if note:
                notes.append(f"{phase}, {axis}: {note}")
            fits.append(
                {
                    **row,
                    "r2": r_squared(train["y"], pred_train),
                    "r2_test": r_squared(test["y"], pred_test),
                    **fit.coef,
                    "huber_loss": fit.loss,
                    "converged": fit.converged,
                    "note": note,
                }
            )
            t = test.assign(held_out=axis, predicted=sigmoid(pred_test), predicted_logit=pred_test)
            preds.append(t)
            for task, g in t.groupby("task", sort=True):
                per_task.append(
                    {
                        "phase": phase,
                        "held_out": axis,
                        "task": task,
                        "n_test": len(g),
                        **_task_metrics(g, alpha, min_test_points),
                    }
                )
    fits_df = pd.DataFrame(fits)
    if not fits_df.empty:
        lead = [
            "phase",
            "held_out",
            "held_out_value",
            "n_train",
            "n_test",
            "r2",
            "r2_test",
            "a",
            "b",
            "c",
            "e",
        ]
        lead = [c for c in lead if c in fits_df]
        d_cols = sorted(c for c in fits_df if c.startswith("d_"))
        rest = [c for c in fits_df if c not in lead and c not in d_cols]
        fits_df = fits_df[[*lead, *d_cols, *rest]]
        fits_df = fits_df.sort_values(["phase", "held_out"], key=_paper_order).reset_index(drop=True)
    pred_df = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()
    return ScalingResults(fits_df, pd.DataFrame(per_task), pred_df, notes)


def _task_metrics(g: pd.DataFrame, alpha: float, min_points: int) -> dict:
    true, pred = g["score"].to_numpy(float), g["predicted"].to_numpy(float)
    ok = np.isfinite(pred)
    mae = float(np.abs(true[ok] - pred[ok]).mean()) if ok.any() else float("nan")
    rho = p = float("nan")
    note = ""
    if ok.sum() < min_points:
        note = f"{int(ok.sum())} held-out point(s): too few for Spearman rho"
    elif np.ptp(true[ok]) == 0 or np.ptp(pred[ok]) == 0:
        note = "constant true or predicted scores: Spearman rho undefined"
    else:
        res = stats.spearmanr(true[ok], pred[ok])
        rho, p = float(res.statistic), float(res.pvalue)
    return {"spearman_rho": rho, "p_value": p, "significant": bool(p < alpha), "mae": mae, "note": note}


def metric_matrix(per_task: pd.DataFrame, metric: str, star: bool = False, digits: int = 2) -> pd.DataFrame:
    """Tables 4 and 7: rows (phase, held-out axis), one column per task, formatted as text.

    star: append "⋆" where the Spearman correlation is significant (Table 4's marks); the leading
    zero is dropped as in the paper (".73⋆"). Missing values print as "–".
    """
    if per_task.empty:
        return pd.DataFrame(columns=["phase", "held_out"])

    def fmt(row: pd.Series) -> str:
        v = row[metric]
        if not np.isfinite(v):
            return "–"
        text = f"{v:.{digits}f}"
        if star:
            text = text.replace("0.", ".", 1) if abs(v) < 1 else text
            text += " ⋆" if row["significant"] else ""
        return text

    cells = per_task.assign(cell=per_task.apply(fmt, axis=1))
    wide = cells.pivot(index=["phase", "held_out"], columns="task", values="cell").fillna("–")
    wide.columns.name = None
    wide = wide.reset_index()
    return wide.sort_values(["phase", "held_out"], key=_paper_order).reset_index(drop=True)


def _paper_order(col: pd.Series) -> pd.Series:
    """Prefill before decode, axes in the paper's order; anything else after, alphabetically."""
    order = {"prefill": 0, "decode": 1, **{axis: i for i, axis in enumerate(AXES)}}
    return col.map(lambda v: (order.get(v, len(order)), str(v)))
