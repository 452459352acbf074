"""The length fitter: every prompt 95-100% of its target, in a handful of tokenizer calls."""

from __future__ import annotations

import random

import pytest

from sparse_frontier.tasks.base import FittedTask, Instance
from sparse_frontier.tasks.length import LengthFitter, UnitsTooCoarse
from sparse_frontier.tasks.prompt import count_tokens

WORDS = "river stone lantern market silver quiet orchard harbor window meadow".split()


def _uneven_render(seed: int):
    """Units of uneven size (1 to 12 words) so the first rate estimate is off."""
    rng = random.Random(seed)
    units = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) + "." for _ in range(5000)]
    return lambda n: "Header line.\n" + "\n".join(units[:n])


@pytest.mark.parametrize("length", [1024, 2048, 4096, 8192])
def test_fit_lands_in_window_with_few_calls(tiny_tokenizer, length):
    fitter = LengthFitter(tiny_tokenizer, length)
    for seed in range(4):
        fitted = fitter.fit(_uneven_render(seed), max_units=5000)
        assert 0.95 * length <= fitted.n_tokens <= length
        assert fitted.n_tokens == count_tokens(tiny_tokenizer, fitted.prompt)
        assert fitted.n_calls <= 8


def test_later_samples_reuse_the_learnt_rate(tiny_tokenizer):
    fitter = LengthFitter(tiny_tokenizer, 4096)
    calls = [fitter.fit(_uneven_render(seed)).n_calls for seed in range(6)]
    assert sum(calls[1:]) / len(calls[1:]) <= 3.5


def test_prompt_longer_than_target_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="without any filler"):
        LengthFitter(tiny_tokenizer, 10).fit(lambda n: "word " * (200 + n))


def test_too_little_filler_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(ValueError, match="at most 3 filler units"):
        LengthFitter(tiny_tokenizer, 4096).fit(_uneven_render(0), max_units=3)


def test_too_coarse_units_are_a_clear_error(tiny_tokenizer):
    big = " ".join(WORDS * 40)  # one unit is far more than 5% of the target
    with pytest.raises(ValueError, match="too coarse"):
        LengthFitter(tiny_tokenizer, 2048).fit(lambda n: "\n".join([big] * n))


def test_chat_template_is_applied_and_counted(chat_tokenizer):
    fitted = LengthFitter(chat_tokenizer, 2048).fit(_uneven_render(1))
    assert fitted.prompt.startswith("<|im_start|>user\n")
    assert fitted.prompt.endswith("<|im_start|>assistant\n")
    assert fitted.n_tokens == count_tokens(chat_tokenizer, fitted.prompt)
    assert 0.95 * 2048 <= fitted.n_tokens <= 2048


class _CoarseTask(FittedTask):
    """Units of 400 words (~600 tokens: no count fits a 1K target) with a one-word fallback."""

    name = "coarse_test"
    metric = "exact_match"
    category = "retrieval"

    def make_instance(self, rng, length, sample_id):
        words = [rng.choice(WORDS) for _ in range(20000)]
        chunk = 400

        def coarse(n):
            return "Header.\n" + " ".join(words[: n * chunk])

        def fine(n):
            return "Header.\n" + " ".join(words[:n])

        fallback = Instance(fine, ("x",), len(words), {"unit": "word"})
        return Instance(coarse, ("x",), len(words) // chunk, {"unit": "chunk"}, lambda _below: fallback)

    def score(self, output, gold):
        return 0.0


def test_fallback_units_used_when_units_are_too_coarse(tiny_tokenizer):
    samples = _CoarseTask().generate(tiny_tokenizer, 1024, 3, seed=0)
    for sample in samples:
        assert sample.meta["unit"] == "word"
        assert 0.95 * 1024 <= sample.n_tokens <= 1024
        assert sample.meta["fit_calls"] <= 14
    with pytest.raises(UnitsTooCoarse):  # without a fallback the error stands
        LengthFitter(tiny_tokenizer, 1024).fit(_CoarseTask().make_instance(random.Random(0), 1024, 0).render)
