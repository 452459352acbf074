"""Pages of the Snakemake report beside the figures: the result tables, and a sample of
predictions per task next to their prompts, so the report shows numbers and outputs, not only plots.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from .analysis.tables import format_cell
from .analysis.targets import TABLES
from .predictions import SAMPLE_KEYS, format_html, sample_per_task, with_prompts
from .tasks.answers import extract_answer

#: The tables the report shows, in reading order: RQ2, RQ3, RQ4.
REPORT_TABLES = (
    "max_compression_summary",
    "max_compression",
    "methods_by_category",
    "methods_by_task",
    "scaling_fits",
    "scaling_spearman",
    "scaling_mae",
)

_STYLE = (
    "<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse;margin-bottom:2em}"
    "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left;max-width:40em;"
    "white-space:pre-wrap;word-break:break-word}th{background:#f3f3f3}</style>"
)


def html_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A plain HTML table, numbers rounded as in the Markdown tables (NaN: an en dash)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(v, digits))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False, name=None)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _page(title: str, body: str) -> str:
    head = f"<meta charset='utf-8'><title>{title}</title>{_STYLE}"
    return f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>"


def tables_page(tables: Mapping[str, pd.DataFrame]) -> str:
    """One HTML page with each table under its caption, in :data:`REPORT_TABLES` order."""
    parts = []
    for name in REPORT_TABLES:
        if name in tables:
            df = tables[name]
            shown = html_table(df) if len(df) else "<p>Empty: nothing to compute on this study's data.</p>"
            parts.append(f"<h2>{name}</h2><p>{html.escape(TABLES[name])}</p>{shown}")
    return _page("Result tables", "".join(parts))


def task_data_by_tokenizer(files: list[str]) -> dict[str, pd.DataFrame]:
    """Task data files results/data/{tokenizer}/{task folder}/{length}.parquet, by tokenizer."""
    by_tokenizer: dict[str, list[pd.DataFrame]] = {}
    for f in files:
        by_tokenizer.setdefault(Path(f).parts[-3], []).append(
            pd.read_parquet(f, columns=[*SAMPLE_KEYS, "prompt"])
        )
    return {tok: pd.concat(frames, ignore_index=True) for tok, frames in by_tokenizer.items()}


def predictions_page(
    scores: pd.DataFrame,
    data: Mapping[str, pd.DataFrame],
    model_tokenizers: Mapping[str, str],
    per_task: int = 3,
    seed: int = 0,
) -> str:
    """``per_task`` samples of each task in every cell of each model, next to prompt tail and gold."""
    parts = []
    for model, rows in scores.groupby("model", sort=True):
        chosen = sample_per_task(rows, per_task, seed).assign(
            extracted=lambda d: [extract_answer(o) for o in d["output"]]
        )
        chosen = with_prompts(chosen, data[model_tokenizers[model]])
        for task, group in chosen.groupby("task", sort=True):
            parts.append(f"<h2>{html.escape(task)}: {html.escape(model)}</h2>{format_html(group)}")
    intro = (
        f"<p>Up to {per_task} samples of each task, the same ones in every cell (dense and each method "
        "at each compression ratio): the end of the prompt, the gold answer, the output and the answer "
        "extracted from it. More: <code>python -m sparse_frontier.show predictions results/scores/</code></p>"
    )
    return _page("Predictions", intro + "".join(parts))
