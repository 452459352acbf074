"""The study's results in a page a person reads at the end of a run (results/summary.md).

Per model and length: the dense score, each method's score at each compression ratio (mean over
tasks), and the largest compression with no significant drop from dense (RQ2, mean over tasks,
the worst task in brackets).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .tables import DENSE_PHASE

#: The order phases are listed in.
PHASE_ORDER = {DENSE_PHASE: 0, "prefill": 1, "decode": 2}


def _ratio(value: float) -> str:
    return f"{value:g}"


def _score(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.3f}"


def _lossless(row: pd.Series | None) -> str:
    if row is None:
        return ""
    if math.isnan(row["mean"]):
        return "n/a"
    return f"{row['mean']:g} ({row['min']:g})"


def study_summary(cells: pd.DataFrame, max_compression: pd.DataFrame) -> str:
    """Markdown summary from the cell table and the maximum-compression summary table.

    cells: :func:`sparse_frontier.analysis.cells.cell_means` (one row per model, method, phase,
    compression ratio, task and length); max_compression: the ``max_compression_summary`` table.
    """
    lines = ["# Results", ""]
    if cells.empty:
        return "\n".join([*lines, "No scores: the study ran no cell.", ""])
    tasks = sorted(cells["task"].unique())
    lines += [
        f"Mean score over {len(tasks)} task(s) ({', '.join(tasks)}) at each compression ratio; the last "
        "column is the largest compression with no significant drop from dense (RQ2: mean over tasks, "
        "worst task in brackets; n/a where dense scores below `analysis.min_score` or no ratio passed).",
        "",
    ]
    means = (
        cells.groupby(["model", "length", "phase", "method", "compression_ratio"], sort=False)["score"]
        .mean()
        .reset_index()
    )
    lossless = {
        (r.model, int(r.length), r.phase, r.method): r._asdict()
        for r in max_compression.itertuples(index=False)
    }
    for (model, length), group in means.groupby(["model", "length"], sort=True):
        ratios = sorted(r for r in group["compression_ratio"].unique() if r != 1)
        header = ["phase", "method", "dense", *(f"CR {_ratio(r)}" for r in ratios), "max lossless CR"]
        rows = []
        dense = group[group["phase"] == DENSE_PHASE]["score"].mean()
        for (phase, method), g in sorted(
            group[group["phase"] != DENSE_PHASE].groupby(["phase", "method"]),
            key=lambda item: (PHASE_ORDER.get(item[0][0], 9), item[0][1]),
        ):
            by_ratio = dict(zip(g["compression_ratio"], g["score"], strict=True))
            rows.append(
                [
                    phase,
                    method,
                    _score(dense),
                    *(_score(by_ratio.get(r, math.nan)) for r in ratios),
                    _lossless(lossless.get((model, int(length), phase, method))),
                ]
            )
        if not rows:
            rows.append([DENSE_PHASE, "dense", _score(dense), *([""] * len(ratios)), ""])
        lines += [f"## {model}, {int(length)} tokens", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def print_summary(path: str | Path) -> None:
    """Print the summary of a finished run, if it has one, with where the rest of the results are."""
    path = Path(path)
    if not path.is_file():
        return
    print(f"\n{path.read_text().rstrip()}\n")
    print(
        f"Summary: {path}; tables: results/tables/; figures: results/figures/; "
        "report: snakemake --report report.html; predictions: "
        "python -m sparse_frontier.show predictions results/scores/<model>/<length>.parquet\n"
    )
