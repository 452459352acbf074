"""RULER CWE (common words extraction): the ten words repeated most in a long list.

Paper, Appendix A.2.2: "Identify the 10 most frequent words (appearing 30 times each) among
distractor words (appearing 3 times each), sampled from a vocabulary of 9,000 English words
[wonderwords]. Evaluated using Intersection-over-Union (IoU)." Low dispersion, high scope.

Construction. The vocabulary is wonderwords' noun, adjective and verb lists (lower-cased,
letters only, profanity removed; about 8,000 words). Each sample draws a random order of
that vocabulary: its first 10 words are the common words, the rest the distractor pool. The
filler unit of the length fitter is one distractor word (3 occurrences); the numbered list
holds 10 x 30 common occurrences plus 3 per distractor, shuffled with a stream seeded by the
sample and the unit count, so every count gives a fixed, exact list. The 300 common
occurrences alone take ~1.5-3K tokens, so the paper's frequencies need targets of ~4K tokens
or more; ``common_freq``/``distractor_freq`` can be lowered for shorter smoke runs.

Scoring: intersection over union between the words named and the 10 common words. With
``answer_format="authors"`` (the default) the model writes a numbered list in ``<answer>`` tags and
each numbered line is one word, lower-cased, as in the authors' release (a response without the
tags scores 0). With ``"structured"`` the final ``Answer:`` line lists the words.
"""

from __future__ import annotations

import random
from functools import lru_cache
from importlib.resources import files

from . import register
from .answers import extract_answer, split_items
from .base import FittedTask, Instance
from .metrics import iou
from .prompt import build_prompt, build_tagged_prompt, check_answer_format
from .tagged_answers import numbered_words, set_iou

N_COMMON, COMMON_FREQ, DISTRACTOR_FREQ = 10, 30, 3  # the paper's values

_INSTRUCTIONS = (
    "Below is a numbered list of words. Some words appear many more times than the others. "
    "Your task is to find the words that appear most often."
)
_UNSCORABLE = frozenset({"a", "an", "the", "and"})
_RULES = ("List exactly 10 words, separated by commas, in any order.",)
_TAGGED_INTRO = (
    "You will be given a numbered list of words. Your task is to identify the most frequently occurring "
    "words. You should solve this task by carefully reading and analyzing the word list. Do not attempt "
    "to write code or use programming tools to count frequencies. This is a test of your ability to "
    "track word frequencies directly."
)


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """wonderwords' nouns, adjectives and verbs: lower case, letters only, no profanity, sorted."""
    from wonderwords import is_profanity

    assets = files("wonderwords.assets")
    words: set[str] = set()
    for name in ("nounlist.txt", "adjectivelist.txt", "verblist.txt"):
        for line in assets.joinpath(name).read_text(encoding="utf-8").splitlines():
            word = line.strip().lower()
            # Words the answer parser treats as separators or articles could never be scored.
            if word.isascii() and word.isalpha() and word not in _UNSCORABLE and not is_profanity(word):
                words.add(word)
    return tuple(sorted(words))


@register
class RulerCWE(FittedTask):
    """The 10 words that appear 30 times among distractors that appear 3 times; IoU."""

    name = "ruler_cwe"
    metric = "iou"
    category = "high_scope"
    max_new_tokens = 256

    def __init__(
        self,
        common_freq: int = COMMON_FREQ,
        distractor_freq: int = DISTRACTOR_FREQ,
        answer_format: str = "authors",
    ):
        if not common_freq > distractor_freq >= 1:
            raise ValueError(
                "ruler_cwe needs common_freq > distractor_freq >= 1, "
                f"got {common_freq} and {distractor_freq}."
            )
        check_answer_format(self.name, answer_format)
        self.common_freq = common_freq
        self.distractor_freq = distractor_freq
        self.answer_format = answer_format

    def make_instance(self, rng: random.Random, length: int, sample_id: int) -> Instance:
        words = list(vocabulary())
        rng.shuffle(words)
        common, pool = words[:N_COMMON], words[N_COMMON:]
        shuffle_seed = rng.getrandbits(64)
        if self.answer_format == "authors":
            question = (
                f"The list contains exactly {N_COMMON} words that appear {self.common_freq} times each. All "
                f"other words appear {self.distractor_freq} times each. The order of words in the list is "
                f"randomized.\nYour task is to identify the {N_COMMON} words that appear {self.common_freq} "
                "times each."
            )
            answer_format = (
                f"1. word_one\n2. word_two\n...\n{N_COMMON}. word_{N_COMMON}\n\n"
                f"Note: List exactly {N_COMMON} words, one per line, numbered from 1 to {N_COMMON}."
            )

            def frame(context: str) -> str:
                return build_tagged_prompt(_TAGGED_INTRO, context, question, answer_format)
        else:
            question = f"What are the {N_COMMON} most common words in the list?"
            answer_format = ", ".join(f"<word {i}>" for i in range(1, N_COMMON + 1))

            def frame(context: str) -> str:
                return build_prompt(_INSTRUCTIONS, context, question, answer_format, _RULES)

        def render(n_units: int) -> str:
            entries = common * self.common_freq + pool[:n_units] * self.distractor_freq
            random.Random(f"{shuffle_seed}|{n_units}").shuffle(entries)
            return frame("\n".join(f"{i}. {word}" for i, word in enumerate(entries, start=1)))

        return Instance(render=render, gold=tuple(common), max_units=len(pool))

    def score(self, output: str, gold: tuple[str, ...]) -> float:
        if self.answer_format == "authors":
            return set_iou(numbered_words(output) or set(), set(gold))
        return iou(split_items(extract_answer(output)), gold)
