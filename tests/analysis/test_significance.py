"""RQ2: the Welch step against scipy, and the maximum-compression rule on constructed data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sparse_frontier.analysis.significance import (
    BELOW_MIN,
    DENSE_BELOW_MIN,
    TOO_FEW,
    dense_comparison,
    max_compression,
    max_compression_summary,
    welch_less,
)


def rows(model, length, task, phase, method, cr, scores):
    return pd.DataFrame(
        {
            "model": model,
            "length": length,
            "task": task,
            "phase": phase,
            "method": method,
            "compression_ratio": float(cr),
            "score": np.asarray(scores, float),
        }
    )


def dense_rows(model, length, task, scores):
    return rows(model, length, task, "dense", "dense", 1.0, scores)


def test_welch_matches_scipy_on_random_cells():
    rng = np.random.default_rng(0)
    stats_rows, expected = [], []
    for _ in range(200):
        na, nb = rng.integers(2, 40, size=2)
        a = rng.normal(rng.uniform(0, 1), rng.uniform(0.01, 0.5), na)
        b = rng.normal(rng.uniform(0, 1), rng.uniform(0.01, 0.5), nb)
        stats_rows.append((a.mean(), a.var(ddof=1), na, b.mean(), b.var(ddof=1), nb))
        expected.append(stats.ttest_ind(a, b, equal_var=False, alternative="less"))
    arr = np.array(stats_rows, float).T
    t, dof, p = welch_less(*arr)
    np.testing.assert_allclose(t, [e.statistic for e in expected], rtol=1e-10)
    np.testing.assert_allclose(dof, [e.df for e in expected], rtol=1e-10)
    np.testing.assert_allclose(p, [e.pvalue for e in expected], rtol=1e-8, atol=1e-300)


@pytest.mark.parametrize(
    "a, b",
    [([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]), ([1.0, 1.0], [0.0, 0.0, 0.0]), ([1.0, 1.0, 1.0], [1.0, 1.0])],
)
def test_welch_constant_samples_follow_scipy(a, b):
    expected = stats.ttest_ind(a, b, equal_var=False, alternative="less")
    _, _, p = welch_less(*(np.array([v]) for v in (np.mean(a), 0.0, len(a), np.mean(b), 0.0, len(b))))
    if np.isnan(expected.pvalue):
        assert np.isnan(p[0])
    else:
        assert p[0] == expected.pvalue


def test_dense_comparison_p_values_match_scipy_per_cell():
    rng = np.random.default_rng(1)
    dense = rng.binomial(1, 0.8, 60).astype(float)
    parts = [dense_rows("m", 1024, "t", dense)]
    for cr, p in [(2, 0.8), (5, 0.7), (10, 0.5)]:
        parts.append(rows("m", 1024, "t", "prefill", "vs", cr, rng.binomial(1, p, 50)))
    scores = pd.concat(parts, ignore_index=True)
    cmp = dense_comparison(scores)
    for cr, g in scores[scores["phase"] == "prefill"].groupby("compression_ratio"):
        expected = stats.ttest_ind(g["score"], dense, equal_var=False, alternative="less").pvalue
        got = cmp.loc[cmp["compression_ratio"] == cr, "p_value"].item()
        assert got == pytest.approx(expected, rel=1e-9)


def constructed_study():
    """Dense ~0.9; CR 2 and 5 indistinguishable, CR 10 a clear drop, CR 20 random (< 0.05)."""
    base = np.array([1.0] * 9 + [0.0])  # mean 0.9, var 0.1
    dense = np.tile(base, 5)  # 50 samples
    parts = [dense_rows("m", 1024, "t", dense)]
    parts.append(rows("m", 1024, "t", "decode", "quest", 2, dense))
    parts.append(rows("m", 1024, "t", "decode", "quest", 5, np.tile([1.0] * 17 + [0.0] * 3, 2)[:40]))
    parts.append(rows("m", 1024, "t", "decode", "quest", 10, np.tile([1.0, 0.0], 25)))
    parts.append(rows("m", 1024, "t", "decode", "quest", 20, np.zeros(50)))
    return pd.concat(parts, ignore_index=True), dense


def test_max_compression_is_the_highest_preserved_level_and_interpolates_between_levels():
    scores, dense = constructed_study()
    cmp = dense_comparison(scores)
    by_cr = cmp.set_index("compression_ratio")
    assert not by_cr.loc[2.0, "significant"] and not by_cr.loc[5.0, "significant"]
    assert by_cr.loc[10.0, "significant"]
    assert by_cr.loc[20.0, "status"] == BELOW_MIN and not by_cr.loc[20.0, "preserved"]

    table = max_compression(cmp)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["max_compression"] == 5.0
    p5 = stats.ttest_ind(
        scores.query("compression_ratio == 5")["score"], dense, equal_var=False, alternative="less"
    ).pvalue
    p10 = stats.ttest_ind(np.tile([1.0, 0.0], 25), dense, equal_var=False, alternative="less").pvalue
    expected = 5.0 + 5.0 * (p5 - 0.05) / (p5 - p10)
    assert row["max_compression_interp"] == pytest.approx(expected)
    assert 5.0 < row["max_compression_interp"] < 10.0
    assert row["n_levels"] == 4 and row["n_excluded"] == 1


def test_highest_preserved_level_wins_even_after_a_significant_one():
    # The paper's rule is "the highest level where the test is not significant".
    rng = np.random.default_rng(2)
    dense = rng.binomial(1, 0.7, 100).astype(float)
    parts = [
        dense_rows("m", 1024, "t", dense),
        rows("m", 1024, "t", "prefill", "vs", 5, np.zeros(50) + (np.arange(50) < 10)),
        rows("m", 1024, "t", "prefill", "vs", 10, dense),
    ]
    table = max_compression(dense_comparison(pd.concat(parts, ignore_index=True)))
    assert table["max_compression"].item() == 10.0


def test_no_preserved_level_gives_compression_one_with_a_note():
    dense = np.tile([1.0, 1.0, 1.0, 0.0], 25)
    parts = [
        dense_rows("m", 1024, "t", dense),
        rows("m", 1024, "t", "prefill", "vs", 2, np.tile([1.0, 0.0, 0.0, 0.0], 25)),
    ]
    table = max_compression(dense_comparison(pd.concat(parts, ignore_index=True)))
    assert table["max_compression"].item() == 1.0
    assert "significantly worse" in table["note"].item()


def test_degenerate_cells_are_reported_not_crashed_on():
    parts = [
        # dense at zero: the task is random for this model, nothing to preserve
        dense_rows("m", 1024, "zero_task", np.zeros(20)),
        rows("m", 1024, "zero_task", "prefill", "vs", 2, np.zeros(20)),
        # one sample per cell: Welch is undefined
        dense_rows("m", 1024, "single", [1.0]),
        rows("m", 1024, "single", "prefill", "vs", 2, [1.0]),
        # no dense rows at all for this length
        rows("m", 2048, "orphan", "prefill", "vs", 2, np.ones(5)),
    ]
    cmp = dense_comparison(pd.concat(parts, ignore_index=True))
    assert set(cmp["status"]) == {DENSE_BELOW_MIN, TOO_FEW, "no_dense_baseline"}
    table = max_compression(cmp).set_index("task")
    assert table["max_compression"].isna().all()
    assert "below the score floor" in table.loc["zero_task", "note"]
    assert "fewer than 2 samples" in table.loc["single", "note"]
    assert "no dense baseline" in table.loc["orphan", "note"]


def test_identical_constant_scores_count_as_preserved():
    parts = [
        dense_rows("m", 1024, "t", np.ones(10)),
        rows("m", 1024, "t", "decode", "quest", 20, np.ones(10)),
    ]
    table = max_compression(dense_comparison(pd.concat(parts, ignore_index=True)))
    assert table["max_compression"].item() == 20.0


def test_kv_compression_rows_are_grouped_with_decode():
    parts = [
        dense_rows("m", 1024, "t", np.ones(10)),
        rows("m", 1024, "t", "kv-compression", "snapkv", 2, np.ones(10)),
    ]
    table = max_compression(dense_comparison(pd.concat(parts, ignore_index=True)))
    assert table["phase"].item() == "decode"


def test_summary_mean_std_min_across_tasks():
    table = pd.DataFrame(
        {
            "model": "m",
            "length": 1024,
            "phase": "decode",
            "method": "quest",
            "task": ["a", "b", "c", "d"],
            "max_compression": [2.0, 10.0, 20.0, np.nan],
        }
    )
    summary = max_compression_summary(table)
    row = summary.iloc[0]
    assert row["mean"] == pytest.approx(32 / 3)
    assert row["std"] == pytest.approx(np.std([2.0, 10.0, 20.0], ddof=1))
    assert row["min"] == 2.0
    assert row["n_tasks"] == 3 and row["n_tasks_excluded"] == 1


def test_bad_alpha_is_named():
    parts = [dense_rows("m", 1024, "t", np.ones(3))]
    with pytest.raises(ValueError, match="analysis.alpha"):
        dense_comparison(pd.concat(parts), alpha=1.5)


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="compression_ratio"):
        dense_comparison(pd.DataFrame({"model": ["m"], "score": [1.0]}))


def test_achieved_compression_is_carried_to_the_maximum():
    parts = [dense_rows("m", 1024, "t", np.ones(10))]
    for cr, achieved in [(2, [1.9, 2.1]), (4, [3.0, 3.4])]:
        level = rows("m", 1024, "t", "prefill", "vs", cr, np.ones(10))
        level["achieved_compression"] = np.repeat(achieved, 5)
        parts.append(level)
    scores = pd.concat(parts, ignore_index=True)
    scores["achieved_compression"] = scores["achieved_compression"].fillna(1.0)
    cmp = dense_comparison(scores)
    assert cmp.set_index("compression_ratio").loc[4.0, "achieved_compression"] == pytest.approx(3.2)
    table = max_compression(cmp)
    assert table["max_compression"].item() == 4.0
    assert table["max_compression_achieved"].item() == pytest.approx(3.2)
