"""The three QA sources: download from their public homes, check, normalise to Parquet.

Paper, Appendix A.2.1: SQuAD (Rajpurkar et al., 2018, as used by RULER), QuALITY (Pang et
al., 2022) and ToeflQA (Tseng et al., 2016). Each becomes one normalised Parquet file,
``resources/qa/{dataset}.parquet``, one row per question:

    question_id   str        unique within the dataset
    doc_id        str        the answer-bearing document (same text -> same id)
    document      str        the document text
    question      str
    options       list[str]  the answer options (empty for open questions)
    answers       list[str]  open: every acceptable answer; multiple choice: the correct option
    answer_index  int        multiple choice: 0-based index of the correct option; open: -1

Preprocessing at this stage (the paper's): duplicate question-context pairs are removed;
SQuAD's unanswerable questions and TOEFL's few multi-answer questions are dropped (a single
exact-match answer is needed). Dropping documents over 8K tokens needs the evaluated
model's tokenizer, so :mod:`.qa` does it when generating.

Checks: the raw files' row counts must equal the published ones (``expected_raw_rows``); a
mismatch means the source changed. SHA-256 digests of the raw downloads are written next to
them (``*.sha256``) for provenance.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..io import atomic_path, write_parquet

log = logging.getLogger(__name__)

COLUMNS = ["question_id", "doc_id", "document", "question", "options", "answers", "answer_index"]


@dataclass(frozen=True)
class QASource:
    """Where a dataset lives and how big its raw file is."""

    dataset: str
    url: str
    raw_name: str  # file name of the download under the raw folder
    expected_raw_rows: int  # questions in the raw file (before any filtering)
    citation: str


SOURCES: dict[str, QASource] = {
    "squad": QASource(
        "squad",
        "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v2.0.json",
        "squad-dev-v2.0.json",
        11873,
        "Rajpurkar, Jia and Liang (2018), SQuAD 2.0 development set (as in RULER)",
    ),
    "quality": QASource(
        "quality",
        "https://github.com/nyu-mll/quality/raw/main/data/v1.0.1/QuALITY.v1.0.1.zip",
        "QuALITY.v1.0.1.zip",
        2086,
        "Pang et al. (2022), QuALITY v1.0.1 development set (HTML-stripped)",
    ),
    "toefl": QASource(
        "toefl",
        "https://github.com/iamyuanchung/TOEFL-QA/archive/refs/heads/master.zip",
        "TOEFL-QA-master.zip",
        963,
        "Tseng et al. (2016), TOEFL-QA, all splits",
    ),
}

# Which dataset each QA task reads.
TASK_DATASETS = {"qa_squad": "squad", "qa_quality": "quality", "qa_toefl": "toefl"}


def fetch_command(dataset: str) -> str:
    """The command that builds a dataset's normalised Parquet file."""
    return f"snakemake --cores 1 resources/qa/{dataset}.parquet"


def missing_source_message(path: Path, dataset: str) -> str:
    """One sentence naming the missing file and the command that fetches it."""
    return f"QA source file {path} is missing; fetch it with `{fetch_command(dataset)}` (needs network)."


def _doc_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> a frame with the normalised columns, duplicate question-context pairs removed."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    key = df.question.str.strip().str.lower() + "\x00" + df.doc_id
    df = df[~key.duplicated()].reset_index(drop=True)
    if df.question_id.duplicated().any():
        first = df.question_id[df.question_id.duplicated()].iloc[0]
        raise ValueError(f"Question id {first} occurs twice in the source; question ids must be unique.")
    return df


def check_rows(dataset: str, n_rows: int) -> None:
    """Raise if the raw file does not have the published number of questions."""
    expected = SOURCES[dataset].expected_raw_rows
    if n_rows != expected:
        raise ValueError(
            f"The raw {dataset} source has {n_rows} questions but the published release has {expected}; "
            "the download is incomplete or the source changed "
            f"(delete resources/qa/raw/{SOURCES[dataset].raw_name} and fetch again)."
        )


# --- SQuAD ---------------------------------------------------------------------------------------


def normalize_squad(raw: dict, check: bool = True) -> pd.DataFrame:
    """SQuAD 2.0 JSON (``{"data": [{"paragraphs": [{"context", "qas"}]}]}``) -> normalised rows."""
    rows, n_raw = [], 0
    for article in raw["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"].strip()
            for qa in paragraph["qas"]:
                n_raw += 1
                if qa.get("is_impossible", False):
                    continue
                answers = list(dict.fromkeys(a["text"].strip() for a in qa["answers"] if a["text"].strip()))
                if not answers:
                    continue
                rows.append(
                    {
                        "question_id": str(qa["id"]),
                        "doc_id": _doc_id(context),
                        "document": context,
                        "question": qa["question"].strip(),
                        "options": [],
                        "answers": answers,
                        "answer_index": -1,
                    }
                )
    if check:
        check_rows("squad", n_raw)
    return _frame(rows)


# --- QuALITY -------------------------------------------------------------------------------------


def normalize_quality(lines: Iterable[str], check: bool = True) -> pd.DataFrame:
    """QuALITY JSON lines (one question set per line, ``gold_label`` 1-based) -> normalised rows."""
    rows, n_raw = [], 0
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        document = record["article"].strip()
        for i, q in enumerate(record["questions"]):
            n_raw += 1
            options = [o.strip() for o in q["options"]]
            answer = int(q["gold_label"]) - 1
            rows.append(
                {
                    "question_id": str(q.get("question_unique_id") or f"{record['set_unique_id']}_{i}"),
                    "doc_id": str(record["article_id"]),
                    "document": document,
                    "question": q["question"].strip(),
                    "options": options,
                    "answers": [options[answer]],
                    "answer_index": answer,
                }
            )
    if check:
        check_rows("quality", n_raw)
    return _frame(rows)


def quality_lines_from_zip(data: bytes) -> list[str]:
    """The development split's lines from the QuALITY release zip."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = [n for n in archive.namelist() if n.endswith("QuALITY.v1.0.1.htmlstripped.dev")]
        if not names:
            raise ValueError(
                "The QuALITY zip has no QuALITY.v1.0.1.htmlstripped.dev member; the release changed."
            )
        return archive.read(names[0]).decode("utf-8").splitlines()


# --- TOEFL-QA ------------------------------------------------------------------------------------

_TOEFL_NAME = re.compile(r"(?:^|/)data/(train|dev|test)/([^/]+)_(\d+)$")


def normalize_toefl(files: Iterable[tuple[str, str]], check: bool = True) -> pd.DataFrame:
    """TOEFL-QA question files -> normalised rows.

    Each file ``data/{split}/{story}_{k}`` holds one question: ``SENTENCE`` lines (the story's
    transcript), one ``QUESTION`` line and ``OPTION <text> <0|1>`` lines (1 marks correct).
    """
    rows, n_raw = [], 0
    for name, text in files:
        match = _TOEFL_NAME.search(name)
        if not match:
            continue
        n_raw += 1
        split, story, number = match.groups()
        sentences, question, options, correct = [], "", [], []
        for line in text.splitlines():
            tag, _, rest = line.partition(" ")
            rest = " ".join(rest.split())  # the transcripts have doubled spaces
            if tag == "SENTENCE":
                sentences.append(rest)
            elif tag == "QUESTION":
                question = rest
            elif tag == "OPTION":
                option, _, flag = rest.rpartition(" ")
                options.append(option)
                correct.append(flag == "1")
        if sum(correct) != 1 or not question or not sentences:
            continue  # multi-answer or malformed: exact match needs exactly one correct option
        document = "\n".join(sentences)
        answer = correct.index(True)
        rows.append(
            {
                "question_id": f"{split}/{story}_{number}",
                "doc_id": _doc_id(document),
                "document": document,
                "question": question if question.endswith("?") else question + "?",
                "options": options,
                "answers": [options[answer]],
                "answer_index": answer,
            }
        )
    if check:
        check_rows("toefl", n_raw)
    return _frame(sorted(rows, key=lambda r: r["question_id"]))


def toefl_files_from_zip(data: bytes) -> Iterator[tuple[str, str]]:
    """(member name, text) of every file in the TOEFL-QA repository archive."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in sorted(archive.namelist()):
            if not name.endswith("/"):
                yield name, archive.read(name).decode("utf-8", errors="replace")


def toefl_files_from_dir(root: Path) -> Iterator[tuple[str, str]]:
    """(relative path, text) of every file under a TOEFL-QA checkout (or fixture) folder."""
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        yield path.relative_to(root).as_posix(), path.read_text(encoding="utf-8")


# --- download and write --------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` through a temporary file, so a crash never leaves half a file."""
    write_parquet(df, path)


def download(dataset: str, raw_dir: Path, timeout: float = 120.0) -> bytes:
    """The raw file of ``dataset``, downloaded once into ``raw_dir`` (with its SHA-256 beside it)."""
    source = SOURCES[dataset]
    path = Path(raw_dir) / source.raw_name
    if path.exists():
        log.info("using cached %s", path)
        return path.read_bytes()
    log.info("downloading %s from %s", dataset, source.url)
    try:
        with urllib.request.urlopen(source.url, timeout=timeout) as response:  # noqa: S310 (fixed https URL)
            data = response.read()
    except OSError as err:
        raise RuntimeError(
            f"Could not download {dataset} from {source.url} ({err}); check the network, or download "
            f"that file where there is one and place it at {path}, then run again."
        ) from err
    _write_bytes(path, data)
    digest = f"{hashlib.sha256(data).hexdigest()}  {path.name}\n"
    _write_bytes(path.with_name(path.name + ".sha256"), digest.encode())
    log.info("saved %s (%d bytes)", path, len(data))
    return data


def normalize_raw(dataset: str, data: bytes, check: bool = True) -> pd.DataFrame:
    """Raw download bytes -> the normalised frame of ``dataset``."""
    if dataset == "squad":
        return normalize_squad(json.loads(data), check)
    if dataset == "quality":
        return normalize_quality(quality_lines_from_zip(data), check)
    if dataset == "toefl":
        return normalize_toefl(toefl_files_from_zip(data), check)
    raise KeyError(f"Unknown QA dataset '{dataset}'; choose one of: {', '.join(SOURCES)}.")


def build_source(dataset: str, out_path: Path, raw_dir: Path) -> pd.DataFrame:
    """Download (or reuse), check and normalise one dataset into ``out_path``."""
    if dataset not in SOURCES:
        raise KeyError(f"Unknown QA dataset '{dataset}'; choose one of: {', '.join(SOURCES)}.")
    df = normalize_raw(dataset, download(dataset, raw_dir))
    write_parquet_atomic(df, Path(out_path))
    log.info("%s: %d questions over %d documents -> %s", dataset, len(df), df.doc_id.nunique(), out_path)
    return df
