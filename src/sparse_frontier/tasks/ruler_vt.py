"""RULER VT (variable tracking): all variables that resolve to a value through a chain.

Paper, Appendix A.2.2: "Resolve variable assignments (direct or chained) to identify all
variables matching a target value. Context includes repeated filler text ('The grass is
green...'). Evaluated using IoU." High dispersion, low scope (Table 2).

Construction, as in the authors' release (8 chains of 4 hops, shuffled). A chain is a direct
assignment ``VAR A = 12345`` followed by ``hops`` copies ``VAR B = VAR A``, ``VAR C = VAR B``,
...; each chain has its own value, so only the first chain resolves to the value asked about
and the other ``chains - 1`` are distractors. All variable names are drawn first: distinct
strings of five upper-case letters, never reused in a sample. Then the values: distinct
integers drawn from [10000, 99999). Statements end without a full stop, as in the release.
The filler unit of the length fitter is one repetition of RULER's filler passage.

Placement. Every statement and every filler passage gets a uniform random key, and the
context lists them in key order. For any number of passages this is a uniformly random
shuffle of statements and passages together (so a copy may come before the assignment it
copies), and a longer fit only adds passages, so the statements keep their order while the
fitter searches. With ``shuffle=False`` each chain's keys are sorted into chain order, so every
variable is assigned before it is used.

Scoring: intersection over union between the variables named and the first chain's variables
(any order). With ``answer_format="authors"`` (the default) the model lists the names separated by
spaces in ``<answer>`` tags, and the answer is split on white space, as in the authors' release:
``VAR`` prefixes are dropped, but a name with a comma attached counts as a wrong name, and
without tags every word of the response counts. With ``"structured"`` the final ``Answer:`` line
is split on commas, semicolons, ``and`` and white space around them.
"""

from __future__ import annotations

import random
import string

from . import register
from .answers import extract_answer, split_items
from .base import FittedTask, Instance
from .metrics import iou
from .prompt import build_prompt, build_tagged_prompt, check_answer_format
from .tagged_answers import set_iou, variable_names

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
VALUES = range(10000, 99999)

_INSTRUCTIONS = (
    "Below is a long text. Hidden in it are variable assignments of the form VAR NAME = VALUE, "
    "where VALUE is either a number or another variable. A variable assigned another variable "
    "takes that variable's value. Your task is to track these assignments."
)
_ANY_ORDER = " The assignments can appear in any order in the text."
_RULES = (
    "List every variable that ends up with the value, separated by commas, in any order.",
    "Write the variable names only, without 'VAR'.",
)
_TAGGED_INTRO = """I will provide you with a text containing variable assignments. The text contains \
two types of assignments:
1. Numeric assignments that set a variable to a number (e.g., "VAR ABC = 12345")
2. Copy assignments that set a variable equal to another variable (e.g., "VAR XYZ = VAR ABC")
Variables are sequences of uppercase letters. The assignments can appear in any order in the text."""
_TAGGED_RULES = (
    "List ONLY the variable names that resolve to the target value.",
    "Variables can be listed in any order.",
    'Do not include "VAR" prefix in your answer. Do not include punctuation.',
)


def distinct_names(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct random strings of five upper-case letters."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = "".join(rng.choices(string.ascii_uppercase, k=5))
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def chain_statements(names: list[str], value: int) -> list[str]:
    """A direct assignment of ``value`` to the first name, then each name copying the one before."""
    copies = [f"VAR {b} = VAR {a}" for a, b in zip(names, names[1:], strict=False)]
    return [f"VAR {names[0]} = {value}", *copies]


class Placement:
    """Statements among any number of filler passages, in the order of uniform random keys.

    ``chains`` are lists of statements; the keys of the passages are drawn lazily from their
    own stream, so the ``i``-th passage has the same key at every count and :meth:`render` is
    a pure function of the count.
    """

    def __init__(self, rng: random.Random, chains: list[list[str]], filler: str, shuffle: bool):
        self._statements: list[tuple[float, str]] = []
        for chain in chains:
            keys = [rng.random() for _ in chain]
            self._statements += zip(keys if shuffle else sorted(keys), chain, strict=True)
        self._filler = filler
        self._filler_rng = random.Random(rng.getrandbits(64))
        self._filler_keys: list[float] = []  # in draw order

    def pieces(self, n_units: int) -> list[str]:
        """The statements and ``n_units`` passages, in key order."""
        while len(self._filler_keys) < n_units:
            self._filler_keys.append(self._filler_rng.random())
        passages = [(key, self._filler) for key in self._filler_keys[:n_units]]
        return [text for _, text in sorted(passages + self._statements)]

    def render(self, n_units: int) -> str:
        return " ".join(self.pieces(n_units))


@register
class RulerVT(FittedTask):
    """Variable tracking through chains of assignments hidden in filler text; IoU."""

    name = "ruler_vt"
    metric = "iou"
    category = "high_dispersion"
    max_new_tokens = 256

    def __init__(self, chains: int = 8, hops: int = 4, shuffle: bool = True, answer_format: str = "authors"):
        if not (isinstance(chains, int) and isinstance(hops, int) and isinstance(shuffle, bool)):
            raise ValueError(
                f"ruler_vt needs integer chains and hops and a boolean shuffle, got {chains!r}, "
                f"{hops!r} and {shuffle!r}."
            )
        if not (1 <= chains <= len(VALUES) and hops >= 0):
            raise ValueError(
                f"ruler_vt needs 1 <= chains <= {len(VALUES)} and hops >= 0, got {chains} and {hops}."
            )
        check_answer_format(self.name, answer_format)
        self.chains = chains
        self.hops = hops
        self.shuffle = shuffle
        self.answer_format = answer_format

    def make_instance(self, rng: random.Random, length: int, sample_id: int) -> Instance:
        per_chain = self.hops + 1
        names = distinct_names(rng, self.chains * per_chain)
        values = rng.sample(VALUES, self.chains)
        chain_names = [names[i * per_chain : (i + 1) * per_chain] for i in range(self.chains)]
        chains = [chain_statements(n, v) for n, v in zip(chain_names, values, strict=True)]
        placement = Placement(rng, chains, FILLER, self.shuffle)
        value = values[0]
        if self.answer_format == "authors":
            question = (
                f"Which variables resolve to the value {value}? A variable resolves to {value} if it is "
                f"either directly assigned {value}, or assigned to another variable that resolves to {value}."
            )

            def render(n_units: int) -> str:
                context = placement.render(n_units)
                return build_tagged_prompt(
                    _TAGGED_INTRO, context, question, "VARIABLE_ONE VARIABLE_TWO etc.", _TAGGED_RULES
                )
        else:
            instructions = _INSTRUCTIONS + (_ANY_ORDER if self.shuffle else "")
            question = f"Which variables are assigned the value {value}, directly or through other variables?"

            def render(n_units: int) -> str:
                return build_prompt(
                    instructions, placement.render(n_units), question, "<variable>, <variable>, ...", _RULES
                )

        meta = {
            "value": str(value),
            "distractor_values": [str(v) for v in values[1:]],
            "chains": self.chains,
            "hops": self.hops,
            "shuffle": self.shuffle,
        }
        return Instance(render=render, gold=tuple(chain_names[0]), meta=meta)

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        if self.answer_format == "authors":
            return set_iou(variable_names(output), {name.upper() for name in gold})
        items = [
            item.removeprefix("VAR ").removeprefix("var ") for item in split_items(extract_answer(output))
        ]
        return iou(items, gold)
