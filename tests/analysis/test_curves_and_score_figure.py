"""Interpolated score curves (paper A.1: linear interpolation between measured ratios) and Figure 4."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparse_frontier.analysis.curves import average_curves, cell_means, interpolate_curve, interpolate_on_grid
from sparse_frontier.analysis.synthetic import SyntheticStudy, synthetic_scores
from sparse_frontier.figures.save import save_chart
from sparse_frontier.figures.score_compression import score_vs_compression_chart, score_vs_compression_data


def test_interpolation_on_a_constructed_curve():
    x = np.array([1.0, 2.0, 5.0, 10.0])
    y = 1.0 - 0.05 * x  # a straight line is reproduced exactly between and at the knots
    grid = np.array([0.5, 1.0, 1.5, 3.0, 7.5, 10.0, 12.0])
    out = interpolate_curve(x[::-1], y[::-1], grid)  # order of the measurements must not matter
    np.testing.assert_allclose(out[1:6], 1.0 - 0.05 * grid[1:6])
    assert np.isnan(out[0]) and np.isnan(out[-1])  # no extrapolation
    # a kinked curve: halfway between (2, 0.9) and (5, 0.3) is 0.6
    np.testing.assert_allclose(
        interpolate_curve(np.array([2.0, 5.0]), np.array([0.9, 0.3]), np.array([3.5])), 0.6
    )


def cells(model, method, phase, crs, scores):
    return pd.DataFrame(
        {
            "model": model,
            "length": 1024,
            "task": "t",
            "phase": phase,
            "method": method,
            "compression_ratio": crs,
            "score": scores,
            "n": 10,
            "std": 0.1,
        }
    )


def test_curves_start_at_dense_and_average_only_where_every_curve_was_measured():
    means = pd.concat(
        [
            cells("a", "dense", "dense", [1.0], [0.8]),
            cells("b", "dense", "dense", [1.0], [0.6]),
            cells("a", "vs", "prefill", [2.0, 4.0], [0.6, 0.4]),
            cells("b", "vs", "prefill", [2.0, 4.0, 8.0], [0.5, 0.3, 0.1]),
        ],
        ignore_index=True,
    )
    interp = interpolate_on_grid(means)
    a = interp[interp["model"] == "a"].set_index("compression_ratio")["score"]
    assert a.loc[1.0] == 0.8  # the dense anchor
    assert 8.0 not in a.index  # beyond model a's last measurement
    avg = average_curves(means).set_index("compression_ratio")
    assert list(avg.index) == [1.0, 2.0, 4.0]  # 8.0 only measured for one model: dropped
    assert avg.loc[1.0, "score"] == pytest.approx(0.7)
    assert avg.loc[4.0, "score"] == pytest.approx(0.35)
    assert (avg["n_curves"] == 2).all()


def test_cell_means_on_synthetic_table():
    study = SyntheticStudy(
        models={"m": 7.0},
        lengths=(4096,),
        n_samples=5,
        methods={"quest": ("decode", 1.0)},
        compression_ratios=(2.0, 4.0),
    )
    scores = synthetic_scores(study)
    means = cell_means(scores)
    assert len(means) == len(study.tasks) * 3
    assert (means["n"] == 5).all()
    assert {"achieved_compression", "task_category"} <= set(means.columns)


@pytest.mark.parametrize("one_task", [False, True])
def test_figure_data_and_files(tmp_path, one_task):
    tasks = (
        {"niah": ("retrieval", 1.0)} if one_task else {"niah": ("retrieval", 1.0), "vt": ("high_scope", -1.0)}
    )
    study = SyntheticStudy(
        models={"m": 7.0},
        lengths=(4096,),
        n_samples=10,
        tasks=tasks,
        methods={"vs": ("prefill", 1.0), "quest": ("decode", 0.5)},
        compression_ratios=(2.0, 5.0, 10.0),
    )
    data = score_vs_compression_data(synthetic_scores(study))
    dense = data[data["kind"] == "dense"]
    assert len(dense) == 2 * len(tasks)  # the dense reference is drawn in both phase rows
    sparse = data[data["kind"] == "sparse"]
    assert set(sparse["compression_ratio"]) == {1.0, 2.0, 5.0, 10.0}
    for path in ["f.png", "f.svg", "f.html"]:
        save_chart(score_vs_compression_chart(data), tmp_path / path)
        assert (tmp_path / path).stat().st_size > 1000
    assert b"vega" in (tmp_path / "f.html").read_bytes()


def test_figure_with_dense_only():
    scores = pd.DataFrame(
        {
            "model": "m",
            "length": 1024,
            "task": "t",
            "phase": "dense",
            "method": "dense",
            "compression_ratio": 1.0,
            "score": [0.0, 0.0],
            "task_category": "retrieval",
        }
    )
    data = score_vs_compression_data(scores)
    assert (data["kind"] == "dense").all() and len(data) == 1
    score_vs_compression_chart(data).to_dict()  # a valid Vega-Lite spec


def test_unknown_figure_format_is_named(tmp_path):
    with pytest.raises(ValueError, match="pdf"):
        save_chart(
            score_vs_compression_chart(
                pd.DataFrame(
                    {
                        "phase": ["dense"],
                        "task": ["t"],
                        "method": ["dense"],
                        "compression_ratio": [1.0],
                        "score": [0.5],
                        "kind": ["dense"],
                    }
                )
            ),
            tmp_path / "x.pdf",
        )
