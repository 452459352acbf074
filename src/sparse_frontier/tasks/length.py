"""Fit a prompt to 95-100% of a target length in a given tokenizer's tokens.

The paper (Section 3.3) keeps every input at 95-100% of the target length, measured in the
evaluated model's own tokens. A task describes its prompt as a function of one integer, the
number of filler units (distractor key-value pairs, distractor sentences, chapters, ...);
:class:`LengthFitter` finds a unit count whose prompt lands in the window with a handful of
full tokenizations:

1. measure the prompt with no filler (cheap: a few hundred tokens);
2. predict the unit count from a tokens-per-unit rate, learnt on the previous samples of the
   same task and tokenizer (on the first sample, from a character-based guess);
3. measure; if outside the window, move by regula falsi between the closest counts below and
   above the window (bisection when that stalls), re-estimating the rate from each measurement.

The window is 5% of the target wide and a unit is a small fraction of it, so after the first
sample one or two full measurements usually suffice. Never token-by-token growth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .prompt import TokenCounter, to_model_input, with_answer_prefix

LOW_FRACTION = 0.95
_AIM_FRACTION = 0.977  # aim just under the middle of the window: both sides have slack
_CHARS_PER_TOKEN_GUESS = 3.5
_MAX_MEASUREMENTS = 24


class UnitsTooCoarse(ValueError):
    """No unit count lands in the window: one unit is larger than the window."""

    def __init__(self, message: str, n_calls: int, below_units: int):
        super().__init__(message)
        self.n_calls = n_calls  # tokenizer calls spent before giving up
        self.below_units = below_units  # the largest unit count found below the window


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt inside the length window.

    prompt:   the model input (chat template applied when the tokenizer has one)
    n_tokens: its measured length in tokens
    n_units:  the number of filler units that produced it
    n_calls:  full tokenizer calls spent on this sample (the budget the speed goal caps)
    """

    prompt: str
    n_tokens: int
    n_units: int
    n_calls: int


class LengthFitter:
    """Finds filler unit counts for one (tokenizer, target length); reuse it across samples."""

    def __init__(self, tokenizer, length: int, low_fraction: float = LOW_FRACTION):
        if length < 1:
            raise ValueError(f"Target length must be a positive number of tokens, got {length}.")
        self.tokenizer = tokenizer
        self.count = TokenCounter(tokenizer)
        self.length = length
        self.low = math.ceil(low_fraction * length)
        self.aim = _AIM_FRACTION * length
        self.rate: float | None = None  # tokens per filler unit, learnt from earlier samples

    def fit(
        self, render: Callable[[int], str], max_units: int | None = None, answer_prefix: str = ""
    ) -> FittedPrompt:
        """The prompt ``render(n)`` for some ``n`` in [0, max_units] inside the window.

        render:        unit count -> task text (before the chat template); must be deterministic
        max_units:     the most filler the task can supply (None: unbounded)
        answer_prefix: the start of the answer, after the model input (``with_answer_prefix``)
        """

        def measure(n_units: int) -> tuple[str, int]:
            model_input = to_model_input(self.tokenizer, render(n_units))
            prompt = with_answer_prefix(self.tokenizer, model_input, answer_prefix)
            return prompt, self.count(prompt)

        calls = 1
        prompt, tokens = measure(0)
        if tokens > self.length:
            raise ValueError(
                f"The prompt without any filler is already {tokens} tokens, over the target length "
                f"{self.length}; use a target length of at least {math.ceil(tokens / LOW_FRACTION)}."
            )
        if tokens >= self.low:
            return FittedPrompt(prompt, tokens, 0, calls)
        base = tokens
        rate = self.rate
        if rate is None:
            rate = max(len(render(1)) - len(render(0)), 1) / _CHARS_PER_TOKEN_GUESS
        below: tuple[int, int] = (0, base)  # (units, tokens) with tokens < low
        above: tuple[int, int] | None = None  # (units, tokens) with tokens > length
        while calls < _MAX_MEASUREMENTS:
            if above is None:
                n = below[0] + (self.aim - below[1]) / rate
            else:  # regula falsi between the bracketing counts
                span = (above[1] - below[1]) / (above[0] - below[0])
                n = below[0] + (self.aim - below[1]) / span
                if calls % 3 == 0:  # guard against a stalled side: bisect now and then
                    n = (below[0] + above[0]) / 2
            n = max(int(round(n)), below[0] + 1)
            if above is not None:
                n = min(n, above[0] - 1)
                if n <= below[0]:
                    raise UnitsTooCoarse(
                        f"No filler count fits {self.low}-{self.length} tokens: {below[0]} units give "
                        f"{below[1]} tokens and {above[0]} give {above[1]}; one unit is too coarse for "
                        "this target length, so use a longer target length.",
                        calls,
                        below[0],
                    )
            if max_units is not None and n > max_units:
                if below[0] >= max_units:
                    raise ValueError(
                        f"The task can supply at most {max_units} filler units, giving {below[1]} of the "
                        f"{self.low}-{self.length} tokens needed; use a shorter target length or a "
                        "larger source."
                    )
                n = max_units
            calls += 1
            prompt, tokens = measure(n)
            rate = max((tokens - base) / n, 1e-6)
            if self.low <= tokens <= self.length:
                self.rate = rate
                return FittedPrompt(prompt, tokens, n, calls)
            if tokens < self.low:
                below = (n, tokens)
            else:
                above = (n, tokens)
        raise RuntimeError(
            f"Length fitting did not converge to {self.low}-{self.length} tokens in {_MAX_MEASUREMENTS} "
            "measurements; the task's render function is probably not monotone in its unit count."
        )
