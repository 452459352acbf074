"""RULER niah_single_1: one number hidden in repeated noise, the answer primed. Not one of the paper's nine.

The paper's NIAH (``ruler_niah``) asks for four values among thousands of look-alike key-value
pairs: every line is a candidate, which is what makes it hard and what a 135M-270M model cannot do
past a few hundred tokens (docs/default-study.md). RULER's easiest variant, ``niah_single_1``
(Hsieh et al., 2024), keeps the retrieval and drops the distractors: a single needle
``One of the special magic numbers for <key> is: <value>.`` sits at a random depth in RULER's noise
passage repeated, and the answer is primed with RULER's answer prefix, so the model only has to copy
seven digits from wherever they are. Small trained models score near 1.0 on it at 1-8K tokens
(SmolLM2-135M-Instruct 1.0 at 1K and 4K, 0.96 at 8K; Gemma 3 270M 0.83 at 4K, 0.75 at 8K), so it is
the task on which a small-model study can watch accuracy fall as attention gets sparser: a method
that loses the one needle's tokens (in its prefill selection or its cache) loses the answer.

Construction, as in RULER: the key is an adjective-noun pair (RULER draws them with ``wonderwords``;
here from fixed lists, to need no dependency), the value a random 7-digit number, the depth a uniform
fraction of the context; the filler unit of the length fitter is one sentence of the noise passage,
cycled (the passage is ~20 tokens, too coarse a step for short prompts).
The prompt is RULER's own template (not the project's tagged or structured formats), and the
engine's input ends with the primed answer ``The special magic number for <key> mentioned in the
provided text is``, after the chat template's generation prompt.

Scoring is RULER's ``string_match_all``: 1 when the value appears in the output, 0 otherwise. The
answer budget (16 tokens) holds one number, so listing many numbers cannot pay.
"""

from __future__ import annotations

import random

from . import register
from .base import FittedTask, Instance
from .ruler_vt import FILLER

ADJECTIVES = (
    "ancient brave calm dizzy eager fancy gentle happy icy jolly keen lively mighty narrow odd "
    "polite quiet rapid shiny tidy upbeat vivid witty young zealous bitter cosmic dusty frozen golden"
).split()
NOUNS = (
    "anchor bridge candle dragon engine falcon garden harbor island jacket kettle lantern meadow "
    "needle orchard parrot quartz ribbon saddle tunnel violin walnut yacht zebra castle forest "
    "glacier hammer marble rocket"
).split()
VALUES = range(1_000_000, 10_000_000)

_QUESTION = "What is the special magic number for {key} mentioned in the provided text?"
_TEMPLATE = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the numbers afterwards.\n{context}\n{question}"
)
_ANSWER_PREFIX = "The special magic number for {key} mentioned in the provided text is"


NOISE_SENTENCES = tuple(sentence + "." for sentence in FILLER.removesuffix(".").split(". "))


def noise(n_sentences: int) -> list[str]:
    """The first ``n_sentences`` sentences of RULER's noise passage repeated."""
    return [NOISE_SENTENCES[i % len(NOISE_SENTENCES)] for i in range(n_sentences)]


def needle(key: str, value: str) -> str:
    return f"One of the special magic numbers for {key} is: {value}."


@register
class RulerNIAHSingle(FittedTask):
    """One 7-digit number under an adjective-noun key, in repeated noise; the answer primed."""

    name = "ruler_niah_single"
    metric = "exact_match"
    category = "retrieval"
    max_new_tokens = 16

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return ("\n",)  # the answer is the primed sentence's end; a new line is something else

    def make_instance(self, rng: random.Random, length: int, sample_id: int) -> Instance:
        key = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
        value = str(rng.choice(VALUES))
        depth = rng.random()
        question = _QUESTION.format(key=key)

        def render(n_units: int) -> str:
            pieces = noise(n_units)
            pieces.insert(round(depth * n_units), needle(key, value))
            return _TEMPLATE.format(context=" ".join(pieces), question=question)

        return Instance(
            render=render,
            gold=(value,),
            meta={"key": key, "depth": depth},
            answer_prefix=_ANSWER_PREFIX.format(key=key),
        )

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        return float(all(value.lower() in output.lower() for value in gold))
