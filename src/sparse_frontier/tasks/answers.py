"""Pull the final answer out of what a model really writes.

The structured prompt (``answer_format="structured"``, see :mod:`.prompt`) asks for a last line
``Answer: ...``; the authors' tagged format is read by :mod:`.tagged_answers`. Real models vary it:
``**Answer:** x``, ``Final answer: x``, ``ANSWER - ...`` is rarer, ``Answer:`` followed by a
bulleted list on the next lines, a trailing explanation after a blank line, quotes, a full
stop, ``<answer>`` tags. The functions here undo those variations; the metrics in
:mod:`.metrics` then compare normalised strings.
"""

from __future__ import annotations

import re

# "answer" as a word, optionally wrapped in markdown emphasis, then a colon (ASCII or full-width).
_MARKER = re.compile(r"\banswer\b\s*(?:[*_`]+\s*)?[:：]", re.IGNORECASE)
# Weaker: "the answer is X", used only when no "Answer:" marker exists.
_MARKER_IS = re.compile(r"\banswer\b\s*(?:[*_`]+\s*)?\bis\b\s*[:：]?", re.IGNORECASE)
_TAGS = re.compile(r"</?\s*answer\s*>", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\(?\d{1,3}[.)]|\(?[ivx]{1,4}\))\s+", re.IGNORECASE)
_WRAPPERS = "*_`\"'“”‘’[]{}<> \t"
_TRAILING = ".,;:!?" + _WRAPPERS
# Items of a list answer are separated by commas, semicolons, newlines, pipes, or "and".
_ITEM_SPLIT = re.compile(r"\s*(?:[,;\n|]|\band\b|&)\s*", re.IGNORECASE)


def _clean(fragment: str) -> str:
    """Strip markdown emphasis, quotes, brackets and trailing punctuation around a fragment."""
    return fragment.strip().strip(_WRAPPERS).rstrip(_TRAILING).strip()


def extract_answer(output: str) -> str:
    """The text of the last ``Answer:`` line of ``output`` ("" if the output is empty).

    After the last marker, the rest of its line is the answer; if that is empty the answer is
    the following lines up to the first blank line (a list written below the marker). Without
    an ``Answer:`` marker, the last "the answer is ..." counts; without either, the last
    non-empty line stands in: a model that ignored the format but answered on its last line
    still gets scored on what it answered.
    """
    text = _TAGS.sub("\n", output or "")
    matches = list(_MARKER.finditer(text)) or list(_MARKER_IS.finditer(text))
    if matches:
        rest = text[matches[-1].end() :]
        first_line, _, following = rest.partition("\n")
        if _clean(first_line):
            return _clean(first_line)
        lines = []
        for line in following.split("\n"):
            if not line.strip():
                if lines:
                    break
                continue
            lines.append(line)
        return _clean("\n".join(lines))
    non_empty = [line for line in text.split("\n") if _clean(line)]
    return _clean(non_empty[-1]) if non_empty else ""


def split_items(answer: str) -> list[str]:
    """A list answer split into its items: ``"a, b and c"`` -> ``["a", "b", "c"]``.

    Bullets and numbering (``- x``, ``1. x``, ``(2) x``) are removed; empty items dropped.
    Only for tasks whose gold items contain no separator (no commas, no word "and").
    """
    items = []
    for raw in _ITEM_SPLIT.split(answer):
        item = _clean(_BULLET.sub("", _clean(raw)))
        if item:
            items.append(item)
    return items


_LETTER_ALONE = re.compile(r"^\(?([A-Za-z])\)?$")
_LETTER_LEAD = re.compile(r"^\(?([A-Z])(?:\)|[.:](?:\s|$)|\s+[-–—]\s)")
_LETTER_NAMED = re.compile(r"\b(?:option|choice|letter)\s*\(?([A-Za-z])\)?(?![A-Za-z])", re.IGNORECASE)
_LETTER_PAREN = re.compile(r"\(([A-Za-z])\)")
_LETTER_LAST = re.compile(r"(?:^|\s)([A-Z])[.)]?$")  # "... the correct one is C"


def extract_choice(answer: str, n_options: int) -> str | None:
    """The option letter chosen in an answer line, upper-case, or None if none is stated.

    Accepts ``B``, ``(b)``, ``B) text``, ``B. text``, ``B: text``, ``Option B``, ``choice (b)``,
    ``the correct one is (C)``, ``the correct one is C``.
    A lower-case letter counts only when it stands alone or is named as an option, so that an
    answer starting with the article "a" is not read as option A.
    """
    valid = {chr(ord("A") + i) for i in range(n_options)}
    candidate = _clean(answer)
    for pattern in (_LETTER_ALONE, _LETTER_LEAD, _LETTER_NAMED, _LETTER_PAREN, _LETTER_LAST):
        match = pattern.search(candidate)
        if match and match.group(1).upper() in valid:
            return match.group(1).upper()
    return None
