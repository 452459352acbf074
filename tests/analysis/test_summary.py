"""The end-of-run summary: the numbers of the cell tables, per model, length and phase."""

from __future__ import annotations

import math

import pandas as pd

from sparse_frontier.analysis.summary import print_summary, study_summary


def cell(method, phase, ratio, task, score):
    return {
        "model": "m",
        "length": 1024,
        "task": task,
        "phase": phase,
        "method": method,
        "compression_ratio": ratio,
        "score": score,
    }


def test_summary_rows_hold_the_mean_over_tasks_at_each_ratio_and_the_max_lossless_compression(
    tmp_path, capsys
):
    cells = pd.DataFrame(
        [cell("dense", "dense", 1.0, t, s) for t, s in (("a", 1.0), ("b", 0.8))]
        + [cell("block_sparse", "prefill", 2.0, t, s) for t, s in (("a", 0.9), ("b", 0.7))]
        + [cell("block_sparse", "prefill", 5.0, t, s) for t, s in (("a", 0.5), ("b", 0.1))]
        + [cell("snapkv", "decode", 2.0, t, s) for t, s in (("a", 0.6), ("b", 0.6))]
    )
    lossless = pd.DataFrame(
        [
            {
                "model": "m",
                "length": 1024,
                "phase": "prefill",
                "method": "block_sparse",
                "mean": 3.5,
                "min": 2.0,
            },
            {
                "model": "m",
                "length": 1024,
                "phase": "decode",
                "method": "snapkv",
                "mean": math.nan,
                "min": math.nan,
            },
        ]
    )
    text = study_summary(cells, lossless)
    assert "## m, 1024 tokens" in text
    assert "| phase | method | dense | CR 2 | CR 5 | max lossless CR |" in text
    assert "| prefill | block_sparse | 0.900 | 0.800 | 0.300 | 3.5 (2) |" in text
    assert "| decode | snapkv | 0.900 | 0.600 |  | n/a |" in text
    assert text.index("prefill |") < text.index("decode |")

    path = tmp_path / "summary.md"
    path.write_text(text)
    print_summary(path)
    assert "| prefill | block_sparse |" in capsys.readouterr().out
    print_summary(tmp_path / "absent.md")
    assert capsys.readouterr().out == ""
