"""Reading the score table and writing result tables (Parquet, Markdown, LaTeX), atomically.

Every analysis is a pure function DataFrame -> DataFrame; this module is the only place that
touches files, so scripts stay a few lines and tests never need Snakemake.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable

import pandas as pd

from sparse_frontier.io import atomic_path, write_text

#: The keys of one cell of the study (DESIGN.md, "Parquet tables").
CELL_KEYS = ("model", "method", "phase", "compression_ratio", "task", "length")

#: The columns every analysis needs from ``results/tables/scores.parquet``.
SCORE_COLUMNS = (*CELL_KEYS, "task_category", "sample_id", "seed", "score")

#: The phase label of dense rows: the baseline of both the prefill and the decode comparison.
DENSE_PHASE = "dense"


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Stop with one sentence naming the missing columns of ``what`` and how to fix it."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what} lacks the column(s) {', '.join(missing)}; it has {', '.join(map(str, df.columns))}. "
            "Rebuild it with the pipeline's evaluation rule, which writes every key of a cell."
        )


def read_scores(path: str | os.PathLike) -> pd.DataFrame:
    """Read the long score table and check the columns the analysis relies on."""
    df = pd.read_parquet(path)
    require_columns(df, SCORE_COLUMNS, f"the score table {path}")
    return df


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` only once it is complete."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    write_text(text, path)


def format_cell(value: object, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** (-digits)):
            return f"{value:.{digits}e}"
        return f"{value:.{digits}f}"
    if value is pd.NA:
        return "–"
    return str(value)


def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table; NaN prints as an en dash (not computable)."""
    header = [str(c) for c in df.columns]
    rows = [[format_cell(v, digits) for v in row] for row in df.itertuples(index=False, name=None)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text).replace("–", "--")


def to_latex(df: pd.DataFrame, digits: int = 3, caption: str | None = None) -> str:
    """A booktabs LaTeX tabular (no jinja2 needed); text columns left, numbers right."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    lines.append(" & ".join(_latex_escape(str(c)) for c in df.columns) + r" \\")
    lines.append(r"\midrule")
    for row in df.itertuples(index=False, name=None):
        lines.append(" & ".join(_latex_escape(format_cell(v, digits)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    df: pd.DataFrame,
    parquet: str | os.PathLike,
    markdown: str | os.PathLike | None = None,
    latex: str | os.PathLike | None = None,
    caption: str | None = None,
    digits: int = 3,
    display: pd.DataFrame | None = None,
) -> None:
    """Write one result table as Parquet (exact) and, optionally, Markdown and LaTeX (rounded).

    display: a reader-friendly version for Markdown and LaTeX (e.g. the paper's wide layout with
    significance marks); the Parquet file always holds ``df``, the numbers a program reads.
    """
    df = df.reset_index(drop=True)
    atomic_write(parquet, lambda tmp: df.to_parquet(tmp, index=False))
    shown = df if display is None else display.reset_index(drop=True)
    if markdown is not None:
        text = to_markdown(shown, digits)
        if caption:
            text = f"{caption}\n\n{text}"
        atomic_write_text(markdown, text)
    if latex is not None:
        atomic_write_text(latex, to_latex(shown, digits, caption))
