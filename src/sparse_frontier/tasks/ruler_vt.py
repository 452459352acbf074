"""RULER VT (variable tracking): all variables that resolve to a value through a chain.

Paper, Appendix A.2.2: "Resolve variable assignments (direct or chained) to identify all
variables matching a target value. Context includes repeated filler text ('The grass is
green...'). Evaluated using IoU." High dispersion, low scope (Table 2).

Construction (RULER's defaults: one chain of four hops, so five variables). The chain is
``VAR A = 12345``, ``VAR B = VAR A``, ... ``VAR E = VAR D``; its statements sit at random
depths of the filler, in chain order, so each variable is assigned before it is used.
Optional distractor chains (``distractor_chains``) have values of their own: nothing in them
resolves to the target value. Variable names are five distinct upper-case letters strings,
never reused; values are distinct five-digit numbers. The filler unit of the length fitter
is one repetition of RULER's filler passage; statement depths are fractions of the filler,
drawn once per sample.

Scoring: intersection over union between the variables named on the answer line and the
chain's variables (any order).
"""

from __future__ import annotations

import random
import string

from . import register
from .answers import extract_answer, split_items
from .base import FittedTask, Instance
from .metrics import iou
from .prompt import build_prompt

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

_INSTRUCTIONS = (
    "Below is a long text. Hidden in it are variable assignments of the form VAR NAME = VALUE, "
    "where VALUE is either a number or another variable. A variable assigned another variable "
    "takes that variable's value. Your task is to track these assignments."
)
_RULES = (
    "List every variable that ends up with the value, separated by commas, in any order.",
    "Write the variable names only, without 'VAR'.",
)


def _fresh_name(rng: random.Random, used: set[str]) -> str:
    while True:
        name = "".join(rng.choices(string.ascii_uppercase, k=5))
        if name not in used:
            used.add(name)
            return name


def _chain(rng: random.Random, value: str, hops: int, used: set[str]) -> tuple[list[str], list[str]]:
    """Variable names and statements of one chain: a direct assignment, then ``hops`` copies."""
    names = [_fresh_name(rng, used) for _ in range(hops + 1)]
    statements = [f"VAR {names[0]} = {value}."]
    statements += [f"VAR {names[i]} = VAR {names[i - 1]}." for i in range(1, hops + 1)]
    return names, statements


@register
class RulerVT(FittedTask):
    """Variable tracking through chains of assignments hidden in filler text; IoU."""

    name = "ruler_vt"
    metric = "iou"
    category = "high_dispersion"
    max_new_tokens = 256

    def __init__(self, hops: int = 4, distractor_chains: int = 0):
        if hops < 0 or distractor_chains < 0:
            raise ValueError(
                f"ruler_vt needs hops >= 0 and distractor_chains >= 0, got {hops} and {distractor_chains}."
            )
        self.hops = hops
        self.distractor_chains = distractor_chains

    def make_instance(self, rng: random.Random, length: int, sample_id: int) -> Instance:
        used: set[str] = set()
        values = rng.sample(range(10000, 100000), 1 + self.distractor_chains)
        value = str(values[0])
        chains = [_chain(rng, str(v), self.hops, used) for v in values]
        target_names = chains[0][0]
        placed: list[tuple[float, str]] = []
        for _, statements in chains:
            depths = sorted(rng.random() for _ in statements)
            placed += list(zip(depths, statements, strict=True))
        placed.sort()
        question = f"Which variables are assigned the value {value}, directly or through other variables?"

        def render(n_units: int) -> str:
            pieces = [FILLER] * n_units
            # Insert deepest first so earlier insertions do not shift later ones; among statements
            # at the same position, the later one goes in first so chain order is kept.
            slots = [(round(depth * n_units), order, s) for order, (depth, s) in enumerate(placed)]
            for position, _, statement in sorted(slots, reverse=True):
                pieces.insert(position, statement)
            return build_prompt(
                _INSTRUCTIONS, " ".join(pieces), question, "<variable>, <variable>, ...", _RULES
            )

        meta = {"value": value, "distractor_values": [str(v) for v in values[1:]]}
        return Instance(render=render, gold=tuple(target_names), meta=meta)

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        items = [
            item.removeprefix("VAR ").removeprefix("var ") for item in split_items(extract_answer(output))
        ]
        return iou(items, gold)
