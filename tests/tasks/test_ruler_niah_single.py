"""RULER niah_single_1: one needle in the noise at its depth, the answer primed, RULER's scoring."""

from __future__ import annotations

import re

import pytest
from task_helpers import assert_deterministic, assert_lengths

from sparse_frontier.tasks import get_task
from sparse_frontier.tasks.prompt import to_model_input
from sparse_frontier.tasks.ruler_niah_single import noise

NEEDLE = re.compile(r"One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d{7})\.")


@pytest.mark.parametrize("length", [256, 1024, 4096])
def test_niah_single_lengths_and_determinism(tiny_tokenizer, chat_tokenizer, length):
    task = get_task("ruler_niah_single")
    for tokenizer in (tiny_tokenizer, chat_tokenizer):
        assert_lengths(task.generate(tokenizer, length, 4, seed=0), tokenizer, length)
    assert_deterministic(task, tiny_tokenizer, length)


def test_niah_single_hides_one_needle_in_noise_at_its_depth_and_primes_its_answer(chat_tokenizer):
    task = get_task("ruler_niah_single")
    for sample in task.generate(chat_tokenizer, 2048, 6, seed=3):
        key, depth = sample.meta["key"], sample.meta["depth"]
        needles = NEEDLE.findall(sample.prompt)
        assert needles == [(key, sample.gold[0])]
        # The answer continues RULER's prefix after the chat template's generation prompt.
        prefix = f"The special magic number for {key} mentioned in the provided text is"
        assert sample.prompt.endswith("<|im_start|>assistant\n" + prefix)
        body = sample.prompt.split("afterwards.\n", 1)[1].split("\nWhat is the special magic number", 1)[0]
        before, after = (part.strip() for part in body.split(NEEDLE.search(body).group(0)))
        n_units = sample.meta["n_units"]
        assert " ".join(filter(None, (before, after))) == " ".join(noise(n_units))
        assert before == " ".join(noise(round(depth * n_units)))
        assert f"for {key} mentioned in the provided text?" in sample.prompt


def test_niah_single_prompt_is_the_templated_text_plus_the_prefix(tiny_tokenizer):
    """Without a chat template the primed answer starts a line of its own after the question."""
    sample = get_task("ruler_niah_single").generate(tiny_tokenizer, 512, 1, seed=0)[0]
    text, prefix = sample.prompt.rsplit("\n", 1)
    assert prefix.startswith("The special magic number for ")
    assert text.endswith("mentioned in the provided text?")
    assert to_model_input(tiny_tokenizer, text) + "\n" + prefix == sample.prompt


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (" 8114566.", 1.0),
        (" 8114566", 1.0),
        (": 8114566. The grass", 1.0),
        (" 811.", 0.0),
        (" 81145660000.", 1.0),
        (" 1234567.", 0.0),
        ("", 0.0),
    ],
)
def test_niah_single_scores_as_ruler_string_match(output, expected):
    assert get_task("ruler_niah_single").score(output, ("8114566",)) == expected
