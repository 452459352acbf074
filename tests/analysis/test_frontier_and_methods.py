"""RQ1 Pareto frontier on a hand-built point set; RQ3 best method per category on constructed curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparse_frontier.analysis.flops import ModelShape, flops_table
from sparse_frontier.analysis.frontier import (
    best_method_per_phase,
    isoflops_points,
    pareto_frontier,
    resolve_phase_methods,
)
from sparse_frontier.analysis.methods import best_methods


def test_pareto_frontier_on_a_hand_built_set():
    #           A     B     C     D     E     F     G
    flops = [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, np.nan]
    score = [0.2, 0.5, 0.4, 0.45, 0.7, 0.7, 0.9]
    # A cheapest; B beats A; C dominated by B (same FLOPS, lower); D dominated by B (more FLOPS,
    # lower); E best so far; F same score as E for more FLOPS: dominated; G has no FLOPS.
    assert pareto_frontier(np.array(flops), np.array(score)).tolist() == [
        True,
        True,
        False,
        False,
        True,
        False,
        False,
    ]


def test_pareto_frontier_keeps_exact_duplicates_and_handles_empty():
    assert pareto_frontier(np.array([1.0, 1.0]), np.array([0.5, 0.5])).tolist() == [True, True]
    assert pareto_frontier(np.array([]), np.array([])).tolist() == []


def test_frontier_brute_force_agreement():
    rng = np.random.default_rng(0)
    f, s = rng.uniform(0, 1, 200), rng.uniform(0, 1, 200)
    got = pareto_frontier(f, s)
    for i in range(200):
        dominated = np.any((f <= f[i]) & (s >= s[i]) & ((f < f[i]) | (s > s[i])))
        assert got[i] == (not dominated)


def cell(model, phase, method, cr, task, score, length=1024, category="retrieval"):
    return {
        "model": model,
        "length": length,
        "task": task,
        "task_category": category,
        "phase": phase,
        "method": method,
        "compression_ratio": float(cr),
        "score": score,
        "n": 10,
        "std": 0.1,
    }


SHAPES = {
    "small": ModelShape(64, 2, 4, 2, 16, 128, 100),
    "big": ModelShape(128, 4, 8, 2, 16, 256, 100),
}


def test_isoflops_points_average_tasks_and_mark_the_frontier():
    rows = []
    for task, bonus in [("t1", 0.0), ("t2", 0.2)]:
        rows += [
            cell("small", "dense", "dense", 1, task, 0.5 + bonus),
            cell("small", "prefill", "vs", 4, task, 0.3 + bonus),
            cell("big", "dense", "dense", 1, task, 0.7 + bonus),
            cell("big", "prefill", "vs", 4, task, 0.65 + bonus),
        ]
    rows.append(cell("big", "prefill", "other", 4, "t1", 0.0))
    means = pd.DataFrame(rows)
    flops = flops_table(SHAPES, means)
    pts = isoflops_points(means, flops, {"prefill": "vs"})
    assert len(pts) == 4 and set(pts["method"]) == {"dense", "vs"}
    by = pts.set_index(["model", "compression_ratio"])
    assert by.loc[("small", 1.0), "score"] == pytest.approx(0.6)  # mean over the two tasks
    assert (by["n_tasks"] == 2).all()
    assert by.loc[("big", 4.0), "flops"] < by.loc[("big", 1.0), "flops"]
    expected = pareto_frontier(pts["flops"].to_numpy(), pts["score"].to_numpy())
    assert pts["on_frontier"].tolist() == expected.tolist()
    assert by.loc[("big", 1.0), "on_frontier"]  # the best score is always on the frontier


def test_isoflops_uses_only_tasks_present_at_every_point():
    rows = [
        cell("small", "dense", "dense", 1, "t1", 0.5),
        cell("small", "prefill", "vs", 4, "t1", 0.4),
        cell("small", "dense", "dense", 1, "t2", 1.0),  # t2 has no sparse cell
    ]
    means = pd.DataFrame(rows)
    pts = isoflops_points(means, flops_table(SHAPES, means), {"prefill": "vs"})
    assert pts.set_index("compression_ratio").loc[1.0, "score"] == pytest.approx(0.5)


def curve_rows(method, phase, task, category, scores):
    return [cell("m", phase, method, cr, task, s, category=category) for cr, s in scores.items()]


def constructed_methods():
    # On retrieval tasks "vs" wins; on the high-scope task "block" wins; decode has one method.
    rows = []
    for task, cat, vs, block in [
        ("niah", "retrieval", {2: 0.9, 4: 0.8}, {2: 0.7, 4: 0.5}),
        ("squad", "retrieval", {2: 0.8, 4: 0.7}, {2: 0.6, 4: 0.4}),
        ("vt", "high_scope", {2: 0.3, 4: 0.2}, {2: 0.6, 4: 0.55}),
    ]:
        rows.append(cell("m", "dense", "dense", 1, task, 1.0, category=cat))
        rows += curve_rows("vs", "prefill", task, cat, vs)
        rows += curve_rows("block", "prefill", task, cat, block)
        rows += curve_rows("quest", "decode", task, cat, {3: 0.5})
    return pd.DataFrame(rows)


def test_best_method_per_category_and_task():
    means = constructed_methods()
    cat = best_methods(means, by="category").set_index(["phase", "category_group", "compression_ratio"])
    retr = cat.loc[("prefill", "retrieval (low scope, low dispersion)", 4.0)]
    assert retr["best_method"] == "vs" and retr["runner_up"] == "block"
    assert retr["best_score"] == pytest.approx(0.75)
    assert retr["margin"] == pytest.approx(0.3)
    high = cat.loc[("prefill", "high scope or high dispersion", 2.0)]
    assert high["best_method"] == "block" and high["score_vs"] == pytest.approx(0.3)
    # interpolation gives every method the decode grid point 2 (between dense at 1 and quest at 3)
    dec = cat.loc[("decode", "retrieval (low scope, low dispersion)", 2.0)]
    assert dec["best_method"] == "quest" and np.isnan(dec["margin"])
    assert dec["best_score"] == pytest.approx(0.75)
    task = best_methods(means, by="task").set_index(["phase", "task", "compression_ratio"])
    assert task.loc[("prefill", "vt", 4.0), "best_method"] == "block"
    with pytest.raises(ValueError, match="by must be"):
        best_methods(means, by="model")


def test_phase_method_choice_follows_config_or_best():
    means = constructed_methods()
    assert best_method_per_phase(means) == {"prefill": "vs", "decode": "quest"}
    chosen, notes = resolve_phase_methods(means, {"prefill": "block", "decode": "missing"})
    assert chosen == {"prefill": "block", "decode": "quest"}
    assert len(notes) == 1 and "missing" in notes[0]


def test_tied_methods_are_all_named():
    rows = [cell("m", "dense", "dense", 1, "t", 1.0)]
    rows += curve_rows("vs", "prefill", "t", "retrieval", {2: 0.5})
    rows += curve_rows("block", "prefill", "t", "retrieval", {2: 0.5})
    table = best_methods(pd.DataFrame(rows), by="task")
    assert table["best_method"].item() == "block = vs" and table["margin"].item() == 0.0
