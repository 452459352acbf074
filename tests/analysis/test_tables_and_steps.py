"""Table writing, the target list, and every analysis step on degenerate data (issue 5, point 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparse_frontier.analysis.cells import cell_means, pool_cells
from sparse_frontier.analysis.flops import ModelShape
from sparse_frontier.analysis.run import (
    cells_step,
    flops_step,
    isoflops_step,
    max_compression_step,
    methods_step,
    scaling_step,
    write_step,
)
from sparse_frontier.analysis.synthetic import SyntheticStudy, synthetic_scores
from sparse_frontier.analysis.tables import read_scores, to_latex, to_markdown, write_table
from sparse_frontier.analysis.targets import DATA_TABLES, FIGURES, TABLES, analysis_targets, table_paths
from sparse_frontier.figures.flops import flops_vs_length_chart
from sparse_frontier.figures.isoflops import isoflops_chart
from sparse_frontier.figures.max_compression import max_compression_chart
from sparse_frontier.figures.scaling import scaling_predictions_chart
from sparse_frontier.figures.score_compression import score_vs_compression_chart, score_vs_compression_data

SHAPE = ModelShape(64, 2, 4, 2, 16, 128, 100)


def test_markdown_and_latex():
    df = pd.DataFrame({"task": ["a_b", "c"], "value": [0.12345, np.nan], "flops": [1.5e15, 2.0]})
    md = to_markdown(df)
    assert md.splitlines()[0] == "| task | value | flops |"
    assert "| a_b | 0.123 | 1.500e+15 |" in md
    assert "| c | – | 2.000 |" in md
    tex = to_latex(df, caption="50% of cells")
    assert r"a\_b" in tex and r"50\% of cells" in tex and "--" in tex
    assert r"\begin{tabular}{lrr}" in tex


def test_write_table_is_complete_and_leaves_no_temporaries(tmp_path):
    df = pd.DataFrame({"x": [1.0, 2.0]})
    shown = pd.DataFrame({"x": ["one", "two"]})
    write_table(
        df, tmp_path / "t.parquet", tmp_path / "t.md", tmp_path / "t.tex", caption="cap", display=shown
    )
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), df)
    assert "one" in (tmp_path / "t.md").read_text() and "cap" in (tmp_path / "t.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.md", "t.parquet", "t.tex"]


def test_read_scores_names_missing_columns(tmp_path):
    pd.DataFrame({"model": ["m"], "score": [1.0]}).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(ValueError, match="task_category"):
        read_scores(tmp_path / "s.parquet")


def test_targets_cover_every_table_and_figure():
    targets = analysis_targets({})
    for name in TABLES:
        assert all(p in targets for p in table_paths(name).values())
        assert len(table_paths(name)) == 3
    for name in FIGURES:
        assert {f"results/figures/{name}.{ext}" for ext in ("png", "svg", "html")} <= set(targets)
    assert "results/tables/max_compression.parquet" in targets
    assert "results/figures/score_vs_compression.png" in targets
    assert all(len(table_paths(name)) == 1 for name in DATA_TABLES)


def test_pooling_cells_equals_statistics_of_the_union():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=7), rng.normal(size=12)
    cells = pd.DataFrame(
        {
            "k": ["x", "x", "y"],
            "n": [7, 12, 1],
            "score": [a.mean(), b.mean(), 0.3],
            "std": [a.std(ddof=1), b.std(ddof=1), 0.0],
        }
    )
    pooled = pool_cells(cells, ["k"]).set_index("k")
    both = np.concatenate([a, b])
    assert pooled.loc["x", "n"] == 19
    assert pooled.loc["x", "mean"] == pytest.approx(both.mean())
    assert pooled.loc["x", "var"] == pytest.approx(both.var(ddof=1))
    assert pooled.loc["y", "var"] == 0.0


def run_all(scores: pd.DataFrame, params_b: dict[str, float]):
    cells = cells_step(scores)
    table = cells.tables["cells"]
    shapes = {m: SHAPE for m in params_b}
    flops = flops_step(table, shapes)
    steps = {
        "cells": cells,
        "flops": flops,
        "isoflops": isoflops_step(table, flops.tables["flops"], None),
        "max_compression": max_compression_step(table),
        "methods": methods_step(table),
        "scaling": scaling_step(table, params_b),
    }
    charts = [
        flops_vs_length_chart(flops.tables["flops_by_length"]),
        isoflops_chart(steps["isoflops"].tables["isoflops"]),
        max_compression_chart(steps["max_compression"].tables["max_compression_summary"]),
        score_vs_compression_chart(score_vs_compression_data(table)),
    ]
    preds = steps["scaling"].tables["scaling_predictions"]
    if len(preds):
        charts.append(scaling_predictions_chart(preds))
    for chart in charts:
        chart.to_dict()  # a valid Vega-Lite spec
    return steps


def tiny_study(**kw) -> SyntheticStudy:
    base = dict(
        models={"m": 1.0},
        methods={"vs": ("prefill", 1.0), "quest": ("decode", 0.5)},
        compression_ratios=(2.0, 4.0),
        tasks={"niah": ("retrieval", 1.0), "vt": ("high_scope", -1.0)},
        lengths=(1024,),
        n_samples=6,
    )
    base.update(kw)
    return SyntheticStudy(**base)


def test_one_model_one_length_is_reported_not_crashed_on():
    steps = run_all(synthetic_scores(tiny_study()), {"m": 1.0})
    notes = " ".join(n for s in steps.values() for n in s.notes)
    assert "one model only" in notes
    assert "nothing to hold out" in notes
    assert "prefill: one method only" in notes
    assert len(steps["max_compression"].tables["max_compression"]) == 2 * 2
    assert steps["isoflops"].tables["isoflops"]["on_frontier"].any()


def test_a_task_at_zero_everywhere_and_a_single_sample_cell():
    scores = synthetic_scores(tiny_study(models={"m": 1.0, "big": 8.0}, lengths=(1024, 2048)))
    scores.loc[scores["task"] == "vt", "score"] = 0.0
    # one cell keeps a single sample
    single = (scores["model"] == "big") & (scores["method"] == "vs") & (scores["compression_ratio"] == 4.0)
    single &= (scores["task"] == "niah") & (scores["length"] == 1024)
    scores = scores[~single | (scores["sample_id"] == 0)]
    steps = run_all(scores, {"m": 1.0, "big": 8.0})
    assert any("single sample" in n for n in steps["cells"].notes)
    table = steps["max_compression"].tables["max_compression"]
    vt = table[table["task"] == "vt"]
    assert vt["max_compression"].isna().all() and vt["note"].str.contains("score floor").all()
    levels = steps["max_compression"].tables["dense_comparison"]
    assert (levels["status"] == "too_few_samples").sum() == 1
    summary = steps["max_compression"].tables["max_compression_summary"]
    assert (summary["n_tasks_excluded"] >= 1).all()
    assert np.isfinite(steps["scaling"].tables["scaling_fits"]["r2"]).any()


def test_write_step_writes_every_named_output(tmp_path):
    result = max_compression_step(cell_means(synthetic_scores(tiny_study())))

    class Out:
        pass

    out = Out()
    for name in result.tables:
        for key, path in table_paths(name).items():
            setattr(out, key, str(tmp_path / path))
    write_step(result, out)
    assert (tmp_path / "results/tables/max_compression.md").read_text().startswith("Maximum compression")
    with pytest.raises(ValueError, match="no output dense_comparison_parquet"):
        write_step(result, Out())


def test_figures_of_nothing_say_so(tmp_path):
    from sparse_frontier.figures.save import save_chart

    empty = pd.DataFrame()
    summary = pd.DataFrame(
        {
            "model": ["m"],
            "length": [1024],
            "phase": ["prefill"],
            "method": ["vs"],
            "mean": [np.nan],
            "std": [np.nan],
            "min": [np.nan],
        }
    )
    for chart in [
        scaling_predictions_chart(empty),
        max_compression_chart(summary),
        isoflops_chart(pd.DataFrame(columns=["flops", "score"])),
    ]:
        spec = chart.to_dict()
        assert (
            spec["mark"]["type"] == "text"
            and "No" in spec["datasets"][next(iter(spec["datasets"]))][0]["text"]
        )
    save_chart(max_compression_chart(summary), tmp_path / "m.svg")
    assert "No maximum compression" in (tmp_path / "m.svg").read_text()


def test_dense_only_study_writes_every_table(tmp_path):
    scores = synthetic_scores(tiny_study(methods={}))
    steps = run_all(scores, {"m": 1.0})
    notes = " ".join(n for s in steps.values() for n in s.notes)
    assert "no sparse cells" in notes
    for step in steps.values():
        for name, df in step.tables.items():
            write_table(df, tmp_path / f"{name}.parquet", tmp_path / f"{name}.md", tmp_path / f"{name}.tex")
            assert (tmp_path / f"{name}.md").exists()
