"""RULER NIAH: needles unique, distractor keys distinct, lengths exact, scoring per value."""

from __future__ import annotations

import re

import pytest

from sparse_frontier.tasks import get_task
from sparse_frontier.tasks.prompt import count_tokens

PAIR = re.compile(r"The value for key ([a-z0-9-]+) is: ([a-z0-9-]+)\.")


@pytest.fixture(scope="module")
def task():
    return get_task("ruler_niah")


@pytest.fixture(scope="module")
def samples_2k(task, tiny_tokenizer):
    return task.generate(tiny_tokenizer, 2048, 5, seed=3)


def _context_pairs(prompt: str) -> list[tuple[str, str]]:
    context = prompt.split("<context>", 1)[1].split("</context>", 1)[0]
    return PAIR.findall(context)


def test_needles_once_and_distractor_keys_differ(samples_2k):
    for sample in samples_2k:
        pairs = _context_pairs(sample.prompt)
        keys = sample.meta["keys"]
        assert len(keys) == len(set(keys)) == 4 == len(sample.gold)
        lookup = {}
        for key, value in pairs:
            assert key not in lookup, "a key appears twice"
            lookup[key] = value
        assert [lookup[k] for k in keys] == list(sample.gold)
        all_values = [v for _, v in pairs]
        for value in sample.gold:
            assert sample.prompt.count(value) == 1
            assert all_values.count(value) == 1
        distractor_keys = {k for k, _ in pairs} - set(keys)
        assert len(distractor_keys) == len(pairs) - 4 > 10
        # keys are asked for before and after the context
        for key in keys:
            assert sample.prompt.count(key) == 3 + 1  # question x2, answer format, context


@pytest.mark.parametrize("length", [1024, 2048, 4096])
def test_lengths_in_window(task, tiny_tokenizer, length):
    for sample in task.generate(tiny_tokenizer, length, 4, seed=0):
        assert 0.95 * length <= sample.n_tokens <= length
        assert sample.n_tokens == count_tokens(tiny_tokenizer, sample.prompt)


def test_chat_template_applied(task, chat_tokenizer):
    (sample,) = task.generate(chat_tokenizer, 2048, 1, seed=0)
    assert sample.prompt.startswith("<|im_start|>user\n")
    assert sample.prompt.endswith("<|im_start|>assistant\n")
    assert 0.95 * 2048 <= sample.n_tokens == count_tokens(chat_tokenizer, sample.prompt) <= 2048


def test_determinism(task, tiny_tokenizer, samples_2k):
    again = task.generate(tiny_tokenizer, 2048, 5, seed=3)
    assert again == samples_2k
    prompts = [s.prompt for s in samples_2k]
    assert len(set(prompts)) == len(prompts), "different sample ids must give different samples"
    other_seed = task.generate(tiny_tokenizer, 2048, 1, seed=4)[0]
    assert other_seed.prompt != samples_2k[0].prompt


def test_needle_depths_spread(task, tiny_tokenizer):
    positions = []
    for sample in task.generate(tiny_tokenizer, 4096, 6, seed=1):
        pairs = _context_pairs(sample.prompt)
        index = {k: i for i, (k, _) in enumerate(pairs)}
        positions += [index[k] / len(pairs) for k in sample.meta["keys"]]
    assert min(positions) < 0.25 and max(positions) > 0.75


def test_score(task, samples_2k):
    sample = samples_2k[0]
    v = list(sample.gold)
    keys = sample.meta["keys"]
    assert task.score(f"Reasoning.\nAnswer: {', '.join(v)}", sample.gold) == 1.0
    assert task.score(f"**Answer:** {', '.join(reversed(v))}.", sample.gold) == 1.0
    listed = "\n".join(
        f"{i + 1}. The value for {k} is {x}" for i, (k, x) in enumerate(zip(keys, v, strict=True))
    )
    assert task.score(f"Answer:\n{listed}", sample.gold) == 1.0
    assert task.score(f"Answer: {v[0]}, {v[1]}, wrong-value, {v[3]}", sample.gold) == 0.75
    assert task.score(f"Answer: {v[0]}", sample.gold) == 0.25
    assert task.score(f"Answer: {', '.join(keys)}", sample.gold) == 0.0
    assert task.score("I could not find them.", sample.gold) == 0.0
