"""The paper authors' rules for reading answers given in their tagged format.

A response in that format (see :func:`.prompt.build_tagged_prompt`) puts its answer between
``<answer>`` and ``</answer>``. Each task of the authors' release reads it with rules of its own,
and those rules are what the study's numbers were computed with, so this module states them
one by one; the task modules combine them into scores. They are stricter than the project's
``Answer:`` extractor (:mod:`.answers`): a missing tag, a wrong number prefix or a changed key
costs the item, as it did in the study.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

_TAGGED = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_TAGGED_EXACT_CASE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def tagged_answer(output: str, *, ignore_case: bool = True) -> str | None:
    """The text inside the first ``<answer>...</answer>`` pair, or None when there is none.

    The QA tasks match the tags in lower case only (``ignore_case=False``); the others in any case.
    """
    match = (_TAGGED if ignore_case else _TAGGED_EXACT_CASE).search(output)
    return match.group(1) if match else None


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip())


# --- RULER NIAH: "<n>. The answer for <key> is <value>." lines ---------------------------------

_NIAH_LINE = re.compile(
    r"(\d+)\.\s*The answer for\s+([\w-]+)\s+is:?\s+(.+?)(?:\.|$)", re.IGNORECASE | re.MULTILINE
)


def niah_value(value: str) -> str:
    """A NIAH value as compared: lower case, whitespace collapsed, ``is:`` read as ``is``."""
    return re.sub(r"\bis:\s+", "is ", _collapse(value.lower()))


def niah_answers(output: str) -> dict[int, tuple[str, str]]:
    """Answer number -> (key, normalised value) of each numbered line; the first line of a number wins.

    The lines are read inside the answer tags when there are some, in the whole output otherwise.
    """
    tagged = tagged_answer(output)
    text = output if tagged is None else tagged
    answers: dict[int, tuple[str, str]] = {}
    for number, key, value in _NIAH_LINE.findall(text):
        answers.setdefault(int(number), (key.strip(), niah_value(value.strip())))
    return answers


# --- RULER VT: variable names separated by white space -----------------------------------------


def variable_names(output: str) -> set[str]:
    """The upper-cased words of the answer (of the whole output without tags), ``VAR`` prefixes dropped.

    Split on white space only, so ``ABCDE,`` is a word of its own and matches no variable.
    """
    tagged = tagged_answer(output)
    text = _collapse((output if tagged is None else tagged).upper())
    return set(re.sub(r"VAR\s+", "", text).split())


# --- RULER CWE: a numbered list of words ------------------------------------------------------

_NUMBERED_WORD = re.compile(r"^\d+[.)\-]?\s*(.+)$")


def numbered_words(output: str) -> set[str] | None:
    """The lower-cased text after the number of each numbered line; None without answer tags."""
    tagged = tagged_answer(output)
    if tagged is None:
        return None
    words = set()
    for line in tagged.strip().split("\n"):
        match = _NUMBERED_WORD.match(line.strip())
        if match and match.group(1).strip():
            words.add(match.group(1).strip().lower())
    return words


# --- Story: numbered answers, an item name, chapter numbers --------------------------------------

_NUMBERED_ANSWER = re.compile(r"^(\d+)[.:)]\s*(.+?)\s*$")


def story_text(text: str) -> str:
    """A story answer as compared: lower case, whitespace collapsed, a leading article dropped."""
    return re.sub(r"^(the|a|an)\s+", "", _collapse(text.lower()))


def numbered_answers(output: str) -> dict[int, str]:
    """Answer number -> normalised answer of each ``<n>. answer`` line (``<n>:`` and ``<n>)`` too).

    Inside the answer tags when there are some, in the whole output otherwise; the first line of
    a number wins.
    """
    tagged = tagged_answer(output)
    answers: dict[int, str] = {}
    for line in (output if tagged is None else tagged).split("\n"):
        match = _NUMBERED_ANSWER.match(line.strip())
        if match:
            answers.setdefault(int(match.group(1)), story_text(match.group(2)))
    return answers


def numbers_in(text: str) -> set[int]:
    """The integers of a list like ``3, 12 40``: anything but digits, commas and spaces is dropped first."""
    kept = re.sub(r"[^0-9,\s]", "", text.strip())
    return {int(part) for part in re.split(r"[,\s]+", kept) if part.strip()}


def chapter_numbers(output: str) -> set[int]:
    """The chapters in the answer tags: every ``Chapter <n>``, or else every number; none without tags."""
    tagged = tagged_answer(output)
    if tagged is None:
        return set()
    named = re.findall(r"Chapter\s+(\d+)", tagged, re.IGNORECASE)
    return {int(n) for n in named} if named else numbers_in(tagged)


# --- QA: option letters and open answers ---------------------------------------------------------


def qa_answer(output: str) -> str:
    """The stripped text inside lower-case ``<answer>`` tags, "" without them."""
    tagged = tagged_answer(output, ignore_case=False)
    return "" if tagged is None else tagged.strip()


def option_letters(answer: str) -> str:
    """The letters A-D of an answer, upper-cased and sorted (``"b) c"`` -> ``"BC"``).

    Every A-D in the answer counts, words included, as in the authors' rule; a ``Question 3``
    prefix is removed first.
    """
    tagged = tagged_answer(answer, ignore_case=False)
    text = re.sub(r"Question\s*\d+\.?\s*", "", answer if tagged is None else tagged)
    return "".join(sorted(re.sub(r"[^A-D]", "", text.upper())))


_QA_DROPPED_WORDS = re.compile(r"\b(a|an|the|and|or|about|to)\b")
_PUNCTUATION = set(string.punctuation)


def qa_words(text: str) -> set[str]:
    """The distinct words of an open answer: lower case, no ASCII punctuation, no a/an/the/and/or/about/to."""
    tagged = tagged_answer(text, ignore_case=False)
    text = (text if tagged is None else tagged).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return set(_QA_DROPPED_WORDS.sub(" ", text).split())


def word_set_f1(answer: str, golds: Iterable[str]) -> float:
    """F1 of the answer's word set against the best gold's word set, rounded to two decimals."""
    predicted = qa_words(answer)
    best = 0.0
    for gold in golds:
        expected = qa_words(gold)
        common = len(predicted & expected)
        if common:
            precision, recall = common / len(predicted), common / len(expected)
            best = max(best, round(2 * precision * recall / (precision + recall), 2))
    return best


def set_iou(predicted: set, gold: set) -> float:
    """|predicted & gold| / |predicted | gold|; 0 when both are empty."""
    union = predicted | gold
    return len(predicted & gold) / len(union) if union else 0.0
