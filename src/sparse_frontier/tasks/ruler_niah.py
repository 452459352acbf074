"""RULER NIAH: four values to retrieve among many distractor key-value pairs.

Paper, Appendix A.2.2: "Extract values for 4 target keys from a document containing relevant
and distractor key-value pairs (random hyphenated strings). Evaluated using Exact Match
Accuracy." Low scope, low dispersion (Table 2). Synthetic on purpose: random symbol strings
have no syntax, which is what makes Quest and Ada-SnapKV struggle on it (Section 4.3.1).

Construction. Keys and values are random hyphenated strings (``k3x9a-0pq2m-...``) drawn
without replacement from one pool per sample, so every target value appears exactly once and
no distractor key equals a target key (or any other key or value). The context is one
sentence per pair; the filler unit of the length fitter is one distractor pair, and the four
needles sit at depths drawn once per sample (fractions of the context), so a longer fit moves
them proportionally rather than changing them.

Scoring. A sample's score is the fraction of the four values named on the answer line
(:func:`..metrics.fraction_recalled`), as RULER's multi-value NIAH scores the fraction of
needles recovered and the paper's own release scores per key; the paper's "accuracy" is the
mean over samples. Order is not required (the values are unique strings); listing more than
four items lowers the score so that guessing many values does not pay.
"""

from __future__ import annotations

import random
import string

from . import register
from .answers import extract_answer, split_items
from .base import FittedTask, Instance
from .metrics import fraction_recalled
from .prompt import build_prompt

N_NEEDLES = 4
_ALPHABET = string.ascii_lowercase + string.digits
_GROUPS, _GROUP_LEN = 4, 5

_INSTRUCTIONS = (
    "Below is a long list of key-value pairs, one per line. Keys and values are random strings of "
    "letters and digits joined by hyphens. Your task is to find the values of four given keys."
)
_RULES = (
    "Give the four values in the order the keys are asked, separated by commas.",
    "Copy each value exactly as it appears in the list, hyphens included.",
)


def hyphenated_string(rng: random.Random, groups: int = _GROUPS, group_len: int = _GROUP_LEN) -> str:
    """A random string like ``a8k2m-x0p1q-...`` (``groups`` groups of ``group_len`` characters)."""
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
        question = f"What are the values for the keys {', '.join(keys[:-1])} and {keys[-1]}?"
        answer_format = ", ".join(f"<value for {key}>" for key in keys)
        needle_lines = [_pair_line(k, v) for k, v in zip(keys, values, strict=True)]

        def render(n_units: int) -> str:
            lines = list(pool.take(n_units))
            # Insert from the deepest needle down so earlier insertions don't shift later ones.
            for depth, line in sorted(zip(depths, needle_lines, strict=True), reverse=True):
                lines.insert(round(depth * n_units), line)
            return build_prompt(_INSTRUCTIONS, "\n".join(lines), question, answer_format, _RULES)

        meta = {"keys": keys, "depths": depths}
        return Instance(render=render, gold=tuple(values), meta=meta)

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        return fraction_recalled(split_items(extract_answer(output)), gold)
