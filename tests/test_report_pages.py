"""The report's pages beside the figures: result tables, and predictions next to their prompts."""

from __future__ import annotations

import html
import math

import pandas as pd

from sparse_frontier.analysis.targets import TABLES
from sparse_frontier.report_pages import REPORT_TABLES, html_table, predictions_page, tables_page


def test_tables_page_shows_every_table_under_its_caption_in_order():
    tables = {name: pd.DataFrame({"model": ["m"], "value": [0.12345]}) for name in REPORT_TABLES}
    tables["scaling_mae"] = pd.DataFrame({"mae": [math.nan]})
    page = tables_page(tables)
    positions = [page.index(f"<h2>{name}</h2>") for name in REPORT_TABLES]
    assert positions == sorted(positions)
    for name in REPORT_TABLES:
        assert html.escape(TABLES[name]) in page
    assert "<td>0.123</td>" in page and "<td>–</td>" in page


def test_html_table_escapes_text():
    assert "&lt;b&gt;" in html_table(pd.DataFrame({"note": ["<b>"]}))


def test_predictions_page_puts_each_output_next_to_its_prompt_tail_and_gold():
    prompt = "filler " * 200 + "What is the key? Answer with the value."
    data = {
        "tok": pd.DataFrame(
            {"task": ["t"], "length": [1024], "sample_id": [0], "seed": [0], "prompt": [prompt]}
        )
    }
    scores = pd.DataFrame(
        [
            {
                "model": "m",
                "method": method,
                "compression_ratio": ratio,
                "task": "t",
                "length": 1024,
                "sample_id": 0,
                "seed": 0,
                "output": f"thinking\nAnswer: {answer}",
                "gold": ["42"],
                "score": float(answer == "42"),
            }
            for method, ratio, answer in (("dense", 1.0, "42"), ("snapkv", 5.0, "17"))
        ]
    )
    page = predictions_page(scores, data, {"m": "tok"})
    assert "<h2>t: m</h2>" in page
    assert page.count("What is the key? Answer with the value.") == 2
    assert "t | snapkv CR 5 | m | 1024 tokens | sample 0" in page
    assert "<td>17</td><td>0.00</td>" in page and "<td>42</td><td>1.00</td>" in page
