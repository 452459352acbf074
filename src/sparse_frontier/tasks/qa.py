"""QA tasks: one answer-bearing document among shuffled, numbered distractor documents.

Paper, Appendix A.2.1: "Each example contains one answer-bearing document and distractor
documents to reach the target sequence length. Documents are shuffled and numbered; the
question refers to a specific document ID. We remove duplicate question-context pairs and
filter examples where the original context exceeds 8k tokens (ensuring space for at least one
distractor at 16k sequence length). Evaluation: Exact Match Accuracy (QuALITY, ToeflQA
multiple-choice), token-level F1 (SQuAD open-ended)." Low scope, low dispersion.

Sources are the normalised Parquet files of :mod:`.qa_sources` (``resources/qa/*.parquet``).

Construction. Documents over ``min(8192, length // 2)`` tokens of the evaluated tokenizer
are dropped (the paper's 8K at 16K, scaled down for shorter smoke-test lengths so a
distractor always fits). Each call to ``generate`` deals questions from a shuffled order of
the eligible ones, so samples of one call never repeat a question. The distractors are the
other documents (never the same text), in a per-sample random order; the length fitter's
unit is one sentence of that distractor stream, so only the last distractor may be cut short,
at a sentence end. The answer document is whole, inserted at a depth drawn once per sample,
and the question names its number.

Answer formats. With ``answer_format="authors"`` (the default) the prompt is the authors'
release (``Question about document k:`` and their answer instructions) and the answer is the
text in lower-case ``<answer>`` tags ("" without them), read by their rules: multiple choice
keeps every letter A-D of the answer, upper-cased and sorted, and scores 1 when that equals the
gold letter (so ``B) the cat`` reads as ``BC``); SQuAD scores the F1 of the answer's distinct
words (lower case, no punctuation, no a/an/the/and/or/about/to) against the best gold answer,
rounded to two decimals. With ``"structured"`` the final ``Answer:`` line is read by the
project's extractor (an option letter, or the option's text; SQuAD token F1 with counts).
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import register
from .answers import extract_answer, extract_choice
from .base import FittedTask, Instance
from .metrics import item_matches, token_f1
from .prompt import build_prompt, build_tagged_prompt, check_answer_format
from .qa_sources import TASK_DATASETS, missing_source_message
from .tagged_answers import option_letters, qa_answer, word_set_f1

PAPER_MAX_DOC_TOKENS = 8192
LETTERS = "ABCDEFGHIJ"
_TAGGED_INTRO = (
    "I will provide you with multiple documents and ask you a question about one specific document."
)

# A sentence ends at . ! or ? (and closing quotes/brackets) followed by space, or at a line end.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+|\n+")


def sentence_ends(text: str) -> list[int]:
    """Offsets where each sentence of ``text`` ends (the last is ``len(text)``)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() < len(text)]
    return [*ends, len(text)]


def word_ends(text: str) -> list[int]:
    """Offsets where each whitespace-separated word of ``text`` ends."""
    return [m.end() for m in re.finditer(r"\S+", text)] or [len(text)]


@dataclass
class _Stream:
    """Distractor documents cut into units (sentences, or words for short targets).

    ``take(n)`` gives the first ``n`` units in document order: whole documents, then the last
    one cut after its remaining units.
    """

    docs: list[str]
    unit_ends: Callable[[str], list[int]] = sentence_ends

    def __post_init__(self):
        self._ends: list[list[int]] = []
        self._cumulative: list[int] = [0]  # sentences before document i

    def _extend_to(self, n: int) -> None:
        while self._cumulative[-1] < n and len(self._ends) < len(self.docs):
            ends = self.unit_ends(self.docs[len(self._ends)])
            self._ends.append(ends)
            self._cumulative.append(self._cumulative[-1] + len(ends))

    def total(self) -> int:
        self._extend_to(10**12)
        return self._cumulative[-1]

    def take(self, n: int) -> list[str]:
        self._extend_to(n)
        n_full = bisect.bisect_right(self._cumulative, n) - 1
        docs = self.docs[:n_full]
        rest = n - self._cumulative[n_full]
        if rest > 0:
            docs.append(self.docs[n_full][: self._ends[n_full][rest - 1]].rstrip())
        return docs


class _QATask(FittedTask):
    """Shared QA frame; subclasses say how a question is posed and scored."""

    dataset: str
    category = "retrieval"
    max_new_tokens = 256

    def __init__(self, source: str | None = None, answer_format: str = "authors"):
        check_answer_format(self.name, answer_format)
        self.answer_format = answer_format
        self.source = Path(source) if source else Path("resources/qa") / f"{self.dataset}.parquet"
        self._frame: pd.DataFrame | None = None

    def load(self) -> pd.DataFrame:
        """The normalised source (a missing file is one sentence saying how to fetch it)."""
        if self._frame is None:
            if not self.source.exists():
                raise FileNotFoundError(missing_source_message(self.source, self.dataset))
            self._frame = pd.read_parquet(self.source)
        return self._frame

    def _doc_tokens(self, tokenizer, docs: pd.Series, max_tokens: int) -> pd.Series:
        """Token counts of documents, exact wherever it matters for the ``max_tokens`` cut.

        Byte-level tokens cover at least one byte, so a document of at most ``max_tokens``
        UTF-8 bytes is within the limit without tokenizing it (its byte size stands in).
        """
        counts = {doc_id: len(text.encode("utf-8")) for doc_id, text in docs.items()}
        todo = [doc_id for doc_id, size in counts.items() if size > max_tokens]
        if todo:
            encoded = tokenizer([docs[d] for d in todo], add_special_tokens=False)["input_ids"]
            counts.update({d: len(ids) for d, ids in zip(todo, encoded, strict=True)})
        return pd.Series(counts, dtype="int64")

    def prepare(self, tokenizer, length: int, n: int, seed: int) -> None:
        frame = self.load()
        docs = frame.drop_duplicates("doc_id").set_index("doc_id").document
        max_tokens = min(PAPER_MAX_DOC_TOKENS, length // 2)
        sizes = self._doc_tokens(tokenizer, docs, max_tokens)
        eligible_docs = sizes.index[sizes <= max_tokens]
        questions = frame[frame.doc_id.isin(eligible_docs)]
        if questions.empty or len(eligible_docs) < 2:
            raise ValueError(
                f"No {self.dataset} question has a document of at most {max_tokens} tokens with another "
                f"document to serve as distractor; use a longer target length than {length}."
            )
        order = list(questions.index)
        random.Random(f"{self.name}|order|seed={seed}|length={length}").shuffle(order)
        self._questions = questions.loc[order].reset_index(drop=True)
        self._docs = docs.loc[eligible_docs]

    def make_instance(self, rng: random.Random, length: int, sample_id: int) -> Instance:
        row = self._questions.iloc[sample_id % len(self._questions)]
        gold_doc = row.document
        distractors = [
            text for doc_id, text in self._docs.items() if doc_id != row.doc_id and text != gold_doc
        ]
        rng.shuffle(distractors)
        depth = rng.random()
        question_text, answer_format, rules, gold = self.pose(row)
        instructions = (
            "Below are several numbered documents. Only one of them contains the answer, and the "
            "question says which one. Your task is to answer the question using that document."
        )

        def instance(stream: _Stream, fallback: Callable[[int], Instance] | None) -> Instance:
            def layout(n_units: int) -> tuple[list[str], int]:
                docs = stream.take(n_units)
                position = round(depth * len(docs))
                docs.insert(position, gold_doc)
                return docs, position + 1

            def render(n_units: int) -> str:
                docs, number = layout(n_units)
                context = "\n\n".join(f"Document {i}:\n{text}" for i, text in enumerate(docs, start=1))
                if self.answer_format == "authors":
                    question = f"Question about document {number}:\n{question_text}"
                    return build_tagged_prompt(
                        _TAGGED_INTRO, context, question, self.tagged_format, self.tagged_rules
                    )
                question = f"Based on Document {number}: {question_text}"
                return build_prompt(instructions, context, question, answer_format, rules)

            def meta(n_units: int) -> dict:
                docs, number = layout(n_units)
                return {
                    "question_id": str(row.question_id),
                    "answer_document": number,
                    "n_documents": len(docs),
                    "cut_at": "sentence" if fallback else "word",
                }

            return Instance(render, gold, stream.total(), meta, fallback)

        by_words = instance(_Stream(distractors, word_ends), None)
        return instance(_Stream(distractors), lambda _below: by_words)

    def pose(self, row) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        """(question text, answer format, rules, gold) for one source row (rules and format:
        those of the structured prompt)."""
        raise NotImplementedError


class _MultipleChoice(_QATask):
    metric = "exact_match"
    tagged_format = "Only the letter(s) of the correct option(s) (e.g., 'A' or 'AB')."
    tagged_rules = ("Multiple correct options are possible (e.g., 'AB' is valid).",)

    def pose(self, row):
        options = list(row.options)
        lines = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
        letters = ", ".join(LETTERS[: len(options)])
        return (
            f"{row.question}\n{lines}",
            "<letter of the correct option>",
            (f"Answer with one letter: {letters}.",),
            (LETTERS[int(row.answer_index)], str(row.answers[0])),
        )

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        """1 if the chosen letter is right (structured: or, without a letter, the right option's text)."""
        letter, option_text = gold
        if self.answer_format == "authors":
            return float(option_letters(qa_answer(output)) == letter)
        answer = extract_answer(output)
        choice = extract_choice(answer, n_options=len(LETTERS))
        if choice is not None:
            return float(choice == letter)
        return float(item_matches(answer, option_text))


@register
class QASquad(_QATask):
    """SQuAD: open answer about a named document; token-level F1 against the best gold answer."""

    name = "qa_squad"
    metric = "f1"
    dataset = TASK_DATASETS["qa_squad"]
    tagged_format = "Your answer here..."
    tagged_rules = (
        "Do not use complete sentences in the answer.",
        "For dates: Include ONLY the COMPLETE date if specifically asked.",
        "For locations: Use the shortest unambiguous form (e.g., 'New York' not 'New York City').",
        "For comparisons: State ONLY the answer that matches the criteria",
    )

    def pose(self, row):
        return (
            str(row.question),
            "<short answer>",
            ("Give a short answer: a few words copied from the document.",),
            tuple(str(a) for a in row.answers),
        )

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        if self.answer_format == "authors":
            return word_set_f1(qa_answer(output), gold)
        return token_f1(extract_answer(output), gold)


@register
class QAQuality(_MultipleChoice):
    """QuALITY: multiple choice about a named story; exact match on the option."""

    name = "qa_quality"
    dataset = TASK_DATASETS["qa_quality"]


@register
class QAToefl(_MultipleChoice):
    """TOEFL-QA: multiple choice about a named lecture or conversation; exact match."""

    name = "qa_toefl"
    dataset = TASK_DATASETS["qa_toefl"]
