"""Predictions as a person reads them: the prompt's tail, the gold answer, the model's output and
the answer extracted from it, for any slice of the study (task, method, ratio, wrong only).

Predictions carry the keys of their sample (task, length, sample_id, seed), not the prompt; the
prompt comes from the task data the inference read, results/data/{tokenizer}/{task folder}/.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .tasks.answers import extract_answer
from .tasks.tagged_answers import tagged_answer

#: The keys that join a prediction to its sample in the task data.
SAMPLE_KEYS = ["task", "length", "sample_id", "seed"]


def parquet_files(paths: Iterable[str | Path]) -> list[Path]:
    """The Parquet files named, or found under the folders named; a missing path is one sentence."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.rglob("*.parquet"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(
                f"{path} does not exist; name prediction or score files (results/predictions/<model>/"
                "<length>/shard0.parquet, results/scores/<model>/<length>.parquet) or their folders."
            )
    if not files:
        raise FileNotFoundError(f"no Parquet files under {', '.join(map(str, paths))}; has the run finished?")
    return files


def read_predictions(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Prediction or score tables, concatenated and scored (score tables keep their scores)."""
    from .pipeline import score_predictions

    df = pd.concat([pd.read_parquet(f) for f in parquet_files(paths)], ignore_index=True)
    if "score" not in df.columns:
        df = score_predictions(df)
    df["extracted"] = [_extracted(output) for output in df["output"]]
    return df


def _extracted(output: str) -> str:
    """What the scorers read: the ``<answer>`` tags (the authors' format, the default), else the
    final ``Answer:`` line (the structured format)."""
    tagged = tagged_answer(output)
    return tagged.strip() if tagged is not None else extract_answer(output)


def select(
    df: pd.DataFrame,
    *,
    task: str | None = None,
    method: str | None = None,
    ratio: float | None = None,
    wrong: bool = False,
) -> pd.DataFrame:
    """Rows of one task, method and compression ratio (each optional); ``wrong``: score below 1."""
    for column, value in (("task", task), ("method", method)):
        if value is not None and value not in set(df[column]):
            raise ValueError(
                f"no predictions of {column} `{value}`; these have {', '.join(sorted(set(df[column])))}."
            )
    keep = pd.Series(True, index=df.index)
    if task is not None:
        keep &= df["task"] == task
    if method is not None:
        keep &= df["method"] == method
    if ratio is not None:
        keep &= (df["compression_ratio"] - float(ratio)).abs() < 1e-9
    if wrong:
        keep &= df["score"] < 1
    return df[keep].sort_values(["task", "method", "compression_ratio", "length", "sample_id"])


def results_dir(path: str | Path) -> Path:
    """The results folder a prediction or score path lies in (the parent of predictions/ or scores/)."""
    path = Path(path).resolve()
    for parent in [path, *path.parents]:
        if parent.name in ("predictions", "scores"):
            return parent.parent
    return Path("results")


def task_data(results: str | Path, tasks: Iterable[str], tokenizer: str | None = None) -> pd.DataFrame:
    """Every sample of ``tasks`` in ``results``/data, the newest file first where two folders (two
    settings of a task's parameters) hold the same sample."""
    root = Path(results) / "data"
    tokenizers = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if tokenizer is None and len(tokenizers) > 1:
        raise ValueError(
            f"{root} holds the data of several tokenizers ({', '.join(tokenizers)}); "
            "name the one of these predictions' model with --tokenizer."
        )
    chosen = tokenizer or (tokenizers[0] if tokenizers else None)
    if chosen is None or chosen not in tokenizers:
        raise FileNotFoundError(f"no task data of tokenizer `{chosen}` under {root}; has the run finished?")
    tasks = set(tasks)
    files = sorted(
        (f for f in (root / chosen).glob("*/*.parquet") if f.parent.name.split("-")[0] in tasks),
        key=lambda f: f.stat().st_mtime,
        reverse=True,
    )
    columns = [*SAMPLE_KEYS, "prompt", "n_tokens"]
    frames = [pd.read_parquet(f, columns=columns) for f in files]
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return data[data["task"].isin(tasks)].drop_duplicates(SAMPLE_KEYS)


def with_prompts(predictions: pd.DataFrame, data: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` with the prompt of each sample (None where the data is missing)."""
    return predictions.merge(data[[*SAMPLE_KEYS, "prompt"]], on=SAMPLE_KEYS, how="left")


def _tail(prompt, chars: int) -> str:
    if not isinstance(prompt, str):
        return "(prompt not found in results/data)"
    return prompt if len(prompt) <= chars else "…" + prompt[-chars:]


def describe(row) -> str:
    """One line naming the prediction's cell and sample."""
    ratio = "" if row.method == "dense" else f" CR {row.compression_ratio:g}"
    return (
        f"{row.task} | {row.method}{ratio} | {row.model} | {row.length} tokens | "
        f"sample {row.sample_id} | score {row.score:.2f}"
    )


def format_text(row, tail: int = 400) -> str:
    """A prediction for the terminal: its cell, the prompt's tail, gold, output and extracted answer."""
    lines = [f"=== {describe(row)} ===", f"prompt (last {tail} characters):", _tail(row.prompt, tail), ""]
    lines += [
        f"{'gold':>10}: {list(row.gold)}",
        f"{'output':>10}: {row.output!r}",
        f"{'extracted':>10}: {row.extracted!r}",
        "",
    ]
    return "\n".join(lines)


def format_html(rows: pd.DataFrame, tail: int = 300) -> str:
    """Predictions as an HTML table: cell, prompt tail, gold, output, extracted answer, score."""
    cells = []
    for row in rows.itertuples(index=False):
        cells.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(value))}</td>"
                for value in (
                    describe(row).rsplit(" | score", 1)[0],
                    _tail(row.prompt, tail),
                    ", ".join(map(str, row.gold)),
                    row.output,
                    row.extracted,
                    f"{row.score:.2f}",
                )
            )
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("cell and sample", "prompt (tail)", "gold", "output", "extracted", "score")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(cells)}</tbody></table>"


def sample_per_task(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` predictions of each (task, method, compression ratio), the same samples in every
    cell of a task so a reader compares methods on one prompt."""
    parts = []
    for _, group in df.groupby("task", sort=True):
        ids = group[["length", "sample_id"]].drop_duplicates()
        chosen = ids.sample(n=min(n, len(ids)), random_state=seed)
        parts.append(group.merge(chosen, on=["length", "sample_id"]))
    if not parts:
        return df.iloc[0:0]
    return pd.concat(parts, ignore_index=True).sort_values(
        ["task", "length", "sample_id", "method", "compression_ratio"], ignore_index=True
    )
