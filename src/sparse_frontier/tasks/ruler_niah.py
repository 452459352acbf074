"""RULER NIAH: four values to retrieve among many distractor key-value pairs.

Paper, Appendix A.2.2: "Extract values for 4 target keys from a document containing relevant
and distractor key-value pairs (random hyphenated strings). Evaluated using Exact Match
Accuracy." Low scope, low dispersion (Table 2). Synthetic on purpose: random symbol strings
have no syntax, which is what makes Quest and Ada-SnapKV struggle on it (Section 4.3.1).

Construction. Keys and values are random hyphenated strings of four groups of eight letters
and digits (``k3x9a0pq-2m71bzdq-...``, as in the authors' release) drawn without replacement
from one pool per sample, so every target value appears exactly once and
no distractor key equals a target key (or any other key or value). The context is one
sentence per pair; the filler unit of the length fitter is one distractor pair, and the four
needles sit at depths drawn once per sample (fractions of the context), so a longer fit moves
them proportionally rather than changing them.

Scoring. A sample's score is the fraction of the four keys answered correctly; the paper's
"accuracy" is the mean over samples. ``gold`` holds one ``key=value`` string per needle, in
question order. With ``answer_format="authors"`` (the default) the model writes numbered lines
``1. The answer for <key> is <value>.`` in ``<answer>`` tags, and answer ``i`` counts when its
key is the ``i``-th key asked, written exactly, and its value matches (case and spacing aside),
as in the authors' release. With ``"structured"`` the final ``Answer:`` line lists the values,
in any order (:func:`..metrics.fraction_recalled`); listing more than four items lowers the
score so that guessing many values does not pay.
"""

from __future__ import annotations

import random
import string

from . import register
from .answers import extract_answer, split_items
from .base import FittedTask, Instance
from .metrics import fraction_recalled
from .prompt import build_prompt, build_tagged_prompt, check_answer_format
from .tagged_answers import niah_answers, niah_value

N_NEEDLES = 4
_ALPHABET = string.ascii_lowercase + string.digits
_GROUPS, _GROUP_LEN = 4, 8

_INSTRUCTIONS = (
    "Below is a long list of key-value pairs, one per line. Keys and values are random strings of "
    "letters and digits joined by hyphens. Your task is to find the values of four given keys."
)
_RULES = (
    "Give the four values in the order the keys are asked, separated by commas.",
    "Copy each value exactly as it appears in the list, hyphens included.",
)
_TAGGED_INTRO = (
    "I will provide you with a document containing multiple key-value pairs. Your task is to "
    "extract specific values associated with given keys."
)
_TAGGED_FORMAT = "1. The answer for <key1> is <value1>.\n2. The answer for <key2> is <value2>.\netc."
_TAGGED_RULES = (
    "Provide answers in the exact order of the requested keys",
    'Each answer must follow the format: "<number>. The answer for <key> is <value>."',
    "Ensure exact key matches - do not modify or paraphrase the keys",
    "Values must match exactly as they appear in the document",
)


def hyphenated_string(rng: random.Random, groups: int = _GROUPS, group_len: int = _GROUP_LEN) -> str:
    """A random string like ``a8k2m0x1-p1q...`` (``groups`` groups of ``group_len`` characters)."""
    return "-".join("".join(rng.choices(_ALPHABET, k=group_len)) for _ in range(groups))


def _pair_line(key: str, value: str) -> str:
    return f"The value for key {key} is: {value}."


class _DistractorPool:
    """Distractor pairs drawn on demand; pair i is the same whatever order they are asked for.

    Characters are drawn in fixed-size batches (one ``choices`` call per batch rather than
    per string: at 128K tokens a sample has ~40K strings), so the stream of random draws does
    not depend on how many pairs each call asks for.
    """

    _BATCH = 4096  # strings per batch of drawn characters

    def __init__(self, rng: random.Random, used: set[str]):
        self._rng = rng
        self._used = used
        self._fresh_strings: list[str] = []
        self.lines: list[str] = []

    def _fresh(self) -> str:
        while True:  # collisions are astronomically rare (36^20 strings), but never allowed
            if not self._fresh_strings:
                chars = "".join(self._rng.choices(_ALPHABET, k=self._BATCH * _GROUPS * _GROUP_LEN))
                size = _GROUPS * _GROUP_LEN
                self._fresh_strings = [
                    "-".join(chars[i + g * _GROUP_LEN : i + (g + 1) * _GROUP_LEN] for g in range(_GROUPS))
                    for i in range(0, len(chars), size)
                ][::-1]  # popped from the end, so reversed to keep draw order
            candidate = self._fresh_strings.pop()
            if candidate not in self._used:
                self._used.add(candidate)
                return candidate

    def take(self, n: int) -> list[str]:
        while len(self.lines) < n:
            self.lines.append(_pair_line(self._fresh(), self._fresh()))
        return self.lines[:n]


@register
class RulerNIAH(FittedTask):
    """Four target keys among distractor key-value pairs; exact match per value."""

    name = "ruler_niah"
    metric = "exact_match"
    category = "retrieval"
    max_new_tokens = 256

    def __init__(self, answer_format: str = "authors"):
        check_answer_format(self.name, answer_format)
        self.answer_format = answer_format

    def make_instance(self, rng: random.Random, length: int, sample_id: int) -> Instance:
        used: set[str] = set()
        keys, values = [], []
        for _ in range(N_NEEDLES):
            for bucket in (keys, values):
                candidate = hyphenated_string(rng)
                while candidate in used:
                    candidate = hyphenated_string(rng)
                used.add(candidate)
                bucket.append(candidate)
        depths = [rng.random() for _ in range(N_NEEDLES)]
        pool = _DistractorPool(random.Random(rng.getrandbits(64)), used)
        needle_lines = [_pair_line(k, v) for k, v in zip(keys, values, strict=True)]
        if self.answer_format == "authors":
            question = f"Extract the values for the following keys: {', '.join(keys)}"

            def frame(context: str) -> str:
                return build_tagged_prompt(
                    _TAGGED_INTRO, context, question, _TAGGED_FORMAT, _TAGGED_RULES, several_questions=True
                )
        else:
            question = f"What are the values for the keys {', '.join(keys[:-1])} and {keys[-1]}?"
            answer_format = ", ".join(f"<value for {key}>" for key in keys)

            def frame(context: str) -> str:
                return build_prompt(_INSTRUCTIONS, context, question, answer_format, _RULES)

        def render(n_units: int) -> str:
            lines = list(pool.take(n_units))
            # Insert from the deepest needle down so earlier insertions don't shift later ones.
            for depth, line in sorted(zip(depths, needle_lines, strict=True), reverse=True):
                lines.insert(round(depth * n_units), line)
            return frame("\n".join(lines))

        meta = {"keys": keys, "depths": depths}
        gold = tuple(f"{k}={v}" for k, v in zip(keys, values, strict=True))
        return Instance(render=render, gold=gold, meta=meta)

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        pairs = [item.split("=", 1) for item in gold]
        if self.answer_format == "structured":
            return fraction_recalled(split_items(extract_answer(output)), [value for _, value in pairs])
        answers = niah_answers(output)
        correct = sum(
            answers.get(number) == (key, niah_value(value))
            for number, (key, value) in enumerate(pairs, start=1)
        )
        return correct / len(pairs)
