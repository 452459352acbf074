"""RULER NIAH: needles unique, distractor keys distinct, lengths exact, scoring per key."""

from __future__ import annotations

import re

import pytest

from sparse_frontier.tasks import get_task
from sparse_frontier.tasks.prompt import count_tokens

PAIR = re.compile(r"The value for key ([a-z0-9-]+) is: ([a-z0-9-]+)\.")
KEY = re.compile(r"^[a-z0-9]{8}(?:-[a-z0-9]{8}){3}$")


@pytest.fixture(scope="module")
def task():
    return get_task("ruler_niah")


@pytest.fixture(scope="module")
def samples_2k(task, tiny_tokenizer):
    return task.generate(tiny_tokenizer, 2048, 5, seed=3)


def _values(sample) -> list[str]:
    return [item.split("=")[1] for item in sample.gold]


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
        assert [f"{k}={lookup[k]}" for k in keys] == list(sample.gold)
        assert all(KEY.match(k) and KEY.match(lookup[k]) for k in keys), "keys are 4 groups of 8 characters"
        all_values = [v for _, v in pairs]
        for value in _values(sample):
            assert sample.prompt.count(value) == 1
            assert all_values.count(value) == 1
        distractor_keys = {k for k, _ in pairs} - set(keys)
        assert len(distractor_keys) == len(pairs) - 4 > 10
        # keys are asked for before and after the context
        for key in keys:
            assert sample.prompt.count(key) == 2 + 1  # question x2, context
        assert "1. The answer for <key1> is <value1>." in sample.prompt


@pytest.mark.parametrize(
    ("length", "answer_format"), [(2048, "authors"), (4096, "authors"), (1024, "structured")]
)
def test_lengths_in_window(tiny_tokenizer, length, answer_format):
    task = get_task("ruler_niah", answer_format=answer_format)
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


def test_authors_score_per_key_in_order(task, samples_2k):
    sample = samples_2k[0]
    v, keys = _values(sample), sample.meta["keys"]

    def lines(pairs):
        return "\n".join(f"{i}. The answer for {k} is {x}." for i, (k, x) in enumerate(pairs, start=1))

    right = list(zip(keys, v, strict=True))
    explained = f"<explanation>Found them.</explanation>\n<answer>\n{lines(right)}\n</answer>"
    assert task.score(explained, sample.gold) == 1.0
    assert task.score(lines(right), sample.gold) == 1.0  # without tags the whole response is read
    three = [*right[:3], (keys[3], "wrong-value")]
    assert task.score(f"<answer>{lines(three)}</answer>", sample.gold) == 0.75
    assert task.score(f"<answer>{lines(right[:1])}</answer>", sample.gold) == 0.25
    # numbered by the order of the keys asked
    assert task.score(f"<answer>{lines(reversed(right))}</answer>", sample.gold) == 0.0
    assert task.score(f"<answer>{lines([(k.upper(), x) for k, x in right])}</answer>", sample.gold) == 0.0
    assert task.score(f"Answer: {', '.join(v)}", sample.gold) == 0.0


def test_structured_score(tiny_tokenizer):
    task = get_task("ruler_niah", answer_format="structured")
    (sample,) = task.generate(tiny_tokenizer, 1024, 1, seed=0)
    assert "Answer: <value for" in sample.prompt and "<answer>" not in sample.prompt
    v = _values(sample)
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
