"""Agreement with dense: each sparse row is compared with the dense row of the same sample, and the
figure draws both measures from the cell table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sparse_frontier.agreement import add_dense_agreement, common_prefix, prefix_agreement
from sparse_frontier.analysis.cells import cell_means
from sparse_frontier.figures.agreement import agreement_chart, agreement_data


def row(method, ratio, sample_id, ids, *, task="ruler_vt", length=1024, score=0.0):
    return {
        "model": "m", "method": method, "phase": "dense" if method == "dense" else "prefill",
        "compression_ratio": ratio, "task": task, "length": length, "sample_id": sample_id,
        "seed": 0, "output_ids": ids, "score": score,
    }


def test_prefix_agreement_counts_tokens_before_the_first_difference_over_the_longer_output():
    assert common_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2  # equal again after the split: not counted
    assert prefix_agreement([1, 2, 3], [1, 2, 3]) == 1.0
    assert prefix_agreement([5, 2, 3], [1, 2, 3]) == 0.0
    assert prefix_agreement([1, 2], [1, 2, 3, 4]) == 0.5  # stopped early
    assert prefix_agreement([1, 2, 3, 4], [1, 2]) == 0.5  # rambled past dense's end
    assert prefix_agreement([], []) == 1.0


def test_each_row_is_joined_with_the_dense_row_of_its_own_sample():
    predictions = pd.DataFrame(
        [
            row("dense", 1.0, 0, [1, 2, 3, 4]),
            row("dense", 1.0, 1, [7, 8]),
            row("dense", 1.0, 0, [9, 9], length=2048),  # same sample id, other length
            row("block_sparse", 2.0, 0, [1, 2, 3, 0]),
            row("block_sparse", 2.0, 1, [7, 8]),
            row("block_sparse", 2.0, 0, [9, 1], length=2048),
            row("snapkv", 5.0, 3, [1]),  # no dense row for sample 3
        ]
    )
    out = add_dense_agreement(predictions)
    assert list(out.dense_agreement[:6]) == [1.0, 1.0, 1.0, 0.75, 1.0, 0.5]
    assert list(out.dense_prefix_tokens[:6]) == [4, 2, 2, 3, 2, 1]
    assert math.isnan(out.dense_agreement.iloc[6]) and pd.isna(out.dense_prefix_tokens.iloc[6])


def test_missing_output_ids_or_two_dense_rows_stop_with_a_sentence():
    with pytest.raises(ValueError, match="no `output_ids` column.*rerun inference"):
        add_dense_agreement(pd.DataFrame([row("dense", 1.0, 0, [1])]).drop(columns="output_ids"))
    with pytest.raises(ValueError, match="Two dense rows for sample"):
        add_dense_agreement(pd.DataFrame([row("dense", 1.0, 0, [1]), row("dense", 1.0, 0, [2])]))


def test_the_figure_draws_score_and_agreement_per_method_starting_at_dense(tmp_path):
    rows = []
    for sample, (dense_ids, sparse2, sparse5) in enumerate(
        [([1, 2, 3, 4], [1, 2, 3, 4], [1, 0, 0, 0]), ([5, 6], [5, 0], [0, 0])]
    ):
        rows += [
            row("dense", 1.0, sample, dense_ids, score=1.0),
            row("block_sparse", 2.0, sample, sparse2, score=1.0 - sample),
            row("block_sparse", 5.0, sample, sparse5, score=0.0),
        ]
    scores = add_dense_agreement(pd.DataFrame(rows))
    cells = cell_means(scores)
    assert "dense_agreement" in cells
    data = agreement_data(cells)
    curve = data[data.measure == "agreement with dense"].set_index("compression_ratio")["value"]
    assert curve.to_dict() == {1.0: 1.0, 2.0: (1.0 + 0.5) / 2, 5.0: (0.25 + 0.0) / 2}
    score = data[data.measure == "mean score"].set_index("compression_ratio")["value"]
    assert score.to_dict() == {1.0: 1.0, 2.0: 0.5, 5.0: 0.0}
    assert set(data.method) == {"block_sparse"}  # dense is the start of each method's line
    agreement_chart(data).save(str(tmp_path / "agreement.svg"), format="svg")
    assert "agreement with dense" in (tmp_path / "agreement.svg").read_text()


def test_a_score_table_without_agreement_draws_a_chart_that_says_why(tmp_path):
    scores = pd.DataFrame([row("dense", 1.0, 0, [1], score=1.0)]).drop(columns="output_ids")
    data = agreement_data(scores)
    assert data.empty
    agreement_chart(data).save(str(tmp_path / "empty.svg"), format="svg")
    assert "rerun evaluate" in (tmp_path / "empty.svg").read_text()
