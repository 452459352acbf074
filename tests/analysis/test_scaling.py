"""RQ4: the scaling-law fit recovers a known law, and the hold-out metrics behave as they must."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sparse_frontier.analysis.cells import cell_means
from sparse_frontier.analysis.scaling import (
    fit_scaling_law,
    huber,
    logit,
    metric_matrix,
    r_squared,
    scaling_data,
    scaling_laws,
    sigmoid,
)
from sparse_frontier.analysis.synthetic import SyntheticStudy, synthetic_scores

TASKS = {
    "a_task": ("retrieval", 0.0),
    "b_task": ("retrieval", 0.8),
    "c_task": ("high_scope", -0.7),
}


def law_study(n_samples=1000, seed=0):
    # accuracies stay inside (0.1, 0.95), away from the clip, so the logit of a cell mean is unbiased
    return SyntheticStudy(
        models={"s": 2.0, "m": 8.0, "l": 32.0},
        methods={"vs": ("prefill", 1.0), "quest": ("decode", 0.5)},
        compression_ratios=(2.0, 4.0, 8.0, 16.0),
        tasks=TASKS,
        lengths=(4096, 16384, 65536),
        n_samples=n_samples,
        a=0.5,
        b=-0.3,
        c=-0.4,
        e=2.0,
        seed=seed,
    )


@pytest.fixture(scope="module")
def law_results():
    study = law_study()
    means = cell_means(synthetic_scores(study))
    data = scaling_data(means, study.models, {"prefill": "vs", "decode": "quest"})
    return study, data, scaling_laws(data, delta=1e-3)


def test_huber_value_and_gradient():
    r = np.array([-3.0, -0.5, 0.0, 0.2, 2.0])
    loss, grad = huber(r, 1.0)
    np.testing.assert_allclose(loss, [2.5, 0.125, 0.0, 0.02, 1.5])
    eps = 1e-6
    numeric = (huber(r + eps, 1.0)[0] - huber(r - eps, 1.0)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-6)


def test_logit_clips_and_inverts():
    assert np.isfinite(logit(np.array([0.0, 1.0]), 0.01)).all()
    p = np.array([0.2, 0.5, 0.9])
    np.testing.assert_allclose(sigmoid(logit(p, 0.01)), p)


def test_noise_free_fit_is_exact_and_large_delta_matches_least_squares():
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame(
        {
            "log_n": np.log(rng.choice([1.0, 4.0, 16.0], n)),
            "log_l": np.log(rng.choice([1e3, 1e4, 1e5], n)),
            "log_cr": np.log(rng.choice([1.0, 2.0, 8.0], n)),
            "task": rng.choice(["x", "y", "z"], n),
        }
    )
    d = df["task"].map({"x": 0.0, "y": 1.5, "z": -0.5})
    df["y"] = 0.7 * df["log_n"] - 0.2 * df["log_l"] - 0.9 * df["log_cr"] + d + 1.0
    fit = fit_scaling_law(df, delta=1e-3)
    for name, true in {"a": 0.7, "b": -0.2, "c": -0.9, "e": 1.0, "d_y": 1.5, "d_z": -0.5}.items():
        assert fit.coef[name] == pytest.approx(true, abs=1e-6)
    # with noise and a delta larger than every residual, Huber is least squares
    df["y"] = df["y"] + rng.normal(0, 0.3, n)
    fit = fit_scaling_law(df, delta=100.0)
    X = np.column_stack(
        [df["log_n"], df["log_l"], df["log_cr"], np.ones(n), df["task"] == "y", df["task"] == "z"]
    ).astype(float)
    ols = np.linalg.lstsq(X, df["y"].to_numpy(), rcond=None)[0]
    got = [fit.coef[k] for k in ("a", "b", "c", "e", "d_y", "d_z")]
    np.testing.assert_allclose(got, ols, atol=1e-6)


def test_huber_resists_an_outlier_that_moves_least_squares():
    x = np.log(np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0] * 3))
    df = pd.DataFrame({"log_n": x, "log_l": 0.0, "log_cr": 0.0, "task": "t", "y": 2.0 * x})
    df.loc[0, "y"] = 50.0
    robust = fit_scaling_law(df, delta=0.1)
    ols = fit_scaling_law(df, delta=1e3)
    assert abs(robust.coef["a"] - 2.0) < 0.05 < abs(ols.coef["a"] - 2.0)
    assert robust.dropped == ["b", "c"]  # constant predictors are reported, not fitted


def test_fit_recovers_the_generating_law(law_results):
    study, _, res = law_results
    fits = res.fits.set_index(["phase", "held_out"])
    assert len(fits) == 6 and fits["converged"].all()
    for (phase, _axis), row in fits.iterrows():
        c_true = study.c * (1.0 if phase == "prefill" else 0.5)
        assert row["a"] == pytest.approx(study.a, abs=0.06)
        assert row["b"] == pytest.approx(study.b, abs=0.06)
        assert row["c"] == pytest.approx(c_true, abs=0.06)
        assert row["e"] == pytest.approx(study.e, abs=0.6)  # e trades off against b·log L ~ 10
        assert row["d_b_task"] == pytest.approx(0.8, abs=0.1)
        assert row["d_c_task"] == pytest.approx(-0.7, abs=0.1)
        assert row["r2"] > 0.95


def test_held_out_metrics_are_as_expected(law_results):
    _, data, res = law_results
    per = res.per_task
    assert len(per) == 2 * 3 * len(TASKS)
    # the law is exact up to binomial noise: held-out predictions rank and match the truth
    assert (per["mae"] < 0.03).all()
    assert (per["spearman_rho"] > 0.8).all() and per["significant"].all()
    # the per-task metrics are the ones scipy computes on the held-out points
    pred = res.predictions
    query = "phase == 'decode' and held_out == 'model_size' and task == 'b_task'"
    g = pred.query(query)
    assert (g["params_b"] == 32.0).all()
    row = per.query(query).iloc[0]
    assert row["spearman_rho"] == pytest.approx(stats.spearmanr(g["score"], g["predicted"]).statistic)
    assert row["mae"] == pytest.approx(np.abs(g["score"] - g["predicted"]).mean())
    # each hold-out really holds out the axis maximum and trains on the rest
    fits = res.fits.set_index(["phase", "held_out"])
    prefill = data[data["phase"] == "prefill"]
    assert fits.loc[("prefill", "sequence_length"), "n_test"] == (prefill["length"] == 65536).sum()
    assert fits.loc[("prefill", "compression_ratio"), "held_out_value"] == 16.0


def test_a_wrong_law_is_caught_by_the_held_out_metrics():
    # Accuracy that collapses only at the largest compression: no log-linear law extrapolates to it.
    study = law_study(n_samples=300, seed=1)
    means = cell_means(synthetic_scores(study))
    means.loc[means["compression_ratio"] == 16.0, "score"] = 0.02
    data = scaling_data(means, study.models, {"prefill": "vs"})
    per = scaling_laws(data).per_task
    held = per[per["held_out"] == "compression_ratio"]
    assert held["mae"].mean() > 0.2 and (held["mae"] > 0.1).all()  # vs < 0.03 for the true law


def test_degenerate_axes_are_reported():
    study = law_study(n_samples=50)
    study.models = {"only": 7.0}
    study.lengths = (4096,)
    means = cell_means(synthetic_scores(study))
    res = scaling_laws(scaling_data(means, study.models, {"prefill": "vs"}))
    fits = res.fits.set_index("held_out")
    assert "nothing to hold out" in fits.loc["model_size", "note"]
    assert "nothing to hold out" in fits.loc["sequence_length", "note"]
    assert "a, b" in fits.loc["compression_ratio", "note"]  # constant in training: not fitted
    assert np.isnan(fits.loc["compression_ratio", "a"])
    assert np.isfinite(fits.loc["compression_ratio", "c"])
    assert any("nothing to hold out" in n for n in res.notes)


def test_missing_params_is_named():
    means = pd.DataFrame({"model": ["x"], "phase": ["dense"], "method": ["dense"]})
    with pytest.raises(ValueError, match="params_b"):
        scaling_data(means, {}, {"prefill": "vs"})


def test_r_squared_and_tables():
    assert r_squared(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == 1.0
    assert np.isnan(r_squared(np.array([1.0, 1.0]), np.array([1.0, 2.0])))
    per = pd.DataFrame(
        {
            "phase": ["decode", "prefill", "prefill"],
            "held_out": ["model_size", "compression_ratio", "model_size"],
            "task": ["t", "t", "t"],
            "spearman_rho": [0.73, -0.34, np.nan],
            "significant": [True, False, False],
        }
    )
    table = metric_matrix(per, "spearman_rho", star=True)
    assert table[["phase", "held_out"]].values.tolist() == [
        ["prefill", "model_size"],
        ["prefill", "compression_ratio"],
        ["decode", "model_size"],
    ]
    assert table["t"].tolist() == ["–", "-.34", ".73 ⋆"]
